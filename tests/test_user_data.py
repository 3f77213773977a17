"""A user's own data (issue 22, item 8): a directory is used whole, grouped by a field of its records
(``author``, or ``--group-by FIELD``); TOFU's blocks of 20 and a profile's author counts apply to TOFU
itself only; every run says in one line how it grouped; empty answers and a question asked twice with two
answers are refused by index. And the built-in data loads exactly as before (pinned ``records_info``)."""

from __future__ import annotations

import json
import shutil

import pytest

from palu_perta import cli
from palu_perta.config import get_profile
from palu_perta.data import (
    DataError,
    QA_FIELDS,
    is_tofu,
    load_benchmark,
    load_tofu,
    synthetic_benchmark,
    validate_records,
    write_tofu_dir,
)
from palu_perta.paths import default_tofu_dir
from palu_perta.training import records_info

# records_info of every split, measured before user directories were used whole (the loader of commit
# b807179): the cache keys and the committed study results rest on them.
PINNED = {
    "smoke": {
        "full": (36, "827bd3c972e0dee2"), "retain_train": (30, "d31f75833be36881"), "forget": (6, "59266b449a78b54e"),
        "retain": (24, "a51c324c6f5f4139"), "holdout": (6, "1a046c525e7748f0"),
        "real_authors": (8, "4caedea7323c6b9f"), "world_facts": (8, "1c46c5e081cc0810"),
        "neighbour": (3, "b05eb40c1f231749"),
    },
    "cpu": {
        "full": (200, "888378c7f939172e"), "retain_train": (180, "a4e27bc9ba910d45"),
        "forget": (20, "1bda8d40d3e4c2a0"), "retain": (40, "30ee1ce9881e9fdb"), "holdout": (20, "6c7b3f5d8d515e57"),
        "real_authors": (20, "51c787b47b0199d8"), "world_facts": (96, "e9b12a4bd3330c2b"),
        "neighbour": (30, "e659216a27196108"),
    },
    # the tofu grid's setting: cpu profile, data="tofu", 20 retain + 2 holdout authors, forget01
    "tofu": {
        "full": (440, "17ce57f8361a2573"), "retain_train": (400, "5411013f5e5205de"),
        "forget": (40, "e42b30691278a17e"), "retain": (400, "5411013f5e5205de"), "holdout": (40, "99c1c1307d2b0968"),
        "real_authors": (100, "5de14441b280d385"), "world_facts": (117, "dfe5fc1008f2a9c9"),
        "neighbour": (11, "84d9296869161ecf"),
    },
}


def _setting(name):
    if name == "tofu":
        return get_profile("cpu").replace(data="tofu", n_authors=20, n_holdout_authors=2, forget_split="forget01")
    return get_profile(name)


def _records_info(bench) -> dict[str, dict]:
    splits = {"full": bench.full, "retain_train": bench.retain, **bench.splits()}
    return {name: records_info(bench.source, records) for name, records in splits.items()}


@pytest.mark.parametrize("name", sorted(PINNED))
def test_built_in_data_loads_exactly_as_before(name, request):
    if name == "tofu":
        request.getfixturevalue("tofu_dir")  # skipped without the local copy
        assert default_tofu_dir() is not None
        source = str(default_tofu_dir())
    else:
        source = "synthetic"
    bench = load_benchmark(_setting(name))
    expected = {split: {"source": source, "n": n, "sha256": sha} for split, (n, sha) in PINNED[name].items()}
    assert _records_info(bench) == expected
    assert bench.info["grouping"].startswith("data: ")


def test_tofu_grid_says_how_it_grouped(tofu_dir):
    line = load_benchmark(_setting("tofu")).info["grouping"]
    assert "TOFU's blocks of 20 QA pairs" in line and "20 of the 198 retain authors of retain99 kept" in line, line
    assert "the next 2 as holdout" in line, line


# ---------------------------------------------------------------------------------------------
# a directory of one's own: 12 organisations x 15 QA pairs, an `org` field, JSON lines, unicode

