"""Training configuration: base model, LoRA (the capacity knob), data and optimisation."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from shoptune.config import StrictConfig
from shoptune.hub import DEFAULT_MODEL
from shoptune.tasks.render import SHOPBENCH_SYSTEM_PROMPT


class LoraSettings(StrictConfig):
    rank: int = Field(
        16, ge=1, le=4096, description="LoRA rank, the capacity knob", json_schema_extra={"aliases": ["--rank"]}
    )
    alpha: float | None = Field(None, gt=0, description="LoRA scale numerator (default: 2 x rank)")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="dropout on the LoRA path")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="layers that get LoRA weights: all-linear, or a YAML list of module names"
    )
    rslora: bool = Field(False, description="rank-stabilised scaling (alpha / sqrt(rank))")
    dora: bool = Field(False, description="weight-decomposed LoRA (DoRA)")


class TrainConfig(StrictConfig):
    """One training run. Each setting is also a `train` option (its description is the option's help)."""

    habits: ClassVar[dict[str, str]] = {
        "num_train_epochs": "epochs",
        "per_device_train_batch_size": "batch_size",
        "per_device_eval_batch_size": "batch_size",
        "gradient_accumulation_steps": "gradient_accumulation",
        "lr_scheduler_type": "lr_scheduler",
        "model_name_or_path": "model",
        "cutoff_len": "max_length",
        "max_seq_length": "max_length",
        "lora_rank": "lora.rank",
        "lora_r": "lora.rank",
        "r": "lora.rank",
        "lora_alpha": "lora.alpha",
        "lora_dropout": "lora.dropout",
        "lora_target": "lora.target_modules",
        "finetuning_type": "method",
        "dataset": "mixture (a mixture folder or spec) or data (JSON Lines)",
        "output_dir": "--out (the run folder is an option of the command)",
        "resume_from_checkpoint": "--resume (a rerun resumes by itself)",
    }

    model: str = Field(DEFAULT_MODEL, description="base model: name, .gguf file, folder or hub id")
    mixture: Path | None = Field(None, description="a mixture: a `shoptune data build` folder or a mixture spec")
    data: Path | None = Field(None, description="or ShopBench-format JSON Lines to train on")
    eval_data: Path | None = Field(None, description="validation JSON Lines (default: the mixture's validation split)")
    method: Literal["lora", "qlora", "full"] = Field(
        "lora", description="qlora needs a CUDA GPU and bitsandbytes (pip install 'shoptune[gpu]')"
    )
    lora: LoraSettings = Field(default_factory=LoraSettings)
    max_length: int = Field(1024, ge=16, description="tokens per example; a longer prompt keeps its end")
    packing: bool = Field(True, description="lay a batch's examples end to end in one row (no padding)")
    system_prompt: str | None = Field(
        SHOPBENCH_SYSTEM_PROMPT, description="the system prompt, as evaluation sends it (the official baselines')"
    )
    chat_template: bool | None = Field(None, description="apply the model's chat template (default: when it has one)")
    learning_rate: float = Field(2e-4, gt=0, description="peak learning rate")
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = Field(
        "cosine", description="learning-rate schedule"
    )
    warmup_ratio: float = Field(0.03, ge=0.0, lt=1.0, description="share of the steps spent warming up")
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW weight decay")
    label_smoothing: float = Field(
        0.0, ge=0.0, lt=1.0, description="share of each answer token's target spread over the vocabulary"
    )
    epochs: float = Field(1.0, gt=0, description="passes over the training examples")
    max_steps: int = Field(-1, ge=-1, description="stop after N optimiser steps (-1: epochs decide)")
    batch_size: int = Field(8, ge=1, description="examples per device and step")
    gradient_accumulation: int = Field(1, ge=1, description="batches per optimiser step")
    gradient_checkpointing: bool = Field(False, description="recompute activations in the backward pass (less memory)")
    # It pays at long packed rows on a GPU; on a CPU with SmolLM2 it measured within noise of plain checkpointing.
    selective_checkpointing: bool = Field(
        False, description="with checkpointing: keep attention's output rather than recompute it"
    )
    distributed: Literal["auto", "off"] = Field(
        "auto",
        description="several GPUs and no launcher: auto relaunches `shoptune train` on all of them (DDP), off keeps "
        "to one",
    )
    ddp_timeout: int = Field(
        1800,
        ge=10,
        description="seconds a process waits for the others at a collective before the run fails (the main one "
        "hashes the weights for the run record first: hours for a 70B folder on a slow disk)",
    )
    bf16: Literal["auto", "on", "off"] = Field("auto", description="bfloat16 (auto: on a GPU that has it)")
    seed: int = Field(0, description="seeds the adapter's initial weights and the data order")
    eval_steps: int = Field(50, ge=1, description="steps between evaluations on the validation split")
    save_steps: int = Field(50, ge=1, description="steps between checkpoints")
    save_total_limit: int = Field(2, ge=1, description="checkpoints kept")
    logging_steps: int = Field(10, ge=1, description="steps between log lines")
    max_eval_examples: int = Field(256, ge=1, description="validation examples evaluated (taken in turn per subtask)")
    shopbench_eval_examples: int = Field(
        0,
        ge=0,
        description="validation questions answered and scored with ShopBench's metrics at each evaluation, taken in "
        "turn per subtask from the max_eval_examples evaluated (0: none); logged beside the loss as eval_shopbench_*",
    )
    keep: Literal["last", "loss", "shopbench"] = Field(
        "last",
        description="the adapter kept at the end: the last step's, or the checkpoint with the lowest validation loss "
        "or the highest validation ShopBench score (save_steps a multiple of eval_steps)",
    )
    keep_steps: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=list,
        description="also keep the adapter of these steps, in DIR/steps/step-N, whatever save_total_limit (for "
        "scoring a budget curve)",
    )
    report_to: list[Literal["tensorboard", "mlflow", "wandb"]] = Field(
        default_factory=lambda: ["tensorboard"], description="loggers"
    )
    allow_download: bool = Field(False, description="let a hub id be fetched when it is not cached")

    @model_validator(mode="after")
    def _one_source(self) -> TrainConfig:
        if (self.mixture is None) == (self.data is None):
            raise ValueError("give exactly one of mixture (a `shoptune data build` folder) or data (JSON Lines)")
        return self

    @field_validator("max_steps")
    @classmethod
    def _some_steps(cls, value: int) -> int:
        if value == 0:
            raise ValueError("0 steps would train nothing; give a positive number, or -1 to let epochs decide")
        return value

    @model_validator(mode="after")
    def _keep_measured(self) -> TrainConfig:
        if self.keep == "shopbench" and self.shopbench_eval_examples == 0:
            raise ValueError("keep shopbench needs shopbench_eval_examples above 0 (the questions it is chosen on)")
        if self.keep != "last" and self.save_steps % self.eval_steps:
            raise ValueError(
                f"keep {self.keep}: save_steps ({self.save_steps}) must be a multiple of eval_steps "
                f"({self.eval_steps}), so every checkpoint has its score"
            )
        return self

    @field_validator("report_to")
    @classmethod
    def _loggers_installed(cls, value: list[str]) -> list[str]:
        missing = [name for name in value if importlib.util.find_spec(name) is None]
        if missing:
            raise ValueError(f"{', '.join(missing)} is not installed: pip install {' '.join(missing)}, or drop it")
        return value

    def lora_alpha(self) -> float:
        return self.lora.alpha if self.lora.alpha is not None else 2.0 * self.lora.rank
