"""The study spec and its grid: which designs, ranks, seeds and models, expanded into cells.

A cell is identified by the content of everything that decides its result (model, the mixture spec
as resolved, training and evaluation settings, rank, seed), so a rerun finds finished cells by
their hash and redoes only what changed.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field

from shoptune import __version__
from shoptune.adapters import METHODS
from shoptune.config import StrictConfig, load_config, rebase
from shoptune.data.spec import SAFE_NAME, MixtureSpec
from shoptune.errors import ShoptuneError
from shoptune.evaluate.config import EvalConfig
from shoptune.hub import DEFAULT_MODEL
from shoptune.train.config import TrainConfig

# The paper's two ablation axes, and capability adapters: one LoRA per listed mixture, then the adapters
# combined into one (each method in `combine`) and, with `ensemble`, answering together.
GROUPS = ("capability", "task", "adapters")
CELL_OWNED = ("model", "adapter", "ensemble")  # decided by the cell, not by an evaluation variant
VARIANT = "+"  # the scores of set S under evaluation variant V are named S+V
CHECKPOINT = "checkpoint"  # the method of a cell that scores a trained cell's adapter at one of `checkpoints`
BUDGET = "budget"  # the group of those cells: the budget curve
PLAIN = "plain"  # the name of answering with no variant's settings


def scored_name(eval_set: str, variant: str) -> str:
    """Set S under variant V is S+V; plainly answered (no variant, or PLAIN) it is S."""
    return f"{eval_set}{VARIANT}{variant}" if variant and variant != PLAIN else eval_set


class EvalSettings(StrictConfig):
    """Each set is named by its file's stem (development, heldout); `validation` is the mixture's own split. The
    default sets are the repository's, from the current directory; sets named in a spec are from its folder."""

    sets: list[Path] = Field(
        default_factory=lambda: [Path("data/shopbench/development.json"), Path("data/heldout/heldout.jsonl")]
    )
    validation: bool = True  # also score each trained cell on its mixture's validation split
    # Score only the first N questions of every task of each set (the same ones for every cell): a
    # fixed, stratified subset, for a study that must fit a time budget. None: every question.
    per_task: int | None = Field(None, ge=1)
    batch_size: int | None = Field(None, ge=1)
    limit: int | None = Field(None, ge=1)
    # Named evaluation settings (EvalConfig's: constrained, mc_debias, alpha, ...) under which every cell is also
    # scored; the scores of set S under variant V are named "S+V". A variant that sets alpha runs only on cells
    # with one adapter.
    variants: dict[str, dict[str, Any]] = Field(default_factory=dict)
    # Named answering settings among which (with plain answering) each base and trained cell's best is chosen by
    # its score on a validation split (a trained cell's mixture's; the base model's, that of the study's most
    # diverse mixture), never on a benchmark; the benchmark sets are then also scored under the chosen settings,
    # for the report's best-against-best headline. {}: no choice, plain answering only.
    best_of: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: {
            "constrained": {"constrained": True},
            "debiased": {"mc_debias": True},
            "both": {"constrained": True, "mc_debias": True},
        }
    )


class StudySpec(StrictConfig):
    name: str = Field(pattern=SAFE_NAME, description="the study's name (letters, digits, . - _)")
    models: list[str] = Field(
        default_factory=lambda: ["default"], description="base models (default: smollm2-135m-instruct)"
    )
    designs: dict[str, list[Path]]  # group ("capability", "task", "adapters") -> mixture specs, least to most diverse
    ranks: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=lambda: [16], min_length=1, description="LoRA ranks, every design trained at each"
    )
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1, description="seeds, every cell run with each")
    mixture: dict[str, Any] = Field(default_factory=dict)  # overrides for every mixture (sizes, say)
    train: dict[str, Any] = Field(default_factory=dict)  # TrainConfig settings for every cell
    eval: EvalSettings = Field(default_factory=EvalSettings)
    include_base: bool = Field(True, description="score each base model untrained, as the reference")
    # Training steps at which each trained cell's adapter is also scored, as a cell of its own (design "all@128"):
    # the budget curve, from one training run. Each must be at most train.max_steps.
    checkpoints: list[Annotated[int, Field(ge=1)]] = Field(default_factory=list)
    combine: list[str] = Field(default_factory=lambda: ["linear"])  # adapters design: `shoptune combine` methods
    density: float = Field(0.5, gt=0, le=1)  # ties and dare: the fraction of each update kept
    ensemble: bool = True  # adapters design: also score the adapters answering together

    def model_path(self, model: str) -> str:
        return DEFAULT_MODEL if model == "default" else model


@dataclass(frozen=True)
class Cell:
    key: str
    model: str
    design: str  # mixture name, or "base"
    groups: tuple[str, ...]
    position: int  # step along its group's progression, 1-based (0 for the base model)
    mixture: dict[str, Any] | None
    rank: int | None
    seed: int
    n_capabilities: int  # as selected by the spec; the result records what the data supported
    n_subtasks: int
    parts: tuple[str, ...] = ()  # a combination or ensemble of these cells' adapters, or the cell a checkpoint is of
    method: str | None = None  # how the parts answer: a `combine` method, "ensemble", or CHECKPOINT
    step: int | None = None  # a checkpoint's training step

    def describe(self) -> str:
        what = "base model" if self.design == "base" else f"{self.design} r{self.rank} s{self.seed}"
        return f"{Path(self.model).name}: {what}"


