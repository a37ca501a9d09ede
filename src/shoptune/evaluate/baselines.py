"""Answers that need no model, scored by the same engine: what a score must beat before it says anything about
what a model learnt. Per task type: multiple choice, one option label for every question; retrieval, the first
three listed items; ranking, the listed order; NER, no entities; generation, the prompt's own input text (a product
title, a category, a sentence to translate), repeated back.

The one label is chosen on some questions: on a validation split (what a user could have had without looking at
the benchmark), or on the scored set itself, which makes the score an upper bound of answering without reading."""

from __future__ import annotations

import re
from collections.abc import Sequence

from shoptune.evaluate.constraints import NUMBERED
from shoptune.evaluate.scoring import score_questions
from shoptune.schema import Example, TaskType
from shoptune.tasks.render import option_labels

INPUT = re.compile(r"Input:\s*(.*?)\s*(?:\n\s*Output:|$)", re.DOTALL)
ANSWER_CUE = ("output:", "answer:")


def listed(prompt: str) -> list[str]:
    """The numbers of the prompt's numbered list, in the order listed (1-5 where it lists none)."""
    numbers = list(dict.fromkeys(NUMBERED.findall(prompt)))
    return numbers or ["1", "2", "3", "4", "5"]


# Per task type: the answer (from the prompt) and what it is, in words.
FIXED = {
    TaskType.RETRIEVAL: (lambda prompt: ",".join(listed(prompt)[:3]), "the first three listed"),
    TaskType.RANKING: (lambda prompt: ",".join(listed(prompt)), "the listed order"),
    TaskType.NER: (lambda prompt: "", "no entities"),
}


def input_text(prompt: str) -> str:
    """The text a generation question is about: after its last `Input:`, else its last line that is not a cue."""
    found = INPUT.findall(prompt)
    if found and found[-1].strip():
        return found[-1].strip()
    lines = [line.strip() for line in prompt.splitlines() if line.strip()]
    lines = [line for line in lines if line.lower() not in ANSWER_CUE]
    return lines[-1] if lines else ""


def best_label(examples: Sequence[Example]) -> str:
    """The option label that, answered to every multiple-choice question, scores best (the lowest on a tie)."""
    labels = sorted({label for ex in examples for label in option_labels(ex.input_field)})
    totals = {label: sum(s.value for s in score_questions(examples, [label] * len(examples))) for label in labels}
    return max(labels, key=lambda label: (totals[label], -int(label)))


def constant_answers(
    examples: Sequence[Example], chosen_on: Sequence[Example] | None = None
) -> tuple[list[str], dict[str, str]]:
    """One response per question, and what each task type was answered with. The multiple-choice label is the best
    on `chosen_on` (a validation split), else on `examples` themselves (an upper bound)."""
    choice = [ex for ex in examples if ex.task_type is TaskType.MULTIPLE_CHOICE]
    reference = [ex for ex in (choice if chosen_on is None else chosen_on) if ex.task_type is TaskType.MULTIPLE_CHOICE]
    label = best_label(reference) if reference else "0"
    where = "on the validation split" if chosen_on is not None else "on this set: an upper bound"
    said: dict[str, str] = {}
    responses = []
    for ex in examples:
        if ex.task_type is TaskType.MULTIPLE_CHOICE:
            response, what = label, f"always option {label} (the best single label {where})"
        elif ex.task_type is TaskType.GENERATION:
            response, what = input_text(ex.input_field), "the prompt's own input text"
        else:
            answer, what = FIXED[ex.task_type]
            response = answer(ex.input_field)
        responses.append(response)
        said[ex.task_type.value] = what
    return responses, said
