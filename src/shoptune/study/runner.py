"""`shoptune study run SPEC --out DIR`: every cell builds its mixture, trains and is scored.

Cells live in DIR/cells/<hash>/; one whose result.json exists is done and is never redone, one that
fails records error.json and the study goes on, and an interrupted cell resumes from its training
checkpoint and its answer journal. Mixtures are built once per distinct spec under DIR/mixtures/.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from tqdm import tqdm

from shoptune.config import dump_config
from shoptune.data.build import VALIDATION_JSONL, cached_mixture
from shoptune.data.spec import MixtureSpec
from shoptune.errors import ShoptuneError
from shoptune.evaluate.config import EvalConfig
from shoptune.evaluate.during_training import validator_for
from shoptune.evaluate.runner import run_eval, shared_backends
from shoptune.evaluate.selection import select
from shoptune.files import atomic_write_text, read_state
from shoptune.hub import parameter_count
from shoptune.runs import Layout, RunFolder
from shoptune.schema import read_examples, write_jsonl
from shoptune.study.spec import CHECKPOINT, PLAIN, Cell, StudySpec, expand, scored_name
from shoptune.train.combine import combine_adapters
from shoptune.train.config import TrainConfig
from shoptune.train.distributed import cuda_devices
from shoptune.train.trainer import STEPS, train

VALIDATION = "validation"
# A study's folder takes the cells, mixtures and sets it runs, and the tables and report written from them; a rerun
# with another spec runs the cells it adds (each is named by what decides its result), so no identity is kept.
STUDY = Layout("study run", frozenset(), identity=None)


def eval_sets(study: StudySpec, out: Path) -> dict[str, Path]:
    """The evaluation sets by name; with per_task or limit, each is cut once to its fixed subset under DIR/sets/,
    so every cell answers, and every comparison reads, the same questions."""
    sets = {Path(p).stem: Path(p) for p in study.eval.sets}
    if study.eval.per_task is None and study.eval.limit is None:
        return sets
    cut = {}
    for name, path in sets.items():
        target = out / "sets" / f"{name}.jsonl"
        if not target.is_file():
            examples = read_examples(path)
            chosen = select(examples, limit_per_task=study.eval.per_task, limit=study.eval.limit)
            write_jsonl(target, [examples[i].to_json() for i in chosen.indices])
        cut[name] = target
    return cut


def mixture_for(cell: Cell, out: Path) -> Path:
    """The cell's mixture, built once per distinct spec and shared by cells."""
    assert cell.mixture is not None
    digest = hashlib.sha256(json.dumps(cell.mixture, sort_keys=True).encode()).hexdigest()[:16]
    folder = out / "mixtures" / f"{cell.mixture['name']}-{digest}"  # a checkpoint's cell reads its run's mixture
    return cached_mixture(MixtureSpec.model_validate(cell.mixture), folder)


def parts_adapters(cell: Cell, out: Path) -> list[str]:
    """The adapters of a combination's parts, which ran first (an earlier phase, or earlier in the list)."""
    missing = [key for key in cell.parts if not (out / "cells" / key / "result.json").is_file()]
    if missing:
        raise ShoptuneError(f"{cell.design}: part cell(s) {', '.join(missing)} did not finish; see their error.json")
    return [str(out / "cells" / key / "train" / "adapter") for key in cell.parts]


def validation_split(cell: Cell, study: StudySpec, out: Path) -> Path | None:
    """Where a cell's answering settings are chosen: its mixture's validation split; for the base model, that of
    the study's most diverse mixture (the first listed of the most subtasks), the data its tuned cells are
    compared on. None for a combination, or where there is no such split."""
    if cell.design == "base":
        trained = [c for c in expand(study) if c.mixture is not None and c.model == cell.model]
        reference = max(trained, key=lambda c: c.n_subtasks, default=None)
        cell = reference if reference is not None else cell
    if cell.mixture is None:
        return None
    path = mixture_for(cell, out) / VALIDATION_JSONL
    return path if path.stat().st_size > 0 else None


