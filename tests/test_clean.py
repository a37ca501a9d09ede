"""Cleaning on hashes (shoptune.data.clean) against plain-Python references written from its definitions."""

import itertools
import random
import re
from pathlib import Path

import numpy as np
import pytest

from shoptune.data.clean import MIN_WORDS, Contamination, Tokens, clean, dedupe, fingerprint
from shoptune.schema import Example, TaskType, read_examples
from shoptune.sources.registry import load_raw
from shoptune.tasks.catalog import all_subtasks
from shoptune.tasks.render import answer_text

ROOT = Path(__file__).resolve().parents[1]
DEV = read_examples(ROOT / "data" / "shopbench" / "development.json")
CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f"
WORD = re.compile(f"[{CJK}]|[^\\W{CJK}]+")  # the documented word, after lower-casing: CJK one by one


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def reference_contaminated(ex: Example, evaluation: list[Example], n: int) -> bool:
    """The definition, directly: the example's prompt or free-text answer contains an n-word run of an
    evaluation prompt or free-text answer, or a whole evaluation text of MIN_WORDS..n-1 words."""

    def texts(e: Example) -> list[list[str]]:
        free = e.task_type in (TaskType.GENERATION, TaskType.NER)
        return [words(e.input_field), words(answer_text(e.output_field, e.task_type)) if free else []]

    grams, short = set(), set()
    for e in evaluation:
        for w in texts(e):
            grams.update(tuple(w[i : i + n]) for i in range(len(w) - n + 1))
            if MIN_WORDS <= len(w) < n:
                short.add(tuple(w))
    for w in texts(ex):
        runs = {tuple(w[i : i + k]) for k in {n, *map(len, short)} for i in range(len(w) - k + 1)}
        if runs & (grams | short):
            return True
    return False


@pytest.fixture(scope="module")
def built() -> list[Example]:
    corpus = load_raw(ROOT / "data" / "raw")
    return [ex for task in all_subtasks().values() for ex in task.build(corpus, 25, seed=3)]


def spliced(host: Example, donor: str, k: int, rng: random.Random) -> Example:
    """host with k consecutive words of donor written into the middle of its prompt."""
    w = words(donor)
    i = rng.randrange(len(w) - k + 1)
    middle = len(host.input_field) // 2
    prompt = host.input_field[:middle] + " " + " ".join(w[i : i + k]) + " " + host.input_field[middle:]
    return host.model_copy(update={"input_field": prompt})


def test_words_are_hashed_as_defined():
    texts = ["Größe: 10 cm — Café_Latte (EU) ½", "größe 10 CM café_latte eu ½", "Grösse 10 cm café latte eu €", ""]
    japanese = ["東京の天気は晴れです", "hello 東京tokyo ｗｏｒｌｄ・カタカナー", "ﾊﾝｶｸ abc"]
    assert Tokens.of(japanese).lengths.tolist() == [len(words(t)) for t in japanese] and len(words(japanese[0])) == 10
    hashes = Tokens.of(texts).whole()
    assert words(texts[0]) == words(texts[1]) and hashes[0] == hashes[1]
    assert words(texts[0]) != words(texts[2]) and hashes[0] != hashes[2]
    assert Tokens.of(texts).lengths.tolist() == [len(words(t)) for t in texts]
    # The same run of words hashes alike wherever it sits, inside one text or across texts.
    grams, row, start = Tokens.of(["red shoes for men red shoes", "men red shoes"]).grams(2)
    assert len({grams[0], grams[4], grams[6]}) == 1 and grams[3] == grams[5] and len(set(grams[:4])) == 4
    assert row.tolist() == [0, 0, 0, 0, 0, 1, 1] and start.tolist() == [0, 1, 2, 3, 4, 6, 7]


