"""shoptune's answering engine against lm-evaluation-harness (HF backend), same model, same questions, same run.

Both sides answer the ShopBench development questions as the official baselines put them (the chat template with
their system prompt): multiple choice by the log-likelihood of each listed option label (lm-evaluation-harness's
`multiple_choice` task type; shoptune's option scores), every other question by greedy decoding to the end token
or its type's token budget (lm-evaluation-harness's `generate_until` with the same budgets; shoptune's continuous
batch). Each side runs in a process of its own, the model loaded before its clock starts; lm-evaluation-harness at
each batch size asked for, its fastest that fits in memory kept, as its strongest configuration (a size that does
not fit is killed, and said; its "auto", which tries up to 64, was killed so on a 24 GB machine). The answers are
compared: the option each picks, and the generated text.

    python benchmarks/vs_lm_eval.py [--model NAME_OR_PATH] [--batch-sizes 1,8,16,32] [--json FILE]

Needs lm-evaluation-harness (`pip install -e ".[dev]"`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEV = ROOT / "data" / "shopbench" / "development.json"


def questions() -> list[dict]:
    """The development questions, each with its option labels (multiple choice) or token budget (the others)."""
    from shoptune.evaluate.config import DEFAULT_MAX_NEW_TOKENS
    from shoptune.schema import TaskType, read_examples
    from shoptune.tasks.render import option_labels

    out = []
    for i, ex in enumerate(read_examples(DEV)):
        mc = ex.task_type is TaskType.MULTIPLE_CHOICE
        out.append(
            {
                "index": i,
                "input_field": ex.input_field,
                "task_type": ex.task_type.value,
                "choices": list(option_labels(ex.input_field)) if mc else None,
                "budget": None if mc else DEFAULT_MAX_NEW_TOKENS[ex.task_type.value],
            }
        )
    return out


def peak_rss_gib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def shoptune_side(model: str) -> dict:
    from shoptune.evaluate.backends import HFBackend
    from shoptune.evaluate.config import EvalConfig
    from shoptune.evaluate.runner import answer
    from shoptune.schema import read_examples

    examples = read_examples(DEV)
    backend = HFBackend(model)
    answers: dict[int, str] = {}
    start = time.perf_counter()
    answer(backend, examples, range(len(examples)), EvalConfig(model=model), answers.update, progress=False)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "answers": {str(k): v for k, v in answers.items()}, "peak_rss_gib": peak_rss_gib()}


def lm_eval_side(model: str, batch_size: str, folder: Path) -> dict:
    """lm-evaluation-harness's own path: its HF model class, its task types, `simple_evaluate`."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    from shoptune.hub import resolve_model_source
    from shoptune.tasks.render import SHOPBENCH_SYSTEM_PROMPT

    source = resolve_model_source(model, allow_download=False)
    items = questions()
    tasks = []
    choice = [q for q in items if q["choices"]]
    (folder / "mc.jsonl").write_text("".join(json.dumps({**q, "target": 0}) + "\n" for q in choice))
    tasks.append(
        {
            "task": "shopbench_mc",
            "dataset_path": "json",
            "dataset_kwargs": {"data_files": {"test": str(folder / "mc.jsonl")}},
            "test_split": "test",
            "output_type": "multiple_choice",
            "doc_to_text": "{{input_field}}",
            "doc_to_choice": "{{choices}}",
            "doc_to_target": "{{target}}",
            "target_delimiter": "",
            "metric_list": [{"metric": "acc"}],
        }
    )
    lm = HFLM(pretrained=source, batch_size=batch_size, device="cpu", dtype="float32")
    end = lm.tokenizer.decode([lm.tokenizer.eos_token_id])
    for task_type in sorted({q["task_type"] for q in items if q["budget"]}):
        rows = [q for q in items if q["task_type"] == task_type]
        name = f"shopbench_{task_type.replace('-', '_')}"
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(q) + "\n" for q in rows))
        tasks.append(
            {
                "task": name,
                "dataset_path": "json",
                "dataset_kwargs": {"data_files": {"test": str(folder / f"{name}.jsonl")}},
                "test_split": "test",
                "output_type": "generate_until",
                "doc_to_text": "{{input_field}}",
                "doc_to_target": "",
                "generation_kwargs": {"until": [end], "max_gen_toks": rows[0]["budget"], "do_sample": False},
                "metric_list": [{"metric": "bypass"}],
            }
        )
    start = time.perf_counter()
    results = lm_eval.simple_evaluate(
        model=lm,
        tasks=tasks,
        apply_chat_template=True,
        system_instruction=SHOPBENCH_SYSTEM_PROMPT,
        log_samples=True,
        bootstrap_iters=0,
        verbosity="ERROR",
    )
    seconds = time.perf_counter() - start
    answers = {}
    for name, samples in results["samples"].items():
        for sample in samples:
            doc = sample["doc"]
            if name == "shopbench_mc":
                scores = [response[0] for response in sample["filtered_resps"]]
                answers[str(doc["index"])] = doc["choices"][max(range(len(scores)), key=scores.__getitem__)]
            else:
                answers[str(doc["index"])] = sample["filtered_resps"][0]
    return {"seconds": seconds, "answers": answers, "peak_rss_gib": peak_rss_gib(), "batch_size": batch_size}