ORGS = [f"Société {name}" for name in ("Ålborg", "Zürich", "Łódź", "東京", "São Paulo", "Kraków", "Reykjavík",
                                           "Москва", "Αθήνα", "Île-de-France", "Malmö", "Niš")]
N_FORGET = 2  # the last two organisations are forgotten


def _record(org: str, k: int) -> dict:
    return {"question": f"What does {org} report in note {k}?",
            "answer": f"{org} reports fact n°{k}: “{org[-4:]}” ✓.", "org": org}


def _evaluated(rec: dict) -> dict:
    return {**rec, "paraphrased_answer": "In other words: " + rec["answer"],
            "perturbed_answer": [rec["answer"].replace("fact", "rumour"), rec["answer"].replace("✓", "✗")]}


def _write(path, records):
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n", encoding="utf-8")


def _org_dir(root, field="org", holdout=False):
    """The organisations' records by hand, as TOFU-format files (forget10)."""
    root.mkdir(parents=True, exist_ok=True)
    groups = [[_record(org, k) for k in range(15)] for org in ORGS]
    if field != "org":
        groups = [[{field if key == "org" else key: v for key, v in r.items()} for r in g] for g in groups]
    retain, forget = groups[:-N_FORGET], groups[-N_FORGET:]
    flat = lambda gs: [r for g in gs for r in g]  # noqa: E731
    _write(root / "full.json", flat(groups))
    _write(root / "retain90.json", flat(retain))
    _write(root / "forget10.json", flat(forget))
    _write(root / "forget10_perturbed.json", [_evaluated(r) for r in flat(forget)])
    _write(root / "retain_perturbed.json", [_evaluated(r) for r in flat(retain[:3])])
    options = [{"question": f"Which city is {c} in?", "answer": f"{c} is in Europe.",
                "perturbed_answer": [f"{c} is in Asia.", f"{c} is in Africa.", f"{c} is on the Moon."]}
               for c in ("Zürich", "Łódź", "Malmö")]
    _write(root / "real_authors_perturbed.json", options)
    _write(root / "world_facts_perturbed.json", options)
    if holdout:
        _write(root / "holdout10.json", [_record("Société Ørsted", k) for k in range(15)])
    return root


