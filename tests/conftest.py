from __future__ import annotations

import sys
from pathlib import Path

import pytest

from shoptune.schema import write_jsonl
from shoptune.sources.registry import load_raw
from shoptune.tasks.catalog import all_subtasks
from tests.helpers.tiny_model import DEV_SET, build_tiny_model

ROOT = Path(__file__).resolve().parents[1]


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


@pytest.fixture(scope="session")
def examples_file(tmp_path_factory):
    """A small real multi-task set: 4 subtasks (4 capabilities) from the shipped raw data."""
    corpus = load_raw(ROOT / "data" / "raw")
    tasks = all_subtasks()
    folder = tmp_path_factory.mktemp("data")
    for split, seed, n in (("train", 0, 48), ("held", 1, 8)):
        rows = [
            ex.to_json()
            for name in ("category_parent", "same_product", "query_offer_ranking", "category_translation_en_de")
            for ex in tasks[name].build(corpus, n, seed)
        ]
        write_jsonl(folder / f"{split}.jsonl", rows)
    return folder
