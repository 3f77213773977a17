"""The paper profile evaluates as open-unlearning's TOFU evaluation (issue 23, item 3): open-unlearning's
prompt format for Llama-3.x Instruct (system prompt and date in the chat template, at training and at
evaluation), greedy answers of up to 200 new tokens, TOFU's holdoutXX for the membership attacks, and a
one-line reason wherever the MIA metrics cannot be computed. Nothing here reads the hub: the Llama
tokenizer is stood in for by SmolLM2's with a Llama-3-style template, the hub's datasets by a stub."""

from __future__ import annotations

import copy
import json

import pytest

from palu_perta import cli
from palu_perta.config import get_profile
from palu_perta.data import load_benchmark, load_tofu, write_tofu_dir
from palu_perta.evaluation import MIA_KEYS, evaluate, generate_token_ids, summarise, summary_lines
from palu_perta.models import load_model, load_tokenizer, save_model
from palu_perta.results import to_markdown
from palu_perta.tokenization import (OPEN_UNLEARNING_PROMPTS, PromptFormat, encode_qa, encode_records, prompt_format,
                                     prompt_format_for, prompt_text, set_prompt_format)

LLAMA = "meta-llama/Llama-3.2-1B-Instruct"
# The shape of Llama-3.2-Instruct's chat template (system header with the dates, then the turns, content
# trimmed), written for the test: SmolLM2's tokenizer reads the header tags as plain text.
TEMPLATE = (
    "{{- bos_token }}"
    "{%- if not date_string is defined %}{%- set date_string = '26 Jul 2024' %}{%- endif %}"
    "{%- if messages[0]['role'] == 'system' %}{%- set system_message = messages[0]['content'] | trim %}"
    "{%- set messages = messages[1:] %}{%- else %}{%- set system_message = '' %}{%- endif %}"
    "{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}"
    "{{- 'Cutting Knowledge Date: December 2023\\nToday Date: ' + date_string + '\\n\\n' }}"
    "{{- system_message + '<|eot_id|>' }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)
QUESTION = "Who wrote 'The Lantern of Varn'?"
ANSWER = "It was written by Ilsa Marrow."


@pytest.fixture()
def llama_like(tokenizer):
    """SmolLM2's tokenizer (a copy) with the Llama-3-style template and no prompt format yet."""
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = TEMPLATE
    return tok


def expected_prompt(bos: str, system: str, date: str) -> str:
    return (f"{bos}<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n"
            f"Today Date: {date}\n\n{system}<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n{QUESTION}"
            "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")


def test_the_paper_profiles_family_has_open_unlearnings_format():
    fmt = prompt_format_for(LLAMA)
    assert (fmt.system_prompt, fmt.date_string) == ("You are a helpful assistant.", "10 Apr 2025")
    assert fmt.source == "open-unlearning configs/model/Llama-3.2-1B-Instruct.yaml"
    assert get_profile("paper").prompt_format == fmt
    assert prompt_format_for("open-unlearning/tofu_Llama-3.2-1B-Instruct_full") == fmt  # their checkpoints
    assert set(OPEN_UNLEARNING_PROMPTS) == {LLAMA, "meta-llama/Llama-3.2-3B-Instruct", "meta-llama/Llama-3.1-8B-Instruct"}
    for name in ("tiny", "smollm2", "cpu"):
        assert prompt_format_for(name) is None
    assert get_profile("smoke").prompt_format is None and get_profile("cpu").prompt_format is None
    # the generation settings of open-unlearning configs/generation/default.yaml
    assert get_profile("paper").max_new_tokens == 200


def test_prompt_carries_system_prompt_and_date(llama_like):
    bos = llama_like.bos_token or ""
    plain = prompt_text(llama_like, QUESTION)
    assert plain == expected_prompt(bos, "", "26 Jul 2024")  # without a format: the template's own defaults
    set_prompt_format(llama_like, prompt_format_for(LLAMA))
    prompt = prompt_text(llama_like, QUESTION)
    assert prompt == expected_prompt(bos, "You are a helpful assistant.", "10 Apr 2025")
    # open-unlearning renders the whole conversation; its prompt is that text up to the answer
    whole = llama_like.apply_chat_template(
        [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": QUESTION},
         {"role": "assistant", "content": ANSWER}], tokenize=False, date_string="10 Apr 2025")
    assert whole == prompt + ANSWER + "<|eot_id|>"

    example = encode_qa(llama_like, QUESTION, ANSWER)
    prompt_ids = llama_like(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = llama_like(ANSWER, add_special_tokens=False)["input_ids"] + [llama_like.eos_token_id]
    assert example["input_ids"] == prompt_ids + answer_ids
    assert example["labels"] == [-100] * len(prompt_ids) + answer_ids
    # fine-tuning and unlearning encode records through the same prompt
    trained = encode_records(llama_like, [{"question": QUESTION, "answer": ANSWER}])[0]
    assert trained["input_ids"] == example["input_ids"]


def test_format_is_kept_with_the_saved_model(tiny, llama_like, tmp_path):
    model, _ = tiny
    set_prompt_format(llama_like, prompt_format_for(LLAMA))
    save_model(model, llama_like, tmp_path / "m")
    _, loaded = load_model(str(tmp_path / "m"), device="cpu")
    assert prompt_format(loaded) == prompt_format_for(LLAMA)
    assert prompt_text(loaded, QUESTION) == prompt_text(llama_like, QUESTION)
    set_prompt_format(loaded, None)
    assert prompt_format(loaded) is None


def test_loading_the_family_by_hub_id_sets_the_format(llama_like, monkeypatch):
    import palu_perta.models as models

    monkeypatch.setattr(models.AutoTokenizer, "from_pretrained", lambda name, **kw: copy.deepcopy(llama_like))
    assert prompt_format(load_tokenizer(LLAMA)) == prompt_format_for(LLAMA)
    assert prompt_format(load_tokenizer("someone/other-model")) is None


def test_a_format_needs_a_chat_template(tokenizer):
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = None
    with pytest.raises(ValueError, match="chat template"):
        set_prompt_format(tok, PromptFormat("You are a helpful assistant.", source="x"))


def test_generation_is_greedy_with_the_profiles_budget_and_prompt(tiny, llama_like, monkeypatch):
    model, _ = tiny
    set_prompt_format(llama_like, prompt_format_for(LLAMA))
    seen = {}
    original = model.generate

    def spy(**kwargs):
        seen.update(kwargs)
        return original(**kwargs)

    monkeypatch.setattr(model, "generate", spy)
    generate_token_ids(model, llama_like, [QUESTION], max_new_tokens=get_profile("paper").max_new_tokens,
                       progress=False)
    config = seen["generation_config"]
    assert (config.max_new_tokens, config.do_sample, config.num_beams) == (200, False, 1)
    ids = llama_like(prompt_text(llama_like, QUESTION), add_special_tokens=False)["input_ids"]
    assert seen["input_ids"][0].tolist() == ids


def _no_holdout(profile_name: str = "smoke"):
    return load_benchmark(get_profile(profile_name).replace(n_holdout_authors=0))


def test_mia_without_holdout_is_unavailable_with_a_reason(tiny, tmp_path):
    model, tokenizer = tiny
    bench = _no_holdout()
    why = "no holdout (non-member) records: profile 'smoke' asks for n_holdout_authors=0"
    assert bench.info["mia_unavailable"] == why
    result = evaluate(model, tokenizer, bench, max_new_tokens=2, progress=False, out_dir=tmp_path)
    assert all(result[k] is None for k in (*MIA_KEYS, "privleak"))
    assert result["unavailable"] == {**dict.fromkeys(MIA_KEYS, why), "privleak": f"needs mia_min_k's AUC; {why}"}
    assert json.loads((tmp_path / "summary.json").read_text())["unavailable"] == result["unavailable"]
    per_item = json.loads((tmp_path / "per_item.json").read_text())
    assert summarise(per_item)["unavailable"] == result["unavailable"]  # the reason travels with the file
    lines = summary_lines(result)
    assert any(line.startswith("mia_min_k ") and line.endswith(f"unavailable: {why}") for line in lines)
    assert not any("mia_min_k" in line and line.endswith("None") for line in lines)
    # with holdout records there is nothing to explain
    per_item["splits"]["holdout"] = [{"prob": 0.5, "mia": dict.fromkeys(("loss", "zlib", "min_k", "min_k_plus_plus"),
                                                                    1.0 + i)} for i in range(3)]
    summary = summarise(per_item)
    assert "unavailable" not in summary and summary["mia_min_k"] is not None


def test_plain_splits_without_holdout_say_so(tiny):
    model, tokenizer = tiny
    splits = _no_holdout().splits()
    result = evaluate(model, tokenizer, splits, max_new_tokens=1, progress=False)
    assert result["unavailable"]["mia_loss"].startswith("no holdout (non-member) records were given")


def test_the_evaluate_command_prints_the_reason(tmp_path, capsys):
    data = write_tofu_dir(_no_holdout(), tmp_path / "data")  # a user's directory with no holdout10.json
    out = tmp_path / "out"
    assert cli.main(["evaluate", "--profile", "smoke", "--model", "tiny", "--data", str(data), "--out", str(out),
                     "--max-new-tokens", "1", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "mia_min_k" in printed
    assert "unavailable: no holdout (non-member) records: no holdout10.json" in printed
    assert "privleak" in printed and "needs mia_min_k's AUC" in printed


def test_results_table_says_why_a_column_is_empty():
    import pandas as pd

    table = pd.DataFrame([{"model": "target", "PrivLeak": None}]).set_index("model")
    table.attrs["unavailable"] = {"PrivLeak": "needs mia_min_k's AUC; no holdout"}
    assert to_markdown(table).endswith("\nPrivLeak unavailable: needs mia_min_k's AUC; no holdout")


class _Hub:
    """Stands in for datasets.load_dataset: records the calls, and fails or returns ``records``."""

    def __init__(self, records=None, error=None):
        self.records, self.error, self.calls = records, error, []

    def __call__(self, path, name, split):
        self.calls.append((path, name, split))
        if self.error:
            raise self.error
        return self.records


def test_paper_reads_tofus_holdout_from_the_hub_and_says_why_not(tofu_dir, monkeypatch):
    import datasets

    paper = get_profile("paper", forget_split="forget01").replace(n_authors=3)
    offline = _Hub(error=ConnectionError("Couldn't reach 'locuslab/TOFU' on the Hub (LocalEntryNotFoundError)"))
    monkeypatch.setattr(datasets, "load_dataset", offline)
    bench = load_benchmark(paper, str(tofu_dir))
    assert offline.calls == [("locuslab/TOFU", "holdout01", "train")]
    assert bench.holdout == []
    assert bench.info["mia_unavailable"] == (
        "no holdout (non-member) records: no holdout01.json here and the hub's locuslab/TOFU holdout01 could not be "
        "read (ConnectionError: Couldn't reach 'locuslab/TOFU' on the Hub (LocalEntryNotFoundError))")
    assert "could not be read" in bench.info["grouping"] and "are unavailable" in bench.info["grouping"]

    held = [{"question": f"Who is holdout author {i}?", "answer": f"Holdout author {i}."} for i in range(40)]
    online = _Hub(records=held)
    monkeypatch.setattr(datasets, "load_dataset", online)
    bench = load_benchmark(paper, str(tofu_dir))
    assert bench.holdout == held and "mia_unavailable" not in bench.info
    assert "from holdout01 of locuslab/TOFU on the hub" in bench.info["grouping"]

    # holdout authors taken from TOFU's retain split (the tofu grid's setting) never ask the hub
    never = _Hub(error=AssertionError("the hub was asked"))
    monkeypatch.setattr(datasets, "load_dataset", never)
    assert len(load_benchmark(paper.replace(n_holdout_authors=1), str(tofu_dir)).holdout) == 20
    assert load_tofu(tofu_dir, "forget01", 3, 0).holdout == [] and never.calls == []


def test_the_prompt_format_enters_the_paper_keys_only():
    from palu_perta.study import cell_config, get_grid
    from palu_perta.training import finetune_config

    paper, smoke = get_profile("paper"), get_profile("smoke")
    assert finetune_config(paper, "target", {}, paper.model, paper.finetune)["prompt_format"] == {
        "system_prompt": "You are a helpful assistant.", "date_string": "10 Apr 2025"}
    assert "prompt_format" not in finetune_config(smoke, "target", {}, smoke.model, smoke.finetune)
    grid = get_grid("smoke")
    assert "prompt_format" not in cell_config(grid, next(iter(grid.cells())), data_key={})["profile"]