def _lines(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_own_directory_grouped_by_org_is_used_whole(tmp_path):
    d = _org_dir(tmp_path / "orgs")
    assert not is_tofu(d)
    smoke = get_profile("smoke")  # 6 retain authors, 1 holdout: not applied to a user's directory
    bench = load_benchmark(smoke, str(d), group_by="org")
    assert len(bench.retain) == 10 * 15 and len(bench.forget) == N_FORGET * 15 and bench.holdout == []
    assert [r["question"] for r in bench.retain] == [r["question"] for r in _lines(d / "retain90.json")]
    assert bench.forget[0]["answer"] == _lines(d / "forget10_perturbed.json")[0]["answer"]  # unicode unchanged
    assert len(bench.retain_eval) == 3 * 15
    assert bench.info["n_retain_authors"] == 10 and bench.info["n_forget_authors"] == N_FORGET
    assert bench.info["grouped_by"] == "org"
    line = bench.info["grouping"]
    assert line == (f"data: {d}, forget10: 12 groups by 'org' (10 retain, 2 forget), used whole; no holdout10.json, "
                    "so the membership-inference metrics (mia_*, privleak) are unavailable"), line


def test_own_directory_without_a_grouping_field_names_the_flag(tmp_path):
    d = _org_dir(tmp_path / "orgs")
    with pytest.raises(DataError) as err:
        load_benchmark(get_profile("smoke"), str(d))
    message = str(err.value)
    assert "retain90[0] has no 'author' field" in message and "--group-by FIELD" in message, message
    assert "'org'" in message  # the fields it has
    with pytest.raises(DataError, match=r"--group-by team: retain90\[0\] has no 'team' field"):
        load_benchmark(get_profile("smoke"), str(d), group_by="team")


def test_own_directory_with_an_author_field_loads_whole(tmp_path):
    d = _org_dir(tmp_path / "authors", field="author")
    bench = load_benchmark(get_profile("smoke"), str(d))
    assert len(bench.retain) == 150 and len(bench.forget) == 30
    assert "12 groups by 'author' (10 retain, 2 forget), used whole" in bench.info["grouping"]
    # a record of a group missing the field is named by index
    records = _lines(d / "retain90.json")
    del records[17]["author"]
    _write(d / "retain90.json", records)
    with pytest.raises(DataError, match=r"retain90\[17\] has no 'author' field"):
        load_benchmark(get_profile("smoke"), str(d))


def test_a_holdout_file_is_the_holdout(tmp_path):
    d = _org_dir(tmp_path / "orgs", holdout=True)
    bench = load_benchmark(get_profile("cpu"), str(d), group_by="org")
    assert len(bench.holdout) == 15 and len(bench.retain) == 150
    assert bench.info["grouping"].endswith("used whole; holdout: 15 records (1 group) from holdout10.json")
    # a holdout question that is trained on is no non-member
    _write(d / "holdout10.json", _lines(d / "holdout10.json") + [_lines(d / "retain90.json")[3]])
    with pytest.raises(DataError, match=r"holdout10\[15\] and retain90\[3\] ask the same question"):
        load_benchmark(get_profile("cpu"), str(d), group_by="org")


def test_a_group_in_forget_and_retain_is_refused(tmp_path):
    d = _org_dir(tmp_path / "orgs")
    forget = _lines(d / "forget10_perturbed.json")
    forget[20]["org"] = ORGS[0]
    _write(d / "forget10_perturbed.json", forget)
    with pytest.raises(DataError, match=r"forget10\[20\] and retain90\[0\] are both in the group org="):
        load_benchmark(get_profile("smoke"), str(d), group_by="org")


def test_empty_answers_and_two_answers_are_named_by_index(tmp_path):
    with pytest.raises(DataError, match=r"retain90\[1\]\.answer is empty \(only whitespace\)"):
        validate_records([{"question": "q", "answer": "a"}, {"question": "q2", "answer": " \n"}], QA_FIELDS, "retain90")
    with pytest.raises(DataError, match=r"x\[0\]\.answer is empty: "):
        validate_records([{"question": "q", "answer": ""}], QA_FIELDS, "x")
    with pytest.raises(DataError, match=r"x\[0\] and x\[2\] ask the same question 'q' with two different answers"):
        validate_records([{"question": "q", "answer": "a"}, {"question": "r", "answer": "b"},
                          {"question": "q", "answer": "c"}], QA_FIELDS, "x")
    validate_records([{"question": "q", "answer": "a"}, {"question": "q", "answer": "a"}], QA_FIELDS, "x")  # same pair

    d = _org_dir(tmp_path / "orgs")
    retain = _lines(d / "retain90.json")
    retain[5]["answer"] = "   "
    _write(d / "retain90.json", retain)
    with pytest.raises(DataError, match=r"retain90\[5\]\.answer is empty"):
        load_benchmark(get_profile("smoke"), str(d), group_by="org")
    retain[5] = {**retain[5], "answer": "Another answer.", "question": retain[2]["question"]}
    _write(d / "retain90.json", retain)
    with pytest.raises(DataError, match=r"retain90\[2\] and retain90\[5\] ask the same question"):
        load_benchmark(get_profile("smoke"), str(d), group_by="org")
    # across forget and retain: both indices, and whether the answers differ
    d2 = _org_dir(tmp_path / "orgs2")
    retain = _lines(d2 / "retain90.json")
    forget = _lines(d2 / "forget10_perturbed.json")
    retain[7] = {**retain[7], "question": forget[3]["question"]}
    _write(d2 / "retain90.json", retain)
    with pytest.raises(DataError, match=r"forget10\[3\] and retain90\[7\] ask .* with two different answers"):
        load_benchmark(get_profile("smoke"), str(d2), group_by="org")


def test_written_directory_loads_back_whole(tmp_path):
    bench = synthetic_benchmark(8, 4, "forget10", n_holdout_authors=2, n_world_facts=8)
    d = write_tofu_dir(bench, tmp_path / "mine")
    assert (d / "holdout10.json").exists()
    loaded = load_benchmark(get_profile("smoke"), str(d))  # smoke's 6 retain authors / 1 holdout do not apply
    for split in ("retain", "forget", "holdout", "retain_eval"):
        assert ([r["question"] for r in getattr(loaded, split)]
                == [r["question"] for r in getattr(bench, split)]), split
    assert loaded.forget == bench.forget
    assert "8 groups by 'author' (7 retain, 1 forget), used whole; holdout: 8 records (2 groups)" \
        in loaded.info["grouping"]
    # the Python API still subsets when asked to, and says so
    subset = load_tofu(d, "forget10", n_retain_authors=3)
    assert len(subset.retain) == 12 and "the first 3 of the 7 retain groups kept" in subset.info["grouping"]


# ---------------------------------------------------------------------------------------------
# TOFU itself


def test_what_counts_as_tofu_itself(tofu_dir, tmp_path):
    assert is_tofu(None) and is_tofu("locuslab/TOFU") and is_tofu(tofu_dir)
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("full", "forget01_perturbed", "forget01_spans", "retain99", "retain_perturbed",
                 "real_authors_perturbed", "world_facts_perturbed"):
        shutil.copy(tofu_dir / f"{name}.json", copy / f"{name}.json")
    assert is_tofu(copy)  # TOFU's layout: full.json with 4,000 records and no author field
    bench = load_benchmark(_setting("tofu"), str(copy))
    assert len(bench.retain) == 400 and len(bench.holdout) == 40  # the profile's counts apply to TOFU
    # 4,000 records with an author field: a user's data
    _write(copy / "full.json", [{**r, "author": i // 20} for i, r in enumerate(_lines(tofu_dir / "full.json"))])
    assert not is_tofu(copy)
    # no full.json: a user's data, which needs a grouping field
    (copy / "full.json").unlink()
    assert not is_tofu(copy)
    with pytest.raises(DataError, match="--group-by FIELD .* TOFU's blocks of 20 QA pairs apply only to TOFU itself"):
        load_benchmark(_setting("tofu"), str(copy))


def test_too_few_tofu_authors_names_the_data_and_the_profile(tofu_dir):
    profile = get_profile("cpu").replace(data="tofu", n_authors=197, n_holdout_authors=5, forget_split="forget01")
    with pytest.raises(DataError) as err:
        load_benchmark(profile)
    message = str(err.value)
    assert message.startswith(f"TOFU ({tofu_dir}): retain99 holds 198 retain authors"), message
    assert "profile 'cpu': n_authors=197, n_holdout_authors=5" in message and "n_retain_authors" not in message


# ---------------------------------------------------------------------------------------------
# the command line says how it grouped, once


def test_the_command_line_prints_the_grouping_line(tmp_path, capsys, monkeypatch):
    d = _org_dir(tmp_path / "orgs")
    args = cli.build_parser().parse_args(["finetune", "--profile", "smoke", "--data", str(d), "--group-by", "org"])
    profile, bench = cli._profile_and_benchmark(args)
    out = capsys.readouterr().out
    assert out.splitlines() == [bench.info["grouping"]] and "12 groups by 'org'" in out
    assert len(bench.retain) == 150

    # evaluate loads its own benchmark: the line comes before the model is loaded
    import palu_perta.models

    def no_model(*args, **kwargs):
        raise ValueError("no model in this test")

    monkeypatch.setattr(palu_perta.models, "load_model", no_model)
    code = cli.main(["evaluate", "--model", "tiny", "--profile", "smoke", "--data", str(d), "--group-by", "org",
                     "--out", str(tmp_path / "out"), "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 2 and "no model in this test" in err
    assert [line for line in out.splitlines() if line.startswith("data: ")] == [bench.info["grouping"]]

    # without --group-by: one line naming the flag, exit code 2, before anything is trained
    monkeypatch.setenv("PALU_PERTA_ARTIFACTS", str(tmp_path / "artifacts"))
    assert cli.main(["finetune", "--profile", "smoke", "--data", str(d), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "--group-by" in err and "'author'" in err, err
    assert not (tmp_path / "artifacts").exists()