def test_contamination_agrees_with_the_reference(built):
    rng = random.Random(0)
    evaluation = DEV[:40]
    long_prompts = [e.input_field for e in evaluation if len(words(e.input_field)) >= 20]
    free = [e for e in DEV if e.task_type in (TaskType.GENERATION, TaskType.NER)]
    short_answer = next(e for e in free if MIN_WORDS <= len(words(answer_text(e.output_field, e.task_type))) < 13)
    short_text = answer_text(short_answer.output_field, short_answer.task_type)
    hosts = rng.sample(built, 120)
    candidates = [
        *hosts[:40],  # real training examples, which should be clean
        *evaluation[:10],  # evaluation questions themselves
        *(spliced(h, rng.choice(long_prompts), 13, rng) for h in hosts[40:60]),  # a 13-word leak
        *(spliced(h, rng.choice(long_prompts), 12, rng) for h in hosts[60:80]),  # 12 words: below n
        *(spliced(h, short_text, len(words(short_text)), rng) for h in hosts[80:85]),  # a whole short answer
    ]
    contamination = Contamination([*evaluation, short_answer], 13)
    expected = [reference_contaminated(ex, [*evaluation, short_answer], 13) for ex in candidates]
    got = [contamination(ex) for ex in candidates]
    assert got == expected
    assert expected[:40] == [False] * 40 and all(expected[40:70]) and all(expected[-5:])
    assert fingerprint(candidates, contamination).contaminated.tolist() == expected


def near_copy(text: str, rng: random.Random) -> str:
    """The text with its last word replaced: nearly all of its 3-word shingles survive."""
    head, _, _ = text.rstrip().rpartition(" ")
    return f"{head} {rng.choice(['zebra', 'quokka', 'axolotl'])}{rng.randrange(10**6)}"


def jaccard(a: str, b: str) -> float:
    def sh(t: str) -> set:
        w = words(t)
        return {tuple(w[i : i + 3]) for i in range(max(1, len(w) - 2))}

    return len(sh(a) & sh(b)) / len(sh(a) | sh(b))


def test_near_duplicates_are_removed_at_high_similarity_and_kept_at_low(built):
    # At threshold 0.7 with 128 permutations (16 bands of 8), LSH pairs texts of Jaccard 0.92 with
    # probability 0.99999 and of Jaccard 0.3 with probability 0.001.
    near = (0.7, 128)
    rng = random.Random(1)
    keep, _ = clean(built, near=near, contamination=None, seed=0)
    # Space-separated prompts, so that replacing a share of the space-separated tokens replaces that share of words.
    spaced = [ex for ex, k in zip(built, keep, strict=True) if k and ex.input_field.isascii()]
    originals = [ex for ex in spaced if len(words(ex.input_field)) >= 60]
    originals = rng.sample(originals, 60)
    close = [ex.model_copy(update={"input_field": near_copy(ex.input_field, rng)}) for ex in originals[:30]]
    far = []  # three quarters of the words replaced
    for ex in originals[30:]:
        w = ex.input_field.split(" ")
        new = w[: len(w) // 4] + [f"w{rng.randrange(10**9)}" for _ in w[len(w) // 4 :]]
        far.append(ex.model_copy(update={"input_field": " ".join(new)}))
    assert min(jaccard(a.input_field, b.input_field) for a, b in zip(originals[:30], close, strict=True)) >= 0.92
    assert max(jaccard(a.input_field, b.input_field) for a, b in zip(originals[30:], far, strict=True)) <= 0.3

    keep, removed = clean([*originals, *close, *far], near=near, contamination=None, seed=0)
    assert keep == [True] * 60 + [False] * 30 + [True] * 30
    assert removed == {"near_duplicate": 30}
    # The later copy goes, whichever comes first.
    keep, _ = clean([*close, *originals[:30]], near=near, contamination=None, seed=0)
    assert keep == [True] * 30 + [False] * 30


def test_parts_are_cleaned_as_one_sequence(built):
    examples = built + built[:50]  # the repeats are exact duplicates, wherever the parts split
    contamination = Contamination(DEV, 13)
    whole, removed_whole = dedupe([fingerprint(examples, contamination)], near=(0.9, 64), seed=0)
    cuts = [0, 7, 7, 300, 301, len(examples)]  # an empty part too
    parts = [fingerprint(examples[a:b], contamination) for a, b in itertools.pairwise(cuts)]
    split, removed_split = dedupe(parts, near=(0.9, 64), seed=0)
    assert np.array_equal(whole, split) and removed_whole == removed_split
    assert removed_whole["exact_duplicate"] == 50 and not whole[len(built) :].any()
