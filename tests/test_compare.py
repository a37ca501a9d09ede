"""`eval compare`: two systems' answers to the same questions, paired; what a user runs to see whether a new
adapter beats an old one, and whether its multiple-choice answers still lean on one label."""

from __future__ import annotations

import json

import pytest

from shoptune.schema import write_jsonl
from tests.helpers.files import mc_question


def question(i: int, answer: int) -> dict:
    return mc_question(f"q{i}?\n0. a\n1. b\n2. c\nAnswer: ", answer)


def test_compare_gives_the_paired_difference_and_each_systems_labels(tmp_path, run_cli):
    truth = [0, 1, 2, 0]
    write_jsonl(tmp_path / "set.jsonl", [question(i, a) for i, a in enumerate(truth)])
    # The first system says 1 to everything (right once); the second is right three times; it has no answer to the
    # last question, which counts as an empty response (wrong) and is said.
    write_jsonl(tmp_path / "first.jsonl", [{"index": i, "response": "1"} for i in range(4)])
    write_jsonl(tmp_path / "second.jsonl", [{"index": i, "response": r} for i, r in enumerate(["0", "1", "2"])])
    code, out, err = run_cli(
        "eval", "compare", tmp_path / "set.jsonl", tmp_path / "first.jsonl", tmp_path / "second.jsonl",
        "--json", tmp_path / "compare.json",
    )  # fmt: skip
    assert code == 0, err
    assert "no answer to 1 question" in out + err
    found = json.loads((tmp_path / "compare.json").read_text())
    overall = found["levels"]["overall"]
    # One track present: overall is that track's accuracy. 1/4 against 3/4.
    assert (overall["first"], overall["second"], overall["difference"]) == pytest.approx((0.25, 0.75, 0.5))
    low, high = overall["ci"]
    assert low <= 0.5 <= high and high <= 1.0
    assert found["mc_labels"] == {
        "truth": {"0": 0.5, "1": 0.25, "2": 0.25},
        "first": {"1": 1.0},
        "second": {"0": 0.25, "1": 0.25, "2": 0.25, "other": 0.25},
    }
    assert found["missing"] == {"first": 0, "second": 1}


def test_compare_of_a_file_that_is_not_predictions_is_one_line(tmp_path, run_cli):
    write_jsonl(tmp_path / "set.jsonl", [question(0, 0)])
    (tmp_path / "bad.jsonl").write_text('{"index": 0}\n')
    code, _, err = run_cli("eval", "compare", tmp_path / "set.jsonl", tmp_path / "bad.jsonl", tmp_path / "bad.jsonl")
    assert code == 2 and "bad.jsonl" in err and "Traceback" not in err, err
