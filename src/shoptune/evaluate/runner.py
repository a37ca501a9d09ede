"""`shoptune eval run` and `eval score`: answer every question with a backend, then score.

Fast by construction: questions are grouped by task type, sorted by length and batched (left
padding keeps the padding small), each type gets its own token budget, and multiple choice is one
forward pass. Durable by construction: every batch is journalled before the next starts, and a
rerun answers only what is missing.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from shoptune.config import dump_config
from shoptune.evaluate.backends import BACKENDS, Backend
from shoptune.evaluate.baselines import constant_answers
from shoptune.evaluate.config import EvalConfig
from shoptune.evaluate.constraints import CONSTRAINED, constrainable
from shoptune.evaluate.debias import debiased, label_prior
from shoptune.evaluate.predictions import Journal, read_journal, read_predictions, write_predictions
from shoptune.evaluate.scoring import (
    Scores,
    aggregate,
    label_shares,
    paired_interval,
    paired_samples,
    render_markdown,
    score_questions,
)
from shoptune.evaluate.selection import Selection, select
from shoptune.files import atomic_write_text, read_state
from shoptune.provenance import provenance
from shoptune.runs import Layout, RunFolder, content, resolved
from shoptune.schema import Example, TaskType, read_examples

PREDICTIONS = "predictions.jsonl"
JOURNAL = "predictions.partial.jsonl"
CONFIG = "config.yaml"
SCORED = "scored.json"  # what an `eval score` folder's scores were computed from
RUN_RECORD = "run.json"  # what decides the answers, compared by a rerun before it continues the journal
SCORES = frozenset({"scores.json", "scores.md"})
EVAL = Layout(
    "eval run", frozenset({RUN_RECORD, CONFIG, PREDICTIONS, JOURNAL, *SCORES}), RUN_RECORD, made="answers given"
)
SCORE = Layout("eval score", frozenset({SCORED, *SCORES}), SCORED, made="scores computed")
BASELINE = "baseline.json"  # what a no-model baseline answered, per task type
NO_MODEL = Layout("eval baseline", frozenset({BASELINE, PREDICTIONS, *SCORES}), BASELINE, made="no-model answers given")


def default_batch_size() -> int:
    """On a CPU, long ShopBench prompts make batches compute-bound and large padded masks costly."""
    import torch

    return 32 if torch.cuda.is_available() else 8


_SHARED: dict[str, Backend] | None = None  # inside `shared_backends`: the last backend made, by what shaped it


@contextlib.contextmanager
def shared_backends() -> Iterator[None]:
    """Runs inside share one loaded model where their settings differ only in how it answers (a variant, another
    set): a study's cell loads its model once for all its runs. The model is let go on leaving, before the next
    cell trains."""
    global _SHARED
    outer, _SHARED = _SHARED, {}
    try:
        yield
    finally:
        _SHARED = outer


def make_backend(config: EvalConfig) -> Backend:
    if _SHARED is None:
        return BACKENDS[config.backend].make(config)
    key = json.dumps(config.model_dump(mode="json", exclude=ANSWERING_ONLY), sort_keys=True)
    if key not in _SHARED:
        _SHARED.clear()  # one model in memory at a time
        _SHARED[key] = BACKENDS[config.backend].make(config)
    backend = _SHARED[key]
    if hasattr(backend, "truncated_prompts"):
        backend.truncated_prompts = 0  # counted per run
    return backend


# Settings read when answering, not when a backend is made: runs that differ only in these can share one.
ANSWERING_ONLY = {
    "constrained",
    "mc_mode",
    "mc_debias",
    "max_new_tokens",
    "tasks",
    "limit",
    "limit_per_task",
    "bootstrap",
    "seed",
    "embedding_models",
    "batch_size",
    "decode_width",
}


@dataclass
class Job:
    """A run of same-kind questions: one token budget, one way of answering."""

    task_type: TaskType
    indices: list[int]


def plan_jobs(examples: Sequence[Example], pending: Sequence[int]) -> list[Job]:
    """Group by task type, longest prompts first in each, so batches hold prompts of similar length."""
    by_type: dict[TaskType, list[int]] = {}
    for i in pending:
        by_type.setdefault(examples[i].task_type, []).append(i)
    return [
        Job(task_type, sorted(idx, key=lambda i: (-len(examples[i].input_field), i)))
        for task_type, idx in sorted(by_type.items(), key=lambda kv: list(TaskType).index(kv[0]))
    ]


def answer(
    backend: Backend,
    examples: Sequence[Example],
    pending: Sequence[int],
    config: EvalConfig,
    on_batch: Callable[[list[tuple[int, str]]], None],
    progress: bool = True,
) -> None:
    """Answer the pending questions, handing answers to `on_batch` as they come (a batch at a time, so a killed run
    keeps them). Multiple choice goes by batches of option scores; every other question, of every type, through one
    continuous batch where the backend has one (`answer_all`), else by batches of its type."""
    size = config.batch_size or default_batch_size()
    if config.decode_width is not None and hasattr(backend, "width"):
        backend.width = config.decode_width  # type: ignore[attr-defined]
    prior = None
    if config.mc_debias:  # from a fixed sample of the whole set, so a resumed run debiases alike
        questions = [ex.input_field for ex in examples if ex.task_type is TaskType.MULTIPLE_CHOICE]
        prior = label_prior(backend.option_scores, questions)  # type: ignore[attr-defined]
    bar = tqdm(total=len(pending), desc="answering", unit="q", disable=not progress, file=sys.stderr)

    def give(batch: list[tuple[int, str]]) -> None:
        on_batch(batch)
        bar.update(len(batch))

    generated: list[tuple[int, str, int, TaskType | None]] = []
    for job in plan_jobs(examples, pending):
        budget = config.max_new_tokens[job.task_type.value]
        constrain = job.task_type if config.constrained and job.task_type in CONSTRAINED else None
        if job.task_type is TaskType.MULTIPLE_CHOICE and (prior is not None or config.mc_mode == "logits"):
            for start in range(0, len(job.indices), size):
                batch = job.indices[start : start + size]
                prompts = [examples[i].input_field for i in batch]
                if prior is not None:
                    responses = [debiased(scores, prior) for scores in backend.option_scores(prompts)]  # type: ignore[attr-defined]
                else:
                    responses = backend.choose(prompts)
                give(list(zip(batch, responses, strict=True)))
        elif hasattr(backend, "answer_all"):
            generated += [(i, examples[i].input_field, budget, constrain) for i in job.indices]
        else:
            for start in range(0, len(job.indices), size):
                batch = job.indices[start : start + size]
                responses = backend.generate([examples[i].input_field for i in batch], budget, constrain)
                give(list(zip(batch, responses, strict=True)))
    if generated:
        done: list[tuple[int, str]] = []
        for answered in backend.answer_all(generated):  # type: ignore[attr-defined]
            done.append(answered)
            if len(done) >= size:
                give(done)
                done = []
        if done:
            give(done)
    bar.close()


@dataclass
class RunResult:
    scores: Scores
    computed: int
    reused: int
    out: Path
    truncated_prompts: int = 0  # prompts longer than the model's context, which lost their beginning
    selection: Selection | None = None
    finished_earlier: bool = False  # every chosen question was answered before this run: only scored again
    unconstrained: int = 0  # constrained answering asked, but the question lists no candidates to keep it to


def eval_identity(data: Path, config: EvalConfig) -> dict[str, Any]:
    """What decides a run's answers: the questions (their file's resolved path and content) and the answer settings
    (`EvalConfig.answer_settings`, paths resolved); a folder holding answers made otherwise is refused."""
    return {"data": resolved(data), "data_sha256": content(data), "answer_settings": config.answer_settings()}


def _carried(out: Path) -> dict[str, Any]:
    """What a resumed run keeps of its record besides its identity: counts and provenance so far."""
    if not (out / RUN_RECORD).is_file():
        return {"truncated_prompts": 0}
    previous = read_state(out / RUN_RECORD)
    kept = {key: previous[key] for key in ("reused_answers", "provenance") if key in previous}
    return {"truncated_prompts": int(previous.get("truncated_prompts") or 0), **kept}


def reusable(examples: Sequence[Example], data: Path, config: EvalConfig, folders: Sequence[Path]) -> dict[int, str]:
    """Answers of finished runs on the same data whose settings agree with `config` on everything that can change
    an answer of the question's task type (`EvalConfig.settings_for`): a variant that only debiases multiple
    choice takes every other answer from the plain run instead of computing it again."""
    found: dict[int, str] = {}
    questions = {"data": resolved(data), "data_sha256": content(data)}
    for folder in folders:
        if not (folder / PREDICTIONS).is_file() or not (folder / RUN_RECORD).is_file():
            continue
        record = read_state(folder / RUN_RECORD)
        if any(record.get(key) != value for key, value in questions.items()):
            continue
        other = EvalConfig.model_validate(record["answer_settings"])
        same = {t for t in TaskType if other.settings_for(t) == config.settings_for(t)}
        answers = read_predictions(folder / PREDICTIONS, len(examples))
        found.update({i: a for i, a in answers.items() if examples[i].task_type in same and i not in found})
    return found


def run_eval(data: Path, out: Path, config: EvalConfig, progress: bool = True, reuse: Sequence[Path] = ()) -> RunResult:
    """Answer what is missing, then score; one run at a time per folder. `reuse`: folders of finished runs whose
    answers stand for this run's where they cannot differ (`reusable`)."""
    examples = read_examples(data)
    identity = eval_identity(data, config)
    with RunFolder.open(out, EVAL, identity) as folder:
        record = {**identity, **_carried(out)}
        done: dict[int, str] = {}
        if (out / PREDICTIONS).is_file():
            done.update(read_predictions(out / PREDICTIONS, len(examples)))
        done.update(read_journal(out / JOURNAL))
        chosen = select(examples, config.tasks, config.limit_per_task, config.limit)
        pending = [i for i in chosen.indices if i not in done]
        finished_earlier = not pending
        taken = reusable(examples, data, config, reuse) if pending and reuse else {}
        taken = {i: taken[i] for i in pending if i in taken}
        if taken:
            record["reused_answers"] = int(record.get("reused_answers") or 0) + len(taken)
            folder.write_record(record)
            atomic_write_text(out / CONFIG, dump_config(config))
            journal = Journal(out / JOURNAL)
            journal.write(sorted(taken.items()))
            journal.close()
            done.update(taken)
            pending = [i for i in pending if i not in taken]
        if pending:
            began = time.monotonic()
            backend = make_backend(config)
            served = config.backend == "openai"  # the model is a name the server knows, not weights here
            made = provenance(None if served else config.model, config.allow_download, record.get("provenance"))
            if served:
                made["model_identity"] = {"model": config.model, "base_url": config.base_url}
            record["provenance"] = made
            folder.write_record(record)
            atomic_write_text(out / CONFIG, dump_config(config))
            journal = Journal(out / JOURNAL)
            try:

                def keep(batch: list[tuple[int, str]]) -> None:
                    journal.write(batch)
                    done.update(batch)

                answer(backend, examples, pending, config, keep, progress=progress)
            finally:
                journal.close()
                # Counted even for an interrupted run: its journalled answers are kept and reused.
                record["truncated_prompts"] += getattr(backend, "truncated_prompts", 0)
                record["provenance"]["wall_seconds"] += round(time.monotonic() - began, 1)
                folder.write_record(record)
        if pending or taken:
            write_predictions(out / PREDICTIONS, done)
            (out / JOURNAL).unlink(missing_ok=True)
        if config.constrained:  # a retrieval or ranking question that lists no candidates is answered freely
            loose = sum(not constrainable(examples[i].task_type, examples[i].input_field) for i in chosen.indices)
            if loose != record.get("unconstrained_questions", 0):
                record["unconstrained_questions"] = loose
                folder.write_record(record)
        kept = [examples[i] for i in chosen.indices]
        scores = score_and_write(kept, {k: done[i] for k, i in enumerate(chosen.indices) if i in done}, out, config)
    return RunResult(
        scores=scores,
        computed=len(pending),
        reused=len(chosen.indices) - len(pending),
        out=out,
        truncated_prompts=record["truncated_prompts"],
        selection=chosen,
        finished_earlier=finished_earlier,
        unconstrained=int(record.get("unconstrained_questions", 0)),
    )


