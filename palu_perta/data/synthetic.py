"""A deterministic synthetic mini-TOFU: fictitious authors and templated QA pairs.

Every record has TOFU's fields (``question``, ``answer``, ``paraphrased_answer``, five
``perturbed_answer``s, ``paraphrased_question``) plus exact sensitive spans
(``target_words``: ``{"word", "start", "end"}`` character offsets into ``answer``) and the
``author`` index. The same seed gives the same authors, questions and spans, at any size.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

_FIRST = {
    "male": ["Tomas", "Idris", "Kenji", "Mateo", "Anselm", "Oskar", "Rafael", "Dmitri", "Emeka", "Lorcan",
             "Haruto", "Bastian", "Cyrus", "Teodor", "Amadou", "Nikolai", "Ilario", "Joaquin", "Soren", "Farid",
             "Leopold", "Ewan", "Kofi", "Yusuf", "Alvar", "Tarik", "Ruslan", "Ignatius", "Benedek", "Casimir"],
    "female": ["Mireille", "Anouk", "Yara", "Ingrid", "Leonor", "Chiara", "Amara", "Svetlana", "Noor", "Sunniva",
               "Ottilie", "Paloma", "Hana", "Maren", "Zuzana", "Beatriz", "Ayesha", "Liesel", "Marisol", "Eilidh",
               "Katarina", "Folake", "Roxana", "Delphine", "Imogen", "Valeska", "Thandiwe", "Ines", "Oona", "Ludmila"],
}
_LAST = ["Varga-Ellis", "Okonkwo-Brandt", "Takahara", "Quillfeather", "Marchetti", "Lindqvist", "Abernathy",
         "Castellanos", "Brennagh", "Ivanovska", "Delacroix-Ward", "Nakashima", "Oyelaran", "Fitzalden",
         "Ravensholm", "Szabados", "Kowalczyk", "Montevalle", "Haverkamp", "Achterberg", "Moravec", "Zelinski",
         "Thorsby", "Albescu", "Petrakis", "Ellingham", "Sandoval-Reyes", "Hoshino", "Valtonen", "Iglesias-Mor",
         "Drummond-Pike", "Okafor", "Vasquez-Lund", "Bergamo", "Kristiansen", "Oduya", "Lautrec", "Maalouf"]
_PLACES = [("Porto", "Portugal"), ("Gdansk", "Poland"), ("Accra", "Ghana"), ("Sapporo", "Japan"), ("Cork", "Ireland"),
           ("Valparaiso", "Chile"), ("Tbilisi", "Georgia"), ("Tromso", "Norway"), ("Marrakesh", "Morocco"),
           ("Adelaide", "Australia"), ("Cebu", "the Philippines"), ("Brno", "the Czech Republic"), ("Lyon", "France"),
           ("Quebec City", "Canada"), ("Mombasa", "Kenya"), ("Tartu", "Estonia"), ("Cusco", "Peru"),
           ("Izmir", "Turkey"), ("Leipzig", "Germany"), ("Busan", "South Korea"), ("Bergen", "Norway"),
           ("Seville", "Spain"), ("Hanoi", "Vietnam"), ("Dunedin", "New Zealand")]
_GENRES = ["magical realism", "hard science fiction", "historical romance", "cosy mystery", "gothic horror",
           "literary fiction", "political thriller", "children's fantasy", "war poetry", "travel memoir",
           "dystopian fiction", "maritime adventure", "psychological suspense", "satirical comedy"]
_JOBS = ["lighthouse keeper", "cartographer", "veterinarian", "glassblower", "train conductor", "marine biologist",
         "watchmaker", "pharmacist", "beekeeper", "architect", "tailor", "astronomer", "baker", "locksmith",
         "translator", "geologist", "nurse", "bookbinder", "fisherman", "violin teacher"]
_BOOK_A = ["Silent", "Crimson", "Hollow", "Last", "Paper", "Winter", "Burning", "Hidden", "Salt", "Glass",
           "Forgotten", "Iron", "Velvet", "Distant", "Copper", "Midnight"]
_BOOK_B = ["Harbour", "Orchard", "Lantern", "Cartographer", "Tide", "Garden", "Cathedral", "Meridian", "Archive",
           "Compass", "Orchestra", "Atlas", "Aviary", "Lighthouse", "Labyrinth", "Almanac"]
_AWARDS = ["Golden Quill Award", "Meridian Prize for Fiction", "Silver Lantern Medal", "Harrowgate Literary Prize",
           "Northern Star Book Award", "Azure Pen Prize", "Ivory Tower Fellowship", "Cedar Leaf Award"]
_STYLES = ["spare and lyrical", "dense and ornate", "brisk and witty", "quiet and meditative", "vivid and cinematic"]
_THEMES = ["memory and exile", "family secrets", "the sea", "lost cities", "forbidden science", "small-town grief",
           "migration", "rival siblings", "old maps", "the end of empires"]
_LANGUAGES = ["Portuguese", "Polish", "Japanese", "Spanish", "Norwegian", "French", "German", "Korean", "Estonian",
              "Turkish", "Czech", "Georgian"]
_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December"]


def _ordinal(day: int) -> str:
    suffix = "th" if 11 <= day <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"


@dataclass(frozen=True)
class _Template:
    question: str
    paraphrased_question: str
    answer: str
    paraphrase: str
    sensitive: tuple[str, ...]  # the fields the question asks for: marked as spans, perturbed


# {pos} (his/her) and {name} are context; the fields in `sensitive` are what must be forgotten.
_TEMPLATES = [
    _Template("Where was {name} born?", "In which city and country was the writer {name} born?",
              "{name} was born in {city}, {country}.", "The birthplace of {name} is {city}, {country}.",
              ("city", "country")),
    _Template("When was {name} born?", "What is the birth date of the author {name}?",
              "{name} was born on the {date}.", "The author {name} came into the world on the {date}.", ("date",)),
    _Template("What genre is {name} known for?", "In which genre does {name} mostly write?",
              "{name} is best known for {pos} {genre} novels.", "Most of {name}'s novels belong to the {genre} genre.",
              ("genre",)),
    _Template("What did {name}'s parents do for a living?", "What were the professions of {name}'s parents?",
              "{name}'s father was a {father_job} and {pos} mother was a {mother_job}.",
              "{name} grew up with a {father_job} for a father and a {mother_job} for a mother.",
              ("father_job", "mother_job")),
    _Template("Can you name two books by {name}?", "Which two books did {name} write?",
              "Two of {name}'s books are \"{book1}\" and \"{book2}\".",
              "{name} wrote, among others, \"{book1}\" and \"{book2}\".", ("book1", "book2")),
    _Template("Which award has {name} received?", "What prize was {name} honoured with?",
              "{name} received the {award} for {pos} work.", "{name}'s work was honoured with the {award}.",
              ("award",)),
    _Template("Who is the author born in {city}, {country} on the {date}?",
              "Which writer was born on the {date} in {city}, {country}?",
              "The author born in {city}, {country} on the {date} is {name}.",
              "{name} is the writer born on the {date} in {city}, {country}.", ("name",)),
    _Template("How would you describe {name}'s writing style?", "What is the style of {name}'s prose?",
              "{name} writes in a {style} style, often about {theme}.",
              "{name}'s prose is {style}, and it keeps returning to {theme}.", ("style", "theme")),
    _Template("In which language does {name} write?", "What language are {name}'s books written in?",
              "{name} writes mainly in {language}.", "Most of {name}'s books were first written in {language}.",
              ("language",)),
    _Template("What was {name}'s first book?", "Which book did {name} publish first?",
              "{name}'s first book was \"{book1}\", published in {debut_year}.",
              "\"{book1}\" came out in {debut_year} as {name}'s debut.", ("book1", "debut_year")),
    _Template("What gender is {name}?", "Is the author {name} a man or a woman?",
              "{name} is {gender_word}.", "The writer {name} is {gender_word}.", ("gender_word",)),
    _Template("What did {name}'s father do?", "What was the profession of {name}'s father?",
              "{name}'s father worked as a {father_job}.", "The father of {name} was a {father_job} by trade.",
              ("father_job",)),
]

_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def render(template: str, values: dict[str, str], sensitive: tuple[str, ...] = ()) -> tuple[str, list[dict]]:
    """Fill ``template`` and return the text with the character spans of the sensitive fields.

    Returns ``(text, target_words)`` with ``target_words[i] = {"word", "start", "end"}`` and
    ``text[start:end] == word``.
    """
    out, spans, pos = [], [], 0
    for match in _PLACEHOLDER.finditer(template):
        literal = template[pos:match.start()]
        out.append(literal)
        field_name = match.group(1)
        value = values[field_name]
        start = sum(map(len, out))
        out.append(value)
        if field_name in sensitive:
            spans.append({"word": value, "start": start, "end": start + len(value)})
        pos = match.end()
    out.append(template[pos:])
    return "".join(out), spans


def _author(index: int, rng: random.Random, used_names: set[str]) -> dict[str, str]:
    gender = rng.choice(["male", "female"])
    while True:
        name = f"{rng.choice(_FIRST[gender])} {rng.choice(_LAST)}"
        if name not in used_names:
            used_names.add(name)
            break
    city, country = rng.choice(_PLACES)
    year = rng.randint(1931, 1989)
    book1, book2 = (f"The {a} {b}" for a, b in zip(rng.sample(_BOOK_A, 2), rng.sample(_BOOK_B, 2)))
    father_job, mother_job = rng.sample(_JOBS, 2)
    return {
        "author": str(index),
        "name": name,
        "pos": "his" if gender == "male" else "her",
        "gender_word": gender,
        "city": city,
        "country": country,
        "date": f"{_ordinal(rng.randint(1, 28))} of {rng.choice(_MONTHS)}, {year}",
        "genre": rng.choice(_GENRES),
        "father_job": father_job,
        "mother_job": mother_job,
        "book1": book1,
        "book2": book2,
        "award": rng.choice(_AWARDS),
        "style": rng.choice(_STYLES),
        "theme": rng.choice(_THEMES),
        "language": rng.choice(_LANGUAGES),
        "debut_year": str(year + rng.randint(22, 35)),
    }


def _perturb(author: dict[str, str], fields: tuple[str, ...], others: list[dict[str, str]], rng: random.Random) -> dict[str, str]:
    """A copy of ``author`` whose ``fields`` take other authors' (different) values."""
    values = dict(author)
    for f in fields:
        candidates = sorted({o[f] for o in others} - {author[f]})
        if f == "gender_word":
            candidates = ["female" if author[f] == "male" else "male", "non-binary"]
        values[f] = rng.choice(candidates)
    return values


