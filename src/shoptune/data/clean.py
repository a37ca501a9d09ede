"""Exact and near-duplicate removal, and decontamination against evaluation sets."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable, Sequence

from shoptune.schema import Example, TaskType
from shoptune.tasks.render import answer_text

WORD = re.compile(r"\w+")
MIN_WORDS = 5  # shorter evaluation texts (a one-word entity, a keyphrase) would match everything
FREE_TEXT = (TaskType.GENERATION, TaskType.NER)


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def shingles(tokens: Sequence[str]) -> list[bytes]:
    return [" ".join(tokens[i : i + 3]).encode() for i in range(max(1, len(tokens) - 2))]


def clean(
    examples: Iterable[Example],
    *,
    near: tuple[float, int] | None,
    contamination: Contamination | None,
    seed: int,
) -> tuple[list[bool], Counter]:
    """Which examples to keep, in one streaming pass: exact duplicates of an earlier prompt (words folded
    to lower case), then near duplicates (word-3-gram MinHash within `near[0]` estimated Jaccard of an
    earlier kept prompt, `near[1]` permutations), then evaluation-set overlaps are dropped. Only hashes
    are kept between examples, so memory grows with the kept examples' LSH keys, not their text."""
    lsh = None
    if near is not None:
        import xxhash
        from datasketch import MinHash, MinHashLSH

        lsh = MinHashLSH(threshold=near[0], num_perm=near[1])
    seen: set[bytes] = set()
    removed: Counter = Counter()
    keep = []
    for i, ex in enumerate(examples):
        tokens = words(ex.input_field)
        key = hashlib.blake2b(" ".join(tokens).encode(), digest_size=8).digest()
        if key in seen:
            removed["exact_duplicate"] += 1
            keep.append(False)
            continue
        seen.add(key)
        if lsh is not None:
            # xxhash instead of datasketch's default sha1: the same estimate, several times faster.
            minhash = MinHash(num_perm=near[1], seed=seed, hashfunc=xxhash.xxh32_intdigest)
            minhash.update_batch(shingles(tokens))
            if lsh.query(minhash):
                removed["near_duplicate"] += 1
                keep.append(False)
                continue
            lsh.insert(str(i), minhash, check_duplication=False)
        if contamination is not None and contamination(ex, tokens):
            removed["contaminated"] += 1
            keep.append(False)
            continue
        keep.append(True)
    return keep, removed


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
        self.short: dict[str, set[tuple[str, ...]]] = {}  # whole texts shorter than n words, by first word
        for ex in eval_examples:
            for text in (ex.input_field, _answer(ex)):
                tokens = words(text)
                if len(tokens) >= n:
                    self.grams.update(ngrams(tokens, n))
                elif len(tokens) >= MIN_WORDS:
                    self.short.setdefault(tokens[0], set()).add(tuple(tokens))

    def __call__(self, ex: Example, prompt_words: list[str] | None = None) -> bool:
        answer = _answer(ex)
        for tokens in (
            words(ex.input_field) if prompt_words is None else prompt_words,
            words(answer) if answer else [],
        ):
            if any(g in self.grams for g in ngrams(tokens, self.n)):
                return True
            for i, token in enumerate(tokens):
                starting_here = self.short.get(token)
                if starting_here and any(tuple(tokens[i : i + len(s)]) == s for s in starting_here):
                    return True
        return False


def _answer(ex: Example) -> str:
    """Only free-text answers carry content worth matching; option numbers do not."""
    return answer_text(ex.output_field, ex.task_type) if ex.task_type in FREE_TEXT else ""
