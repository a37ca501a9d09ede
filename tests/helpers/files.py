"""Small writers for test inputs."""

from __future__ import annotations

import json
from pathlib import Path


def write_lines(path: Path, rows: list) -> Path:
    """JSON Lines from objects (or raw strings, for malformed lines)."""
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def mc_question(prompt: str, answer: int) -> dict:
    """A ShopBench multiple-choice record of one track, for tests that count answers by label."""
    return {
        "input_field": prompt,
        "output_field": answer,
        "task_name": "mc",
        "task_type": "multiple-choice",
        "metric": "accuracy",
        "is_multiple_choice": True,
        "track": "amazon-kdd-cup-24-understanding-shopping-concepts",
    }
