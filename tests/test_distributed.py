"""Training on several processes: what `train` does with several GPUs, and two-process CPU runs under
`accelerate launch` (DDP and FSDP2 over gloo) that save complete adapters and agree on every early exit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from shoptune.errors import ShoptuneError
from shoptune.locks import writing
from shoptune.train.distributed import plan_devices, relaunch_command

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_CONFIGS = {"DDP": "cpu_gloo_2proc.yaml", "FSDP": "fsdp_cpu.yaml"}
EARLY_EXIT_SECONDS = 60


# --- the decision, as a unit -------------------------------------------------------------------------


def test_several_gpus_without_a_launcher_relaunch_on_all_of_them():
    plan = plan_devices(cuda_devices=4, world_size=1, distributed="auto")
    assert (plan.kind, plan.processes) == ("relaunch", 4)
    assert "4 GPUs" in plan.message


def test_several_gpus_with_distributed_off_keep_to_one_and_say_so():
    plan = plan_devices(cuda_devices=8, world_size=1, distributed="off")
    assert (plan.kind, plan.processes) == ("one_gpu", 1)
    assert "GPU 0 only" in plan.message


def test_in_process_training_never_relaunches():
    plan = plan_devices(cuda_devices=2, world_size=1, distributed="auto", relaunchable=False)
    assert plan.kind == "one_gpu"


@pytest.mark.parametrize(("gpus", "world"), [(0, 1), (1, 1)])
def test_one_device_is_used_as_it_is(gpus, world):
    plan = plan_devices(cuda_devices=gpus, world_size=world, distributed="auto")
    assert (plan.kind, plan.message) == ("single", None)


def test_a_launched_run_is_left_to_its_launcher():
    plan = plan_devices(cuda_devices=8, world_size=8, distributed="auto")
    assert (plan.kind, plan.processes, plan.message) == ("launched", 8, None)


def test_the_relaunch_runs_the_same_command_once_per_gpu():
    command = relaunch_command(4, ["train", "cfg.yaml", "--out", "runs/x"], port=29999)
    assert command[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    assert command[command.index("--num_processes") + 1] == "4"
    assert "--multi_gpu" in command and command[command.index("--main_process_port") + 1] == "29999"
    assert command[-6:] == ["-m", "shoptune", "train", "cfg.yaml", "--out", "runs/x"]


def test_a_deepspeed_launch_without_deepspeed_is_one_line_naming_the_extra(
    examples_file, tiny_model, tmp_path, monkeypatch
):
    import importlib.util

    from shoptune.train.config import TrainConfig
    from shoptune.train.trainer import train

    if importlib.util.find_spec("deepspeed") is not None:
        pytest.skip("DeepSpeed is installed here")
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")  # what accelerate launch sets for a DeepSpeed config
    config = TrainConfig.model_validate(_settings(examples_file, tiny_model, batch=4))
    with pytest.raises(ShoptuneError, match=r"needs deepspeed.*pip install 'shoptune\[gpu\]'"):
        train(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


# --- vLLM's settings, built without vLLM --------------------------------------------------------------


def _lora_adapter(base: Path, folder: Path, rank: int, dora: bool = False) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules="all-linear", use_dora=dora, task_type="CAUSAL_LM")
    get_peft_model(model, config).save_pretrained(folder)
    return folder


def _engine(adapter: Path | None) -> dict:
    from shoptune.evaluate.backends import vllm_engine_args

    return vllm_engine_args(
        "some/model",
        adapter=None if adapter is None else str(adapter),
        dtype="bfloat16",
        tensor_parallel_size=4,
        gpu_memory_utilization=0.85,
        max_model_len=4096,
    )


def test_vllm_lora_rank_follows_the_adapter_rank_64(tiny_model, tmp_path):
    args = _engine(_lora_adapter(tiny_model, tmp_path / "r64", 64))
    assert args["enable_lora"] is True and args["max_lora_rank"] == 64 and args["max_loras"] == 1
    assert (args["tensor_parallel_size"], args["gpu_memory_utilization"], args["max_model_len"]) == (4, 0.85, 4096)


def test_vllm_lora_rank_covers_a_combined_adapter(tiny_model, tmp_path):
    from shoptune.train.combine import combine_adapters

    parts = [_lora_adapter(tiny_model, tmp_path / f"part{i}", 24) for i in range(2)]
    combined = combine_adapters(str(tiny_model), parts, tmp_path / "combined", "linear")
    assert json.loads((combined / "adapter_config.json").read_text())["r"] == 48  # the ranks add up
    assert _engine(combined)["max_lora_rank"] == 64  # the next rank vLLM is built for


def test_vllm_without_adapter_enables_no_lora():
    args = _engine(None)
    assert args["enable_lora"] is False and "max_lora_rank" not in args


def test_vllm_refuses_dora_with_what_to_do(tiny_model, tmp_path):
    with pytest.raises(ShoptuneError, match=r"DoRA.*shoptune merge"):
        _engine(_lora_adapter(tiny_model, tmp_path / "dora", 8, dora=True))


def test_vllm_refuses_a_rank_beyond_its_kernels(tiny_model, tmp_path):
    folder = _lora_adapter(tiny_model, tmp_path / "r8", 8)
    config = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**config, "r": 1024}))
    with pytest.raises(ShoptuneError, match="above vLLM's largest LoRA rank 512"):
        _engine(folder)


# --- two processes on CPUs -------------------------------------------------------------------------


def _settings(examples_file: Path, tiny_model: Path, batch: int, **extra: object) -> dict:
    return {
        "model": str(tiny_model),
        "data": str(examples_file / "train.jsonl"),
        "eval_data": str(examples_file / "held.jsonl"),
        "learning_rate": 2e-3,
        "max_length": 256,
        "report_to": [],
        "max_steps": 6,
        "save_steps": 3,
        "eval_steps": 3,
        "batch_size": batch,
        "lora": {"dropout": 0.0},
        **extra,
    }


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _launch(kind: str, config: Path, out: Path, *extra: str, timeout: float = 300) -> subprocess.CompletedProcess:
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--quiet"]
    launch += ["--config_file", str(ROOT / "configs" / "accelerate" / LAUNCH_CONFIGS[kind])]
    command = [*launch, "-m", "shoptune", "train", str(config), "--out", str(out), "--no-progress", *extra]
    return subprocess.run(command, capture_output=True, text=True, env=_env(), timeout=timeout)


def _logits(tiny_model: Path, run: Path) -> torch.Tensor:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), run / "adapter").eval()
    tokens = torch.arange(3, 40).reshape(1, -1)
    with torch.no_grad():
        return model(input_ids=tokens).logits


@pytest.fixture(scope="module")
def one_process(examples_file, tiny_model, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("one")
    (folder / "train.yaml").write_text(json.dumps(_settings(examples_file, tiny_model, batch=8)))
    command = [sys.executable, "-m", "shoptune", "train", str(folder / "train.yaml"), "--out", str(folder / "run")]
    subprocess.run([*command, "--no-progress"], check=True, capture_output=True, env=_env(), timeout=300)
    return folder / "run"


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(LAUNCH_CONFIGS))
def test_two_processes_train_a_complete_adapter_and_agree_on_every_early_exit(
    kind, examples_file, tiny_model, one_process, tmp_path
):
    config = tmp_path / "train.yaml"
    config.write_text(json.dumps(_settings(examples_file, tiny_model, batch=4)))  # 2 x 4 = the one process's 8
    run = tmp_path / "run"
    done = _launch(kind, config, run)
    assert done.returncode == 0, done.stderr[-3000:]

    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["distributed"] == {"type": kind, "world_size": 2}
    assert json.loads((run / "run.json").read_text())["distributed"] == summary["distributed"]
    assert summary["initial_eval_loss"] == pytest.approx(
        json.loads((one_process / "train_summary.json").read_text())["initial_eval_loss"], rel=1e-5
    )
    from safetensors.torch import load_file

    saved = load_file(str(run / "adapter" / "adapter_model.safetensors"))
    assert len(saved) == len(load_file(str(one_process / "adapter" / "adapter_model.safetensors")))
    assert all(t.numel() > 0 for t in saved.values())  # whole tensors, not one process's shard
    torch.testing.assert_close(_logits(tiny_model, run), _logits(tiny_model, one_process), rtol=1e-3, atol=1e-3)
    before = (run / "adapter" / "adapter_model.safetensors").stat().st_mtime_ns

    # The finished run again: both processes return at once, nothing is trained or written.
    start = time.monotonic()
    again = _launch(kind, config, run, timeout=EARLY_EXIT_SECONDS)
    assert again.returncode == 0, again.stderr[-3000:]
    assert time.monotonic() - start < EARLY_EXIT_SECONDS
    assert (run / "adapter" / "adapter_model.safetensors").stat().st_mtime_ns == before
    assert (again.stdout + again.stderr).count("trainable parameters") == 1  # the main process speaks for both

    # Other settings: both processes refuse, with the same line and the same exit status.
    changed = _launch(kind, config, run, "--learning-rate", "0.001", timeout=EARLY_EXIT_SECONDS)
    assert changed.returncode != 0
    refusals = [line for line in changed.stderr.splitlines() if line.startswith("error:")]
    assert len(refusals) == 2 and len(set(refusals)) == 1 and "other settings or data" in refusals[0]

    # A folder another run holds: both processes refuse at once.
    with writing(run):
        locked = _launch(kind, config, run, timeout=EARLY_EXIT_SECONDS)
    assert locked.returncode != 0
    refusals = [line for line in locked.stderr.splitlines() if line.startswith("error:")]
    assert len(refusals) == 2 and len(set(refusals)) == 1 and "being written by another run" in refusals[0]
