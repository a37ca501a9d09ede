"""shoptune: comprehensive multi-task LoRA fine-tuning of LLMs for e-commerce, scored like ShopBench."""

from __future__ import annotations

from pathlib import Path

__version__ = "0.1.0"


def default_model_path() -> Path:
    """The embedded default model: a few-million-parameter Llama shipped inside the package."""
    return Path(__file__).resolve().parent / "default_model"
