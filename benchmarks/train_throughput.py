"""Training throughput: shoptune's trainer against TRL's SFTTrainer with default settings, same run.

Same model (the embedded default unless --model), same LoRA, same examples, same number of
optimiser steps and examples per step. shoptune packs each batch into one row (no padding) and
computes the loss on answer tokens only; the baseline is SFTTrainer as a user would first call it:
prompt-completion data, padded batches. Reports training tokens/s (real tokens, padding excluded),
the ratio, and peak memory of each run.

    python benchmarks/train_throughput.py [--model PATH] [--steps 30] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from shoptune import default_model_path
from shoptune.sources.shipped import load_raw
from shoptune.tasks.registry import all_subtasks
from shoptune.tasks.render import answer_text, render_prompt
from shoptune.train.config import TrainConfig
from shoptune.train.trainer import encode, load_model

ROOT = Path(__file__).resolve().parents[1]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def examples(n: int) -> list:
    corpus = load_raw(ROOT / "data" / "raw")
    tasks = list(all_subtasks().values())
    per_task = n // len(tasks) + 1
    out = [ex for task in tasks for ex in task.build(corpus, per_task, seed=0)]
    return out[:n]


def common_args(config: TrainConfig, steps: int, out: Path) -> dict:
    """The settings both trainers share, so the comparison differs only in what each trainer does."""
    return {
        "output_dir": str(out),
        "per_device_train_batch_size": config.batch_size,
        "max_steps": steps,
        "learning_rate": config.learning_rate,
        "report_to": [],
        "save_strategy": "no",
        "use_cpu": True,
        "disable_tqdm": True,
        "logging_steps": 1000,
        "seed": 0,
        "data_seed": 0,
    }


def run_shoptune(config: TrainConfig, data: list, steps: int, out: Path) -> tuple[float, int]:
    import datasets
    from transformers import DataCollatorWithFlattening, Trainer, TrainingArguments

    model, tokenizer = load_model(config)
    encoded = datasets.Dataset.from_list([encode(ex, tokenizer, config) for ex in data])
    tokens = sum(len(r["input_ids"]) for r in encoded.select(range(min(len(encoded), steps * config.batch_size))))
    args = TrainingArguments(**common_args(config, steps, out), remove_unused_columns=False)
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=encoded,
        data_collator=DataCollatorWithFlattening(return_position_ids=True),
    )
    start = time.perf_counter()
    trainer.train()
    return time.perf_counter() - start, tokens


def run_trl(config: TrainConfig, data: list, steps: int, out: Path) -> tuple[float, int]:
    import datasets
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(config.model)
    rows = [
        {
            "prompt": render_prompt(ex.input_field, tokenizer, system_prompt=config.system_prompt),
            "completion": answer_text(ex.output_field, ex.task_type),
        }
        for ex in data
    ]
    model = AutoModelForCausalLM.from_pretrained(config.model)
    lora = LoraConfig(
        r=config.lora.rank,
        lora_alpha=config.lora_alpha(),
        lora_dropout=config.lora.dropout,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )
    args = SFTConfig(**common_args(config, steps, out), max_length=config.max_length)
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=lora,
    )
    used = trainer.train_dataset.select(range(min(len(rows), steps * config.batch_size)))
    tokens = sum(len(ids) for ids in used["input_ids"])
    start = time.perf_counter()
    trainer.train()
    return time.perf_counter() - start, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(default_model_path()))
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--only", choices=["shoptune", "trl"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.only is None:
        # Each trainer runs in its own process, one after the other, so each peak memory is its own.
        results = {}
        for name in ("trl", "shoptune"):
            cmd = [
                sys.executable,
                __file__,
                "--model",
                args.model,
                "--steps",
                str(args.steps),
                "--batch-size",
                str(args.batch_size),
                "--only",
                name,
            ]
            done = subprocess.run(cmd, check=True, capture_output=True, text=True)
            results[name] = json.loads(done.stdout.strip().splitlines()[-1])
        ours, trl = results["shoptune"], results["trl"]
        print(f"model {args.model}; {args.steps} steps x {args.batch_size} examples; LoRA rank 16, all linear layers")
        for label, r in (("TRL SFTTrainer (defaults, padded)", trl), ("shoptune (packed, answer-only loss)", ours)):
            print(
                f"{label:38s} {r['tokens'] / r['seconds']:8.0f} training tokens/s ({r['seconds']:.1f} s), "
                f"peak RSS {r['peak_rss_mib']:,.0f} MiB"
            )
        speed = (ours["tokens"] / ours["seconds"]) / (trl["tokens"] / trl["seconds"])
        wall = trl["seconds"] / ours["seconds"]
        print(f"speed-up in tokens/s: {speed:.2f}x; wall-clock for the same steps: {wall:.2f}x")
        return
    data = examples(args.steps * args.batch_size)
    config = TrainConfig(
        model=args.model, data=Path("unused.jsonl"), batch_size=args.batch_size, max_length=1024, learning_rate=1e-3
    )
    run = run_shoptune if args.only == "shoptune" else run_trl
    with tempfile.TemporaryDirectory() as tmp:
        seconds, tokens = run(config, data, args.steps, Path(tmp))
    print(json.dumps({"seconds": seconds, "tokens": tokens, "peak_rss_mib": peak_rss_mib()}))


if __name__ == "__main__":
    main()
