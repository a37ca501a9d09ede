"""Responses → per-question scores → task, track and overall scores (a typed `Scores`), with bootstrap intervals.

Aggregation follows the competition's rules, not the kit's printout: a task is the mean of its
questions (micro-F1 over the task's summed counts for NER), a track the plain mean of its tasks, and
the overall score the mean of the track scores.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from shoptune.errors import ShoptuneError
from shoptune.evaluate.parsers import parse_multiple_choice, parse_response
from shoptune.metrics import SimilarityRequest, metric_def, micro_f1, sentence_similarity
from shoptune.schema import Example, TaskType
from shoptune.tasks.registry import short_name, track_order


@dataclass(frozen=True)
class QuestionScore:
    task_name: str
    track: str
    task_type: TaskType
    metric: str
    value: float
    counts: tuple[int, int, int] | None = None  # NER only: (tp, fp, fn), summed per task


def score_questions(
    examples: Sequence[Example],
    responses: Sequence[str],
    embedding_models: Mapping[str, str] | None = None,
) -> list[QuestionScore]:
    """One score per question. Embedding metrics are computed in one batch per model."""
    if len(examples) != len(responses):
        raise ValueError("one response per example")
    values: list[float | None] = [None] * len(examples)
    counts: list[tuple[int, int, int] | None] = [None] * len(examples)
    similarity: dict[str, list[tuple[int, SimilarityRequest]]] = defaultdict(list)
    for i, (ex, response) in enumerate(zip(examples, responses, strict=True)):
        pred = parse_response(response, ex.task_type)
        metric = metric_def(ex.metric)
        if metric.embedding is not None:
            similarity[ex.metric].append((i, SimilarityRequest(pred, ex.output_field)))
        elif metric.counts is not None:
            counts[i] = metric.counts(pred, ex.output_field)
            values[i] = micro_f1(*counts[i])
        else:
            assert metric.score is not None
            values[i] = metric.score(pred, ex.output_field)
    for metric, requests in similarity.items():
        sims = sentence_similarity([r for _, r in requests], metric, embedding_models)
        for (i, _), sim in zip(requests, sims, strict=True):
            values[i] = sim
    return [
        QuestionScore(ex.task_name, ex.track, ex.task_type, ex.metric, float(v), c)
        for ex, v, c in zip(examples, values, counts, strict=True)
    ]


def natural_key(name: str) -> list[Any]:
    """task2 before task10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


@dataclass
class _Task:
    track: str
    task_type: str
    metric: str
    values: np.ndarray
    counts: np.ndarray | None  # shape (n, 3) for micro-F1 tasks

    def score(self, idx: np.ndarray | None = None) -> np.ndarray | float:
        """The task score, or one per bootstrap row when idx has shape (B, n)."""
        if self.counts is None:
            return self.values.mean() if idx is None else self.values[idx].mean(axis=1)
        tp, fp, fn = (self.counts.sum(axis=0) if idx is None else self.counts[idx].sum(axis=1)).T
        precision = np.divide(tp, tp + fp, out=np.zeros_like(tp, dtype=float), where=(tp + fp) > 0)
        recall = np.divide(tp, tp + fn, out=np.zeros_like(tp, dtype=float), where=(tp + fn) > 0)
        denom = precision + recall
        f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
        return float(f1) if idx is None else f1


def _group_tasks(scores: Sequence[QuestionScore]) -> dict[str, _Task]:
    rows: dict[str, list[QuestionScore]] = defaultdict(list)
    for s in scores:
        rows[s.task_name].append(s)
    tasks = {}
    for name in sorted(rows, key=natural_key):
        group = rows[name]
        tracks = {s.track for s in group}
        if len(tracks) > 1:
            raise ShoptuneError(f"task {name!r} appears in several tracks: {', '.join(sorted(tracks))}")
        metric_names = sorted({str(s.metric) for s in group})
        is_micro = [metric_def(s.metric).counts is not None for s in group]
        if any(is_micro) and not all(is_micro):
            raise ShoptuneError(f"task {name!r} mixes 'micro f1' with other metrics; give them separate task names")
        tasks[name] = _Task(
            track=group[0].track,
            task_type="+".join(sorted({s.task_type.value for s in group})),
            metric="+".join(metric_names),
            values=np.array([s.value for s in group]),
            counts=np.array([s.counts for s in group], dtype=np.int64) if all(is_micro) else None,
        )
    return tasks


def _tracks(task_scores: Mapping[str, Any], tasks: Mapping[str, _Task]) -> dict[str, Any]:
    by_track: dict[str, list[Any]] = defaultdict(list)
    for name, value in task_scores.items():
        by_track[tasks[name].track].append(value)
    return {track: np.mean(by_track[track], axis=0) for track in sorted(by_track, key=track_order)}


class TaskScore(BaseModel):
    model_config = ConfigDict(frozen=True)

    track: str
    task_type: str
    metric: str
    n: int
    score: float


class Intervals(BaseModel):
    model_config = ConfigDict(frozen=True)

    method: str
    overall: tuple[float, float]
    tracks: dict[str, tuple[float, float]]


class Scores(BaseModel):
    """scores.json: the overall score (mean of the tracks), each track (mean of its tasks), each task, the 95%
    intervals when bootstrapped, and how many questions had no answer (scored as empty responses)."""

    model_config = ConfigDict(frozen=True)

    overall: float
    tracks: dict[str, float]
    tasks: dict[str, TaskScore]
    ci95: Intervals | None = None
    missing: int = 0

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)

    def tasks_of(self, track: str) -> dict[str, TaskScore]:
        return {name: task for name, task in self.tasks.items() if task.track == track}


