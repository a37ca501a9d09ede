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


def exact_duplicates(prompt_words: Sequence[list[str]]) -> list[bool]:
    """True for every repeat of a prompt already seen (whitespace, punctuation and case folded)."""
    seen: set[str] = set()
    out = []
    for w in prompt_words:
        key = " ".join(w)
        out.append(key in seen)
        seen.add(key)
    return out


def near_duplicates(prompt_words: Sequence[list[str]], threshold: float, num_perm: int, seed: int) -> list[bool]:
    """True for every prompt whose word-3-gram MinHash is within `threshold` of an earlier kept one."""
    import xxhash
    from datasketch import MinHash, MinHashLSH

    encoded = []
    for w in prompt_words:
        encoded.append([" ".join(w[i : i + 3]).encode() for i in range(max(1, len(w) - 2))])
    # xxhash instead of datasketch's default sha1: the same estimate, several times faster per shingle.
    hashes = MinHash.bulk(encoded, num_perm=num_perm, seed=seed, hashfunc=xxhash.xxh32_intdigest)
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
