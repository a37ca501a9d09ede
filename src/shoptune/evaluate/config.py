"""The settings of an evaluation run: what decides the answers, and how they are scored.

A module of its own, so the backends, the runner, the KDD Cup predictor and the study all read one
definition without importing each other.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from shoptune.config import StrictConfig
from shoptune.evaluate.backends import BACKENDS
from shoptune.evaluate.constraints import CONSTRAINED
from shoptune.hub import DEFAULT_MODEL, base_for
from shoptune.metrics import embedding_metrics
from shoptune.runs import settings
from shoptune.schema import TaskType
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


class EvalConfig(StrictConfig):
    """Everything that decides what the model answers, plus how the answers are scored. Each setting is also an
    `eval run` option (its description is the option's help)."""

    model: str = Field(
        DEFAULT_MODEL,
        description="model name, .gguf file, Hugging Face folder or hub id (default: the adapter's own base, else "
        f"{DEFAULT_MODEL})",
    )
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
    decode_width: int | None = Field(
        None,
        ge=1,
        le=4096,
        description="answers decoded together by the hf backend's continuous batch (default: 32 on a CPU, 64 on a GPU)",
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
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto",
        description="weights' precision (auto: bfloat16 on a GPU that has it, else float32; bfloat16 on a CPU with "
        "AMX ran twice as fast, with other answers: benchmarks/eval_throughput.py --options)",
    )
    int8: bool = Field(
        False,
        description="hf backend on a CPU: dynamic int8 weights for the linear layers (answers "
        "differ: see benchmarks/eval_throughput.py --options)",
    )
    compile: bool = Field(False, description="hf backend: torch.compile the model (measured slower on a CPU)")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:1, mps")
    tensor_parallel_size: int = Field(1, ge=1, description="vllm backend: GPUs one model is split over (70B: 4-8)")
    gpu_memory_utilization: float = Field(
        0.9, gt=0.0, le=1.0, description="vllm backend: the share of each GPU's memory it may take"
    )
    max_model_len: int | None = Field(None, ge=16, description="vllm backend: context length (default: the model's)")
    allow_download: bool = Field(False, description="let a hub id be fetched when it is not cached")
    tasks: list[str] | None = Field(
        None, description="only these tasks: names, tracks (any of their names), task types or globs ('category_*')"
    )
    limit_per_task: int | None = Field(None, ge=1, description="only the first N questions of every task")
    limit: int | None = Field(None, ge=1, description="only N questions, taken from the tasks in turn")
    embedding_models: dict[str, str] = Field(
        default_factory=dict,
        description="METRIC=PATH: a sentence-embedding metric's local model",
        json_schema_extra={"option": "embedding-model"},
    )
    bootstrap: int = Field(1000, ge=0, le=100_000, description="bootstrap resamples for the 95% intervals (0: none)")
    seed: int = Field(0, description="draws the bootstrap resamples")

    @model_validator(mode="before")
    @classmethod
    def _adapters_base(cls, data: Any) -> Any:
        """No model named: the one the adapter (or the ensemble's first) was trained on, as its config names it."""
        if isinstance(data, dict) and data.get("model") is None:
            ensemble = data.get("ensemble") or [None]
            return {**data, "model": base_for(None, data.get("adapter") or ensemble[0])}
        return data

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
        if (self.int8 or self.compile) and self.backend != "hf":
            raise ValueError("int8 and compile are settings of the hf backend")
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
        known = sorted(embedding_metrics())
        unknown = sorted(set(value) - set(known))
        if unknown:
            raise ValueError(f"unknown embedding metric(s) {unknown}; expected {known}")
        return value

    def answer_settings(self) -> dict[str, Any]:
        """The settings that change answers (model and adapter paths resolved): a resumed run must match them,
        scoring settings may differ."""
        excluded = {
            "bootstrap",
            "seed",
            "embedding_models",
            "concurrency",
            "limit",
            "limit_per_task",
            "tasks",
            "batch_size",
            "decode_width",
            "gpu_memory_utilization",
        }
        return settings(self, exclude=excluded, sources=("model", "adapter", "ensemble"))

    def settings_for(self, task_type: TaskType) -> dict[str, Any]:
        """The answer settings that can change an answer of this task type: two runs that agree on them give the
        same answers to its questions (the same data), so one run's can be reused by the other."""
        chosen = self.answer_settings()
        by_logits = task_type is TaskType.MULTIPLE_CHOICE and self.mc_mode == "logits"
        chosen["max_new_tokens"] = None if by_logits else chosen["max_new_tokens"][task_type.value]
        if task_type is not TaskType.MULTIPLE_CHOICE:
            chosen.pop("mc_mode")
            chosen.pop("mc_debias")
        if by_logits or task_type not in CONSTRAINED:
            chosen.pop("constrained")
        return chosen
