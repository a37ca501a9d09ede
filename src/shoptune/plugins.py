"""Extensions from outside shoptune, loaded once, when a table first misses a name: the modules that installed
packages name in the `shoptune.plugins` entry-point group (or the older `shoptune.subtasks`), then the files
SHOPTUNE_INCLUDE names. Importing such a module is all it takes; its `@subtask`, `register_metric` and
`register_source` calls fill the tables. This module sits below every table, so each can ask for it."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from pathlib import Path

from shoptune.errors import ShoptuneError

ENTRY_POINTS = ("shoptune.plugins", "shoptune.subtasks")  # each entry point names a module to import
INCLUDE = "SHOPTUNE_INCLUDE"  # os.pathsep-separated .py files or folders of them, imported the same way

_loaded = False


def load_plugins() -> None:
    """Import every extension once. Marked done before importing, so a plugin that looks a name up while it
    loads (its own metric, say) does not start the loading again."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for group in ENTRY_POINTS:
        for entry in importlib.metadata.entry_points(group=group):
            try:
                entry.load()
            except Exception as exc:
                raise ShoptuneError(f"entry point {entry.name} ({entry.value}) of {group} failed: {exc}") from None
    for part in filter(None, os.environ.get(INCLUDE, "").split(os.pathsep)):
        path = Path(part)
        for file in sorted(path.glob("*.py")) if path.is_dir() else [path]:
            _import_file(file)


def _import_file(file: Path) -> None:
    if not file.is_file():
        raise ShoptuneError(f"{INCLUDE}: {file}: no such file")
    spec = importlib.util.spec_from_file_location(f"shoptune_include_{file.stem}", file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except ShoptuneError as exc:
        raise ShoptuneError(f"{INCLUDE}: {file}: {exc}") from None
    except Exception as exc:
        raise ShoptuneError(f"{INCLUDE}: {file} failed: {type(exc).__name__}: {exc}") from None
