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
from shoptune.train.distributed import STATUS_DIR, plan_devices, relaunch_command

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
    combined = tmp_path / "combined"
    assert combine_adapters(str(tiny_model), parts, combined, "linear") is False  # made now, not found finished
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


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **extra}


def _launch(
    kind: str, config: Path, out: Path, *extra: str, timeout: float = 300, status: Path | None = None
) -> subprocess.CompletedProcess:
    """`shoptune train` under accelerate launch; with `status`, each process leaves its own exit status there."""
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--quiet"]
    launch += ["--config_file", str(ROOT / "configs" / "accelerate" / LAUNCH_CONFIGS[kind])]
    command = [*launch, "-m", "shoptune", "train", str(config), "--out", str(out), "--no-progress", *extra]
    env = _env(**({STATUS_DIR: str(status)} if status is not None else {}))
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)


def _statuses(folder: Path) -> list[int]:
    """Each process's own exit status, as it left it."""
    statuses = sorted(int(f.read_text()) for f in folder.glob("rank-*.status"))
    for f in folder.glob("rank-*.status"):
        f.unlink()
    return statuses


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
    settings = _settings(examples_file, tiny_model, batch=4, ddp_timeout=600)  # 2 x 4 = the one process's 8
    config.write_text(json.dumps(settings))
    run = tmp_path / "run"
    status = tmp_path / "status"
    status.mkdir()
    done = _launch(kind, config, run, status=status)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _statuses(status) == [0, 0]

    summary = json.loads((run / "train_summary.json").read_text())
    # ddp_timeout reaches the process group the first collective sets up (not transformers' later, dropped one)
    assert summary["distributed"] == {"type": kind, "world_size": 2, "timeout_seconds": 600.0}
    assert json.loads((run / "run.json").read_text())["distributed"] == summary["distributed"]
    assert summary["initial_eval_loss"] == pytest.approx(
        json.loads((one_process / "train_summary.json").read_text())["initial_eval_loss"], rel=1e-5
    )
    from safetensors.torch import load_file

    saved = load_file(str(run / "adapter" / "adapter_model.safetensors"))
    alone = load_file(str(one_process / "adapter" / "adapter_model.safetensors"))
    assert {k: t.shape for k, t in saved.items()} == {k: t.shape for k, t in alone.items()}  # whole, not shards
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
    changed = _launch(kind, config, run, "--learning-rate", "0.001", timeout=EARLY_EXIT_SECONDS, status=status)
    assert changed.returncode != 0 and _statuses(status) == [2, 2]  # a user error, in every process
    refusals = [line for line in changed.stderr.splitlines() if line.startswith("error:")]
    assert len(refusals) == 2 and len(set(refusals)) == 1 and "other settings or data" in refusals[0]

    # A folder another run holds: both processes refuse at once.
    with writing(run):
        locked = _launch(kind, config, run, timeout=EARLY_EXIT_SECONDS, status=status)
    assert locked.returncode != 0 and _statuses(status) == [2, 2]
    refusals = [line for line in locked.stderr.splitlines() if line.startswith("error:")]
    assert len(refusals) == 2 and len(set(refusals)) == 1 and "being written by another run" in refusals[0]


# --- the relaunch, on two CPU processes: exit status and signals ---------------------------------------------------


def _relaunch(args: list[str], **popen: object) -> subprocess.Popen:
    """`shoptune` relaunched on two processes as it relaunches itself on two GPUs (here they run on CPUs)."""
    code = f"import sys; from shoptune.train.distributed import relaunch; sys.exit(relaunch({args!r}, 2))"
    return subprocess.Popen([sys.executable, "-c", code], env=_env(), text=True, **popen)


def _workers(marker: str) -> list[int]:
    """The processes whose command line holds `marker` (this test's run folder)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if marker in (proc / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


@pytest.mark.slow
def test_a_user_error_through_the_relaunch_ends_every_process_with_status_2_and_one_line_each(
    examples_file, tiny_model, tmp_path
):
    config = tmp_path / "train.yaml"
    config.write_text(json.dumps(_settings(examples_file, tiny_model, batch=4, data=str(tmp_path / "missing.jsonl"))))
    launched = _relaunch(
        ["train", str(config), "--out", str(tmp_path / "run"), "--no-progress"], stderr=subprocess.PIPE
    )
    _, err = launched.communicate(timeout=300)
    assert launched.returncode == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 2 and all(line.startswith("error:") and "missing.jsonl" in line for line in lines), err
    assert "ChildFailedError" not in err and "====" not in err  # the launcher's own report is left out


@pytest.mark.slow
def test_sigterm_to_the_relaunching_process_ends_its_workers_within_30_seconds(examples_file, tiny_model, tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text(json.dumps(_settings(examples_file, tiny_model, batch=4, max_steps=100_000, save_steps=10_000)))
    run = tmp_path / "long-run"
    launched = _relaunch(["train", str(config), "--out", str(run), "--no-progress"], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not (run / "run.json").is_file():  # the workers are training
        assert launched.poll() is None and time.monotonic() < deadline, "the relaunched run never started"
        time.sleep(0.2)
    assert len([p for p in _workers(str(run)) if p != launched.pid]) >= 2
    launched.terminate()
    stopped = time.monotonic()
    launched.wait(timeout=60)
    while _workers(str(run)) and time.monotonic() - stopped < 30:
        time.sleep(0.2)
    assert not _workers(str(run)), "workers outlived the relaunching process by 30 s"
    assert launched.returncode != 0


# --- GPU paths, decided and built on a CPU ---------------------------------------------------------------------


def test_qlora_under_zero3_leaves_the_placement_to_deepspeed():
    from shoptune.train.trainer import quantised

    alone = quantised(0, zero3=False)
    assert alone["device_map"] == {"": 0} and alone["quantization_config"].load_in_4bit
    sharded = quantised(0, zero3=True)
    assert "device_map" not in sharded  # from_pretrained refuses a device_map under ZeRO-3
    assert sharded["quantization_config"].bnb_4bit_quant_storage == torch.bfloat16


def test_partitioned_parameters_are_counted_whole():
    from shoptune.train.trainer import count_parameters

    model = torch.nn.Linear(4, 3)
    assert count_parameters(model) == {"trainable": 15, "total": 15}
    for parameter in model.parameters():  # what DeepSpeed ZeRO-3 leaves in each process: an empty placeholder
        parameter.ds_numel = parameter.numel()
        parameter.data = torch.empty(0)
    model.bias.requires_grad_(False)
    assert count_parameters(model) == {"trainable": 12, "total": 15}


def test_vllm_is_kept_offline_even_after_the_hub_was_imported():
    code = (
        "import huggingface_hub, os\n"
        "os.environ.pop('HF_HUB_OFFLINE', None)\n"
        "from huggingface_hub import constants\n"
        "assert not constants.is_offline_mode()\n"
        "from shoptune.evaluate.backends import hub_offline\n"
        "hub_offline()\n"
        "assert constants.is_offline_mode()\n"
        "from transformers.utils.hub import is_offline_mode\n"
        "assert is_offline_mode()\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
