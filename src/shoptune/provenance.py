"""What a run record says about where its numbers came from: the versions of the software that made them, the
model's identity (its weights' hash, or the hub revision) and when it ran and for how long."""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import platform
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from shoptune import __version__
from shoptune.hub import CONVERTED, NAMED_MODELS, resolve_model_source, sha256_of

PACKAGES = ("torch", "transformers", "peft", "accelerate", "datasets")
WEIGHTS = ("*.safetensors", "*.bin", "*.gguf", "*.pt")


def versions() -> dict[str, str]:
    out = {"shoptune": __version__, "python": platform.python_version()}
    for package in PACKAGES:
        try:
            out[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            out[package] = "not installed"
    return out


def model_identity(model: str, allow_download: bool = False) -> dict[str, Any]:
    """A named or GGUF model: the GGUF file's SHA-256 (the converted folder records it); a folder: the SHA-256 of
    each weights file; a hub id: the cached revision."""
    source = resolve_model_source(model, allow_download)
    folder = Path(source)
    if not folder.is_dir():
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(source, "config.json")
        revision = Path(cached).parent.name if isinstance(cached, str) else None
        return {"model": model, "hub_revision": revision}
    if (folder / CONVERTED).is_file():
        record = json.loads((folder / CONVERTED).read_text(encoding="utf-8"))
        return {"model": model, "gguf": record.get("gguf"), "sha256": record.get("sha256")}
    files = sorted({p for pattern in WEIGHTS for p in folder.glob(pattern) if p.is_file()})
    named = model.strip().lower() in NAMED_MODELS
    return {"model": model, **({} if named else {"path": str(folder.resolve())}), "weights": _hashes(tuple(files))}


@cache
def _hashes(files: tuple[Path, ...]) -> dict[str, str]:
    return {file.name: sha256_of(file) for file in files}


def provenance(
    model: str | None, allow_download: bool = False, earlier: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The part of a run record that says what made it. A run that resumes `earlier` (the provenance an interrupted
    attempt recorded) keeps its first start, and its `wall_seconds` starts from what the earlier attempts took: the
    caller adds its own time when it stops."""
    earlier = earlier or {}
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return {
        "versions": versions(),
        "model_identity": model_identity(model, allow_download) if model else None,
        "started": earlier.get("started", now),
        "wall_seconds": float(earlier.get("wall_seconds") or 0.0),
    }
