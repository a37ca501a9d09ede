"""Exact and near-duplicate removal, and decontamination against evaluation sets.

A word is a run of word characters (regex `\\w`), after lower-casing; in scripts written without spaces
(Japanese kana, CJK ideographs) every character is a word. Everything runs on hashes held in numpy
arrays, so a million examples are cleaned without a Python object per word or n-gram: each text's words
are hashed once (`Tokens`), and any run of words — a shingle, an n-gram, a whole prompt — is a
polynomial hash read off one prefix sum. The per-example
part (`fingerprint`) runs where examples are built, in parallel; only the order-dependent part
(`dedupe`: which earlier prompt a later one repeats) runs once, over all of them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache, cached_property
from typing import Any

import numpy as np
from rensa import RMinHash, RMinHashLSH

from shoptune.schema import Example, TaskType
from shoptune.tasks.render import answer_text

MIN_WORDS = 5  # shorter evaluation texts (a one-word entity, a keyphrase) would match everything
FREE_TEXT = (TaskType.GENERATION, TaskType.NER)
SHINGLE = 3  # words per MinHash shingle
CHUNK = 8192  # texts tokenised at a time, which bounds the memory of the byte-level arrays
_BASE = 0x9E3779B97F4A7C15  # odd, so invertible modulo 2**64
_BASE_INVERSE = pow(_BASE, -1, 2**64)


# Scripts written without spaces between words: each of their characters is a word of its own, or a Japanese
# sentence would be one "word" and two prompts that differ only in it would look alike.
CJK_RANGES = ((0x3040, 0x30FF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0xFF66, 0xFF9F))
WORD, CJK = 1, 2


@cache
def _word_codepoints() -> np.ndarray:
    """Per code point: WORD for a word character as regex \\w defines it (alphanumeric or "_"), CJK for a
    character of a script without spaces (also a word character), else 0."""
    table = np.fromiter((chr(c).isalnum() for c in range(0x110000)), dtype=np.uint8, count=0x110000)
    table[ord("_")] = WORD
    for low, high in CJK_RANGES:
        table[low : high + 1] = CJK
    return table


def _word_bytes(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per byte of UTF-8 text: whether it belongs to a word character, and whether it starts a word although the
    byte before is a word byte too (a character of a script without spaces, or the first word character after
    one). The code point of every multi-byte sequence is decoded in bulk and looked up, and its continuation
    bytes take their lead byte's answer."""
    table = _word_codepoints()
    if not data.size or data.max() < 0x80:
        return table[data] > 0, np.zeros(len(data), dtype=bool)
    is_start = (data < 0x80) | (data >= 0xC0)
    starts = np.flatnonzero(is_start)
    lead = data[starts].astype(np.int64)
    size = np.select([lead < 0x80, lead < 0xE0, lead < 0xF0], [1, 2, 3], 4)
    point = np.where(size == 1, lead, lead & (0xFF >> (size + 1)))
    for k in (1, 2, 3):
        more = size > k
        point[more] = (point[more] << 6) | (data[starts[more] + k] & 0x3F)
    kind = table[point]
    after_cjk = np.zeros(len(kind), dtype=bool)
    after_cjk[1:] = kind[:-1] == CJK
    split = np.zeros(len(data), dtype=bool)
    split[starts[(kind == CJK) | ((kind == WORD) & after_cjk)]] = True
    return kind[np.cumsum(is_start) - 1] > 0, split


