"""Compare `shoptune eval run` folders that answered the same questions, each against a reference folder:
overall score, the paired bootstrap 95% interval of the difference, the share of answers the official parser
reads in full, and the mean task score per task type. Prints a Markdown table.

    python scripts/compare_eval_runs.py DATA REFERENCE_DIR OTHER_DIR [OTHER_DIR ...] [--label NAME=DIR ...]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

from shoptune.errors import ShoptuneError
from shoptune.evaluate.constraints import well_formed
from shoptune.evaluate.predictions import read_predictions
from shoptune.evaluate.scoring import aggregate, paired_overall_samples, score_questions
from shoptune.schema import read_examples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("runs", type=Path, nargs="+", help="the first is the reference")
    args = parser.parse_args()
    examples = read_examples(args.data)
    answers = {}
    for run in args.runs:
        got = read_predictions(run / "predictions.jsonl", len(examples))
        answers[run] = [got.get(i, "") for i in range(len(examples))]
    scored = {run: score_questions(examples, a) for run, a in answers.items()}
    reference = args.runs[0]
    types = sorted({ex.task_type.value for ex in examples})
    print("| run | overall | minus reference | 95% CI | parses | " + " | ".join(types) + " |")
    print("| --- | ---: | ---: | --- | ---: | " + " | ".join("---:" for _ in types) + " |")
    for run in args.runs:
        scores = aggregate(scored[run], n_bootstrap=0)
        samples = paired_overall_samples([scored[run], scored[reference]])
        low, high = np.percentile(samples[0] - samples[1], [2.5, 97.5])
        parses = statistics.mean(
            well_formed(ex.task_type, ex.input_field, a) for ex, a in zip(examples, answers[run], strict=True)
        )
        per_type = [statistics.mean(t.score for t in scores.tasks.values() if t.task_type == kind) for kind in types]
        base = aggregate(scored[reference], n_bootstrap=0).overall
        print(
            f"| {run.name} | {scores.overall:.4f} | {scores.overall - base:+.4f} | [{low:+.4f}, {high:+.4f}] | "
            f"{parses:.2f} | " + " | ".join(f"{v:.3f}" for v in per_type) + " |"
        )


if __name__ == "__main__":
    try:
        main()
    except ShoptuneError as exc:  # a missing folder or a malformed file: one line, not a traceback
        sys.exit(f"error: {exc}")