def choose_settings(
    cell: Cell, study: StudySpec, out: Path, owned: dict[str, Any], progress: bool
) -> dict[str, Any] | None:
    """Score plain answering and each of `eval.best_of` on the validation split; the best (the first listed on a
    tie) is what the cell answers the benchmark sets with for the best-against-best comparison."""
    split = validation_split(cell, study, out) if study.eval.best_of else None
    if split is None:
        return None
    folder = out / "cells" / cell.key / "eval"
    scores: dict[str, float] = {}
    earlier: list[Path] = []
    for name, overrides in {PLAIN: {}, **study.eval.best_of}.items():
        label = scored_name(VALIDATION, name)
        settings = EvalConfig.model_validate(
            {"batch_size": study.eval.batch_size, "bootstrap": 0, **overrides, **owned}
        )
        scores[name] = run_eval(split, folder / label, settings, progress=progress, reuse=earlier).scores.overall
        earlier.append(folder / label)
    best = max(scores, key=lambda name: (scores[name], -list(scores).index(name)))
    return {"set": str(split), "scores": scores, "best": best}


def adapter_of(out: Path, cell: Cell) -> Path | None:
    """Where a cell's tuned weights are: its training's adapter (the tuned model, for full fine-tuning), a
    combination's adapter, a kept step's; None for the base model and an ensemble (its parts' adapters)."""
    folder = out / "cells" / cell.key
    if cell.method == CHECKPOINT:
        return out / "cells" / cell.parts[0] / "train" / STEPS / f"step-{cell.step}"
    if cell.parts and cell.method != "ensemble":
        return folder / "adapter"
    if cell.mixture is not None and not cell.parts:
        return folder / "train" / "adapter"
    return None


def run_cell(cell: Cell, study: StudySpec, out: Path, progress: bool) -> dict[str, Any]:
    folder = out / "cells" / cell.key
    sets = eval_sets(study, out)
    model, adapter, ensemble = cell.model, None, []
    if cell.method == "ensemble":
        ensemble = parts_adapters(cell, out)
        summary = {}
    elif cell.method == CHECKPOINT:
        kept = adapter_of(out, cell)
        if kept is None or not kept.is_dir():
            raise ShoptuneError(f"{cell.design}: the training of cell {cell.parts[0]} kept no adapter at this step")
        adapter, summary = str(kept), {}
    elif cell.parts:
        assert cell.method is not None
        made = adapter_of(out, cell)
        assert made is not None
        combine_adapters(cell.model, parts_adapters(cell, out), made, cell.method, density=study.density)
        adapter, summary = str(made), {}
    elif cell.mixture is not None:
        mixture = mixture_for(cell, out)
        settings = {
            **study.train,
            "model": cell.model,
            "mixture": str(mixture),
            "seed": cell.seed,
            "lora": {**study.train.get("lora", {}), "rank": cell.rank},
            "keep_steps": study.checkpoints,  # the budget curve's cells score these
        }
        config = TrainConfig.model_validate(settings)
        summary = train(config, folder / "train", progress=progress, validator=validator_for(config))
        tuned = str(adapter_of(out, cell))
        if config.method == "full":  # the whole model was tuned: it is scored as a model of its own
            model = tuned
        else:
            adapter = tuned
        if study.eval.validation and (mixture / VALIDATION_JSONL).stat().st_size:  # none: validation_per_subtask 0
            sets[VALIDATION] = mixture / VALIDATION_JSONL
    else:
        summary = {}
    scores = {}
    owned = {"model": model, "adapter": adapter, "ensemble": ensemble}
    with shared_backends():  # the cell's model is loaded once for all its runs
        choose = not cell.parts or cell.method == CHECKPOINT  # a combination of adapters answers plainly
        choice = choose_settings(cell, study, out, owned, progress) if choose else None
        variants = {"": {}, **study.eval.variants}
        if choice is not None and choice["best"] != PLAIN:
            variants[choice["best"]] = study.eval.best_of[choice["best"]]
        for name, path in sets.items():
            earlier: list[Path] = []  # this set's runs so far, whose answers a later variant takes where it may
            for variant, overrides in variants.items():
                if "alpha" in overrides and adapter is None:
                    continue  # wise-ft moves between the base and one adapter
                settings = {"batch_size": study.eval.batch_size, **overrides, **owned}
                label = scored_name(name, variant)
                config = EvalConfig.model_validate(settings)
                result = run_eval(path, folder / "eval" / label, config, progress=progress, reuse=earlier)
                earlier.append(folder / "eval" / label)
                scores[label] = result.scores.to_json()
    cell_info = dict(cell.__dict__)
    if cell.mixture is not None:
        # What the data actually supported: subtasks whose source is absent contribute no examples.
        manifest = read_state(mixture_for(cell, out) / "manifest.json")
        cell_info["n_subtasks"] = len(manifest["by_subtask"])
        cell_info["n_capabilities"] = len(manifest["by_capability"])
    return {
        "cell": cell_info,
        "scores": scores,
        "choice": choice,
        "train": {
            k: summary.get(k)
            for k in (
                "parameters",
                "steps",
                "train_loss",
                "initial_eval_loss",
                "final_eval_loss",
                "tokens_seen",
                "kept_checkpoint",
                "shopbench_validation",
            )
        },
    }