def score_and_write(examples: Sequence[Example], answers: dict[int, str], out: Path, config: EvalConfig) -> Scores:
    """Score (a missing answer counts as an empty response) and write scores.json and scores.md."""
    responses = [answers.get(i, "") for i in range(len(examples))]
    scores = aggregate(
        score_questions(examples, responses, config.embedding_models), n_bootstrap=config.bootstrap, seed=config.seed
    ).model_copy(update={"missing": sum(1 for i in range(len(examples)) if i not in answers)})
    atomic_write_text(out / "scores.json", json.dumps(scores.to_json(), indent=2) + "\n")
    atomic_write_text(out / "scores.md", render_markdown(scores))
    return scores


def score_file(data: Path, predictions: Path, out: Path, config: EvalConfig) -> Scores:
    """`eval score`: any system's raw responses, scored exactly like the official evaluator, into a folder of its
    own: one that holds another verb's run, or scores of other questions or answers, is refused."""
    examples = read_examples(data)
    answers = read_predictions(predictions, len(examples))
    identity = {"inputs": {"data": content(data), "predictions": content(predictions)}}
    with RunFolder.open(out, SCORE, identity) as folder:
        scores = score_and_write(examples, answers, out, config)
        folder.write_record({"data": resolved(data), "predictions": resolved(predictions), **identity})
    return scores


