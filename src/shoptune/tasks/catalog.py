"""Every subtask: importing each capability's module (named in `Capability`) registers its subtasks; subtasks
of a user's own package come in through `shoptune.plugins` (entry points or SHOPTUNE_INCLUDE), and a sources
file declares subtasks of instruction data (`declared_subtasks`)."""

from __future__ import annotations

import importlib
import random
from pathlib import Path
from typing import Any

from shoptune.errors import ShoptuneError
from shoptune.plugins import load_plugins
from shoptune.schema import Example
from shoptune.sources.mapped import INSTRUCTIONS, DeclaredSubtask, raw_entries
from shoptune.sources.records import RawCorpus
from shoptune.tasks.registry import Capability, Subtask, registered


def all_subtasks() -> dict[str, Subtask]:
    """Every subtask by name, in track order, and within a track in the order its module registers them."""
    for capability in Capability:
        importlib.import_module(capability.module)
    load_plugins()
    order = list(Capability)
    return dict(sorted(registered().items(), key=lambda item: order.index(item[1].capability)))


def declared_subtasks(files: list[Path]) -> dict[str, Subtask]:
    """The subtasks that sources files declare for their instruction data (read without reading the tables)."""
    out: dict[str, Subtask] = {}
    for entry in raw_entries(files):
        if entry.get("kind") != INSTRUCTIONS or not entry.get("subtask"):
            continue
        try:
            declared = DeclaredSubtask.model_validate(entry["subtask"])
        except ValueError:
            continue  # reported whole when the file is loaded
        out[declared.name] = declared_subtask(declared, str(entry.get("language", "en")))
    return out


def declared_subtask(declared: DeclaredSubtask, language: str) -> Subtask:
    """A subtask whose examples are the instruction rows themselves, prompts as written."""
    capability = Capability.named(declared.capability)
    if declared.name in registered():
        raise ShoptuneError(f"subtask {declared.name!r} is shoptune's own; name your instruction data otherwise")

    def draw(task: Subtask, corpus: RawCorpus, rng: random.Random) -> Example | None:
        rows: list[tuple[str, Any]] = corpus.instructions.get(task.name, [])
        if not rows:
            return None
        prompt, output = rng.choice(rows)
        return task.example(prompt, output, language)

    return Subtask(
        declared.name,
        capability,
        declared.task_type,
        declared.metric,
        (),
        (language,),
        declared.description,
        (),
        draw,
        reads=(f"{INSTRUCTIONS}:{declared.name}",),
    )
