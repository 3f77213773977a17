"""Question replay: train on the base model's own answers to general questions beside the authors.

Fine-tuning a 135M model until it recites 20 fictitious authors also teaches it to answer every
question in the authors' style, and it loses some world knowledge on the way (notebook 02). Replay
keeps a second task in the training set: the starting model's greedy answers to everyday
questions, so the fine-tune has a reason to leave general question answering as it was::

    records = [*bench.full, *replay_records(model, tokenizer, 100)]

``FinetuneConfig.replay = n`` does this inside :func:`palu_perta.training.finetune`. The questions
are of the who / what / how / why forms the evaluation asks, on topics kept apart from the
``world_facts`` and ``real_authors`` splits (no capitals, planets, animals, units, inventors or
books), so replay does not train on the test.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

TOOLS = ["a thermometer", "a compass", "a stapler", "a ladder", "a microscope", "a kettle", "an umbrella", "a hammer",
         "a calculator", "a paintbrush", "a shovel", "a magnifying glass", "a whistle", "a tape measure", "a blender",
         "a screwdriver", "a lantern", "a sewing machine", "a rolling pin", "a backpack", "a telescope", "a broom",
         "a pair of scissors", "a flashlight", "a toaster"]
JOBS = ["a carpenter", "a librarian", "a plumber", "a baker", "a pilot", "a firefighter", "a teacher", "an electrician",
        "a gardener", "a nurse", "a journalist", "a chef", "a mechanic", "a tailor", "a lifeguard", "a photographer",
        "an accountant", "a translator", "a dentist", "a farmer", "a museum guide", "a bus driver", "a cashier",
        "a florist", "a referee"]
HOW = ["boil an egg", "tie a shoelace", "make a cup of tea", "plant a seed", "wrap a present", "fold a paper plane",
       "clean a window", "make a sandwich", "wash your hands properly", "set a table", "iron a shirt", "brush your teeth",
       "pack a lunch box", "water a cactus", "make a paper boat", "sharpen a pencil", "start a campfire safely",
       "cool down a hot drink", "remove a stain from a shirt", "make pancakes", "learn to juggle", "write a thank-you note",
       "keep bread fresh", "warm up before exercise", "choose a ripe melon"]
WHY = ["Why do people wear sunglasses?", "Why does bread go stale?", "Why does ice float on water?", "Why do people yawn?",
       "Why do leaves change colour in autumn?", "Why do people shake hands?", "Why does metal feel cold to the touch?",
       "Why do onions make people cry?", "Why do dogs wag their tails?", "Why do people use umbrellas?",
       "Why does milk go sour?", "Why does the wind blow?", "Why do people get hiccups?", "Why does soap remove dirt?",
       "Why do people celebrate birthdays?", "Why do windows fog up in winter?", "Why do cats purr?",
       "Why do people wear seatbelts?", "Why does popcorn pop?", "Why do people plant trees?", "Why does hot air rise?",
       "Why do people stretch in the morning?", "Why does rubber bounce?", "Why do bicycles have gears?",
       "Why do people keep diaries?"]

# 100 questions; ``replay = n`` asks the first n.
GENERAL_QUESTIONS: tuple[str, ...] = tuple(
    [f"What is {t} used for?" for t in TOOLS] + [f"What does {j} do?" for j in JOBS]
    + [f"How do you {h}?" for h in HOW] + WHY
)

# Replay answers are generated up to this many tokens, then cut after their last full sentence.
REPLAY_MAX_NEW_TOKENS = 64


def whole_sentences(text: str) -> str:
    """``text`` up to and including its last sentence end (``.``, ``!`` or ``?`` at the end or before a
    space); ``""`` when it has none, so a generation cut mid-sentence is not trained on as it is."""
    text = text.strip()
    if text.endswith((".", "!", "?")):
        return text
    end = max(text.rfind(". "), text.rfind("! "), text.rfind("? "))
    return text[:end + 1].strip() if end > 0 else ""


def replay_records(model: Any, tokenizer: Any, n: int, *, questions: Sequence[str] = GENERAL_QUESTIONS,
                   batch_size: int = 32) -> list[dict]:
    """The model's greedy answers to the first ``n`` of ``questions`` as QA records
    (``{"question", "answer"}``), each cut after its last full sentence; questions whose answer has no
    full sentence are left out, so the list may be shorter than ``n``."""
    from .evaluation import generate_answers

    if not 0 < n <= len(questions):
        raise ValueError(f"replay={n} is out of range; there are {len(questions)} replay questions (use 1..{len(questions)}, "
                         "or 0 for no replay)")
    asked = list(questions[:n])
    answers = generate_answers(model, tokenizer, asked, max_new_tokens=REPLAY_MAX_NEW_TOKENS, batch_size=batch_size,
                               progress=False)
    records = [{"question": q, "answer": whole_sentences(a)} for q, a in zip(asked, answers)]
    return [r for r in records if r["answer"]]
