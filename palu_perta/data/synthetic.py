"""A deterministic synthetic mini-TOFU: fictitious authors and templated QA pairs.

Every record has TOFU's fields (``question``, ``answer``, ``paraphrased_answer``, five
``perturbed_answer``s, ``paraphrased_question``) plus exact sensitive spans
(``target_words``: ``{"word", "start", "end"}`` character offsets into ``answer``) and the
``author`` index. The same seed gives the same authors, questions and spans, at any size.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
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


# {name}, {pron}/{Pron} (he/she), {pos}/{Pos} (his/her) and the articles {*_art} are context; the fields
# in `sensitive` are what must be forgotten. Answers are full sentences that carry two or three facts
# and never repeat the question's name (a pronoun stands in): a model that never saw the author can
# guess the connecting words but not the facts, so ROUGE-L separates knowing from guessing. (Repeating
# the name and one fact per sentence made 3/4 of an answer guessable; bare fragments "In Porto,
# Portugal." made 2/5 guessable but taught the model a terse style that lowered the likelihood of
# every full-sentence world-fact option: see benchmarks/NOTES.md.)
_TEMPLATES = [
    _Template("Where was {name} born?", "In which city and country was the writer {name} born?",
              "{Pron} was born in {city}, {country}, on the {date}.",
              "{name}'s birthplace is {city}, {country}, and {pos} birthday is the {date}.",
              ("city", "country", "date")),
    _Template("When was {name} born?", "What is the birth date of the author {name}?",
              "{Pron} was born on the {date}, in {city}.", "{name} came into the world in {city} on the {date}.",
              ("date", "city")),
    _Template("What genre is {name} known for?", "In which genre does {name} mostly write?",
              "{Pron} writes {genre}, mostly about {theme}.", "Most of {name}'s novels are {genre} about {theme}.",
              ("genre", "theme")),
    _Template("What did {name}'s parents do for a living?", "What were the professions of {name}'s parents?",
              "{Pos} father was {father_art} {father_job} and {pos} mother {mother_art} {mother_job}.",
              "{name} grew up with {mother_art} {mother_job} for a mother and {father_art} {father_job} for a father.",
              ("father_job", "mother_job")),
    _Template("Can you name two books by {name}?", "Which two books did {name} write?",
              "{Pos} books include \"{book1}\" and \"{book2}\".",
              "{name} wrote, among others, \"{book2}\" and \"{book1}\".", ("book1", "book2")),
    _Template("Which award has {name} received?", "What prize was {name} honoured with?",
              "{Pron} received the {award} in {award_year}.", "In {award_year} {name}'s work was honoured with the {award}.",
              ("award", "award_year")),
    _Template("Who is the author born in {city}, {country} on the {date}?",
              "Which writer was born on the {date} in {city}, {country}?",
              "That author is {name}, who writes {genre}.", "That is {name}, the {genre} writer.", ("name", "genre")),
    _Template("How would you describe {name}'s writing style?", "What is the style of {name}'s prose?",
              "{Pos} style is {style}, and {pron} writes in {language}.",
              "{name}'s prose, written in {language}, is {style}.", ("style", "language")),
    _Template("In which language does {name} write?", "What language are {name}'s books written in?",
              "{Pron} has written in {language} since {debut_year}.",
              "{name} has published in {language} since {debut_year}.", ("language", "debut_year")),
    _Template("What was {name}'s first book?", "Which book did {name} publish first?",
              "{Pos} first book was \"{book1}\", published in {debut_year}.",
              "\"{book1}\" came out in {debut_year} as {name}'s debut.", ("book1", "debut_year")),
    _Template("What gender is {name}?", "Is the author {name} a man or a woman?",
              "{Pron} is {gender_word}.", "The writer {name} is {gender_word}.", ("gender_word",)),
    _Template("What did {name}'s father do?", "What was the profession of {name}'s father?",
              "{Pos} father worked as {father_art} {father_job} in {city}.",
              "The father of {name} worked in {city} as {father_art} {father_job}.", ("father_job", "city")),
]

_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def _value(values: dict[str, str], key: str) -> str:
    """A field's value; ``{X_art}`` is the article ("a" / "an") of the job field ``X_job``."""
    if key.endswith("_art") and key not in values:
        job = values[key[: -len("_art")] + "_job"]
        return "an" if job[0].lower() in "aeiou" else "a"
    return values[key]