def execute_cell(cell: Cell, study: StudySpec, out: Path, progress: bool = False) -> str:
    """Run one cell to result.json, or record error.json; returns "ran" or "failed". Used by every executor."""
    folder = out / "cells" / cell.key
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "cell.json", json.dumps(cell.__dict__, indent=2, default=str) + "\n")
    start = time.monotonic()
    try:
        result = run_cell(cell, study, out, progress=progress)
    except Exception as exc:
        atomic_write_text(
            folder / "error.json",
            json.dumps({"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}, indent=2) + "\n",
        )
        return "failed"
    result["seconds"] = round(time.monotonic() - start, 1)
    (folder / "error.json").unlink(missing_ok=True)
    atomic_write_text(folder / "result.json", json.dumps(result, indent=2, default=str) + "\n")
    return "ran"


def _run_local(todo: list[Cell], study: StudySpec, out: Path, bar: tqdm) -> list[str]:
    statuses = []
    for cell in todo:
        bar.set_postfix_str(cell.describe())
        statuses.append(execute_cell(cell, study, out))
        bar.update(1)
    return statuses


def _run_ray(todo: list[Cell], study: StudySpec, out: Path, bar: tqdm, address: str | None = None) -> list[str]:
    """One cell per GPU across a Ray cluster (one per CPU where there are no GPUs); the cluster's nodes
    must see DIR on a shared filesystem."""
    if not todo:
        return []
    try:
        import ray
    except ImportError:
        raise ShoptuneError("the ray executor needs Ray: pip install 'shoptune[ray]'") from None
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
    try:
        per_cell = {"num_gpus": 1} if ray.cluster_resources().get("GPU", 0) > 0 else {"num_cpus": 1}
        task = ray.remote(**per_cell)(execute_cell)
        pending = {task.remote(cell, study, out): cell for cell in todo}
        statuses = []
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                bar.set_postfix_str(pending.pop(ref).describe())
                statuses.append(ray.get(ref))
                bar.update(1)
        return statuses
    finally:
        if started:
            ray.shutdown()


# Rates of the default model (SmolLM2-135M, 134.5M parameters) on 2 CPU cores, measured on the README's main job
# (2026-12-05: base cell 211 s, tuned cell 623 s of which 357 s training): a training step of 8 examples (the
# validation answered during training included), and one question answered. Only for --dry-run's estimate; another
# model's is scaled by its size (its parameters against the default's), where its weights are here to count.
SECONDS_PER_STEP_OF_8 = 5.6
SECONDS_PER_QUESTION = 0.2
DEFAULT_PARAMETERS = 134.5e6


def size_against_default(model: str, study: StudySpec) -> float | None:
    """How many times the default model's parameters a model has (1 for the default itself), None if unknown."""
    if Path(model) == Path(study.model_path("default")):
        return 1.0
    count = parameter_count(model)
    return None if count is None else count / DEFAULT_PARAMETERS


def validation_size(cell: Cell, study: StudySpec) -> int:
    """A rough count of the questions a cell's answering settings are chosen on (the mixture not built)."""
    trained = [c for c in expand(study) if c.mixture is not None and c.model == cell.model]
    reference = cell if cell.mixture is not None else max(trained, key=lambda c: c.n_subtasks, default=None)
    if reference is None or reference.mixture is None:
        return 0
    return int(reference.mixture.get("validation_per_subtask", 0)) * reference.n_subtasks


def plan_study(study: StudySpec, out: Path) -> list[dict[str, Any]]:
    """Each cell as --dry-run shows it, without building, training or scoring anything."""
    questions = {}
    for name, path in {Path(p).stem: Path(p) for p in study.eval.sets}.items():
        chosen = select(read_examples(path), limit_per_task=study.eval.per_task, limit=study.eval.limit)
        questions[name] = len(chosen.indices)
    variants = 1 + len(study.eval.variants)
    rows = []
    sizes: dict[str, float | None] = {}
    for cell in expand(study):
        steps = None
        trains = "nothing (base model)" if not cell.parts else f"{cell.method} of {len(cell.parts)} adapters"
        if cell.method == CHECKPOINT:
            trains = f"nothing: scores step {cell.step} of cell {cell.parts[0]}'s training"
        elif cell.mixture is not None:
            steps = int(study.train.get("max_steps", -1))
            batch = int(study.train.get("batch_size", 8)) * int(study.train.get("gradient_accumulation", 1))
            mixture = f"{cell.design} ({cell.mixture['examples_per_subtask']}/subtask)"
            trains = f"{mixture}, rank {cell.rank}, seed {cell.seed}, " + (
                f"{steps} steps of {batch}" if steps > 0 else "epochs"
            )
        asked = sum(questions.values()) * variants
        sampled = int(study.train.get("shopbench_eval_examples", 0))
        if cell.mixture is not None and sampled and steps and steps > 0:  # before training, then every eval_steps
            asked += sampled * (1 + math.ceil(steps / int(study.train.get("eval_steps", 50))))
            trains += f", answers {sampled} validation questions at each evaluation"
        scores = ", ".join(f"{name} {n}" for name, n in questions.items()) + (
            f" x {variants} answering settings" if variants > 1 else ""
        )
        if cell.mixture is not None and study.eval.validation:
            scores += ", and its validation split"
        if study.eval.best_of and (not cell.parts or cell.method == CHECKPOINT):
            scores += f"; answering settings chosen on validation among {1 + len(study.eval.best_of)}, then used too"
            # The chosen settings re-answer about half of each set; plain and each candidate, a validation split.
            asked += sum(questions.values()) // 2 + validation_size(cell, study) * 2
        seconds = None  # a model whose size is unknown here, or a budget in epochs: no estimate
        scale = sizes.setdefault(cell.model, size_against_default(cell.model, study))
        if scale is not None and (steps is None or steps > 0):
            per_step = SECONDS_PER_STEP_OF_8 * int(study.train.get("batch_size", 8)) / 8
            seconds = ((steps or 0) * per_step + asked * SECONDS_PER_QUESTION) * scale
        rows.append(
            {
                "key": cell.key,
                "model": Path(cell.model).name,
                "trains": trains,
                "scores": scores,
                "seconds": seconds,
                "done": (out / "cells" / cell.key / "result.json").is_file(),
            }
        )
    return rows


def run_study(
    study: StudySpec, out: Path, progress: bool = True, executor: str = "local", address: str | None = None
) -> dict[str, int]:
    cells = expand(study)
    with RunFolder.open(out, STUDY):
        atomic_write_text(out / "study.yaml", dump_config(study))
        done = [c for c in cells if (out / "cells" / c.key / "result.json").is_file()]
        todo = [c for c in cells if c not in done]
        bar = tqdm(
            total=len(cells), initial=len(done), desc="study cells", unit="cell", file=sys.stderr, disable=not progress
        )
        run = functools.partial(_run_ray, address=address) if executor == "ray" else _run_local
        gpus = cuda_devices()
        if executor == "local" and gpus > 1 and progress:
            print(
                f"{gpus} GPUs: cells run one after another on GPU 0; --executor ray runs one per GPU",
                file=sys.stderr,
            )
        # Combinations need their parts' adapters: they run in a second phase.
        statuses = [
            s for phase in (False, True) for s in run([c for c in todo if bool(c.parts) is phase], study, out, bar)
        ]
        bar.close()
        from shoptune.study.results import write_table

        write_table(out)
    return {"cells": len(cells), "reused": len(done), "ran": statuses.count("ran"), "failed": statuses.count("failed")}