def side(args: list[str]) -> dict | None:
    """One side in a process of its own (its own peak memory, nothing shared); None where it failed (a batch size
    that does not fit in memory is killed)."""
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, timeout=3600, cwd=ROOT)
    if done.returncode != 0:
        lines = [line for line in done.stderr.splitlines() if line.strip() and "it/s]" not in line]
        print(f"{' '.join(args)}: failed (exit {done.returncode}): {lines[-1] if lines else 'killed'}", flush=True)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument(
        "--batch-sizes",
        default="1,8,16,32",
        help="lm-evaluation-harness batch sizes to try ('auto' too: on a 24 GB CPU machine it was killed for memory)",
    )
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    parser.add_argument("--side", choices=["shoptune", "lm_eval"], help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", default="1", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side == "shoptune":
        print(json.dumps(shoptune_side(args.model)))
        return
    if args.side == "lm_eval":
        with tempfile.TemporaryDirectory() as folder:
            print(json.dumps(lm_eval_side(args.model, args.batch_size, Path(folder))))
        return

    ours = side(["--side", "shoptune", "--model", args.model])
    if ours is None:
        sys.exit("shoptune's side failed")
    sizes = args.batch_sizes.split(",")
    ran = {size: side(["--side", "lm_eval", "--model", args.model, "--batch-size", size]) for size in sizes}
    theirs = [run for run in ran.values() if run is not None]
    if not theirs:
        sys.exit("lm-evaluation-harness failed at every batch size")
    for run in theirs:
        print(f"lm-evaluation-harness, batch size {run['batch_size']}: {run['seconds']:.1f} s")
    best = min(theirs, key=lambda run: run["seconds"])
    items = questions()
    choice = [str(q["index"]) for q in items if q["choices"]]
    generated = [str(q["index"]) for q in items if not q["choices"]]
    same_mc = sum(ours["answers"][k] == best["answers"][k] for k in choice)
    same_gen = sum(ours["answers"][k] == best["answers"][k] for k in generated)
    figures = {
        "model": args.model,
        "questions": len(items),
        "shoptune_seconds": ours["seconds"],
        "lm_eval_seconds": best["seconds"],
        "lm_eval_batch_size": best["batch_size"],
        "lm_eval_seconds_by_batch_size": {size: run["seconds"] if run else None for size, run in ran.items()},
        "ratio": best["seconds"] / ours["seconds"],
        "same_answers": same_mc + same_gen == len(items),
        "same_multiple_choice": [same_mc, len(choice)],
        "same_generated": [same_gen, len(generated)],
        "peak_rss_gib": {"shoptune": ours["peak_rss_gib"], "lm_eval": best["peak_rss_gib"]},
    }
    print(
        f"shoptune {ours['seconds']:.1f} s, lm-evaluation-harness {best['seconds']:.1f} s "
        f"(batch {best['batch_size']}): {figures['ratio']:.2f}x; same picks {same_mc}/{len(choice)}, "
        f"same generated text {same_gen}/{len(generated)}; "
        f"peak memory {ours['peak_rss_gib']:.2f} vs {best['peak_rss_gib']:.2f} GiB"
    )
    for k in generated:
        if ours["answers"][k] != best["answers"][k]:
            print(f"  question {k}: shoptune {ours['answers'][k]!r:.80} / lm-eval {best['answers'][k]!r:.80}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
