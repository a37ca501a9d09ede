"""`shoptune eval run` and `eval score`: answer every question with a backend, then score.

Fast by construction: questions are grouped by task type, sorted by length and batched (left
padding keeps the padding small), each type gets its own token budget, and multiple choice is one
forward pass. Durable by construction: every batch is journalled before the next starts, and a
rerun answers only what is missing.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator
from tqdm import tqdm

from shoptune.config import StrictConfig, dump_config
from shoptune.errors import ShoptuneError
from shoptune.evaluate.backends import BACKENDS, Backend
from shoptune.evaluate.constraints import CONSTRAINED
from shoptune.evaluate.debias import debiased, label_prior
from shoptune.evaluate.predictions import Journal, read_journal, read_predictions, write_predictions
from shoptune.evaluate.scoring import Scores, aggregate, render_markdown, score_questions
from shoptune.hub import DEFAULT_MODEL
from shoptune.locks import writing
from shoptune.metrics import embedding_metrics
from shoptune.schema import Example, TaskType, atomic_write_text, read_examples, read_state
from shoptune.tasks.render import SHOPBENCH_SYSTEM_PROMPT

# Enough for every well-formed answer of the type; generation keeps the official baseline's 100 tokens,
# which the other types, whose parsers read a few numbers or names, do not need.
DEFAULT_MAX_NEW_TOKENS: dict[str, int] = {
    TaskType.MULTIPLE_CHOICE.value: 1,
    TaskType.RETRIEVAL.value: 16,
    TaskType.RANKING.value: 20,
    TaskType.NER.value: 48,
    TaskType.GENERATION.value: 100,
}

PREDICTIONS = "predictions.jsonl"
JOURNAL = "predictions.partial.jsonl"
CONFIG = "config.yaml"


class EvalConfig(StrictConfig):
    """Everything that decides what the model answers, plus how the answers are scored. Each setting is also an
    `eval run` option (its description is the option's help)."""

    model: str = Field(DEFAULT_MODEL, description="model name, .gguf file, Hugging Face folder or hub id")
    adapter: str | None = Field(None, description="PEFT LoRA adapter folder to apply to the model")
    alpha: float = Field(
        1.0,
        ge=0.0,
        le=1.0,
        description="weight interpolation (wise-ft): 0 the base model, 1 the tuned one (hf backend)",
    )
    ensemble: list[str] = Field(
        default_factory=list,
        description="adapter folders answering together: multiple choice by their mean option scores, the other task "
        "types by their exact linear combination (hf backend)",
    )
    backend: str = Field(
        "hf", description="where answers come from: " + "; ".join(f"{k}: {v.help}" for k, v in BACKENDS.items())
    )
    base_url: str | None = Field(None, description="openai backend: the server's /v1 URL")
    api: Literal["chat", "completions"] = Field("chat", description="openai backend: the endpoint to call")
    api_key_env: str = Field("OPENAI_API_KEY", description="openai backend: the variable that holds the API key")
    concurrency: int = Field(8, ge=1, le=256, description="openai backend: requests in flight")
    batch_size: int | None = Field(
        None, ge=1, le=1024, description="questions per batch (default: 8 on a CPU, 32 on a GPU)"
    )
    constrained: bool = Field(
        False,
        description="keep answers of structured task types to what their parser reads in full: a listed option, "
        "three listed candidates, a permutation of them, spans of the input (hf backend)",
    )
    mc_mode: Literal["logits", "generate"] = Field(
        "logits", description="multiple choice by one forward pass over the option digits, or generated and parsed"
    )
    mc_debias: bool = Field(
        False,
        description="take the model's preference for option labels out of multiple choice (prior estimated on "
        "the first 32 questions, each with its options rotated through every label)",
    )
    max_new_tokens: dict[str, int] = Field(
        default_factory=lambda: dict(DEFAULT_MAX_NEW_TOKENS),
        description="token budget per task type, TASK_TYPE=N (e.g. generation=64)",
        json_schema_extra={"option": "max-new-tokens"},
    )
    system_prompt: str | None = Field(SHOPBENCH_SYSTEM_PROMPT, description="the official baselines' system prompt")
    chat_template: bool | None = Field(None, description="apply the model's chat template (default: when it has one)")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description="weights' precision")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:1, mps")
    allow_download: bool = Field(False, description="let a hub id be fetched when it is not cached")
    limit: int | None = Field(None, ge=1, description="only the first N questions")
    embedding_models: dict[str, str] = Field(
        default_factory=dict,
        description="METRIC=PATH: a sentence-embedding metric's local model",
        json_schema_extra={"option": "embedding-model"},
    )
    bootstrap: int = Field(1000, ge=0, le=100_000, description="bootstrap resamples for the 95% intervals (0: none)")
    seed: int = Field(0, description="draws the bootstrap resamples")

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        if value not in BACKENDS:
            raise ValueError(f"unknown backend {value!r}; expected one of: {', '.join(BACKENDS)}")
        return value

    @model_validator(mode="after")
    def _token_level(self) -> EvalConfig:
        wanted = [name for name, on in (("constrained answers", self.constrained), ("mc_debias", self.mc_debias)) if on]
        if wanted and not BACKENDS[self.backend].token_level:
            able = ", ".join(name for name, entry in BACKENDS.items() if entry.token_level)
            raise ValueError(f"{' and '.join(wanted)} need a backend that sees token scores ({able})")
        if self.alpha != 1.0 and not self.adapter:
            raise ValueError("alpha interpolates toward an adapter: give --adapter")
        if self.ensemble and (self.adapter or len(self.ensemble) < 2):
            raise ValueError("an ensemble is two or more adapters, given instead of --adapter")
        if self.mc_debias and self.mc_mode != "logits":
            raise ValueError("mc_debias works on option scores: it needs mc_mode logits")
        return self

    @field_validator("max_new_tokens")
    @classmethod
    def _known_types(cls, value: dict[str, int]) -> dict[str, int]:
        unknown = set(value) - set(DEFAULT_MAX_NEW_TOKENS)
        if unknown:
            raise ValueError(f"unknown task type(s) {sorted(unknown)}; expected {sorted(DEFAULT_MAX_NEW_TOKENS)}")
        if any(v < 1 for v in value.values()):
            raise ValueError("every budget must be at least 1 token")
        return {**DEFAULT_MAX_NEW_TOKENS, **value}

    @field_validator("embedding_models")
    @classmethod
    def _embedding_metrics(cls, value: dict[str, str]) -> dict[str, str]:
        known = sorted(m.value for m in embedding_metrics())
        unknown = sorted(set(value) - set(known))
        if unknown:
            raise ValueError(f"unknown embedding metric(s) {unknown}; expected {known}")
        return value

    def answer_settings(self) -> dict[str, Any]:
        """The settings that change answers: a resumed run must match them, scoring settings may differ."""
        excluded = {"bootstrap", "seed", "embedding_models", "concurrency", "limit", "batch_size"}
        return self.model_dump(mode="json", exclude=excluded)


