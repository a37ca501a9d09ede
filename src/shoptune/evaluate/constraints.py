"""Constrained answers: for each structured task type, the answers ShopBench's parsers read in full, enforced
token by token through transformers' `prefix_allowed_tokens_fn` (no grammar engine: each type's answer is a
short list of numbers or of spans, checked by a small prefix test).

- multiple choice: one of the listed option numbers;
- retrieval: three distinct listed candidate numbers, comma-separated;
- ranking: every listed candidate number once, comma-separated;
- named entities: comma-separated text made only of the prompt's own tokens.

Once an answer is complete only the end-of-sequence token is allowed, so generation stops there.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from shoptune.evaluate.parsers import parse_response
from shoptune.schema import TaskType
from shoptune.tasks.render import option_labels

NUMBERED = re.compile(r"^\s*(\d+)\.(?!\d)", re.MULTILINE)  # "1. item" and ShopBench's "1.item", not "1.5 kg"
SEPARATOR = re.compile(r",\s?")
NUMERIC_PIECE = re.compile(r"^[\d, ]+$")
CONSTRAINED = (TaskType.MULTIPLE_CHOICE, TaskType.RETRIEVAL, TaskType.RANKING, TaskType.NER)


@dataclass(frozen=True)
class Numbers:
    """A comma-separated list of `count` distinct numbers from `allowed` (a permutation when count is all)."""

    allowed: frozenset[int]
    count: int

    def state(self, text: str) -> tuple[bool, bool]:
        """(text begins some answer, text is a whole answer)."""
        body = text[1:] if text.startswith(" ") else text  # one space may open the answer, no more
        if body.startswith(" "):
            return False, False
        pieces = SEPARATOR.split(body)
        *done, last = pieces
        if len(pieces) > self.count or not all(_number(p) for p in done):
            return False, False
        numbers = [int(p) for p in done]
        if len(set(numbers)) < len(numbers) or not set(numbers) <= self.allowed:
            return False, False
        if last == "":  # the start, or right after a separator
            return True, False
        if not _number(last):
            return False, False
        unused = self.allowed - set(numbers)
        begins = any(str(n).startswith(last) for n in unused)
        return begins, int(last) in unused and len(pieces) == self.count


def _number(text: str) -> bool:
    """Digits without a leading zero ("0" itself is a number: multiple-choice options start there)."""
    return text.isdigit() and (text == "0" or not text.startswith("0"))


RANKING_WORDS = re.compile(r"\b(permutation|rank|re-?rank|sort|order)\w*\b", re.IGNORECASE)
THREE = re.compile(r"\b(three|3)\b", re.IGNORECASE)


def task_type_of(prompt: str, is_multiple_choice: bool) -> TaskType | None:
    """The structured task type a prompt asks for, where the KDD Cup harness tells only whether it is multiple
    choice: a numbered candidate list whose instruction asks to rank, sort or order it is ranking, one that asks
    for three of them is retrieval; anything else None (answered unconstrained: named entities and free text
    are not told apart safely). Exact on every question of the development set and the held-out benchmark."""
    if is_multiple_choice:
        return TaskType.MULTIPLE_CHOICE
    if len(set(NUMBERED.findall(prompt))) < 3:
        return None
    instruction = "\n".join(line for line in prompt.splitlines() if not NUMBERED.match(line))
    if RANKING_WORDS.search(instruction):
        return TaskType.RANKING
    return TaskType.RETRIEVAL if THREE.search(instruction) else None


def numbers_for(task_type: TaskType, prompt: str) -> Numbers:
    if task_type is TaskType.MULTIPLE_CHOICE:
        return Numbers(frozenset(int(d) for d in option_labels(prompt)), 1)
    listed = frozenset(int(n) for n in NUMBERED.findall(prompt))
    if task_type is TaskType.RETRIEVAL:
        return Numbers(listed, min(3, len(listed)))
    return Numbers(listed, len(listed))


@cache
def _numeric_tokens(tokenizer: Any) -> tuple[tuple[int, str], ...]:
    """(id, text) of every token made only of digits, commas and spaces: all a numeric answer can use."""
    out = []
    for token_id in range(len(tokenizer)):
        piece = tokenizer.decode([token_id])
        if piece and NUMERIC_PIECE.match(piece):
            out.append((token_id, piece))
    return tuple(out)


def allowed_tokens(
    tokenizer: Any, task_types: Sequence[TaskType | None], prompts: Sequence[str], width: int
) -> Callable[[int, Any], list[int]]:
    """`prefix_allowed_tokens_fn` for a left-padded batch `width` tokens wide: row i answers prompts[i] (the
    question as written, before rendering) of task_types[i]; a type not constrained allows every token."""
    eos = tokenizer.eos_token_id
    numeric = _numeric_tokens(tokenizer)
    every = list(range(len(tokenizer)))
    rules: list[Numbers | list[int] | None] = []
    for task_type, prompt in zip(task_types, prompts, strict=True):
        if task_type is TaskType.NER:
            rules.append(_span_tokens(tokenizer, prompt, {t for t, piece in numeric if piece.strip() == ","}))
        elif task_type in CONSTRAINED and (numbers := numbers_for(task_type, prompt)).count:
            rules.append(numbers)
        else:
            rules.append(None)

    def allowed(row: int, input_ids: Any) -> list[int]:
        rule = rules[row]
        if rule is None:
            return every
        if isinstance(rule, list):
            return rule
        generated = input_ids[width:].tolist()
        if eos in generated:
            return [eos]
        text = tokenizer.decode(generated, skip_special_tokens=True)
        options = [t for t, piece in numeric if rule.state(text + piece)[0]]
        return [*options, eos] if rule.state(text)[1] else options or [eos]

    return allowed


def _span_tokens(tokenizer: Any, prompt: str, separators: set[int]) -> list[int]:
    """Tokens an entity copied from the prompt can be written with: the prompt's own, and each word's as it is
    tokenised at the start of an answer (without the space before it), plus separators and the end."""
    ids = set(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    for word in set(prompt.split()):
        ids.update(tokenizer(word, add_special_tokens=False)["input_ids"])
    ids -= set(tokenizer.all_special_ids)
    return sorted(ids | separators | {tokenizer.eos_token_id})


def well_formed(task_type: TaskType, prompt: str, response: str) -> bool:
    """Whether the official parser reads a whole answer from `response`: a listed option, three distinct listed
    candidates, a permutation of the listed items, at least one entity, some text. What constrained answers
    guarantee, and what an unconstrained model often loses its score to."""
    value = parse_response(response, task_type)
    if task_type is TaskType.GENERATION or task_type is TaskType.NER:
        return bool(value)
    numbers = numbers_for(task_type, prompt)
    if task_type is TaskType.MULTIPLE_CHOICE:
        return value in numbers.allowed
    return len(value) == numbers.count > 0 and len(set(value)) == len(value) and set(value) <= numbers.allowed
