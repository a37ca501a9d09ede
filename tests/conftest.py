from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.helpers.tiny_model import DEV_SET, build_tiny_model


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture
def dev_set() -> Path:
    return DEV_SET


@pytest.fixture
def run_cli(monkeypatch, capsys):
    """Run `shoptune ARGS` in-process; returns (exit code, stdout, stderr)."""
    from shoptune.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["shoptune", *map(str, args)])
        code = 0
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        out, err = capsys.readouterr()
        return code, out, err

    return run
