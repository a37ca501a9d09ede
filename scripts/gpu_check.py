"""The prepared GPU check: shoptune's GPU paths on one NVIDIA GPU, in minutes, with no network.

Builds a small random Llama in code (the shipped test tokenizer, random weights) and runs, printing one line per
check (`CHECK name: PASS|FAIL|SKIP detail (seconds)`):

  bf16-lora      LoRA in bf16 with the answer-only loss and packing, in process
  eval-prefix    HF evaluation on the GPU: answers with the shared-prefix KV cache equal those without it
  qlora          4-bit QLoRA on this process's GPU (bitsandbytes present), else SKIP
  fsdp2          `accelerate launch` with configs/accelerate/fsdp.yaml on 1 process: a complete adapter
  zero3-save     `accelerate launch` with configs/accelerate/deepspeed_zero3.yaml on 1 process: the collective
                 save gives a complete adapter (DeepSpeed present), else SKIP
  engine         the continuous batch on the GPU: every answer equal to the one its prompt gets alone
  families       every family of the test matrix (Llama 2/3, Qwen2, Mistral, Gemma, Phi-3, GPT-2) in bf16:
                 generation, a constrained entity, multiple choice
  multi-gpu      what `shoptune train` does with the GPUs this machine has; fails where the plan is not the
                 expected one

Run it through scripts/gpu_check.sh, which installs carried wheels first. The training data are ShopBench-format
questions that ship in data/ (a mechanics check, not an experiment).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS: list[tuple[str, str]] = []


CHECK_SECONDS = 110  # each check's bound: all eight stay inside gpu_check.sh's outer bound, with the summary


class CheckTimeout(Exception):
    pass


def _out_of_time(signum: int, frame: object) -> None:
    raise CheckTimeout(f"not done within {CHECK_SECONDS} s")


def check(name: str, run: Callable[[], str]) -> None:
    """One check, bounded: a hang is a FAIL like any other, and the checks after it still run."""
    start = time.monotonic()
    signal.signal(signal.SIGALRM, _out_of_time)
    signal.alarm(CHECK_SECONDS)
    try:
        detail = run()
        status = "SKIP" if detail.startswith("skip:") else "PASS"
        detail = detail.removeprefix("skip:").strip()
    except Exception as exc:
        status, detail = "FAIL", f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc) else ''}"
        traceback.print_exc(file=sys.stderr)
    finally:
        signal.alarm(0)
    RESULTS.append((name, status))
    print(f"CHECK {name}: {status} {detail} ({time.monotonic() - start:.0f} s)", flush=True)


def build_model(folder: Path) -> Path:
    """A random 8-layer Llama (about 30M parameters) with the tokenizer of the tiny model that ships in shoptune."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from shoptune.hub import tiny_model_path

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path())
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=512,
        intermediate_size=1408,
        num_hidden_layers=8,
        num_attention_heads=8,
        num_key_value_heads=4,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_data(folder: Path) -> tuple[Path, Path]:
    from shoptune.schema import read_examples, write_jsonl

    rows = read_examples(ROOT / "data" / "heldout" / "heldout.jsonl")
    write_jsonl(folder / "train.jsonl", (ex.to_json() for ex in rows[::8][:320]))
    write_jsonl(folder / "eval.jsonl", (ex.to_json() for ex in rows[1::50][:32]))
    return folder / "train.jsonl", folder / "eval.jsonl"


def settings(model: Path, train: Path, held: Path, **extra: object) -> dict:
    return {
        "model": str(model),
        "data": str(train),
        "eval_data": str(held),
        "max_steps": 20,
        "batch_size": 8,
        "learning_rate": 1e-3,
        "max_length": 512,
        "eval_steps": 10,
        "save_steps": 10,
        "report_to": [],
        **extra,
    }


def trained(run: Path, kind: str) -> str:
    summary = json.loads((run / "train_summary.json").read_text())
    if summary["distributed"]["type"] != kind:
        raise AssertionError(f"ran as {summary['distributed']}, expected {kind}")
    if not summary["final_eval_loss"] < summary["initial_eval_loss"]:
        raise AssertionError(
            f"held-out loss did not fall: {summary['initial_eval_loss']} -> {summary['final_eval_loss']}"
        )
    return (
        f"steps {summary['steps']}, held-out loss {summary['initial_eval_loss']:.3f} -> "
        f"{summary['final_eval_loss']:.3f}, {summary['distributed']}"
    )


