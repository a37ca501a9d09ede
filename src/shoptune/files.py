"""Files written so that nothing is ever half there: a temporary name beside the target, then a rename; and files
read so that a bad byte or a damaged record is one clear error.

Every layer writes through these, so an interrupted run leaves the old file or the new one, never a torn one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from shoptune.errors import ShoptuneError, located


def read_utf8(path: Path | str) -> str:
    """A text file's content (without the byte-order mark some editors begin UTF-8 with); bytes that are not UTF-8
    are one error naming the file and line."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise located(path, line, None, f"not UTF-8 text ({exc.reason}); save it as UTF-8") from None


def atomic_write_text(path: Path | str, text: str) -> None:
    """Write to a temporary file beside the target, then rename: readers see old or new, never half."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:  # a parent that is a file, a read-only or missing place: the user's path, not a bug
        raise ShoptuneError(f"{path}: cannot write there ({exc.strerror})") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path | str, value: Any) -> None:
    """A JSON record, indented, written atomically (values JSON cannot hold are written as text)."""
    atomic_write_text(path, json.dumps(value, indent=2, default=str) + "\n")


def read_state(path: Path | str) -> dict[str, Any]:
    """A JSON record a run left for later runs; a damaged one (a disk fault, an edit) is one clear error."""
    path = Path(path)
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ShoptuneError(f"{path}: damaged run record ({exc}); delete it (or its folder) to start over") from None
    if not isinstance(value, dict):
        raise ShoptuneError(f"{path}: damaged run record (not a JSON object); delete it (or its folder) to start over")
    return value


def remove_temporaries(out: Path) -> None:
    """The temporary folders beside `out` that a killed `folder_in_place` left (the caller holds `out`'s lock)."""
    for stale in out.parent.glob(f".{out.name}.*"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)


@contextlib.contextmanager
def folder_in_place(out: Path) -> Iterator[Path]:
    """A temporary folder beside `out`, renamed to `out` (replacing what is there) once the block completes, and
    removed if it fails: readers see the old folder or the new, never half of one. Temporaries that a killed run
    left are removed first, so the caller must hold `out` (a lock) while it writes."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        remove_temporaries(out)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    except OSError as exc:
        raise ShoptuneError(f"{out}: cannot write there ({exc.strerror})") from None
    try:
        yield tmp
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def sha256_of(path: Path) -> str:
    """The content's identity: what a run record names an input file by, whatever its path."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
