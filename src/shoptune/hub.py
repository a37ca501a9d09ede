"""Where models come from: a local folder, or a Hugging Face hub id already in the local cache.

Nothing is downloaded unless the user says so (allow_download), so a run on an offline machine fails
at once with a clear message instead of hanging on the network.
"""

from __future__ import annotations

from pathlib import Path

from shoptune.errors import ShoptuneError


def resolve_model_source(model: str, allow_download: bool) -> str:
    """A local folder, or a hub id that must already be in the local cache unless downloads are allowed."""
    if Path(model).expanduser().exists():
        return str(Path(model).expanduser())
    if model.startswith((".", "/", "~")) or model.count("/") > 1:
        raise ShoptuneError(f"model {model!r}: no such folder")
    if not allow_download:
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(model, "config.json"), str):
            raise ShoptuneError(
                f"model {model!r} is neither a local folder nor in the Hugging Face cache; pass a local path, "
                "or allow_download: true (--allow-download) to fetch it from the hub"
            )
    return model
