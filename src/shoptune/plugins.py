"""Extensions from outside shoptune, loaded when a table first misses a name: the modules that installed
packages name in the `shoptune.plugins` entry-point group (or the older `shoptune.subtasks`), then the files
SHOPTUNE_INCLUDE names. Importing such a module is all it takes; its `@subtask`, `register_metric` and
`register_source` calls fill the tables. This module sits below every table, so each can ask for it."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import traceback
from pathlib import Path

from shoptune.errors import ShoptuneError

ENTRY_POINTS = ("shoptune.plugins", "shoptune.subtasks")  # each entry point names a module to import
INCLUDE = "SHOPTUNE_INCLUDE"  # os.pathsep-separated .py files or folders of them, imported the same way

_loaded: set[str] = set()  # what imported cleanly, by entry point or file: never imported twice
_loading = False  # a plugin that looks a name up while it loads (its own metric, say) does not start the loading again


def load_plugins() -> None:
    """Import every extension not yet imported. One whose import failed is tried again at the next miss (a fixed
    file, a package installed meanwhile), and its failure is shown with the plugin's own traceback."""
    global _loading
    if _loading:
        return
    _loading = True
    try:
        for group in ENTRY_POINTS:
            for entry in importlib.metadata.entry_points(group=group):
                name = f"{group}:{entry.name}"
                if name in _loaded:
                    continue
                try:
                    entry.load()
                except Exception as exc:
                    raise ShoptuneError(
                        f"entry point {entry.name} ({entry.value}) of {group} failed: {exc}\n{_their_traceback(exc)}"
                    ) from None
                _loaded.add(name)
        for part in filter(None, os.environ.get(INCLUDE, "").split(os.pathsep)):
            path = Path(part)
            for file in sorted(path.glob("*.py")) if path.is_dir() else [path]:
                if str(file.resolve()) not in _loaded:
                    _import_file(file)
                    _loaded.add(str(file.resolve()))
    finally:
        _loading = False


def _their_traceback(exc: BaseException) -> str:
    """The failure's traceback from the first frame outside shoptune and Python's import machinery on: the plugin's
    own lines, which is where its author must look."""
    ours = Path(__file__).parent
    frames = traceback.extract_tb(exc.__traceback__)
    theirs = [f for f in frames if "importlib" not in f.filename and not Path(f.filename).is_relative_to(ours)]
    lines = traceback.format_list(theirs) + traceback.format_exception_only(type(exc), exc)
    return "".join(lines).rstrip()


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
        raise ShoptuneError(f"{INCLUDE}: {file} failed: {type(exc).__name__}: {exc}\n{_their_traceback(exc)}") from None