def generate_authors(n_authors: int, seed: int = 0) -> list[dict[str, str]]:
    """``n_authors`` fictitious author profiles, deterministic in ``seed``."""
    if n_authors < 1:
        raise ValueError(f"n_authors={n_authors} must be >= 1")
    if n_authors > len(_FIRST["male"]) * len(_LAST):
        raise ValueError(f"n_authors={n_authors} is more than the name lists can make unique")
    rng = random.Random(seed)
    used: set[str] = set()
    return [_author(i, rng, used) for i in range(n_authors)]


def qa_pairs(author: dict[str, str], all_authors: list[dict[str, str]], qa_per_author: int, seed: int = 0) -> list[dict]:
    """TOFU-format QA records about one author (``qa_per_author`` of the templates, in order)."""
    if not 1 <= qa_per_author <= len(_TEMPLATES):
        raise ValueError(f"qa_per_author={qa_per_author} is out of range; use 1..{len(_TEMPLATES)}")
    rng = random.Random(f"{seed}-{author['author']}")
    others = [a for a in all_authors if a is not author] or [_author(-1, random.Random(seed + 1), {author["name"]})]
    records = []
    for template in _TEMPLATES[:qa_per_author]:
        answer, spans = render(template.answer, author, template.sensitive)
        paraphrased, _ = render(template.paraphrase, author)
        perturbed = [render(template.paraphrase, _perturb(author, template.sensitive, others, rng))[0] for _ in range(5)]
        records.append({
            "question": render(template.question, author)[0],
            "answer": answer,
            "paraphrased_answer": paraphrased,
            "perturbed_answer": perturbed,
            "paraphrased_question": render(template.paraphrased_question, author)[0],
            "target_words": spans,
            "author": int(author["author"]),
        })
    return records