def default_batch_size() -> int:
    """On a CPU, long ShopBench prompts make batches compute-bound and large padded masks costly."""
    import torch

    return 32 if torch.cuda.is_available() else 8


def make_backend(config: EvalConfig) -> Backend:
    return BACKENDS[config.backend].make(config)


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
    size = config.batch_size or default_batch_size()
    prior = None
    if config.mc_debias:  # from a fixed sample of the whole set, so a resumed run debiases alike
        questions = [ex.input_field for ex in examples if ex.task_type is TaskType.MULTIPLE_CHOICE]
        prior = label_prior(backend.option_scores, questions)  # type: ignore[attr-defined]
    bar = tqdm(total=len(pending), desc="answering", unit="q", disable=not progress, file=sys.stderr)
    for job in plan_jobs(examples, pending):
        for start in range(0, len(job.indices), size):
            batch = job.indices[start : start + size]
            prompts = [examples[i].input_field for i in batch]
            if job.task_type is TaskType.MULTIPLE_CHOICE and prior is not None:
                responses = [debiased(scores, prior) for scores in backend.option_scores(prompts)]  # type: ignore[attr-defined]
            elif job.task_type is TaskType.MULTIPLE_CHOICE and config.mc_mode == "logits":
                responses = backend.choose(prompts)
            else:
                constrain = job.task_type if config.constrained and job.task_type in CONSTRAINED else None
                responses = backend.generate(prompts, config.max_new_tokens[job.task_type.value], constrain)
            on_batch(list(zip(batch, responses, strict=True)))
            bar.update(len(batch))
    bar.close()


@dataclass
class RunResult:
    scores: Scores
    computed: int
    reused: int
    out: Path
    truncated_prompts: int = 0  # prompts longer than the model's context, which lost their beginning


def _prepare_out(out: Path, config: EvalConfig, data: Path) -> dict[str, Any]:
    """The folder's run record; refuse to resume into a folder whose answers came from other settings or data."""
    if out.exists() and not out.is_dir():
        raise ShoptuneError(f"--out {out}: exists and is not a directory")
    current = {"data": str(data.resolve()), "answer_settings": config.answer_settings(), "truncated_prompts": 0}
    record = out / "run.json"
    if not record.is_file():
        return current
    previous = read_state(record)
    changed = sorted(
        k
        for k in current["answer_settings"]
        if previous.get("answer_settings", {}).get(k) != current["answer_settings"][k]
    )
    if previous.get("data") != current["data"]:
        changed.insert(0, "data")
    if changed:
        raise ShoptuneError(
            f"{out} holds answers from different settings ({', '.join(changed)}); "
            "choose another --out or delete that folder"
        )
    return {**current, "truncated_prompts": int(previous.get("truncated_prompts") or 0)}


def run_eval(data: Path, out: Path, config: EvalConfig, progress: bool = True) -> RunResult:
    """Answer what is missing, then score; one run at a time per folder."""
    examples = read_examples(data)
    with writing(out):
        record = _prepare_out(out, config, data)
        done: dict[int, str] = {}
        if (out / PREDICTIONS).is_file():
            done.update(read_predictions(out / PREDICTIONS, len(examples)))
        done.update(read_journal(out / JOURNAL))
        examples = examples[: config.limit] if config.limit else examples
        pending = [i for i in range(len(examples)) if i not in done]
        if pending:
            backend = make_backend(config)
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(out / "run.json", json.dumps(record, indent=2) + "\n")
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
                atomic_write_text(out / "run.json", json.dumps(record, indent=2) + "\n")
            write_predictions(out / PREDICTIONS, done)
            (out / JOURNAL).unlink(missing_ok=True)
        scores = score_and_write(examples, done, out, config)
    return RunResult(
        scores=scores,
        computed=len(pending),
        reused=len(examples) - len(pending),
        out=out,
        truncated_prompts=record["truncated_prompts"],
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
    """`eval score`: any system's raw responses, scored exactly like the official evaluator."""
    examples = read_examples(data)
    answers = read_predictions(predictions, len(examples))
    if out.exists() and not out.is_dir():
        raise ShoptuneError(f"--out {out}: exists and is not a directory")
    return score_and_write(examples, answers, out, config)
