"""Debiased multiple choice: a model's preference for option labels ("it answers 1"), estimated and taken out.

The prior over labels is estimated on a fixed sample of the questions, each asked with its options rotated
through every position: averaged over the rotations, what an option says cancels out and what remains is the
model's preference for the label itself. Every question is then answered by the option whose label
probability, divided by that prior, is highest (the permutation-based prior estimation of Zheng et al.,
"Large Language Models Are Not Robust Multiple Choice Selectors", ICLR 2024).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from shoptune.tasks.render import OPTION_LINE

CALIBRATION = 32  # questions whose rotations estimate the prior
Scorer = Callable[[Sequence[str]], list[dict[str, float]]]  # prompts -> log-probability per listed label


def rotations(prompt: str) -> list[str] | None:
    """The prompt with its option texts rotated through every label (0..n-1 in order), or None when its options
    are not numbered 0..n-1 on lines of their own."""
    lines = prompt.split("\n")
    where = [i for i, line in enumerate(lines) if OPTION_LINE.match(line)]
    labels = [OPTION_LINE.match(lines[i]).group(1) for i in where]  # type: ignore[union-attr]
    if len(where) < 2 or labels != [str(i) for i in range(len(where))]:
        return None
    texts = [lines[i][OPTION_LINE.match(lines[i]).end() :] for i in where]  # type: ignore[union-attr]
    out = []
    for shift in range(len(texts)):
        rotated = list(lines)
        for k, i in enumerate(where):
            rotated[i] = f"{k}. {texts[(k + shift) % len(texts)]}"
        out.append("\n".join(rotated))
    return out


def label_prior(scorer: Scorer, prompts: Sequence[str]) -> dict[int, dict[str, float]]:
    """Per number of options, the model's probability of each label, averaged over rotations and questions."""
    sums: dict[int, dict[str, float]] = {}
    counts: dict[int, int] = {}
    for prompt in prompts[:CALIBRATION]:
        rotated = rotations(prompt)
        if rotated is None:
            continue
        n = len(rotated)
        for scores in scorer(rotated):
            total = sums.setdefault(n, dict.fromkeys(map(str, range(n)), 0.0))
            for label, logp in scores.items():
                total[label] += math.exp(logp)
            counts[n] = counts.get(n, 0) + 1
    return {n: {label: value / counts[n] for label, value in total.items()} for n, total in sums.items()}


def debiased(scores: dict[str, float], prior: dict[int, dict[str, float]]) -> str:
    """The label whose probability over its prior is highest; without a prior for this many options, as scored."""
    if not scores:
        return ""
    known = prior.get(len(scores))
    if known is None or set(known) != set(scores):
        return max(scores, key=scores.__getitem__)
    return max(scores, key=lambda label: scores[label] - math.log(max(known[label], 1e-12)))
