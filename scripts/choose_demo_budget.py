"""Choose the main job's training budget on the mixture's validation split, never on a benchmark score.

Trains the demo study's one cell (same model, mixture, rank and settings as `configs/studies/demo.yaml`)
at each learning rate and number of steps given, and reports each run's validation loss and, when the
study's training settings ask for it (`shopbench_eval_examples`), the ShopBench score of the answers the model
gives to the validation questions at each evaluation (the mixture's own validation split, stratified over
subtasks), with its training time. The demo's settings are then the best validation ShopBench score (the
lowest loss where none is measured) whose whole study still fits the time budget.

    python scripts/choose_demo_budget.py [--lrs 5e-4,1e-3,2e-3] [--steps 64] [--out runs/budget] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from shoptune.config import load_config
from shoptune.data.build import cached_mixture
from shoptune.data.spec import MixtureSpec
from shoptune.evaluate.during_training import validator_for
from shoptune.study.spec import load_study
from shoptune.train.config import TrainConfig
from shoptune.train.trainer import train

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", type=Path, default=ROOT / "configs" / "studies" / "demo.yaml")
    parser.add_argument("--lrs", default="5e-4,1e-3,2e-3")
    parser.add_argument("--label-smoothing", default="0", help="label smoothing values to try (the loss's)")
    parser.add_argument("--steps", default="64")
    parser.add_argument("--out", type=Path, default=Path("runs/budget"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    study = load_study(args.study)
    (spec_path,) = {p for specs in study.designs.values() for p in specs}
    spec = load_config(MixtureSpec, spec_path, study.mixture)
    mixture = cached_mixture(spec, args.out / "mixture")
    rows = []
    grid = [
        (int(steps), float(lr), float(smoothing))
        for steps in args.steps.split(",")
        for lr in args.lrs.split(",")
        for smoothing in args.label_smoothing.split(",")
    ]
    for steps, lr, smoothing in grid:
        settings = {
            **study.train,
            "model": study.model_path(study.models[0]),
            "mixture": str(mixture),
            "lora": {**study.train.get("lora", {}), "rank": study.ranks[0]},
            "learning_rate": lr,
            "max_steps": steps,
            "label_smoothing": smoothing,
        }
        config = TrainConfig.model_validate(settings)
        folder = args.out / (f"lr{lr:g}-steps{steps}" + (f"-smoothing{smoothing:g}" if smoothing else ""))
        summary = train(config, folder, progress=False, validator=validator_for(config))
        row = {
            "learning_rate": lr,
            "label_smoothing": smoothing,
            "steps": steps,
            "batch_size": settings["batch_size"],
            "rank": study.ranks[0],
            "initial_validation_loss": summary["initial_eval_loss"],
            "validation_loss": summary["final_eval_loss"],
            "train_seconds": summary["train_seconds"],
            "validation_examples": summary["eval_examples"],
            "validation_shopbench": summary["shopbench_validation"],
        }
        rows.append(row)
        print(
            f"lr {lr:g}, label smoothing {smoothing:g}, {steps} steps x {row['batch_size']}: "
            f"validation loss {row['initial_validation_loss']:.3f} "
            f"-> {row['validation_loss']:.3f} ({row['validation_examples']} examples), "
            f"{row['train_seconds']:.0f} s training; validation ShopBench by step: "
            + (", ".join(f"{p['step']}: {p['overall']:.4f}" for p in row["validation_shopbench"]) or "none"),
            flush=True,
        )
    lowest = min(rows, key=lambda r: r["validation_loss"])
    print(f"lowest validation loss: lr {lowest['learning_rate']:g}, {lowest['steps']} steps")
    scored = [
        (p["overall"], r["learning_rate"], r["label_smoothing"], p["step"])
        for r in rows
        for p in r["validation_shopbench"]
        if p["step"] > 0  # step 0 is the untuned model
    ]
    best = None
    if scored:
        score, lr, smoothing, step = max(scored, key=lambda t: (t[0], -t[3]))  # the earlier step on a tie
        best = {"learning_rate": lr, "label_smoothing": smoothing, "step": step, "validation_shopbench": score}
        print(f"best validation ShopBench score: {score:.4f} at lr {lr:g}, label smoothing {smoothing:g}, step {step}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        found = {"runs": rows, "lowest": lowest, "best_shopbench": best}
        args.json.write_text(json.dumps(found, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
