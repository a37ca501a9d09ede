"""`shoptune` as a user runs it, in a process of its own: to completion, or killed with -9 at a chosen point."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path


def shoptune(*args: object, cwd: Path | None = None, timeout: float = 600, env: dict | None = None):
    """Run `shoptune ARGS` to its end (bounded by `timeout`); the CompletedProcess, text captured."""
    return subprocess.run(
        [sys.executable, "-m", "shoptune", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**os.environ, **(env or {})},
    )


def killed_when(
    args: Sequence[object],
    ready: Callable[[], bool],
    *,
    cwd: Path | None = None,
    timeout: float = 300,
    env: dict | None = None,
) -> None:
    """Start `shoptune ARGS` and kill it with SIGKILL the moment `ready()` holds; fails if it ends first or the point
    never comes within `timeout` seconds (so a test never waits forever, nor passes without a kill)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "shoptune", *map(str, args)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=cwd,
        env={**os.environ, **(env or {})},
    )
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            assert proc.poll() is None, "the run ended before the point it was to be killed at"
            assert time.monotonic() < deadline, "the run never reached the point it was to be killed at"
            time.sleep(0.01)
    finally:
        proc.kill()
        proc.wait(timeout=60)
