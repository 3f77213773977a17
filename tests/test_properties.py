"""Property-based tests (hypothesis) over the span-to-token mapping and the record validator."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from palu_perta.data import DataError, validate_records
from palu_perta.tokenization import ORDINARY, PROMPT, SENSITIVE, encode_qa

answers = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=60)


@st.composite
def answer_with_spans(draw):
    answer = draw(answers)
    spans = []
    for _ in range(draw(st.integers(0, 3))):
        start = draw(st.integers(0, len(answer) - 1))
        end = draw(st.integers(start + 1, len(answer)))
        spans.append({"word": answer[start:end], "start": start, "end": end})
    return answer, spans


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=answer_with_spans())
def test_span_mapping_marks_exactly_the_overlapping_tokens(tokenizer, case):
    answer, spans = case
    enc = encode_qa(tokenizer, "Who?", answer, spans)
    n = enc["prompt_length"]
    classes = enc["token_classes"]
    assert set(classes[:n]) == {PROMPT} and classes[-1] == ORDINARY
    assert len(classes) == len(enc["input_ids"]) == len(enc["labels"])
    offsets = tokenizer(answer, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    for (start, end), cls in zip(offsets, classes[n:-1]):
        overlaps = end > start and any(start < s["end"] and end > s["start"] for s in spans)
        assert cls == (SENSITIVE if overlaps else ORDINARY)
    # every span with a character in some token's range has at least one sensitive token
    for s in spans:
        if any(start < s["end"] and end > s["start"] and end > start for start, end in offsets):
            assert SENSITIVE in classes


@settings(max_examples=80, deadline=None)
@given(case=answer_with_spans(), shift=st.integers(-3, 3))
def test_validator_accepts_exact_spans_and_rejects_shifted_ones(case, shift):
    answer, spans = case
    record = {"question": "q", "answer": answer, "target_words": spans}
    if not answer.strip():  # an empty answer is refused, by index (issue 22)
        with pytest.raises(DataError, match=r"prop\[0\]\.answer is empty"):
            validate_records([record], ("question", "answer"), "prop")
        return
    validate_records([record], ("question", "answer"), "prop")
    if spans:
        bad = dict(spans[0], start=spans[0]["start"] + shift, end=spans[0]["end"] + shift)
        moved = answer[bad["start"]:bad["end"]] if 0 <= bad["start"] < bad["end"] <= len(answer) else None
        if moved != bad["word"]:
            with pytest.raises(DataError):
                validate_records([{**record, "target_words": [bad]}], ("question", "answer"), "prop")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cases=st.lists(answer_with_spans().filter(lambda case: case[0].strip()), min_size=4, max_size=4))
@example(cases=[("line\u2028separator", [{"word": "separator", "start": 5, "end": 14}]), ("a\x85b\x1cc", []),
                ("\u00e9t\u00e9 \U0001f600", [{"word": "\U0001f600", "start": 4, "end": 5}]), ("x", [])])
def test_tofu_directory_round_trips_arbitrary_unicode_answers_and_spans(tmp_path_factory, cases):
    """Any answers and exact spans, written as a TOFU-format directory, load back unchanged."""
    from palu_perta.data import load_tofu, synthetic_benchmark, write_tofu_dir

    bench = synthetic_benchmark(6, 4, "forget10", 1)
    for record, (answer, spans) in zip(bench.forget, cases):
        record["answer"], record["target_words"] = answer, spans
    directory = write_tofu_dir(bench, tmp_path_factory.mktemp("tofu"))
    loaded = load_tofu(directory, "forget10", n_holdout_authors=1)
    assert [(r["answer"], r.get("target_words") or []) for r in loaded.forget] == [(a, s) for a, s in cases]
