"""Licence-aware mixtures: every row carries its source's licence, the manifest names them, and a spec's
allow-list keeps out everything else."""

import json
from pathlib import Path

import datasets
import pytest

from shoptune.config import load_config
from shoptune.data.build import build_mixture
from shoptune.data.spec import MixtureSpec
from shoptune.errors import ShoptuneError
from shoptune.schema import write_jsonl
from shoptune.sources.registry import LICENCES, SOURCE_BY_ID
from shoptune.tasks.catalog import all_subtasks

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"examples_per_subtask": 12, "validation_per_subtask": 2, "near_duplicates": None, "decontaminate": []}


def rows(folder: Path) -> list[dict]:
    mixture = datasets.load_from_disk(str(folder))
    return [row for split in mixture.values() for row in split]


def test_a_commercial_mixture_holds_no_row_of_non_commercial_data(tmp_path):
    spec = load_config(MixtureSpec, ROOT / "configs" / "mixtures" / "commercial.yaml", SMALL)
    info = build_mixture(spec, tmp_path / "commercial")
    built = rows(tmp_path / "commercial")
    allowed = set(spec.licences)
    assert {id for id, licence in LICENCES.items() if licence.commercial} == allowed
    assert built and all(set(row["licence"].split("+")) <= allowed for row in built)
    non_commercial = {name for name, t in all_subtasks().items() if not set(t.licences) <= allowed}
    assert not non_commercial & {row["task_name"] for row in built}
    assert not any(SOURCE_BY_ID[s].licence not in allowed for row in built for s in row["source"].split("+"))
    assert set(info["by_licence"]) == {row["licence"] for row in built}
    assert set(info["licences"]) <= allowed and all(v["commercial_use"] for v in info["licences"].values())


def test_the_manifest_names_every_licence_present(tmp_path):
    spec = load_config(MixtureSpec, ROOT / "configs" / "mixtures" / "all.yaml", SMALL)
    info = build_mixture(spec, tmp_path / "all")
    present = {part for row in rows(tmp_path / "all") for part in row["licence"].split("+")}
    assert present == set(info["licences"]) and {"CC-BY-NC-4.0", "research-only", "MIT"} <= present
    assert sum(info["by_licence"].values()) == info["examples"]["train"]
    assert not info["licences"]["CC-BY-NC-4.0"]["commercial_use"]


def test_extra_examples_join_only_with_an_allowed_licence(tmp_path):
    extra = [
        {**example.to_json(), "input_field": f"{example.input_field} (extra {i})"}
        for i, example in enumerate(all_subtasks()["query_product_class"].build(_corpus(), 4, 0))
    ]
    extra[0].pop("licence")  # a generated example that says nothing of its licence
    extra[1]["licence"] = "CC-BY-NC-4.0"
    write_jsonl(tmp_path / "extra.jsonl", extra)
    base = {**SMALL, "subtasks": ["query_product_class"], "capabilities": ["user_behavior_alignment"]}
    base["extra_examples"] = [tmp_path / "extra.jsonl"]
    spec = load_config(MixtureSpec, ROOT / "configs" / "mixtures" / "all.yaml", {**base, "licences": ["MIT"]})
    build_mixture(spec, tmp_path / "mit")
    kept = {
        row["input_field"].rsplit("(extra ", 1)[1] for row in rows(tmp_path / "mit") if "(extra" in row["input_field"]
    }
    assert kept == {"2)", "3)"}  # by their marks: the options of multiple choice are reordered in a mixture
    spec = load_config(MixtureSpec, ROOT / "configs" / "mixtures" / "all.yaml", base)
    build_mixture(spec, tmp_path / "any")
    assert sum("(extra" in row["input_field"] for row in rows(tmp_path / "any")) == 4


def test_an_unknown_licence_is_one_clear_error():
    with pytest.raises(ShoptuneError, match=r"unknown licence\(s\) \['CC0'\]"):
        load_config(MixtureSpec, None, {"name": "x", "licences": ["CC0"]})


def test_tasks_list_json_names_sources_and_licences(run_cli):
    code, out, err = run_cli("tasks", "list", "--json", "--raw-dir", ROOT / "data" / "raw")
    assert code == 0, err
    listed = json.loads(out)
    assert len(listed) == len(all_subtasks()) >= 34
    for row in listed:
        assert {"name", "capability", "task_type", "metric", "languages", "sources", "licences"} <= set(row)
        assert row["licences"] == sorted({SOURCE_BY_ID[s].licence for s in row["sources"]})
    assert sum(row["has_data"] for row in listed) >= 30


def _corpus():
    from shoptune.sources.registry import load_raw

    return load_raw(ROOT / "data" / "raw")
