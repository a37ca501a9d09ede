"""shoptune: comprehensive multi-task LoRA fine-tuning of LLMs for e-commerce, scored like ShopBench."""

from __future__ import annotations

__version__ = "0.1.0"