def _key(payload: dict[str, Any]) -> str:
    text = json.dumps({**payload, "shoptune": __version__}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_study(path: Path, overrides: dict[str, Any] | None = None) -> StudySpec:
    """The study, checked whole before anything runs; its `mixture:` and `train:` settings are overrides of other
    configs, and their relative paths, like the spec's own, are taken from the spec's folder."""
    study = load_config(StudySpec, path, overrides)
    unknown = sorted(set(study.designs) - set(GROUPS))
    if unknown:
        raise ShoptuneError(f"{path}: unknown design group(s) {unknown}; expected {list(GROUPS)}")
    for method in study.combine:
        if method not in METHODS:
            raise ShoptuneError(f"{path}: combine: unknown method {method!r}; expected one of {list(METHODS)}")
    for field in ("variants", "best_of"):
        for name, overrides in getattr(study.eval, field).items():
            where = f"{path}: eval.{field}.{name}"
            if not re.fullmatch(SAFE_NAME, name) or name == PLAIN:
                raise ShoptuneError(f"{where}: not a plain name (letters, digits, - and _; not {PLAIN!r})")
            if name in study.eval.variants and study.eval.variants[name] != overrides:
                raise ShoptuneError(f"{where}: a variant of that name has other settings; rename one")
            owned = sorted(set(overrides) & set(CELL_OWNED))
            if owned:
                raise ShoptuneError(f"{where}: {', '.join(owned)} belong to the cell, not a variant")
            if field == "best_of" and "alpha" in overrides:
                raise ShoptuneError(f"{where}: alpha needs an adapter, which the base model has not; not a candidate")
            try:
                load_config(EvalConfig, None, {**overrides, "adapter": "checked"})
            except ShoptuneError as exc:
                raise ShoptuneError(f"{where}: {str(exc).removeprefix('command line: ')}") from None
    missing = [str(p) for p in study.eval.sets if not p.is_file()]
    if missing:
        raise ShoptuneError(f"{path}: evaluation set(s) not found: {', '.join(missing)}")
    base = Path(path).parent
    study = study.model_copy(
        update={"mixture": rebase(MixtureSpec, study.mixture, base), "train": rebase(TrainConfig, study.train, base)}
    )
    # Checked now, not when the first cell trains after every mixture was built.
    try:
        checked = load_config(TrainConfig, None, {**study.train, "mixture": "checked-per-cell"})
    except ShoptuneError as exc:
        raise ShoptuneError(f"{path}: train: {str(exc).removeprefix('command line: ')}") from None
    if study.checkpoints and checked.max_steps <= 0:
        raise ShoptuneError(f"{path}: checkpoints need train.max_steps (the steps they are taken among)")
    beyond = [step for step in study.checkpoints if step > checked.max_steps]
    if beyond:
        raise ShoptuneError(f"{path}: checkpoints {beyond} lie beyond train.max_steps ({checked.max_steps})")
    return study


def expand(study: StudySpec) -> list[Cell]:
    """Every (model, design, rank, seed), with a design shared by two groups counted once."""
    cells: dict[str, Cell] = {}
    eval_part = study.eval.model_dump(mode="json")
    for model in study.models:
        path = study.model_path(model)
        if study.include_base:
            key = _key({"model": path, "eval": eval_part, "base": True})
            cells[key] = Cell(key, path, "base", (), 0, None, None, 0, 0, 0)
        for group, specs in study.designs.items():
            for position, spec_path in enumerate(specs, start=1):
                spec = load_config(MixtureSpec, spec_path, study.mixture)
                mixture = spec.model_dump(mode="json")
                subtasks = spec.selected()
                for rank in study.ranks:
                    for seed in study.seeds:
                        key = _key(
                            {
                                "model": path,
                                "mixture": mixture,
                                "train": study.train,
                                "eval": eval_part,
                                "rank": rank,
                                "seed": seed,
                            }
                        )
                        if key in cells:
                            old = cells[key]
                            cells[key] = Cell(**{**old.__dict__, "groups": (*old.groups, group)})
                            continue
                        cells[key] = Cell(
                            key,
                            path,
                            spec.name,
                            (group,),
                            position,
                            mixture,
                            rank,
                            seed,
                            len({t.capability for t in subtasks}),
                            len(subtasks),
                        )
        if "adapters" in study.designs:
            adapters = [c for c in cells.values() if "adapters" in c.groups]
            cells.update(_combinations(study, path, adapters, eval_part))
    for cell in [c for c in cells.values() if c.mixture is not None]:
        for step in study.checkpoints:
            key = _key({"cell": cell.key, "step": step, "eval": eval_part})
            given = {"key": key, "design": f"{cell.design}@{step}", "groups": (BUDGET,), "parts": (cell.key,)}
            cells[key] = Cell(**{**cell.__dict__, **given, "method": CHECKPOINT, "step": step})
    return list(cells.values())


def _combinations(study: StudySpec, model: str, adapters: list[Cell], eval_part: dict[str, Any]) -> dict[str, Cell]:
    """Per (rank, seed), the adapters design's cells made one: each `combine` method, and the ensemble."""
    out: dict[str, Cell] = {}
    methods = [*study.combine, *(["ensemble"] if study.ensemble else [])]
    for rank in study.ranks:
        for seed in study.seeds:
            parts = [c for c in adapters if c.model == model and c.rank == rank and c.seed == seed]
            if len(parts) < 2:
                continue
            keys = tuple(c.key for c in parts)
            for method in methods:
                density = study.density if method in METHODS and METHODS[method].density else None
                key = _key({"model": model, "parts": keys, "method": method, "density": density, "eval": eval_part})
                design = "ensemble" if method == "ensemble" else f"combined-{method}"
                out[key] = Cell(
                    key,
                    model,
                    design,
                    ("adapters",),
                    len(parts) + 1,
                    None,
                    rank,
                    seed,
                    sum(c.n_capabilities for c in parts),
                    sum(c.n_subtasks for c in parts),
                    parts=keys,
                    method=method,
                )
    return out
