"""The study's one tidy table: a row per cell x evaluation set x (task, track or overall score)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from shoptune.evaluate.scoring import Scores
from shoptune.files import read_state
from shoptune.study.runner import adapter_of
from shoptune.study.spec import Cell

COLUMNS = [
    "cell",
    "model",
    "design",
    "groups",
    "position",
    "n_capabilities",
    "n_subtasks",
    "rank",
    "seed",
    "eval_set",
    "level",
    "name",
    "track",
    "task_type",
    "metric",
    "n",
    "score",
]


def rows_of(result: dict[str, Any]) -> list[dict[str, Any]]:
    cell = result["cell"]
    base = {
        "cell": cell["key"],
        "model": cell["model"],
        "design": cell["design"],
        "groups": ",".join(cell["groups"]),
        "position": cell["position"],
        "n_capabilities": cell["n_capabilities"],
        "n_subtasks": cell["n_subtasks"],
        "rank": cell["rank"] or 0,
        "seed": cell["seed"],
    }
    rows = []
    for eval_set, raw in result["scores"].items():
        scores = Scores.model_validate(raw)
        common = {**base, "eval_set": eval_set}
        rows.append({**common, "level": "overall", "name": "overall", "score": scores.overall})
        for track, score in scores.tracks.items():
            rows.append({**common, "level": "track", "name": track, "track": track, "score": score})
        for task, info in scores.tasks.items():
            rows.append({**common, "level": "task", "name": task, **info.model_dump()})
    return rows


def load_table(out: Path) -> pd.DataFrame:
    rows = []
    for path in sorted((out / "cells").glob("*/result.json")):
        rows.extend(rows_of(read_state(path)))
    return pd.DataFrame(rows, columns=COLUMNS)


def write_table(out: Path) -> pd.DataFrame:
    """results.parquet and results.csv, each written under a temporary name and renamed."""
    table = load_table(out)
    for name, write in (("results.parquet", table.to_parquet), ("results.csv", table.to_csv)):
        tmp = out / f".{name}.tmp"
        write(tmp, index=False)
        os.replace(tmp, out / name)
    return table


def cells_of(out: Path) -> list[dict[str, Any]]:
    """Every cell of a study folder: what it is, whether it finished, and where its adapter (or model) is."""
    rows = []
    for path in sorted((out / "cells").glob("*/cell.json")):
        folder = path.parent
        cell = read_state(path)
        result = read_state(folder / "result.json") if (folder / "result.json").is_file() else None
        status = "done" if result else ("failed" if (folder / "error.json").is_file() else "not finished")
        rows.append(
            {
                "cell": cell["key"],
                "model": cell["model"],
                "design": cell["design"],
                "rank": cell.get("rank"),
                "seed": cell.get("seed"),
                "status": status,
                "adapter": adapter_of(out, Cell(**cell)),
                "overall": {name: raw["overall"] for name, raw in (result or {}).get("scores", {}).items()},
            }
        )
    return rows
