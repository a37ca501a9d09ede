"""Constrained answers: whatever a model's weights, every structured answer parses in full."""

import random

import pytest

from shoptune.evaluate.backends import HFBackend
from shoptune.evaluate.config import EvalConfig
from shoptune.evaluate.constraints import Numbers, Spans, ended, entity_source, numbers_for, well_formed
from shoptune.evaluate.parsers import parse_response
from shoptune.schema import TaskType, read_examples
from shoptune.tasks.render import option_labels
from tests.helpers.tiny_model import DEV_SET, build_tiny_model

DEV = read_examples(DEV_SET)


def test_a_numeric_answer_is_checked_prefix_by_prefix():
    three_of_ten = Numbers(frozenset(range(1, 11)), 3)
    assert three_of_ten.state("") == (True, False) and three_of_ten.state(" 3") == (True, False)
    assert three_of_ten.state("1,2,3") == (True, True) and three_of_ten.state("1, 2, 10") == (True, True)
    assert three_of_ten.state("1,1") == (True, False)  # the start of 1,10
    for bad in ("1,2,3,", "11", "0", "01", "1,1,", "2,2,3", "1 ", "a", "  ", "  1"):
        assert not three_of_ten.state(bad)[0], bad
    ranking = numbers_for(TaskType.RANKING, "Query: x\n1. a\n2. b\n3. c\n4. d\n5. e\nOutput:")
    assert ranking == Numbers(frozenset({1, 2, 3, 4, 5}), 5)
    choice = numbers_for(TaskType.MULTIPLE_CHOICE, "Q\n0. a\n1. b\n2. c\nAnswer: ")
    assert choice.allowed == {0, 1, 2} and choice.state("0") == (True, True) and choice.state("2") == (True, True)
    assert not choice.state("00")[0] and not choice.state("3")[0] and not choice.state("0,")[0]
    # ShopBench also lists candidates without a space ("1.stability"); a decimal is no candidate.
    aspects = numbers_for(TaskType.RETRIEVAL, "Aspect List:\n1.stability\n2.fit\n3.value\n4.lid\n5.5 kg bag\nOutput:")
    assert aspects == Numbers(frozenset({1, 2, 3, 4}), 3)


def test_an_entity_answer_is_checked_prefix_by_prefix_against_the_question_s_input():
    prompt = "You are a helpful online shop assistant.\nQuery: chocolate buttons cadbury xmas\nOutput: "
    assert entity_source(prompt) == "chocolate buttons cadbury xmas"
    held_out = "Input: master caster 00972 doorstop\nWhich brand does this product title mention?\nOutput:"
    assert entity_source(held_out) == "master caster 00972 doorstop"
    rule = Spans(entity_source(prompt))
    assert rule.state("") == (True, False) and rule.state(" cad") == (True, False)
    assert rule.state("cadbury") == (True, True) and rule.state("cadbury, xmas") == (True, True)
    assert rule.state("chocolate buttons,") == (True, False) and rule.state("cadbury, ") == (True, False)
    assert not rule.state("cad")[1] and not rule.state("cadbury x")[1]  # whole words only
    bad_starts = ("You are", "cadbury\n", "cadbury xmas\n\nOutput: cad", "xmas cadbury", "cadbury,, xmas", "  cad")
    for bad in (*bad_starts, "adbury"):
        assert not rule.state(bad)[0], bad
    assert not rule.state("cadbury ")[1]  # a trailing space is no end
    assert well_formed(TaskType.NER, prompt, "cadbury") and well_formed(TaskType.NER, prompt, "['cadbury', 'xmas']")
    assert not well_formed(TaskType.NER, prompt, "You are a helpful online shopping assistant")
    assert not well_formed(TaskType.NER, prompt, "cadbury\n\nOutput: cadbury x")
    # An answer the token budget cut mid-word runs to the end of the word it was copying.
    assert ended(TaskType.NER, prompt, "cadbury, xm") == "cadbury, xmas"
    assert ended(TaskType.NER, prompt, " cad") == " cadbury"
    assert ended(TaskType.NER, prompt, "cadbury,") == "cadbury" and ended(TaskType.NER, prompt, "cadbury") == "cadbury"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_constrained_answer_parses_whatever_the_weights(tmp_path, seed):
    model = build_tiny_model(tmp_path / "m", seed=seed, digit_boost=random.Random(seed).choice([0.0, 3.0]))
    backend = HFBackend(str(model), system_prompt=None)
    for task_type in (TaskType.MULTIPLE_CHOICE, TaskType.RETRIEVAL, TaskType.RANKING, TaskType.NER):
        examples = [ex for ex in DEV if ex.task_type is task_type][:6]
        prompts = [ex.input_field for ex in examples]
        answers = backend.generate(prompts, 24, constrain=task_type)
        for prompt, answer in zip(prompts, answers, strict=True):
            parsed = parse_response(answer, task_type)
            if task_type is TaskType.MULTIPLE_CHOICE:
                assert str(parsed) in option_labels(prompt), answer
            elif task_type is TaskType.NER:  # entities that are spans of the question's own input, one line
                rule = Spans(entity_source(prompt))
                assert parsed and all(rule.whole(entity) for entity in parsed) and "\n" not in answer, answer
                assert well_formed(task_type, prompt, answer)
            else:
                rule = numbers_for(task_type, prompt)
                assert len(parsed) == len(set(parsed)) == rule.count and set(parsed) <= rule.allowed, answer


