"""Aggregation: task mean (micro-F1 for NER), track = macro mean of tasks, overall = mean of tracks."""

import json

import pytest

from shoptune.evaluate.scoring import aggregate, score_questions
from shoptune.schema import parse_example
from tests.helpers.files import write_lines


def ex(task, track, task_type="multiple-choice", metric="accuracy", output=1):
    return parse_example(
        {
            "input_field": f"q {task}",
            "output_field": output,
            "task_name": task,
            "track": track,
            "task_type": task_type,
            "metric": metric,
            "is_multiple_choice": task_type == "multiple-choice",
        }
    )


def test_tracks_are_macro_means_and_overall_the_mean_of_tracks():
    examples = [ex("a", "T1"), ex("a", "T1"), ex("a", "T1"), ex("a", "T1"), ex("b", "T1"), ex("c", "T2")]
    responses = ["1", "1", "1", "0", "0", "1"]  # task a 0.75, task b 0, task c 1
    result = aggregate(score_questions(examples, responses), n_bootstrap=0)
    assert result.tasks["a"].score == pytest.approx(0.75)
    assert result.tracks == {"T1": pytest.approx(0.375), "T2": pytest.approx(1.0)}
    # Not the mean over questions (4/6) nor over tasks (1.75/3): the mean of the two track scores.
    assert result.overall == pytest.approx(0.6875)


def test_ner_task_is_micro_f1_over_summed_counts():
    ner = dict(task_type="named_entity_recognition", metric="micro f1")
    examples = [ex("n", "T", output=["nike", "shoes"], **ner), ex("n", "T", output=["adidas"], **ner)]
    responses = ["Nike, socks, hats", "adidas"]
    # Summed: tp 2, fp 2, fn 1 -> P 0.5, R 2/3 -> F1 4/7; the mean of per-question F1s would be 0.7.
    result = aggregate(score_questions(examples, responses), n_bootstrap=0)
    assert result.tasks["n"].score == pytest.approx(4 / 7)


def test_mixed_generation_metrics_in_one_task():
    examples = [
        ex("g", "T", "generation", "bleu", "a red wooden chair"),
        ex("g", "T", "generation", "jp-bleu", "東京の天気は晴れです"),
    ]
    result = aggregate(score_questions(examples, ["a red wooden chair", "東京の天気は晴れです"]), n_bootstrap=0)
    assert result.tasks["g"].metric == "bleu+jp-bleu"
    assert result.tasks["g"].score == pytest.approx(1.0)


def test_bootstrap_interval_is_seeded_and_brackets_the_estimate():
    examples = [ex(f"t{i % 3}", f"T{i % 3 % 2}") for i in range(60)]
    responses = [str(i % 7 % 2) for i in range(60)]
    scores = score_questions(examples, responses)
    first, again = aggregate(scores, seed=7), aggregate(scores, seed=7)
    assert first.ci95 == again.ci95
    low, high = first.ci95.overall
    assert low < first.overall < high
    assert aggregate(scores, seed=8).ci95 != first.ci95


def test_missing_predictions_score_as_empty_and_are_counted(dev_set, tmp_path, run_cli):
    preds = write_lines(tmp_path / "p.jsonl", [{"index": 1, "response": "A watch band is a strap."}])
    code, out, err = run_cli("eval", "score", dev_set, preds, "--out", tmp_path / "s", "--bootstrap", "0")
    assert code == 0
    scores = json.loads((tmp_path / "s" / "scores.json").read_text())
    assert scores["missing"] == 95
    assert len(scores["tracks"]) == 4 and "ci95" not in scores
    assert "95 question(s) had no prediction" in err
    assert "overall" in out
