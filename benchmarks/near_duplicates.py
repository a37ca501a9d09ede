"""Near-duplicate removal: what it removes and what it costs, by the number of MinHash permutations.

For each `num_perm`, the near-duplicate step of `shoptune data build` runs over the examples a mixture
spec builds (exact duplicates already out), timed against the default of 64 in the same run. With
`--true-jaccard` (default for mixtures under 100,000 examples) every removed prompt is compared, by
exact word-3-gram Jaccard, with every earlier kept prompt of its subtask, so one sees how close to the
threshold the MinHash estimate decides.

    python benchmarks/near_duplicates.py [--spec configs/mixtures/all.yaml] [--examples N] [--perms 64,128,256,512]
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import time
from pathlib import Path

import numpy as np

from shoptune.config import load_config
from shoptune.data.build import make_parts
from shoptune.data.clean import dedupe
from shoptune.data.spec import MixtureSpec

ROOT = Path(__file__).resolve().parents[1]
WORD = re.compile(r"\w+")


def shingles(text: str) -> set[tuple[str, ...]]:
    w = WORD.findall(text.lower())
    return {tuple(w[i : i + 3]) for i in range(max(1, len(w) - 2))}


def closest_kept(removed: np.ndarray, keep: np.ndarray, prompts: list[str], tasks: list[str]) -> list[float]:
    """Per removed row, the highest exact Jaccard with an earlier kept row of the same subtask."""
    best = []
    for row in removed.tolist():
        mine = shingles(prompts[row])
        others = (shingles(prompts[i]) for i in np.flatnonzero(keep[:row]).tolist() if tasks[i] == tasks[row])
        best.append(max((len(mine & o) / len(mine | o) for o in others), default=0.0))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=ROOT / "configs" / "mixtures" / "all.yaml")
    parser.add_argument("--examples", type=int, help="instead of the spec's size: this many, repeat sampling on")
    parser.add_argument("--perms", default="64,128,256,512")
    parser.add_argument("--true-jaccard", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    args = parser.parse_args()

    spec = load_config(MixtureSpec, args.spec)
    if args.examples:
        per_subtask = math.ceil(args.examples / len(spec.selected()))
        spec = spec.model_copy(update={"examples_per_subtask": per_subtask, "repeat": True})
    parts = make_parts(spec, None, progress=False)
    fingerprints = [p.fingerprints for p in parts]
    unique, _ = dedupe(fingerprints, near=None, seed=spec.seed)
    n = len(unique)
    true_jaccard = n < 100_000 if args.true_jaccard is None else args.true_jaccard
    if true_jaccard:
        prompts = [s for p in parts for s in p.table["input_field"].to_pylist()]
        tasks = [s for p in parts for s in p.table["task_name"].to_pylist()]
    threshold = spec.near_duplicates.threshold if spec.near_duplicates else 0.9
    print(f"{spec.name}: {n:,} built examples, {int(unique.sum()):,} after exact de-duplication; threshold {threshold}")

    baseline = None
    figures: dict = {"spec": spec.name, "built": n, "threshold": threshold, "by_num_perm": {}}
    for num_perm in [int(p) for p in args.perms.split(",")]:
        start = time.perf_counter()
        keep, removed = dedupe(fingerprints, near=(threshold, num_perm), seed=spec.seed)
        seconds = time.perf_counter() - start
        baseline = baseline or seconds
        line = (
            f"num_perm {num_perm:>3}: removed {removed.get('near_duplicate', 0):,} near duplicates in "
            f"{seconds:.1f} s ({seconds / baseline:.2f}x the first)"
        )
        row = {"removed": removed.get("near_duplicate", 0), "seconds": seconds, "ratio_to_first": seconds / baseline}
        figures["by_num_perm"][num_perm] = row
        if true_jaccard:
            best = closest_kept(np.flatnonzero(unique & ~keep), keep, prompts, tasks)
            row["exact_jaccard"] = best
            if best:
                line += (
                    f"; exact Jaccard with the closest kept prompt: min {min(best):.3f}, median "
                    f"{statistics.median(best):.3f}, {sum(b >= threshold for b in best)} at or above the threshold"
                )
        print(line)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
