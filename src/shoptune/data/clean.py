"""Exact and near-duplicate removal, and decontamination against evaluation sets."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from shoptune.schema import Example, TaskType
from shoptune.tasks.render import answer_text

WORD = re.compile(r"\w+")
MIN_WORDS = 5  # shorter evaluation texts (a one-word entity, a keyphrase) would match everything
FREE_TEXT = (TaskType.GENERATION, TaskType.NER)


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def exact_duplicates(examples: Sequence[Example]) -> list[bool]:
    """True for every repeat of a prompt already seen (whitespace and case folded)."""
    seen: set[str] = set()
    out = []
    for ex in examples:
        key = " ".join(words(ex.input_field))
        out.append(key in seen)
        seen.add(key)
    return out


def near_duplicates(examples: Sequence[Example], threshold: float, num_perm: int, seed: int) -> list[bool]:
    """True for every prompt whose word-3-gram MinHash is within `threshold` of an earlier kept one."""
    from datasketch import MinHash, MinHashLSH

    encoded = []
    for ex in examples:
        w = words(ex.input_field)
        encoded.append([" ".join(w[i : i + 3]).encode() for i in range(max(1, len(w) - 2))])
    hashes = MinHash.bulk(encoded, num_perm=num_perm, seed=seed)
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    out = []
    for i, mh in enumerate(hashes):
        dup = bool(lsh.query(mh))
        if not dup:
            lsh.insert(str(i), mh)
        out.append(dup)
    return out


def ngrams(tokens: Sequence[str], n: int) -> Iterable[tuple[str, ...]]:
    """All n-grams; a text shorter than n counts as one gram of its whole length."""
    if len(tokens) <= n:
        return [tuple(tokens)] if tokens else []
    return (tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


class Contamination:
    """n-gram index of evaluation prompts and answers; an example touching one is contaminated."""

    def __init__(self, eval_examples: Iterable[Example], n: int) -> None:
        self.n = n
        self.grams: set[tuple[str, ...]] = set()
        self.short: set[tuple[str, ...]] = set()  # whole texts shorter than n words
        for ex in eval_examples:
            for text in (ex.input_field, _answer(ex)):
                tokens = words(text)
                if len(tokens) >= MIN_WORDS:
                    (self.short if len(tokens) < n else self.grams).update(ngrams(tokens, n))

    def __call__(self, ex: Example) -> bool:
        for text in (ex.input_field, _answer(ex)):
            tokens = words(text)
            if any(g in self.grams for g in ngrams(tokens, self.n)):
                return True
            if self.short and _contains_any(tokens, self.short):
                return True
        return False


def _answer(ex: Example) -> str:
    """Only free-text answers carry content worth matching; option numbers do not."""
    return answer_text(ex.output_field, ex.task_type) if ex.task_type in FREE_TEXT else ""


def _contains_any(tokens: Sequence[str], short: set[tuple[str, ...]]) -> bool:
    lengths = {len(s) for s in short}
    return any(tuple(tokens[i : i + k]) in short for k in lengths for i in range(len(tokens) - k + 1))
