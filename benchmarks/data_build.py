"""Mixture build throughput and memory, and the cleaning step against a per-example reference, same run.

1. `build_mixture` at full size (default a million examples over the subtasks the shipped raw data
   supports; repeat sampling is on, as some subtasks have fewer distinct examples than that), against
   the same build without near-duplicate search and decontamination, each in its own process so that
   each peak memory is its own (main process and largest worker).
2. Cleaning alone on a sample of built examples: shoptune's hashed, vectorised cleaning
   (`fingerprint` + `dedupe`) against the straightforward way, one example at a time (regex words, Python
   sets of n-grams, datasketch MinHash and MinHashLSH with the same banding, the estimate checked against
   the threshold),
   with how far their decisions agree.

    python benchmarks/data_build.py [--examples 1000000] [--sample 100000]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import xxhash
from datasketch import MinHash, MinHashLSH

from shoptune.data.build import PartMaker, build_mixture, with_data
from shoptune.data.clean import MIN_WORDS, SHINGLE, Contamination, bands_for, dedupe, fingerprint
from shoptune.data.spec import MixtureSpec
from shoptune.schema import Example, TaskType, read_examples
from shoptune.tasks.render import answer_text

ROOT = Path(__file__).resolve().parents[1]
DEV = ROOT / "data" / "shopbench" / "development.json"
CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f"
WORD = re.compile(f"[{CJK}]|[^\\W{CJK}]+")
REASONS = ("exact_duplicate", "near_duplicate", "contaminated")


def n_subtasks() -> int:
    """The subtasks the shipped raw data supports: a million examples are spread over them."""
    return len(with_data(MixtureSpec(name="count", raw_dir=ROOT / "data" / "raw")))


def spec(examples: int, cleaning: bool) -> MixtureSpec:
    settings = {
        "name": "bench",
        "raw_dir": ROOT / "data" / "raw",
        "repeat": True,
        "examples_per_subtask": math.ceil(examples / n_subtasks()),
    }
    if cleaning:
        return MixtureSpec(**settings, decontaminate=[DEV])
    return MixtureSpec(**settings, near_duplicates=None)


def one_build(examples: int, cleaning: bool) -> dict[str, float]:
    """A build in this process; what it made, how long it took, and peak memory."""
    out = Path(tempfile.mkdtemp()) / "mix"
    start = time.perf_counter()
    info = build_mixture(spec(examples, cleaning), out)
    seconds = time.perf_counter() - start
    shutil.rmtree(out.parent)
    return {
        "examples": info["examples"]["train"] + info["examples"]["validation"],
        "removed": sum(info["removed"].values()),
        "seconds": seconds,
        "rss_main": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_worker": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }


def build_in_subprocess(examples: int, cleaning: bool) -> dict[str, float]:
    args = [sys.executable, __file__, "--one", "full" if cleaning else "plain", "--examples", str(examples)]
    return json.loads(subprocess.run(args, check=True, capture_output=True, text=True).stdout)


def reference_clean(
    examples: list[Example], evaluation: list[Example], threshold: float, num_perm: int, n: int
) -> tuple[list[bool], Counter]:
    """The same cleaning decisions, one example at a time with Python objects and datasketch."""

    def words(text: str) -> list[str]:
        return WORD.findall(text.lower())

    def free_text(ex: Example) -> str:
        return answer_text(ex.output_field, ex.task_type) if ex.task_type in (TaskType.GENERATION, TaskType.NER) else ""

    grams: set[tuple[str, ...]] = set()
    short: set[tuple[str, ...]] = set()
    for ex in evaluation:
        for text in (ex.input_field, free_text(ex)):
            w = words(text)
            grams.update(tuple(w[i : i + n]) for i in range(len(w) - n + 1))
            if MIN_WORDS <= len(w) < n:
                short.add(tuple(w))
    short_lengths = {len(s) for s in short}

    def contaminated(ex: Example) -> bool:
        for w in (words(ex.input_field), words(free_text(ex))):
            for k in (n, *short_lengths):
                if any(tuple(w[i : i + k]) in (grams if k == n else short) for i in range(len(w) - k + 1)):
                    return True
        return False

    bands = bands_for(threshold, num_perm)  # the same banding, so that the same pairs are compared
    lsh = MinHashLSH(num_perm=num_perm, params=(bands, num_perm // bands))
    kept_hashes: dict[str, MinHash] = {}
    seen: set[bytes] = set()
    keep = []
    removed: Counter = Counter()
    for i, ex in enumerate(examples):
        w = words(ex.input_field)
        key = hashlib.blake2b(" ".join(w).encode(), digest_size=8).digest()
        if key in seen:
            keep.append(False)
            removed["exact_duplicate"] += 1
            continue
        seen.add(key)
        m = MinHash(num_perm=num_perm, seed=1, hashfunc=xxhash.xxh32_intdigest)
        m.update_batch([" ".join(w[j : j + SHINGLE]).encode() for j in range(max(1, len(w) - SHINGLE + 1))])
        if any(m.jaccard(kept_hashes[other]) >= threshold for other in lsh.query(m)):
            keep.append(False)
            removed["near_duplicate"] += 1
            continue
        lsh.insert(str(i), m)
        kept_hashes[str(i)] = m
        keep.append(not contaminated(ex))
        removed["contaminated"] += not keep[-1]
    return keep, removed


def compare_cleaning(sample: int) -> dict:
    full = spec(sample, cleaning=True)
    maker = PartMaker(full.model_copy(update={"decontaminate": []}))
    per_subtask = math.ceil(sample / n_subtasks())
    examples = [ex for task in with_data(full) for ex in task.build(maker.corpus(), per_subtask, 0)]
    examples = examples + examples[: len(examples) // 50]  # 2% exact repeats
    evaluation = read_examples(DEV)
    threshold, num_perm, n = full.near_duplicates.threshold, full.near_duplicates.num_perm, full.ngram

    start = time.perf_counter()
    parts = [fingerprint(examples, Contamination(evaluation, n))]
    ours, ours_removed = dedupe(parts, near=(threshold, num_perm), seed=full.seed)
    ours = ours.tolist()
    t_ours = time.perf_counter() - start
    start = time.perf_counter()
    theirs, theirs_removed = reference_clean(examples, evaluation, threshold, num_perm, n)
    t_theirs = time.perf_counter() - start

    both = sum(a == b for a, b in zip(ours, theirs, strict=True))
    print(f"\ncleaning {len(examples):,} examples (exact, near duplicates, decontamination against {len(evaluation)}):")
    for label, seconds, removed in (
        ("reference, one example at a time (regex, sets, datasketch)", t_theirs, theirs_removed),
        ("shoptune (hashed words, numpy, rensa)", t_ours, ours_removed),
    ):
        rate = len(examples) / seconds
        reasons = ", ".join(f"{reason} {removed[reason]:,}" for reason in REASONS)
        print(f"  {label}: {seconds:.1f} s = {rate:,.0f} examples/s; removed: {reasons}")
    print(
        f"  ratio {t_theirs / t_ours:.1f}x; the same decision for {both:,} of {len(examples):,} examples "
        f"({100 * both / len(examples):.2f}%; MinHash estimates differ by hash function)"
    )
    return {
        "cleaning_examples": len(examples),
        "cleaning_shoptune_per_s": len(examples) / t_ours,
        "cleaning_reference_per_s": len(examples) / t_theirs,
        "cleaning_ratio": t_theirs / t_ours,
        "cleaning_same_decision": both / len(examples),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=1_000_000)
    parser.add_argument("--sample", type=int, default=100_000, help="examples for the cleaning comparison")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    parser.add_argument("--one", choices=["plain", "full"], help=argparse.SUPPRESS)  # a single build, as JSON
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_build(args.examples, args.one == "full")))
        return

    rows = []
    for cleaning, label in ((False, "baseline, no near-dup search or decontamination"), (True, "shoptune data build")):
        r = build_in_subprocess(args.examples, cleaning)
        rows.append(r)
        print(
            f"{label}: {r['examples']:,} examples in {r['seconds']:.1f} s = {r['examples'] / r['seconds']:,.0f} "
            f"examples/s, removed {r['removed']:,}, peak RSS {r['rss_main']:,.0f} MiB main, "
            f"{r['rss_worker']:,.0f} MiB largest worker"
        )
    plain, full = rows
    ratio = (full["examples"] / full["seconds"]) / (plain["examples"] / plain["seconds"])
    print(f"ratio, full / baseline throughput: {ratio:.2f}")
    cleaning = compare_cleaning(args.sample)
    if args.json:
        figures = {"builds": {"baseline": plain, "shoptune": full}, "ratio": ratio, **cleaning}
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