def test_constrained_answers_need_a_backend_that_can_constrain():
    assert EvalConfig(constrained=True).constrained
    with pytest.raises(ValueError, match="constrained answers need a backend that sees token scores"):
        EvalConfig(constrained=True, backend="openai", base_url="http://x/v1")


def test_debiasing_needs_option_scores():
    with pytest.raises(ValueError, match="mc_debias need a backend that sees token scores"):
        EvalConfig(mc_debias=True, backend="openai", base_url="http://x/v1")
    with pytest.raises(ValueError, match="needs mc_mode logits"):
        EvalConfig(mc_debias=True, mc_mode="generate")


def test_the_task_type_is_told_from_the_prompt_where_the_harness_does_not_say_it():
    from shoptune.evaluate.constraints import task_type_of

    for path in (DEV_SET, DEV_SET.parents[1] / "heldout" / "heldout.jsonl"):
        for ex in read_examples(path):
            guessed = task_type_of(ex.input_field, ex.is_multiple_choice)
            if ex.task_type in (TaskType.MULTIPLE_CHOICE, TaskType.RETRIEVAL, TaskType.RANKING):
                assert guessed is ex.task_type, ex.input_field[-300:]
            else:  # named entities and free text: left unconstrained
                assert guessed is None, ex.input_field[-300:]


def test_the_predictor_constrains_and_debiases_like_eval_run(tmp_path):
    from shoptune.evaluate.predictor import ShopBenchPredictor

    model = build_tiny_model(tmp_path / "m", seed=1, digit_boost=3.0)
    plain = ShopBenchPredictor(str(model), batch_size=8, max_new_tokens=24, system_prompt=None)
    constrained = ShopBenchPredictor(str(model), batch_size=8, max_new_tokens=24, system_prompt=None, constrained=True)
    for task_type in (TaskType.RETRIEVAL, TaskType.RANKING):
        prompts = [ex.input_field for ex in DEV if ex.task_type is task_type][:4]
        answers = constrained.batch_predict({"prompt": prompts}, is_multiple_choice=False)
        for prompt, answer in zip(prompts, answers, strict=True):
            rule, parsed = numbers_for(task_type, prompt), parse_response(answer, task_type)
            assert len(parsed) == len(set(parsed)) == rule.count and set(parsed) <= rule.allowed, answer
    free = [ex.input_field for ex in DEV if ex.task_type is TaskType.GENERATION][:3]
    assert constrained.batch_predict({"prompt": free}, False) == plain.batch_predict({"prompt": free}, False)
    mc = [ex.input_field for ex in DEV if ex.is_multiple_choice][:8]
    debiased = ShopBenchPredictor(str(model), batch_size=8, system_prompt=None, mc_debias=True)
    answers = debiased.batch_predict({"prompt": mc}, is_multiple_choice=True)
    assert debiased.prior and all(a in option_labels(p) for a, p in zip(answers, mc, strict=True))
    assert debiased.batch_predict({"prompt": mc}, True) == answers  # the prior is estimated once
