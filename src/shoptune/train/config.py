"""Training configuration: base model, LoRA (the capacity knob), data and optimisation."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from shoptune.config import StrictConfig
from shoptune.hub import DEFAULT_MODEL
from shoptune.tasks.render import SHOPBENCH_SYSTEM_PROMPT


class LoraSettings(StrictConfig):
    rank: int = Field(16, ge=1, le=4096)
    alpha: float | None = None  # None: 2 x rank
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"
    rslora: bool = False
    dora: bool = False


class TrainConfig(StrictConfig):
    model: str = DEFAULT_MODEL
    mixture: Path | None = None  # a folder written by `shoptune data build`
    data: Path | None = None  # or ShopBench-format JSON Lines
    eval_data: Path | None = None  # held-out JSON Lines; default: the mixture's validation split
    method: Literal["lora", "qlora", "full"] = "lora"
    lora: LoraSettings = Field(default_factory=LoraSettings)
    max_length: int = Field(1024, ge=16)
    packing: bool = True
    system_prompt: str | None = SHOPBENCH_SYSTEM_PROMPT
    chat_template: bool | None = None
    learning_rate: float = Field(2e-4, gt=0)
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"] = "cosine"
    warmup_ratio: float = Field(0.03, ge=0.0, lt=1.0)
    weight_decay: float = Field(0.0, ge=0.0)
    epochs: float = Field(1.0, gt=0)
    max_steps: int = -1
    batch_size: int = Field(8, ge=1)
    gradient_accumulation: int = Field(1, ge=1)
    gradient_checkpointing: bool = False
    # With checkpointing: keep attention's output rather than recompute it (torch's selective checkpointing). It
    # pays at long packed rows on a GPU; on a CPU with SmolLM2 it measured within noise of plain checkpointing.
    selective_checkpointing: bool = False
    bf16: Literal["auto", "on", "off"] = "auto"
    seed: int = 0
    eval_steps: int = Field(50, ge=1)
    save_steps: int = Field(50, ge=1)
    save_total_limit: int = Field(2, ge=1)
    logging_steps: int = Field(10, ge=1)
    max_eval_examples: int = Field(256, ge=1)
    report_to: list[Literal["tensorboard", "mlflow", "wandb"]] = Field(default_factory=lambda: ["tensorboard"])
    allow_download: bool = False

    @model_validator(mode="after")
    def _one_source(self) -> TrainConfig:
        if (self.mixture is None) == (self.data is None):
            raise ValueError("give exactly one of mixture (a `shoptune data build` folder) or data (JSON Lines)")
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
