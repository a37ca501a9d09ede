"""The no-model baseline: what each task type is answered with, and its scores, checked by hand."""

from __future__ import annotations

import json
import math

import pytest

from shoptune.evaluate.baselines import constant_answers, input_text
from shoptune.schema import read_examples, write_jsonl

OPTIONS = "\n0. red\n1. blue\n2. green\n3. black\nAnswer: "


def question(task: str, task_type: str, metric: str, prompt: str, truth: object) -> dict:
    return {
        "input_field": prompt,
        "output_field": truth,
        "task_name": task,
        "task_type": task_type,
        "metric": metric,
        "is_multiple_choice": task_type == "multiple-choice",
        "track": "amazon-kdd-cup-24-understanding-shopping-concepts",
    }


@pytest.fixture
def small_set(tmp_path):
    rows = [
        question("mc", "multiple-choice", "accuracy", "Colour of the sky?" + OPTIONS, 1),
        question("mc", "multiple-choice", "accuracy", "Colour of a jeans?" + OPTIONS, 1),
        question("mc", "multiple-choice", "accuracy", "Colour of grass?" + OPTIONS, 2),
        question("ret", "retrieval", "hit rate@3", "Pick:\n1. a\n2. b\n3. c\n4. d\nOutput:", [2, 4]),
        question("rank", "ranking", "ndcg", "Rank:\n1. a\n2. b\n3. c\n4. d\n5. e\nOutput:", [0, 1, 0, 0, 0.5]),
        question("ner", "named_entity_recognition", "micro f1", "Brand in: Acme kettle\nOutput:", ["Acme"]),
        question("gen", "generation", "rougel", "Translate.\nInput: blue sofa\nOutput:", "blue sofa"),
    ]
    write_jsonl(tmp_path / "set.jsonl", rows)
    return tmp_path / "set.jsonl"


def test_each_task_type_gets_its_constant_answer(small_set):
    responses, said = constant_answers(read_examples(small_set))
    assert responses == ["1", "1", "1", "1,2,3", "1,2,3,4,5", "", "blue sofa"]
    assert said["multiple-choice"].startswith("always option 1")
    assert input_text("Explain this category.\nToggle Switch\nOutput:") == "Toggle Switch"


def test_the_baselines_scores_are_the_ones_computed_by_hand(small_set, tmp_path, run_cli):
    code, _, err = run_cli("eval", "baseline", small_set, "--out", tmp_path / "b", "--bootstrap", "0")
    assert code == 0, err
    tasks = {name: t["score"] for name, t in json.loads((tmp_path / "b" / "scores.json").read_text())["tasks"].items()}
    gain = lambda rel: 2**rel - 1  # noqa: E731
    dcg = gain(1) / math.log2(3) + gain(0.5) / math.log2(6)  # listed order: relevance 1 second, 0.5 fifth
    ideal = gain(1) / math.log2(2) + gain(0.5) / math.log2(3)
    # mc: "1" right twice of three; ret: 2 of the right {2, 4} among 1, 2, 3; ner: no entity found.
    assert tasks == pytest.approx({"mc": 2 / 3, "ret": 1 / 2, "rank": dcg / ideal, "ner": 0.0, "gen": 1.0})
    assert json.loads((tmp_path / "b" / "baseline.json").read_text())["answered"]["ranking"] == "the listed order"
    assert len((tmp_path / "b" / "predictions.jsonl").read_text().splitlines()) == 7