def _mix(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser, so word hashes look random to the n-gram hashes built on them."""
    h = h ^ (h >> np.uint64(33))
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> np.uint64(33))


_POWERS: dict[int, np.ndarray] = {}


def _powers(base: int, n: int) -> np.ndarray:
    """base**0 .. base**(n-1) modulo 2**64 (uint64 arithmetic wraps), kept for the next, similar call."""
    cached = _POWERS.get(base)
    if cached is None or len(cached) < n:
        cached = np.full(max(n, 2 * len(cached) if cached is not None else 4096), base, dtype=np.uint64)
        cached[0] = 1
        _POWERS[base] = cached = np.cumprod(cached, out=cached)
    return cached[:n]


@dataclass(frozen=True)
class Tokens:
    """The word hashes of many texts end to end, and where each text starts (offsets has one more entry)."""

    flat: np.ndarray
    offsets: np.ndarray

    @classmethod
    def of(cls, texts: Iterable[str]) -> Tokens:
        texts = list(texts)
        if len(texts) > CHUNK:
            parts = [cls.of(texts[i : i + CHUNK]) for i in range(0, len(texts), CHUNK)]
            return cls(np.concatenate([p.flat for p in parts]), _join_offsets([p.offsets for p in parts]))
        encoded = [t.lower().encode(errors="surrogatepass") for t in texts]
        data = np.frombuffer(b"\n".join(encoded), dtype=np.uint8)  # the newline is no word byte
        text_starts = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(e) + 1 for e in encoded], out=text_starts[1:])
        word, split = _word_bytes(data)
        edges = np.diff(word.astype(np.int8), prepend=np.int8(0), append=np.int8(0))
        run_ends = np.flatnonzero(edges == -1)
        # A word starts where a run of word bytes does, or where the run splits (scripts without spaces), and
        # ends where the next one starts or its run ends, whichever comes first.
        starts = np.flatnonzero((edges[:-1] == 1) | split)
        ends = np.minimum(np.append(starts[1:], len(data)), run_ends[np.searchsorted(run_ends, starts, side="right")])
        flat = (
            _mix(cls(data.astype(np.uint64), text_starts).span(starts, ends))
            if len(starts)
            else starts.astype(np.uint64)
        )
        return cls(flat, np.searchsorted(starts, text_starts).astype(np.int64))

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @cached_property
    def _prefix(self) -> np.ndarray:
        prefix = np.zeros(len(self.flat) + 1, dtype=np.uint64)
        np.cumsum(self.flat * _powers(_BASE, len(self.flat)), out=prefix[1:])
        return prefix

    def span(self, start: np.ndarray, end: np.ndarray) -> np.ndarray:
        """Hash of words [start, end) of the flat sequence: the sum of word * BASE**position, shifted to
        position 0 so that equal runs of words hash alike wherever they occur."""
        return (self._prefix[end] - self._prefix[start]) * _powers(_BASE_INVERSE, len(self.flat) + 1)[start]

    def whole(self) -> np.ndarray:
        """One hash per text, of all its words."""
        return self.span(self.offsets[:-1], self.offsets[1:])

    def grams(self, n: int, *, short_whole: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Hashes of every run of n words inside one text, with the text and start of each. With
        short_whole, a text shorter than n gives one gram of all its words (an empty text, the hash 0)."""
        lengths = self.lengths
        count = np.maximum(lengths - n + 1, 0)
        if short_whole:
            count = np.where(lengths < n, 1, count)
        row = np.repeat(np.arange(len(lengths)), count)
        first = np.concatenate([[0], np.cumsum(count)[:-1]]) if len(count) else count
        start = np.arange(int(count.sum()), dtype=np.int64) - first[row] + self.offsets[row]
        end = np.minimum(start + n, self.offsets[row + 1])
        return self.span(start, end), row, start


def _member(values: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    if not sorted_set.size or not values.size:
        return np.zeros(len(values), dtype=bool)
    at = np.searchsorted(sorted_set, values)
    at[at == len(sorted_set)] = 0
    return sorted_set[at] == values


@dataclass(frozen=True)
class Fingerprints:
    """What cleaning needs of a run of examples: a hash of each prompt's words, its shingles' hashes (flat,
    with offsets) for MinHash, and whether it overlaps an evaluation set."""

    exact: np.ndarray
    shingles: Tokens
    contaminated: np.ndarray

    def __len__(self) -> int:
        return len(self.exact)


def fingerprint(examples: Sequence[Example], contamination: Contamination | None) -> Fingerprints:
    prompts = Tokens.of(ex.input_field for ex in examples)
    shingles, row, _ = prompts.grams(SHINGLE, short_whole=True)
    offsets = np.zeros(len(examples) + 1, dtype=np.int64)
    np.cumsum(np.bincount(row, minlength=len(examples)), out=offsets[1:])
    if contamination is None:
        contaminated = np.zeros(len(examples), dtype=bool)
    else:
        contaminated = contamination.hits(prompts) | contamination.hits(Tokens.of(_answer(ex) for ex in examples))
    return Fingerprints(prompts.whole(), Tokens(shingles, offsets), contaminated)


def dedupe(parts: Sequence[Fingerprints], *, near: tuple[float, int] | None, seed: int) -> tuple[np.ndarray, Counter]:
    """Which examples to keep, all parts taken in order as one sequence: exact duplicates of an earlier
    prompt (words folded to lower case), then near duplicates (the Jaccard similarity of word 3-gram
    shingles with an earlier kept prompt, estimated by MinHash with `near[1]` permutations, reaches
    `near[0]`), then evaluation-set overlaps are dropped."""
    exact = np.concatenate([p.exact for p in parts]) if parts else np.zeros(0, dtype=np.uint64)
    keep = np.zeros(len(exact), dtype=bool)
    keep[np.unique(exact, return_index=True)[1]] = True
    removed: Counter = Counter(exact_duplicate=int(len(exact) - keep.sum()))
    if near is not None and keep.any():
        shingles = Tokens(
            np.concatenate([p.shingles.flat for p in parts]),
            _join_offsets([p.shingles.offsets for p in parts]),
        )
        duplicate = _near_duplicates(shingles, np.flatnonzero(keep), near[0], near[1], seed)
        removed["near_duplicate"] = len(duplicate)
        keep[duplicate] = False
    contaminated = np.concatenate([p.contaminated for p in parts]) & keep if parts else keep
    removed["contaminated"] = int(contaminated.sum())
    keep &= ~contaminated
    return keep, +removed


def clean(
    examples: Sequence[Example],
    *,
    near: tuple[float, int] | None,
    contamination: Contamination | None,
    seed: int,
) -> tuple[list[bool], Counter]:
    """dedupe() for a list of examples held in memory."""
    keep, removed = dedupe([fingerprint(examples, contamination)], near=near, seed=seed)
    return keep.tolist(), removed


def _join_offsets(offsets: Sequence[np.ndarray]) -> np.ndarray:
    joined, base = [np.zeros(1, dtype=np.int64)], 0
    for o in offsets:
        joined.append(o[1:] + base)
        base += int(o[-1])
    return np.concatenate(joined)


def _rows(shingles: Tokens, rows: np.ndarray) -> Tokens:
    """The given texts' shingles, end to end."""
    lengths = shingles.lengths[rows]
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    index = np.repeat(shingles.offsets[rows] - offsets[:-1], lengths) + np.arange(int(offsets[-1]))
    return Tokens(shingles.flat[index], offsets)


PAIRING = 0.95  # the chance that LSH offers two prompts of exactly the threshold similarity for comparison


def bands_for(threshold: float, num_perm: int) -> int:
    """The fewest LSH bands (of equal length, dividing num_perm) that offer a pair of prompts at the
    threshold similarity for comparison with probability PAIRING: fewer bands, fewer chance pairings to
    check. Every pairing is checked against the threshold, so more bands cost time, not precision."""
    divisors = [b for b in range(1, num_perm + 1) if num_perm % b == 0]
    return next(b for b in divisors if 1 - (1 - threshold ** (num_perm // b)) ** b >= PAIRING or b == num_perm)


def _digests(shingles: Tokens, rows: np.ndarray, num_perm: int, seed: int) -> Any:  # a rensa digest matrix
    part = _rows(shingles, rows)
    return RMinHash.digest_matrix_from_flat_token_hashes(part.flat, part.offsets, num_perm, seed)


def _near_duplicates(shingles: Tokens, rows: np.ndarray, threshold: float, num_perm: int, seed: int) -> np.ndarray:
    """Rows (of `rows`, taken in order) whose MinHash-estimated Jaccard similarity with an earlier row not
    itself removed reaches the threshold. LSH proposes the pairs: one bulk pass finds the rows sharing a
    band with any other, and only those are compared, one by one, with the earlier kept rows they share a
    band with."""
    bands = bands_for(threshold, num_perm)
    flags = RMinHashLSH(threshold, num_perm, bands).insert_matrix_and_query_duplicate_flags(
        _digests(shingles, rows, num_perm, seed)
    )
    flagged = rows[np.asarray(flags, dtype=bool)]
    if not flagged.size:
        return flagged
    # rensa's matrix reads out only as Python lists, so the few flagged rows are digested again rather than
    # every row read out.
    digests = np.asarray(_digests(shingles, flagged, num_perm, seed).to_rows(), dtype=np.uint32)
    # One key per band: a hash of its values (uint64 arithmetic wraps) mixed with its number.
    per_band = digests.reshape(len(flagged), bands, -1).astype(np.uint64)
    keys = _mix((per_band * _powers(_BASE, per_band.shape[2])).sum(axis=2) ^ np.arange(bands, dtype=np.uint64))
    needed = int(np.ceil(threshold * num_perm - 1e-9))  # equal values for an estimate at the threshold
    buckets: dict[int, list[int]] = {}
    duplicate = []
    for i, row_keys in enumerate(keys.tolist()):
        earlier = list({j for key in row_keys for j in buckets.get(key, ())})
        if earlier and (digests[earlier] == digests[i]).sum(axis=1).max() >= needed:
            duplicate.append(flagged[i])
            continue
        for key in row_keys:
            buckets.setdefault(key, []).append(i)
    return np.asarray(duplicate, dtype=np.int64)


class Contamination:
    """Evaluation prompts and free-text answers as hashed n-grams; an example whose prompt or answer shares
    an n-gram with one (or contains a whole evaluation text shorter than n words) is contaminated."""

    def __init__(self, eval_examples: Iterable[Example], n: int) -> None:
        self.n = n
        tokens = Tokens.of(text for ex in eval_examples for text in (ex.input_field, _answer(ex)))
        self.grams = np.unique(tokens.grams(n)[0])
        lengths = tokens.lengths
        short = np.flatnonzero((lengths >= MIN_WORDS) & (lengths < n))
        self.short = np.unique(tokens.whole()[short])
        self.short_lengths = sorted({int(x) for x in lengths[short]})
        starts = tokens.offsets[short]
        self.short_prefixes = np.unique(tokens.span(starts, starts + MIN_WORDS))

    def hits(self, tokens: Tokens) -> np.ndarray:
        """Per text: does it contain an evaluation n-gram or short evaluation text?"""
        hit = np.zeros(len(tokens.lengths), dtype=bool)
        grams, row, _ = tokens.grams(self.n)
        hit[row[_member(grams, self.grams)]] = True
        if self.short.size:
            # A short text inside this one starts with one of the known MIN_WORDS-word prefixes; only
            # there are its possible lengths compared.
            prefixes, row, start = tokens.grams(MIN_WORDS)
            found = _member(prefixes, self.short_prefixes)
            row, start = row[found], start[found]
            for length in self.short_lengths:
                fits = start + length <= tokens.offsets[row + 1]
                whole = tokens.span(start[fits], start[fits] + length)
                hit[row[fits][_member(whole, self.short)]] = True
        return hit

    def __call__(self, ex: Example) -> bool:
        return bool((self.hits(Tokens.of([ex.input_field])) | self.hits(Tokens.of([_answer(ex)])))[0])


def _answer(ex: Example) -> str:
    """Only free-text answers carry content worth matching; option numbers do not."""
    return answer_text(ex.output_field, ex.task_type) if ex.task_type in FREE_TEXT else ""
