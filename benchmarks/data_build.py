"""Mixture build throughput: examples/s and peak memory for a large mixture, against a baseline run.

The baseline, in the same process, is the same build without the cleaning steps (no near-duplicate
search, no decontamination): the ratio shows what cleaning costs. Repeat sampling is on, as the
shipped raw data has fewer distinct examples than a million for some subtasks.

    python benchmarks/data_build.py [--examples 1000000]
"""

from __future__ import annotations

import argparse
import math
import resource
import shutil
import tempfile
import time
from pathlib import Path

from shoptune.data.build import build_mixture
from shoptune.data.spec import MixtureSpec

ROOT = Path(__file__).resolve().parents[1]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(spec: MixtureSpec) -> tuple[int, float]:
    out = Path(tempfile.mkdtemp()) / "mix"
    start = time.perf_counter()
    info = build_mixture(spec, out)
    seconds = time.perf_counter() - start
    shutil.rmtree(out.parent)
    return info["examples"]["train"] + info["examples"]["validation"], seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=1_000_000)
    args = parser.parse_args()
    n_subtasks = 17  # those the shipped raw data supports
    base = {
        "name": "bench",
        "raw_dir": ROOT / "data" / "raw",
        "repeat": True,
        "examples_per_subtask": math.ceil(args.examples / n_subtasks),
    }
    cleaned = MixtureSpec(**base, decontaminate=[ROOT / "data" / "shopbench" / "development.json"])
    plain = MixtureSpec(**base, near_duplicates=None)

    n_plain, t_plain = run(plain)
    rss_plain = peak_rss_mib()
    n_full, t_full = run(cleaned)
    print(
        f"baseline (no near-dup search, no decontamination): {n_plain:,} examples in {t_plain:.1f} s = "
        f"{n_plain / t_plain:,.0f} examples/s, peak RSS {rss_plain:,.0f} MiB"
    )
    print(
        f"shoptune data build (dedup + MinHash + decontamination): {n_full:,} examples in {t_full:.1f} s = "
        f"{n_full / t_full:,.0f} examples/s, peak RSS {peak_rss_mib():,.0f} MiB"
    )
    print(f"ratio, full / baseline throughput: {(n_full / t_full) / (n_plain / t_plain):.2f}")


if __name__ == "__main__":
    main()
