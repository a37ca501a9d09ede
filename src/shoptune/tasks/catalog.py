"""Every subtask: importing each capability's module (named in `Capability`) registers its subtasks."""

from __future__ import annotations

import importlib

from shoptune.tasks.registry import Capability, Subtask, registered


def all_subtasks() -> dict[str, Subtask]:
    """Every subtask by name, in track order, and within a track in the order its module registers them."""
    for capability in Capability:
        importlib.import_module(capability.module)
    order = list(Capability)
    return dict(sorted(registered().items(), key=lambda item: order.index(item[1].capability)))
