"""Debiased multiple choice: a label preference is estimated from rotated options and taken out; a model without
one answers as before."""

import json
import math

from shoptune.evaluate.config import EvalConfig
from shoptune.evaluate.debias import debiased, label_prior, rotations
from shoptune.evaluate.runner import run_eval
from shoptune.schema import write_jsonl

QUESTIONS = [f"Which is best for {i}?\n0. plain {i}\n1. good {i}\n2. best {i}\n3. bad {i}\nAnswer: " for i in range(8)]
QUALITY = {"bad": 0.0, "plain": 1.0, "good": 2.0, "best": 3.0}


def scorer(label_bias: dict[str, float]):
    """A model that scores an option by what it says, plus a fixed preference for some labels."""

    def score(prompts):
        out = []
        for prompt in prompts:
            options = {line[0]: line[3:].split()[0] for line in prompt.split("\n") if line[:1].isdigit()}
            raw = {label: QUALITY[word] + label_bias.get(label, 0.0) for label, word in options.items()}
            norm = math.log(sum(math.exp(v) for v in raw.values()))
            out.append({label: value - norm for label, value in raw.items()})
        return out

    return score


def test_rotations_move_every_option_through_every_label():
    rotated = rotations(QUESTIONS[0])
    assert len(rotated) == 4 and rotated[0] == QUESTIONS[0]
    assert [r.split("\n")[1] for r in rotated] == ["0. plain 0", "0. good 0", "0. best 0", "0. bad 0"]
    assert rotations("Q?\n1. a\n2. b\nAnswer: ") is None  # not numbered from 0


def test_a_model_without_label_preference_answers_as_before():
    fair = scorer({})
    prior = label_prior(fair, QUESTIONS)
    assert all(abs(p - 0.25) < 1e-9 for p in prior[4].values())
    for scores in fair(QUESTIONS):
        assert debiased(scores, prior) == max(scores, key=scores.__getitem__) == "2"


def test_a_label_preference_is_taken_out():
    biased = scorer({"1": 4.0})  # answers "1" whatever the options say
    assert {max(s, key=s.__getitem__) for s in biased(QUESTIONS)} == {"1"}
    prior = label_prior(biased, QUESTIONS)
    assert max(prior[4], key=prior[4].__getitem__) == "1"
    assert {debiased(s, prior) for s in biased(QUESTIONS)} == {"2"}  # the best option, wherever it stands


def test_eval_run_debiases_with_the_real_backend(tiny_model, tmp_path):
    rows = [
        {"input_field": q, "output_field": 2, "task_name": "t", "task_type": "multiple-choice", "metric": "accuracy",
         "is_multiple_choice": True, "track": "x"}
        for q in QUESTIONS
    ]  # fmt: skip
    write_jsonl(tmp_path / "q.jsonl", rows)
    plain = run_eval(tmp_path / "q.jsonl", tmp_path / "plain", EvalConfig(model=str(tiny_model)), progress=False)
    fair = run_eval(tmp_path / "q.jsonl", tmp_path / "fair", EvalConfig(model=str(tiny_model), mc_debias=True), False)
    assert plain.computed == fair.computed == 8
    answers = [
        json.loads(line)["response"] for line in (tmp_path / "fair" / "predictions.jsonl").read_text().splitlines()
    ]
    assert len(answers) == 8 and set(answers) <= {"0", "1", "2", "3"}
    assert "mc_debias: true" in (tmp_path / "fair" / "config.yaml").read_text()
