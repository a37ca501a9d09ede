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

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
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
    """This very command (argv without the program), once per GPU under accelerate launch. (On a machine without
    GPUs it runs the processes on CPUs over gloo: how the relaunch is tested.)"""
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


STATUS_DIR = "SHOPTUNE_STATUS_DIR"  # where each process of a launch leaves its exit status (rank-N.status)
STOP_GRACE = 20.0  # seconds the launcher has to stop its processes after a signal, before they are killed


def record_status(code: int) -> None:
    """Called by the CLI as a process of a launch ends: its exit status, for the process that launched it (the
    launcher's own status is 1 for any failure, and a user error is 2)."""
    folder = os.environ.get(STATUS_DIR)
    if folder and Path(folder).is_dir():
        (Path(folder) / f"rank-{os.environ.get('RANK', '0')}.status").write_text(str(code))


def relaunch(argv: Sequence[str], processes: int) -> int:
    """Run this command under accelerate launch on `processes` devices and end as its processes end: with their
    exit status (2 where they refused the user's input, not the launcher's 1), the launcher's failure report left out
    (each process has said why in one line). Ctrl-C and SIGTERM are passed on to the launcher, and whatever still
    runs STOP_GRACE seconds later is killed, so no process is left holding a GPU."""
    with tempfile.TemporaryDirectory(prefix="shoptune-launch-") as status:
        launcher = subprocess.Popen(
            relaunch_command(processes, argv, free_port()),
            env={**os.environ, STATUS_DIR: status},
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            start_new_session=True,  # its own process group: a signal reaches it only through here
        )
        copier = threading.Thread(target=_copy_without_launcher_report, args=(launcher.stderr,), daemon=True)
        copier.start()
        stopping: list[float] = []

        def pass_on(signum: int, frame: Any) -> None:
            stopping.append(time.monotonic())
            with contextlib.suppress(ProcessLookupError):
                os.killpg(launcher.pid, signum)

        previous = {sig: signal.signal(sig, pass_on) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            while launcher.poll() is None:
                if stopping and time.monotonic() - stopping[0] > STOP_GRACE:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(launcher.pid, signal.SIGKILL)
                time.sleep(0.1)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        copier.join(timeout=10)
        codes = [int(f.read_text() or 1) for f in Path(status).glob("rank-*.status")]
    if launcher.returncode == 0:
        return 0
    if stopping:
        return 130
    for code in (2, 130):  # the processes' own reason, where one gave it
        if code in codes:
            return code
    return launcher.returncode if launcher.returncode > 0 else 1


ELASTIC_LOG = re.compile(r"^[EWI]\d{4} .*torch/distributed/elastic/")  # torch's launcher, in glog's format


def _copy_without_launcher_report(stream: Any) -> None:
    """The launched processes' stderr, as it comes, but for the launcher's account of a failure (torch's elastic log
    line and its report framed in '=' lines): each process has already said why in its own words."""
    report = blank = False
    for line in stream:
        if report:
            report = not line.startswith("=" * 20)  # the report runs to its closing frame
            continue
        if line.startswith("=" * 20):
            report = True
            continue
        if ELASTIC_LOG.match(line) or (blank and not line.strip()):
            blank = True  # the empty line the log line is followed by
            continue
        blank = False
        sys.stderr.write(line)
        sys.stderr.flush()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def agree(decide: Callable[[], T], timeout: float | None = None) -> T:
    """`decide()` on the main process only; every process returns its result or raises its error. The first call
    sets up the process group, with `timeout` seconds for every collective (transformers' own setting comes later,
    when the group exists already, and would be dropped)."""
    if world_size() == 1:
        return decide()
    import datetime

    import torch
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list

    wait = {"timeout": datetime.timedelta(seconds=timeout)} if timeout is not None else {}
    state = PartialState(cpu=not torch.cuda.is_available(), **wait)
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
    return {"type": name, "world_size": accelerator.num_processes, **group_timeout()}


def group_timeout() -> dict[str, float]:
    """The timeout the process group's collectives run under (a distributed run only), for the run's records."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return {}
    try:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        backend = dist.distributed_c10d._get_default_group()._get_backend(device)
        return {"timeout_seconds": backend.options._timeout.total_seconds()}
    except (AttributeError, RuntimeError):  # a backend that does not say
        return {}