def aggregate(scores: Sequence[QuestionScore], *, n_bootstrap: int = 1000, seed: int = 0) -> Scores:
    """Task, track and overall scores, and 95% bootstrap intervals resampling questions within tasks."""
    if not scores:
        raise ShoptuneError("nothing to score")
    tasks = _group_tasks(scores)
    task_scores = {name: float(t.score()) for name, t in tasks.items()}
    track_scores = {k: float(v) for k, v in _tracks(task_scores, tasks).items()}
    intervals = None
    if n_bootstrap > 0:
        rng = np.random.default_rng(seed)
        boot_tasks = {
            name: t.score(rng.integers(0, len(t.values), size=(n_bootstrap, len(t.values))))
            for name, t in tasks.items()
        }
        boot_tracks = _tracks(boot_tasks, tasks)
        boot_overall = np.mean(list(boot_tracks.values()), axis=0)

        def ci(samples: np.ndarray) -> tuple[float, float]:
            low, high = np.percentile(samples, [2.5, 97.5])
            return float(low), float(high)

        intervals = Intervals(
            method=f"percentile bootstrap, {n_bootstrap} resamples of questions within each task, seed {seed}",
            overall=ci(boot_overall),
            tracks={track: ci(samples) for track, samples in boot_tracks.items()},
        )
    return Scores(
        overall=float(np.mean(list(track_scores.values()))),
        tracks=track_scores,
        tasks={
            name: TaskScore(
                track=t.track, task_type=t.task_type, metric=t.metric, n=len(t.values), score=task_scores[name]
            )
            for name, t in tasks.items()
        },
        ci95=intervals,
    )


def render_markdown(result: Scores, title: str = "ShopBench scores") -> str:
    """The human view of scores.json: headline, tracks, then every task."""
    ci = result.ci95

    def with_ci(value: float, interval: Sequence[float] | None) -> str:
        return f"{value:.4f}" + (f" [{interval[0]:.4f}, {interval[1]:.4f}]" if interval else "")

    lines = [f"# {title}", ""]
    lines.append(f"**Overall (mean of track scores): {with_ci(result.overall, ci.overall if ci else None)}**")
    if ci:
        lines.append(f"\nIntervals: 95%, {ci.method}.")
    if result.missing:
        lines.append(f"\n{result.missing} question(s) had no prediction and were scored as empty responses.")
    lines += ["", "| track | score | tasks |", "| --- | ---: | ---: |"]
    for track, value in result.tracks.items():
        interval = ci.tracks.get(track) if ci else None
        lines.append(f"| {short_name(track)} | {with_ci(value, interval)} | {len(result.tasks_of(track))} |")
    lines += ["", "| task | track | type | metric | n | score |", "| --- | --- | --- | --- | ---: | ---: |"]
    for name, t in result.tasks.items():
        lines.append(f"| {name} | {short_name(t.track)} | {t.task_type} | {t.metric} | {t.n} | {t.score:.4f} |")
    return "\n".join(lines) + "\n"


def paired_samples(
    systems: Sequence[Sequence[QuestionScore]], *, n_bootstrap: int = 1000, seed: int = 0
) -> dict[str, np.ndarray]:
    """Bootstrap samples (systems x resamples) of the overall score and of each track score, for several
    systems answering the same questions, drawn with the same resampled questions for every system, so
    their differences are paired."""
    grouped = [_group_tasks(scores) for scores in systems]
    rng = np.random.default_rng(seed)
    draws = {name: rng.integers(0, len(t.values), size=(n_bootstrap, len(t.values))) for name, t in grouped[0].items()}
    per_system = []
    for tasks in grouped:
        tracks = _tracks({name: t.score(draws[name]) for name, t in tasks.items()}, tasks)
        per_system.append({"overall": np.mean(list(tracks.values()), axis=0), **tracks})
    return {key: np.array([system[key] for system in per_system]) for key in per_system[0]}


def paired_overall_samples(
    systems: Sequence[Sequence[QuestionScore]], *, n_bootstrap: int = 1000, seed: int = 0
) -> np.ndarray:
    return paired_samples(systems, n_bootstrap=n_bootstrap, seed=seed)["overall"]


def label_shares(examples: Sequence[Example], answers: Sequence[str] | None = None) -> dict[str, float]:
    """The share of multiple-choice questions answered with each option label (the reference answers' shares when
    no answers are given), so a model that learnt a label prior instead of the questions shows as a skew; `other`
    is what the official parser reads as no label."""
    idx = [i for i, ex in enumerate(examples) if ex.task_type is TaskType.MULTIPLE_CHOICE]
    said = [str(examples[i].output_field) if answers is None else answers[i] for i in idx]
    counts: dict[str, int] = {}
    for response in said:
        label = parse_multiple_choice(response)
        key = str(label) if label >= 0 else "other"
        counts[key] = counts.get(key, 0) + 1
    return {key: counts[key] / len(idx) for key in sorted(counts, key=lambda k: (k == "other", k))} if idx else {}


def paired_interval(differences: np.ndarray, point: float) -> tuple[float, float]:
    """The 95% percentile interval of bootstrap differences between two systems, holding `point`: where every
    resample gives one value, the percentiles and the point differ by rounding alone."""
    low, high = np.percentile(differences, [2.5, 97.5])
    low = min(low, point) if np.isclose(low, point) else low
    high = max(high, point) if np.isclose(high, point) else high
    return float(low), float(high)