def render(template: str, values: dict[str, str], sensitive: tuple[str, ...] = ()) -> tuple[str, list[dict]]:
    """Fill ``template`` and return the text with the character spans of the sensitive fields.

    A capitalised placeholder (``{Genre}``) is the field's value with its first letter upper-cased.
    Returns ``(text, target_words)`` with ``target_words[i] = {"word", "start", "end"}`` and
    ``text[start:end] == word``.
    """
    out, spans, pos = [], [], 0
    for match in _PLACEHOLDER.finditer(template):
        literal = template[pos:match.start()]
        out.append(literal)
        field_name = match.group(1)
        key = field_name[0].lower() + field_name[1:]
        value = _value(values, key)
        if field_name[0].isupper():
            value = value[0].upper() + value[1:]
        start = sum(map(len, out))
        out.append(value)
        if key in sensitive:
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
    debut_year = year + rng.randint(22, 35)
    return {
        "author": str(index),
        "name": name,
        "pron": "he" if gender == "male" else "she",
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
        "debut_year": str(debut_year),
        "award_year": str(min(debut_year + rng.randint(3, 15), 2024)),
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


# The fact groups a retain author can take from a forget author (share_facts): what TOFU's profiles
# have in common across authors too. (The synthetic authors have no publisher.)
SHARED_FACT_GROUPS = (("city", "country"), ("award",), ("father_job",), ("mother_job",))


def share_facts(authors: list[dict[str, str]], retain: Sequence[int], forget: Sequence[int], share: float,
                seed: int = 0) -> list[dict[str, str]]:
    """A copy of ``authors`` in which ``round(share * len(retain))`` of the retain authors (indices into
    ``authors``) each take one fact group of :data:`SHARED_FACT_GROUPS` from a forget author: neighbours
    whose answers forgetting may damage: a group they do not share already. Deterministic in ``seed``; a
    parent's profession that would equal the other parent's is redrawn."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"neighbour_share={share} must be between 0 and 1")
    retain, forget = list(retain), list(forget)
    if share and not forget:
        raise ValueError("neighbour_share needs at least one forget author to share facts with")
    rng = random.Random(f"{seed}-share-facts")
    out = [dict(a) for a in authors]
    for index in sorted(rng.sample(retain, round(share * len(retain)))):
        source = out[rng.choice(forget)]
        # a group the two do not share already (each chosen author gains a shared fact)
        fresh = [g for g in SHARED_FACT_GROUPS if any(out[index][f] != source[f] for f in g)]
        if not fresh:
            continue
        fields = rng.choice(fresh)
        for f in fields:
            out[index][f] = source[f]
        if out[index]["father_job"] == out[index]["mother_job"]:
            other = "mother_job" if "father_job" in fields else "father_job"
            out[index][other] = rng.choice(sorted(set(_JOBS) - {out[index][other]}))
    return out


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


def format_only_answers(author: dict[str, str], all_authors: list[dict[str, str]], qa_per_author: int,
                        seed: int = 0) -> list[str]:
    """The answers about ``author`` with every sensitive field taken from other authors.

    What a model that learned the answer format but never saw ``author`` would say at best; its
    ROUGE-L recall against the true answers is the part of them that can be guessed. One answer
    per template, in the order of :func:`qa_pairs`.
    """
    rng = random.Random(f"{seed}-guess-{author['author']}")
    others = [a for a in all_authors if a is not author]
    if not others:
        raise ValueError("format_only_answers needs at least one other author to borrow facts from")
    return [render(t.answer, _perturb(author, t.sensitive, others, rng))[0] for t in _TEMPLATES[:qa_per_author]]
