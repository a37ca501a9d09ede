"""How a training run is spread over devices, and how its processes agree.

`accelerate launch` (or torchrun) starts one process per device, each running the same `shoptune train`.
Every decision that can end a run before training (finished already, other settings, folder locked) is taken
once, by the main process, and broadcast: all processes then return or fail together, with the same exit
status, instead of some entering a collective that the others never reach.

A plain `shoptune train` on a machine with several GPUs would be wrapped by transformers in `nn.DataParallel`,
which the answer-only loss cannot run under (it cuts the positions tensor per replica). Instead it relaunches
itself under `accelerate launch` on every GPU (DDP), as `llamafactory-cli train` does, or keeps to one GPU
when `distributed: off`; in-process training (the study's cells) always keeps to one.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from shoptune.errors import ShoptuneError, require_extra

T = TypeVar("T")


@dataclass(frozen=True)
class Plan:
    """What `shoptune train` does with the devices it sees."""

    kind: Literal["single", "launched", "relaunch", "one_gpu"]
    processes: int
    message: str | None = None


def plan_devices(cuda_devices: int, world_size: int, distributed: str, relaunchable: bool = True) -> Plan:
    """launched: a launcher started the processes; relaunch: every GPU, under accelerate launch; one_gpu: the first
    of several; single: the one device there is (a CPU or one GPU)."""
    if world_size > 1:
        return Plan("launched", world_size)
    if cuda_devices <= 1:
        return Plan("single", 1)
    if distributed == "auto" and relaunchable:
        return Plan(
            "relaunch",
            cuda_devices,
            f"{cuda_devices} GPUs: training on all of them under accelerate launch (DDP); "
            "distributed: off keeps to one",
        )
    return Plan(
        "one_gpu",
        1,
        f"{cuda_devices} GPUs: training on GPU 0 only; for all of them, run `shoptune train` itself "
        "(distributed: auto) or `accelerate launch --config_file configs/accelerate/ddp.yaml -m shoptune train ...`",
    )


def check_launch() -> None:
    """What a launch needs that shoptune does not install by default, before a process group waits on it."""
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        require_extra("deepspeed", "gpu", "a DeepSpeed launch (configs/accelerate/deepspeed_zero*.yaml)")


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def cuda_devices() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def relaunch_command(processes: int, argv: Sequence[str], port: int) -> list[str]:
    """This very command (argv without the program), once per GPU under accelerate launch."""
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--quiet",  # a process's failure is its own one line, not the launcher's traceback
        "--multi_gpu",
        "--num_machines",
        "1",
        "--num_processes",
        str(processes),
        "--main_process_port",
        str(port),
        "--dynamo_backend",
        "no",
        "--mixed_precision",
        "no",  # TrainingArguments' bf16 decides the precision, as in a single-process run
        "-m",
        "shoptune",
        *argv,
    ]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def agree(decide: Callable[[], T]) -> T:
    """`decide()` on the main process only; every process returns its result or raises its error."""
    if world_size() == 1:
        return decide()
    import torch
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list

    state = PartialState(cpu=not torch.cuda.is_available())
    outcome: list[Any] = [None]
    failure: BaseException | None = None
    if state.is_main_process:
        try:
            outcome = [("ok", decide())]
        except ShoptuneError as exc:
            outcome = [("error", str(exc))]
        except BaseException as exc:  # still tell the others, so they do not wait for a run that never comes
            outcome, failure = [("error", f"the main process failed: {type(exc).__name__}: {exc}")], exc
    broadcast_object_list(outcome, from_process=0)
    kind, value = outcome[0]
    if failure is not None:
        leave()
        raise failure
    if kind == "error":
        # Every process raises it; the CLI prints it, then leaves with the others (`leave`), so that no process
        # ends (and has the launcher stop the rest) before each has said why.
        error = ShoptuneError(value)
        error.together = True  # type: ignore[attr-defined]
        raise error
    return value


def leave() -> None:
    """Close the process group together before a process ends early: a gloo group torn down at interpreter exit
    can abort the process ("terminate called without an active exception") and change its exit status."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def fsdp_on_cpu(accelerator: Any) -> bool:
    """Make an FSDP launch on CPUs shard, as on GPUs.

    accelerate sets FSDP only for GPU-like devices: on CPUs an FSDP config (`ACCELERATE_USE_FSDP`) silently runs
    DDP over gloo. torch's FSDP2 (`fully_shard`) runs on CPUs over gloo, so the state is set to FSDP with the
    plugin read from the launch's environment, and accelerate's own FSDP2 preparation then shards the model."""
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    state = accelerator.state
    wanted = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    if state.distributed_type != DistributedType.MULTI_CPU or not wanted:
        return False
    plugin = FullyShardedDataParallelPlugin()
    if plugin.fsdp_version != 2:
        raise ShoptuneError("FSDP on CPUs needs FSDP2: set fsdp_version: 2 in the accelerate config")
    state.distributed_type = DistributedType.FSDP  # AcceleratorState's attributes are shared by every instance
    state.fsdp_plugin = plugin
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    return True


def how_it_ran(accelerator: Any) -> dict[str, Any]:
    """What really wrapped the model, for the run's records."""
    from accelerate.utils import DistributedType

    kind = accelerator.state.distributed_type
    if kind == DistributedType.FSDP:
        name = "FSDP"
    elif kind == DistributedType.DEEPSPEED:
        name = "DEEPSPEED"
    elif kind == DistributedType.NO:
        name = "NONE"
    else:  # MULTI_GPU, MULTI_CPU, ...: DistributedDataParallel
        name = "DDP"
    return {"type": name, "world_size": accelerator.num_processes}
