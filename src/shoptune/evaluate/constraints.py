"""Constrained answers: for each structured task type, the answers ShopBench's parsers read in full, enforced
token by token: `rule_for` gives the decoding loop (`evaluate.engine`) the tokens a row may take next (no grammar
engine: each type's answer is a short list of numbers or of spans, checked by a small prefix test).

- multiple choice: one of the listed option numbers;
- retrieval: three distinct listed candidate numbers, comma-separated;
- ranking: every listed candidate number once, comma-separated;
- named entities: comma-separated entities, each one or more whole consecutive words of the question's own
  text (its labelled input line, e.g. "Query: ..." or "Input: ..."), on one line.

Once an answer is complete only the end-of-sequence token is allowed (for entities: the end of the list, or
another entity after a comma), so generation stops there.
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


@dataclass(frozen=True)
class Spans:
    """Comma-separated entities, each one or more whole consecutive words of `source`, on one line."""

    source: str

    def begins(self, entity: str) -> bool:
        return re.search(r"(?<!\S)" + re.escape(entity), self.source) is not None

    def whole(self, entity: str) -> bool:
        return bool(entity.strip()) and re.search(r"(?<!\S)" + re.escape(entity) + r"(?!\S)", self.source) is not None

    def state(self, text: str) -> tuple[bool, bool]:
        """(text begins some answer, text is a whole answer)."""
        if "\n" in text:
            return False, False
        *done, last = (text[1:] if text.startswith(" ") else text).split(",")
        if not all(self.whole(piece.strip()) for piece in done):
            return False, False
        entity = last[1:] if done and last.startswith(" ") else last  # one space may follow a comma
        if entity.startswith(" "):
            return False, False
        if entity == "":
            return True, False
        return self.begins(entity), entity == entity.rstrip() and self.whole(entity)


def ended(task_type: TaskType | None, prompt: str, response: str) -> str:
    """A constrained entity list the token budget cut mid-word: its last entity runs to the end of the word it was
    copying (the first such span of the question's text), or, cut right after a comma, the list ends before it."""
    if task_type is not TaskType.NER:
        return response
    rule = Spans(entity_source(prompt))
    if rule.state(response)[1] or not rule.state(response)[0]:
        return response
    head, comma, last = response.rpartition(",")
    entity = last.lstrip()
    if not entity:
        return head
    found = re.search(r"(?<!\S)" + re.escape(entity) + r"\S*", rule.source)
    assert found is not None  # the constraint let only a span's beginning through
    return head + comma + last[: len(last) - len(entity)] + found.group(0)


LABELLED = re.compile(r"^\s*[A-Z][\w ]{0,30}:[ \t]*(\S.*)$")
ANSWER_CUES = ("output", "answer")


def entity_source(prompt: str) -> str:
    """The text a question's entities are taken from: its last labelled line that is not the answer cue ("Query:
    tablette asus" gives "tablette asus"), else the whole question."""
    for line in reversed(prompt.splitlines()):
        found = LABELLED.match(line)
        if found and line.split(":", 1)[0].strip().lower() not in ANSWER_CUES:
            return found.group(1).strip()
    return prompt


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


def constrainable(task_type: TaskType, prompt: str) -> bool:
    """Whether a question of this type can be kept to its answer form: a retrieval or ranking question needs a
    numbered list to pick from (multiple choice falls back to any digit, entities to the whole question)."""
    return task_type not in (TaskType.RETRIEVAL, TaskType.RANKING) or numbers_for(task_type, prompt).count > 0


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
        piece = piece_text(tokenizer, token_id)
        if piece and NUMERIC_PIECE.match(piece):
            out.append((token_id, piece))
    return tuple(out)


@cache
def _anchor(tokenizer: Any) -> tuple[int, str]:
    """A plain word token, and its text: what each piece is read after."""
    token = tokenizer("a", add_special_tokens=False)["input_ids"][-1]
    return token, tokenizer.decode([token])


def piece_text(tokenizer: Any, token: int) -> str:
    """The text a token adds inside an answer. Decoded alone, a SentencePiece token loses its leading space
    (Llama 2, Mistral, Gemma: "▁shoe" reads "shoe"), so that no second word could ever follow a first; read after
    a plain word, it keeps it (" shoe"), as byte-level tokens always do."""
    anchor, alone = _anchor(tokenizer)
    both = tokenizer.decode([anchor, token])
    return both[len(alone) :] if both.startswith(alone) else tokenizer.decode([token])


def rule_for(tokenizer: Any, task_type: TaskType | None, prompt: str) -> Callable[[list[int]], list[int]] | None:
    """The next tokens a row answering `prompt` (the question as written, before rendering) may take, given the tokens
    it has generated: a function for the decoding loop, or None where the type is not constrained (or cannot be:
    `constrainable`). Once the answer is complete only the end token is allowed, besides what may still extend it."""
    if task_type is TaskType.NER:
        source = entity_source(prompt)
        commas = {t for t, piece in _numeric_tokens(tokenizer) if piece.strip() == ","}
        rule: Numbers | Spans = Spans(source)
        candidates = _pieces(tokenizer, _span_tokens(tokenizer, source, commas))
    elif task_type in CONSTRAINED and constrainable(task_type, prompt):
        rule, candidates = numbers_for(task_type, prompt), _numeric_tokens(tokenizer)
    else:
        return None
    end = tokenizer.eos_token_id

    def allowed(generated: list[int]) -> list[int]:
        text = tokenizer.decode(generated, skip_special_tokens=True)
        options = [t for t, piece in candidates if rule.state(text + piece)[0]]
        return [*options, end] if rule.state(text)[1] else options or [end]

    return allowed


def _pieces(tokenizer: Any, ids: Sequence[int]) -> tuple[tuple[int, str], ...]:
    """(id, text) of each token but the end, as the prefix test reads them."""
    return tuple((t, piece_text(tokenizer, t)) for t in ids if t != tokenizer.eos_token_id)


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
    candidates, a permutation of the listed items, at least one entity and each a span of the question's text, some
    text. What constrained answers guarantee, and what an unconstrained model often loses its score to."""
    value = parse_response(response, task_type)
    if task_type is TaskType.NER:
        rule = Spans(entity_source(prompt))
        return bool(value) and all(rule.whole(entity) for entity in value)
    if task_type is TaskType.GENERATION:
        return bool(value)
    numbers = numbers_for(task_type, prompt)
    if task_type is TaskType.MULTIPLE_CHOICE:
        return value in numbers.allowed
    return len(value) == numbers.count > 0 and len(set(value)) == len(value) and set(value) <= numbers.allowed
