"""Every subtask: importing each capability's module (named in `Capability`) registers its subtasks; subtasks
of a user's own package come in through the `shoptune.subtasks` entry-point group (or SHOPTUNE_INCLUDE), and
a sources file declares subtasks of instruction data (`declared_subtasks`)."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import random
from functools import cache
from pathlib import Path
from typing import Any

from shoptune.errors import ShoptuneError
from shoptune.schema import Example
from shoptune.sources.mapped import INSTRUCTIONS, DeclaredSubtask, raw_entries
from shoptune.sources.records import RawCorpus
from shoptune.tasks.registry import Capability, Subtask, registered

ENTRY_POINTS = "shoptune.subtasks"  # each entry point names a module that registers subtasks with @subtask
INCLUDE = "SHOPTUNE_INCLUDE"  # os.pathsep-separated .py files or folders of them, imported the same way


def all_subtasks() -> dict[str, Subtask]:
    """Every subtask by name, in track order, and within a track in the order its module registers them."""
    for capability in Capability:
        importlib.import_module(capability.module)
    load_extensions()
    order = list(Capability)
    return dict(sorted(registered().items(), key=lambda item: order.index(item[1].capability)))


@cache
def load_extensions() -> None:
    """Subtasks from outside shoptune: installed packages' entry points, then the files SHOPTUNE_INCLUDE names."""
    for entry in importlib.metadata.entry_points(group=ENTRY_POINTS):
        try:
            entry.load()
        except Exception as exc:
            raise ShoptuneError(f"entry point {entry.name} ({entry.value}) of {ENTRY_POINTS} failed: {exc}") from None
    for part in filter(None, os.environ.get(INCLUDE, "").split(os.pathsep)):
        path = Path(part)
        files = sorted(path.glob("*.py")) if path.is_dir() else [path]
        for file in files:
            if not file.is_file():
                raise ShoptuneError(f"{INCLUDE}: {file}: no such file")
            spec = importlib.util.spec_from_file_location(f"shoptune_include_{file.stem}", file)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            try:
                spec.loader.exec_module(module)
            except Exception as exc:
                raise ShoptuneError(f"{INCLUDE}: {file} failed: {type(exc).__name__}: {exc}") from None


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
