"""Multiple choice that teaches the question, not the label: balanced answer positions in built mixtures, and a
no-model baseline chosen where a user could have chosen it."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import datasets
import pytest

from shoptune.data.build import build_mixture
from shoptune.data.options import balance, option_lines
from shoptune.data.spec import MixtureSpec
from shoptune.schema import write_jsonl
from tests.helpers.files import mc_question as question

ROOT = Path(__file__).resolve().parents[1]


def mc(task: str, options: list[str], answer: int) -> dict:
    listed = "\n".join(f"{i}. {text}" for i, text in enumerate(options))
    return {
        "task_name": task,
        "task_type": "multiple-choice",
        "input_field": f"Which?\n{listed}\nAnswer:",
        "output_field": answer,
    }


def texts(row: dict) -> list[str]:
    lines = row["input_field"].split("\n")
    return [lines[i].split(". ", 1)[1] for i in option_lines(row["input_field"])]


def test_reordering_keeps_each_answer_with_its_option_and_balances_positions():
    rows = [mc("four", [f"right {k}", f"a {k}", f"b {k}", f"c {k}"], 0) for k in range(41)]
    rows += [mc("two", [f"no {k}", f"yes {k}"], 1) for k in range(9)]
    rows += [{"task_name": "gen", "task_type": "generation", "input_field": "0. not an option", "output_field": "x"}]
    rows += [mc("odd", ["a", "b"], 0) | {"input_field": "Pick:\n1. a\n2. b\nAnswer:"}]  # not labelled from 0
    out = balance(rows, seed=0)
    assert balance(rows, seed=0) == out  # the same every time
    for before, after in zip(rows, out, strict=True):
        if before["task_type"] != "multiple-choice" or option_lines(before["input_field"]) is None:
            assert after == before
            continue
        assert sorted(texts(after)) == sorted(texts(before))  # the options' texts kept
        assert texts(after)[after["output_field"]] == texts(before)[before["output_field"]]  # the answer follows
    for task, count in (("four", 4), ("two", 2)):
        positions = Counter(r["output_field"] for r in out if r["task_name"] == task)
        assert set(positions) == set(range(count)) and max(positions.values()) - min(positions.values()) <= 1
    assert out[-1] == rows[-1]


def test_a_built_mixture_has_its_answers_balanced_per_subtask(tmp_path):
    spec = MixtureSpec(
        name="mc",
        raw_dir=ROOT / "data" / "raw",
        subtasks=["category_parent", "same_product", "evidence_relevance", "order_total"],
        examples_per_subtask=40,
        validation_per_subtask=4,
    )
    info = build_mixture(spec, tmp_path / "m")
    train = datasets.load_from_disk(str(tmp_path / "m"))["train"]
    by_task: dict[str, Counter] = {}
    for row in train:
        if row["task_type"] == "multiple-choice":
            by_task.setdefault(row["task_name"], Counter())[json.loads(row["output_field"])] += 1
    assert by_task
    for counts in by_task.values():
        assert max(counts.values()) - min(counts.values()) <= 1, counts
    assert info["multiple_choice_answers"] == {str(k): v for k, v in sorted(sum(by_task.values(), Counter()).items())}
    unbalanced = build_mixture(spec.model_copy(update={"balance_answers": False}), tmp_path / "raw-order")
    assert unbalanced["multiple_choice_answers"] != info["multiple_choice_answers"]
    # The validation split is the sources' own, balanced or not: settings are chosen on the questions as posed.
    validation = datasets.load_from_disk(str(tmp_path / "m"))["validation"]
    as_posed = datasets.load_from_disk(str(tmp_path / "raw-order"))["validation"]
    assert validation["input_field"] == as_posed["input_field"]
    assert validation["output_field"] == as_posed["output_field"]


def test_the_no_model_label_chosen_on_validation_is_computed_by_hand(tmp_path, run_cli):
    options = "\n0. a\n1. b\n2. c\nAnswer: "
    # Validation: the right answer is 2 three times, 0 once: a user would choose 2.
    write_jsonl(tmp_path / "validation.jsonl", [question(f"v{i}?{options}", a) for i, a in enumerate([2, 2, 0, 2])])
    # The benchmark: 1 is right twice, 2 once, 0 once: chosen on itself, 1 scores 2/4 (the upper bound).
    write_jsonl(tmp_path / "set.jsonl", [question(f"q{i}?{options}", a) for i, a in enumerate([1, 1, 2, 0])])
    code, _, err = run_cli("eval", "baseline", tmp_path / "set.jsonl", "--out", tmp_path / "upper", "--bootstrap", "0")
    assert code == 0 and "always option 1" in err and "upper bound" in err, err
    code, _, err = run_cli(
        "eval", "baseline", tmp_path / "set.jsonl", "--choose-on", tmp_path / "validation.jsonl",
        "--out", tmp_path / "chosen", "--bootstrap", "0",
    )  # fmt: skip
    assert code == 0 and "always option 2 (the best single label on the validation split)" in err, err
    upper = json.loads((tmp_path / "upper" / "scores.json").read_text())["overall"]
    chosen = json.loads((tmp_path / "chosen" / "scores.json").read_text())["overall"]
    # One track, one task: the overall score is the task's accuracy, averaged over the four tracks' one present.
    assert (upper, chosen) == pytest.approx((2 / 4, 1 / 4))


def test_label_shares_count_each_parsed_label_beside_the_truth():
    from shoptune.evaluate.scoring import label_shares
    from shoptune.schema import Example

    options = "\n0. a\n1. b\n2. c\nAnswer: "
    rows = [question(f"q{i}?{options}", a) for i, a in enumerate([0, 1, 1, 2])]
    rows.append(question("say", 0) | {"task_type": "generation", "metric": "rougel", "is_multiple_choice": False})
    rows[-1]["output_field"] = "x"
    examples = [Example.model_validate(row) for row in rows]
    # The truth over the four multiple-choice questions: 0 once, 1 twice, 2 once; generation is not counted.
    assert label_shares(examples) == {"0": 0.25, "1": 0.5, "2": 0.25}
    # A model that says 1 three times and something unreadable once: the skew and the unparsed share show.
    assert label_shares(examples, ["1", " 1. b", "1", "the answer", "x"]) == {"1": 0.75, "other": 0.25}


def test_a_reordering_that_would_spell_an_evaluation_question_is_not_made():
    from shoptune.data.build import balanced
    from shoptune.data.clean import Contamination
    from shoptune.schema import Example, from_row, to_table

    def words(i: int) -> str:  # no 13 words in a row shared between two questions
        return " ".join(f"w{i}x{j}" for j in range(14))

    rows = [question(f"{words(i)}?\n0. red {i}\n1. green {i}\n2. blue {i}\nAnswer: ", 0) for i in range(6)]
    plain = [from_row(row) for row in balanced(to_table([Example.model_validate(r) for r in rows]), 0).to_pylist()]
    moved = [i for i, ex in enumerate(plain) if ex.input_field != rows[i]["input_field"]]
    assert moved  # all answers at 0: balancing moves some
    # An evaluation set holding one moved question as balancing would write it: that one keeps its order.
    spoilt = moved[0]
    evaluation = [Example.model_validate(question(plain[spoilt].input_field, plain[spoilt].output_field))]
    table = to_table([Example.model_validate(r) for r in rows])
    kept = [from_row(row) for row in balanced(table, 0, Contamination(evaluation, 13)).to_pylist()]
    assert kept[spoilt].input_field == rows[spoilt]["input_field"] and kept[spoilt].output_field == 0
    assert [ex.input_field for i, ex in enumerate(kept) if i != spoilt] == [
        ex.input_field for i, ex in enumerate(plain) if i != spoilt
    ]
