"""`shoptune combine ADAPTER... --method M --out DIR`: several LoRA adapters of one base model made into one
folder that loads like any other. The arithmetic (PEFT's `add_weighted_adapter`, the methods offered) lives in
`shoptune.adapters`, which scoring uses too.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from shoptune.adapters import METHODS, add_combined, check_method, equal_weights, load_parts
from shoptune.errors import ShoptuneError
from shoptune.hub import load_causal_lm
from shoptune.locks import writing
from shoptune.schema import atomic_write_text, folder_in_place

COMBINED = "combined.json"  # what a combined adapter was made from, beside its weights


def combine_adapters(
    base: str,
    adapters: Sequence[str | Path],
    out: Path,
    method: str = "linear",
    weights: Sequence[float] | None = None,
    density: float = 0.5,
    allow_download: bool = False,
) -> Path:
    """One adapter folder (loadable like any other) from several, written under a temporary name and renamed."""
    import json

    if len(adapters) < 2:
        raise ShoptuneError("combine needs at least two adapters")
    check_method(method)
    with writing(out):
        model, _tokenizer = load_causal_lm(base, allow_download)
        peft_model = load_parts(model, adapters, base)
        add_combined(peft_model, len(adapters), method, weights, density)
        for i in range(len(adapters)):
            peft_model.delete_adapter(f"part{i}")
        with folder_in_place(out) as tmp:
            peft_model.save_pretrained(str(tmp))  # the active adapter is "default": saved at the folder's root
            record = {
                "method": method,
                "density": density if METHODS[method].density else None,
                "weights": equal_weights(len(adapters), weights),
                "adapters": [str(Path(a).resolve()) for a in adapters],
                "base": base,
            }
            atomic_write_text(tmp / COMBINED, json.dumps(record, indent=2) + "\n")
    return out
