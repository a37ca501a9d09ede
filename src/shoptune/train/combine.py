"""`shoptune combine ADAPTER... --method M --out DIR`: several LoRA adapters of one base model made into one
folder that loads like any other. The arithmetic (PEFT's `add_weighted_adapter`, the methods offered) lives in
`shoptune.adapters`, which scoring uses too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from shoptune.adapters import add_combined, check_method, equal_weights, load_parts
from shoptune.errors import ShoptuneError
from shoptune.files import folder_in_place
from shoptune.hub import load_causal_lm, require_adapter
from shoptune.runs import Layout, RunFolder, folder_content, resolved, source

COMBINED = "combined.json"  # what a combined adapter was made from, written last beside its weights
COMBINE = Layout("combine", frozenset({COMBINED}), identity=COMBINED, finished=COMBINED, made="a combined adapter made")


def combine_adapters(
    base: str,
    adapters: Sequence[str | Path],
    out: Path,
    method: str = "linear",
    weights: Sequence[float] | None = None,
    density: float = 0.5,
    allow_download: bool = False,
) -> bool:
    """One adapter folder (loadable like any other) from several, written under a temporary name and renamed into a
    new or empty folder; the same combination rerun finds it finished (returns True) and writes nothing."""
    if len(adapters) < 2:
        raise ShoptuneError("combine needs at least two adapters")
    spec = check_method(method)
    if not 0 < density <= 1:  # NaN fails the comparison
        raise ShoptuneError(f"--density {density}: expected a fraction in (0, 1]")
    if weights is not None and not all(math.isfinite(w) for w in weights):
        raise ShoptuneError(f"--weight: {list(weights)}: every weight must be a finite number")
    for adapter in adapters:
        require_adapter(adapter)
    identity = {
        "method": method,
        "density": density if spec.density else None,
        "weights": equal_weights(len(adapters), weights),
        "parts": [folder_content(a) for a in adapters],
        "base": source(base),
    }
    with RunFolder.open(out, COMBINE, identity) as folder:
        if folder.was_finished:
            return True
        model, _tokenizer = load_causal_lm(base, allow_download)
        peft_model = load_parts(model, adapters, base)
        add_combined(peft_model, len(adapters), method, weights, density)
        for i in range(len(adapters)):
            peft_model.delete_adapter(f"part{i}")
        with folder_in_place(out) as tmp:  # replaces at most an empty folder: checked by RunFolder.open
            peft_model.save_pretrained(str(tmp))  # the active adapter is "default": saved at the folder's root
            RunFolder(tmp, COMBINE).write_record({**identity, "adapters": [resolved(a) for a in adapters]})
    return False
