"""Small writers for test inputs."""

from __future__ import annotations

import json
from pathlib import Path


def write_lines(path: Path, rows: list) -> Path:
    """JSON Lines from objects (or raw strings, for malformed lines)."""
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path
