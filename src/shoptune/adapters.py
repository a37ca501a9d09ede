"""Adapter arithmetic that training and scoring share: adapters loaded side by side, combined, interpolated.

The paper trains one LoRA on the whole mixture and leaves per-capability modules to future work; KDD Cup
2024 winners combined several. PEFT's adapter arithmetic (`add_weighted_adapter`) does the work. `linear`
is the exact weighted sum of the adapters' weight updates (PEFT's "cat": the ranks are laid side by side,
so the result is as large as the parts together); PEFT's own "linear" combines the A and B factors
separately, which for two identical adapters at weights 1/2 doubles the update, so it is not offered
under that name. `ties`, `dare_ties` and `dare_linear` prune and sign-elect per factor, as PEFT does,
keeping `density` of each.

Adding a method: one entry in `METHODS`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shoptune.errors import ShoptuneError
from shoptune.hub import require_adapter, with_adapter


@dataclass(frozen=True)
class Method:
    peft: str  # PEFT's combination_type
    help: str
    density: bool = False  # keeps a fraction of each update


METHODS: dict[str, Method] = {
    "linear": Method("cat", "weighted sum of the weight updates, exact (the ranks add up)"),
    "ties": Method("ties", "TIES: trim to the largest updates, elect a sign per weight, average", density=True),
    "dare_ties": Method("dare_ties", "DARE (random drop, rescale) then TIES sign election", density=True),
    "dare_linear": Method("dare_linear", "DARE (random drop, rescale) then a weighted sum", density=True),
}


def check_method(method: str) -> Method:
    if method not in METHODS:
        raise ShoptuneError(f"unknown combination method {method!r}; expected one of: {', '.join(METHODS)}")
    return METHODS[method]


def equal_weights(n: int, weights: Sequence[float] | None) -> list[float]:
    """The given weights (one per adapter), or 1/n each: the average of the parts' updates."""
    if weights is None:
        return [1.0 / n] * n
    if len(weights) != n:
        raise ShoptuneError(f"--weight: {len(weights)} weight(s) for {n} adapter(s); give one per adapter")
    return list(weights)


def load_parts(model: Any, adapters: Sequence[str | Path], base: str) -> Any:
    """`model` with every adapter loaded beside the others, named part0, part1, ...; the first is active."""
    for adapter in adapters:
        require_adapter(adapter)
    peft_model = with_adapter(model, adapters[0], base, name="part0")
    for i, adapter in enumerate(adapters[1:], start=1):
        try:
            peft_model.load_adapter(str(adapter), adapter_name=f"part{i}")
        except (RuntimeError, ValueError, KeyError, OSError) as exc:
            raise ShoptuneError(f"adapter {str(adapter)!r} does not fit beside {str(adapters[0])!r}: {exc}") from None
    return peft_model


def add_combined(
    peft_model: Any,
    n: int,
    method: str,
    weights: Sequence[float] | None = None,
    density: float = 0.5,
    name: str = "default",
) -> None:
    """Add the combination of part0..part{n-1} as adapter `name` and make it the active one."""
    spec = check_method(method)
    if spec.density and not 0 < density <= 1:
        raise ShoptuneError(f"--density {density}: expected a fraction in (0, 1]")
    if any(c.use_dora for c in peft_model.peft_config.values()):
        raise ShoptuneError("combining adapters works on LoRA; DoRA's per-column magnitudes do not add up")
    import torch

    torch.manual_seed(0)  # DARE's random drop: the same combination every time
    try:
        peft_model.add_weighted_adapter(
            [f"part{i}" for i in range(n)],
            equal_weights(n, weights),
            adapter_name=name,
            combination_type=spec.peft,
            density=density if spec.density else None,
        )
    except ValueError as exc:  # PEFT's own checks: other target modules, other ranks for a factor-wise method
        raise ShoptuneError(f"cannot combine these adapters with {method}: {exc}") from None
    peft_model.set_adapter(name)


def interpolate(model: Any, alpha: float) -> None:
    """Scale every LoRA update by alpha. DoRA also rescales each weight column by a learned magnitude, so its
    weights do not move linearly with the update: refused rather than approximated."""
    from peft.tuners.lora import LoraLayer

    layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
    if any(m.use_dora.get(name) for m in layers for name in m.active_adapters):
        raise ShoptuneError("--alpha interpolates LoRA adapters; this one is DoRA, whose weights do not blend linearly")
    for layer in layers:
        layer.scale_layer(alpha)