def launch(config: str, spec: Path, out: Path, timeout: int = CHECK_SECONDS - 10) -> None:
    command = [sys.executable, "-m", "accelerate.commands.launch", "--quiet", "--num_processes", "1"]
    command += ["--config_file", str(ROOT / "configs" / "accelerate" / config)]
    command += ["-m", "shoptune", "train", str(spec), "--out", str(out), "--no-progress"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=os.environ)
    if done.returncode != 0:
        raise RuntimeError(f"exit {done.returncode}: {(done.stderr or done.stdout).strip().splitlines()[-1:]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=None, help="folder for the model and runs (default: a temp one)")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("CHECK gpu: FAIL no CUDA GPU is visible to torch", flush=True)
        return 1
    print(f"GPU {torch.cuda.get_device_name(0)}; torch {torch.__version__}", flush=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="shoptune-gpu-check-"))
    model = build_model(work / "model")
    train_file, eval_file = write_data(work)

    from shoptune.train.config import TrainConfig
    from shoptune.train.trainer import train

    def bf16_lora() -> str:
        config = TrainConfig.model_validate(settings(model, train_file, eval_file, packing=True))
        train(config, work / "bf16-lora", progress=False)
        return trained(work / "bf16-lora", "NONE") + f", bf16 {torch.cuda.is_bf16_supported()}"

    def eval_prefix() -> str:
        from shoptune.evaluate.backends import HFBackend
        from shoptune.schema import read_examples

        questions = [ex.input_field for ex in read_examples(ROOT / "data" / "shopbench" / "development.json")]
        adapter = str(work / "bf16-lora" / "adapter")
        if not (work / "bf16-lora" / "adapter").is_dir():
            return "skip: bf16-lora did not leave an adapter"
        results = []
        for dtype in ("float32", "bfloat16"):
            backend = HFBackend(str(model), adapter=adapter, dtype=dtype, device="cuda")
            cached = backend.generate(questions, 24)
            backend._with_prefix = lambda rows, b=backend: (b._pad(rows), None)  # the uncached path
            plain = backend.generate(questions, 24)
            same = sum(a == b for a, b in zip(cached, plain, strict=True))
            results.append((dtype, same))
        if results[0][1] != len(questions):
            raise AssertionError(f"float32: {results[0][1]} of {len(questions)} answers equal with and without cache")
        return ", ".join(
            f"{d}: {s}/{len(questions)} answers equal with and without the prefix cache" for d, s in results
        )

    def qlora() -> str:
        import importlib.util

        if importlib.util.find_spec("bitsandbytes") is None:
            return "skip: bitsandbytes is not installed (pip install 'shoptune[gpu]')"
        config = TrainConfig.model_validate(settings(model, train_file, eval_file, method="qlora"))
        train(config, work / "qlora", progress=False)
        return trained(work / "qlora", "NONE")

    def fsdp2() -> str:
        spec = work / "fsdp.json"
        spec.write_text(json.dumps(settings(model, train_file, eval_file)))
        launch("fsdp.yaml", spec, work / "fsdp2")
        return trained(work / "fsdp2", "FSDP")

    def zero3() -> str:
        import importlib.util

        if importlib.util.find_spec("deepspeed") is None:
            return "skip: deepspeed is not installed (pip install 'shoptune[gpu]')"
        spec = work / "zero3.json"
        spec.write_text(json.dumps(settings(model, train_file, eval_file)))
        launch("deepspeed_zero3.yaml", spec, work / "zero3")
        return trained(work / "zero3", "DEEPSPEED")

    def engine() -> str:
        """The continuous batch on the GPU: every answer the one the same prompt gets alone."""
        from shoptune.evaluate.backends import HFBackend
        from shoptune.schema import read_examples

        questions = [ex.input_field for ex in read_examples(ROOT / "data" / "shopbench" / "development.json")]
        backend = HFBackend(str(model), dtype="float32", device="cuda")
        backend.width = 1
        alone = backend.generate(questions, 24)
        backend.width = 64
        together = backend.generate(questions, 24)
        same = sum(a == b for a, b in zip(alone, together, strict=True))
        if same != len(questions):
            raise AssertionError(f"{same} of {len(questions)} answers equal alone and in the continuous batch")
        return f"{same}/{len(questions)} answers equal alone and in a continuous batch of 64"

    def families() -> str:
        """Every family of the test matrix (tests/helpers/families.py) on the GPU in bf16: render, answer, constrain."""
        sys.path.insert(0, str(ROOT))
        from shoptune.evaluate.backends import HFBackend
        from shoptune.schema import TaskType
        from tests.helpers.families import FAMILIES, build_family_model

        question = "Which brand is named in this title?\nInput: blue kettle Acme 1.7 l\nOutput:"
        done = []
        for name in FAMILIES:
            backend = HFBackend(str(build_family_model(name, work / "families" / name)), dtype="bfloat16")
            backend.generate([question, "Describe a kettle."], 8)
            entities = backend.generate([question], 12, TaskType.NER)[0]
            if not all(part.strip() in question for part in entities.split(",")):
                raise AssertionError(f"{name}: constrained entities {entities!r} are not spans of the question")
            backend.choose(["Which colour is the sky?\n0. red\n1. blue\nAnswer: "])
            done.append(name)
        return ", ".join(done)

    def multi_gpu() -> str:
        from shoptune.train.distributed import plan_devices

        count = torch.cuda.device_count()
        plan = plan_devices(count, 1, "auto")
        expected = ("relaunch", count) if count > 1 else ("single", 1)
        if (plan.kind, plan.processes) != expected:
            raise AssertionError(f"{count} GPU(s) planned as {plan.kind} on {plan.processes}, expected {expected}")
        kept = plan_devices(count, 1, "off")
        if count > 1 and (kept.kind, kept.processes) != ("one_gpu", 1):
            raise AssertionError(f"distributed: off planned as {kept.kind} on {kept.processes}")
        return f"{count} GPU(s): {plan.kind}" + (f" ({plan.message})" if plan.message else "")

    for name, run in (
        ("bf16-lora", bf16_lora),
        ("eval-prefix", eval_prefix),
        ("qlora", qlora),
        ("fsdp2", fsdp2),
        ("zero3-save", zero3),
        ("engine", engine),
        ("families", families),
        ("multi-gpu", multi_gpu),
    ):
        check(name, run)
    failed = [name for name, status in RESULTS if status == "FAIL"]
    print(f"{len(RESULTS) - len(failed)} passed, {len(failed)} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