def compare_files(
    data: Path, first: Path, second: Path, config: EvalConfig, json_out: Path | None = None
) -> dict[str, Any]:
    """`eval compare`: two systems' answers to the same questions (an old adapter and a new one, say), the second
    minus the first overall and per track with paired bootstrap 95% intervals (the same resampled questions for
    both), and the share of multiple-choice answers on each label beside the truth's."""
    examples = read_examples(data)
    chosen = select(examples, config.tasks, config.limit_per_task, config.limit)
    kept = [examples[i] for i in chosen.indices]
    systems, missing = [], []
    for path in (first, second):
        answers = read_predictions(path, len(examples))
        systems.append([answers.get(i, "") for i in chosen.indices])
        missing.append(sum(1 for i in chosen.indices if i not in answers))
    scored = [score_questions(kept, answers, config.embedding_models) for answers in systems]
    samples = paired_samples(scored, n_bootstrap=max(config.bootstrap, 1), seed=config.seed)
    point = [aggregate(s, n_bootstrap=0) for s in scored]
    levels = {}
    for level, draws in samples.items():
        values = [p.overall if level == "overall" else p.tracks[level] for p in point]
        difference = values[1] - values[0]
        ci = list(paired_interval(draws[1] - draws[0], difference))
        levels[level] = {"first": values[0], "second": values[1], "difference": difference, "ci": ci}
    found = {
        "data": resolved(data),
        "first": resolved(first),
        "second": resolved(second),
        "questions": len(kept),
        "missing": {"first": missing[0], "second": missing[1]},  # scored as empty responses, as `eval score` does
        "selection": chosen.describe(),
        "levels": levels,
        "mc_labels": {
            "truth": label_shares(kept),
            "first": label_shares(kept, systems[0]),
            "second": label_shares(kept, systems[1]),
        },
    }
    if json_out is not None:
        atomic_write_text(json_out, json.dumps(found, indent=2) + "\n")
    return found


def baseline_file(
    data: Path, out: Path, config: EvalConfig, chosen_on: Path | None = None
) -> tuple[Scores, dict[str, str]]:
    """`eval baseline`: the no-model answers of `evaluate.baselines`, written and scored like a model's; the
    multiple-choice label chosen on `chosen_on` (a validation split), else on the set itself (an upper bound)."""
    examples = read_examples(data)
    reference = read_examples(chosen_on) if chosen_on is not None else None
    responses, said = constant_answers(examples, reference)
    identity = {"inputs": {"data": content(data), "chosen_on": content(chosen_on)}}
    with RunFolder.open(out, NO_MODEL, identity) as folder:
        answers = dict(enumerate(responses))
        write_predictions(out / PREDICTIONS, answers)
        scores = score_and_write(examples, answers, out, config)
        folder.write_record({"data": resolved(data), **identity, "answered": said})
    return scores, said
