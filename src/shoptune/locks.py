"""One writer per output folder, and one converter per model file.

Two runs writing one folder would interleave their files into a result that neither of them made, so
every command that writes a folder (or file) holds an exclusive lock on it for as long as it writes. The
lock is an advisory `flock` on a hidden file beside the target (beside, not inside, because some outputs
are assembled under a temporary name and renamed into place). The kernel drops the lock when its holder
exits, however it exits, so a killed run never blocks the next one, which simply resumes.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from shoptune.errors import ShoptuneError


@contextlib.contextmanager
def writing(target: Path) -> Iterator[None]:
    """Hold `target` for this process, or refuse at once, naming the run that holds it."""
    try:
        target.absolute().parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a parent that is a file, a read-only or missing place: the user's path
        raise ShoptuneError(f"{target}: cannot write there ({exc.strerror})") from None
    with _held(lock_path(target), wait=False, target=target) as handle:
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(_me()) + "\n")
        handle.flush()
        yield


@contextlib.contextmanager
def waiting(path: Path) -> Iterator[None]:
    """Exclusive lock on `path`, waiting for its holder: for work that one process does and others reuse."""
    with _held(path, wait=True, target=path):
        yield


def lock_path(target: Path) -> Path:
    target = target.resolve()  # a symlink and the folder it names are one output, so they take one lock
    return target.parent / f".{target.name}.shoptune-lock"


@contextlib.contextmanager
def _held(path: Path, *, wait: bool, target: Path) -> Iterator[TextIO]:
    """The lock file is removed by its holder on release, so none is left behind; a process that opened it just
    before then holds a removed file, notices (another inode is, or none, at the path now) and tries again."""
    while True:
        try:
            handle = path.open("a+", encoding="utf-8")
        except OSError as exc:
            raise ShoptuneError(f"{target}: cannot write there ({exc.strerror})") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = _holder(handle.read())
            handle.close()
            raise ShoptuneError(
                f"{target} is being written by another run ({holder}); wait for it to finish or choose another --out"
            ) from None
        if _same_file(handle, path):
            break
        handle.close()
    try:
        yield handle
    finally:
        path.unlink(missing_ok=True)
        handle.close()  # closing releases the lock


def _same_file(handle: TextIO, path: Path) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino
    except FileNotFoundError:
        return False


def _me() -> dict[str, object]:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "",
        "since": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def _holder(text: str) -> str:
    try:
        who = json.loads(text)
        return f"pid {who['pid']} on {who['host']} since {who['since']}: {who['command']}"
    except (ValueError, KeyError, TypeError):
        return "a process that has not yet said who it is"
