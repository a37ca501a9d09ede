"""`shoptune data build`: determinism, the on-disk interface, cleaning, and errors."""

import json
from pathlib import Path

import datasets
import pytest

from shoptune.config import load_config
from shoptune.data.build import build_mixture
from shoptune.data.clean import Contamination, clean
from shoptune.data.spec import MixtureSpec
from shoptune.errors import ShoptuneError
from shoptune.schema import from_row, parse_example, write_jsonl

ROOT = Path(__file__).resolve().parents[1]


def small_spec(**overrides) -> MixtureSpec:
    settings = {
        "name": "small",
        "raw_dir": ROOT / "data" / "raw",
        "examples_per_subtask": 40,
        "validation_per_subtask": 5,
        **overrides,
    }
    return MixtureSpec.model_validate(settings)


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_same_spec_same_bytes_whatever_the_workers_and_the_datasets_interface(tmp_path):
    spec = small_spec(decontaminate=[ROOT / "data" / "shopbench" / "development.json"])
    info = build_mixture(spec, tmp_path / "a", workers=1)
    build_mixture(spec, tmp_path / "b", workers=2)  # subtasks built in two worker processes
    assert files(tmp_path / "a") == files(tmp_path / "b")

    mixture = datasets.load_from_disk(str(tmp_path / "a"))
    train = mixture["train"]
    assert len(train) == info["examples"]["train"] == sum(info["by_subtask"].values())
    for column in (
        "input_field",
        "output_field",
        "task_name",
        "task_type",
        "metric",
        "capability",
        "source",
        "language",
    ):
        assert column in train.column_names
    assert set(train["capability"]) == set(info["by_capability"]) and len(info["by_capability"]) == 4
    assert len(set(train["task_type"])) == 5
    assert [from_row(r).id for r in train] == train["id"]  # every row reads back as a valid record
    row = next(r for r in train if r["task_type"] == "ranking")
    assert isinstance(json.loads(row["output_field"]), list)
    assert set(mixture["validation"]["input_field"]).isdisjoint(train["input_field"])
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert "google-taxonomy/taxonomy-with-ids.en-US.txt" in manifest["inputs_sha256"]
    assert manifest["prompt_length"]["max"] >= manifest["prompt_length"]["p50"] > 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temporary folder is left behind"


def test_decontamination_removes_examples_that_overlap_an_eval_set(tmp_path):
    spec = small_spec(capabilities=["multilingual_ability"])
    build_mixture(spec, tmp_path / "clean")
    train = datasets.load_from_disk(str(tmp_path / "clean"))["train"]
    leaked = [from_row(row) for row in train.select(range(7))]
    write_jsonl(tmp_path / "eval.jsonl", (ex.to_json() for ex in leaked))
    info = build_mixture(
        small_spec(capabilities=["multilingual_ability"], decontaminate=[tmp_path / "eval.jsonl"]), tmp_path / "decon"
    )
    assert info["removed"]["contaminated"] >= 7
    kept = set(datasets.load_from_disk(str(tmp_path / "decon"))["train"]["input_field"])
    assert kept.isdisjoint(ex.input_field for ex in leaked)
    assert Contamination(leaked, 13)(leaked[0])


def test_duplicate_detection():
    base = {
        "output_field": 0,
        "task_name": "t",
        "task_type": "multiple-choice",
        "metric": "accuracy",
        "is_multiple_choice": True,
        "track": "x",
    }
    text = "Which of the following products is the cheapest among these five offers from online shops today?"
    rows = [text, text.upper(), text.replace("today", "now"), "An entirely different question about red shoes."]
    examples = [parse_example({**base, "input_field": t}) for t in rows]
    keep, removed = clean(examples, near=None, contamination=None, seed=0)
    assert keep == [True, False, True, True] and removed == {"exact_duplicate": 1}
    keep, removed = clean(examples, near=(0.7, 128), contamination=None, seed=0)
    assert keep == [True, False, False, True] and removed == {"exact_duplicate": 1, "near_duplicate": 1}
    keep, removed = clean(examples, near=None, contamination=Contamination(examples[3:], 13), seed=0)
    assert keep == [True, False, True, False] and removed["contaminated"] == 1


def test_spec_errors():
    with pytest.raises(ShoptuneError, match="unknown subtask 'nope'"):
        load_config(MixtureSpec, None, {"name": "x", "subtasks": ["nope"]})
    with pytest.raises(ShoptuneError, match="belong to capabilities not selected"):
        load_config(
            MixtureSpec, None, {"name": "x", "capabilities": ["multilingual_ability"], "subtasks": ["brand_ner"]}
        )
    with pytest.raises(ShoptuneError, match="setting 'examples_per_subtask'"):
        load_config(MixtureSpec, None, {"name": "x", "examples_per_subtask": 0})


def test_cli_builds_a_shipped_spec(tmp_path, run_cli):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(
        (ROOT / "configs" / "mixtures" / "tasks1.yaml")
        .read_text()
        .replace("examples_per_subtask: 1500", "examples_per_subtask: 20")
        .replace("../../data/", str(ROOT / "data") + "/")
    )
    code, out, err = run_cli("data", "build", spec, "--out", tmp_path / "mix")
    assert code == 0, err
    assert "category_parent" in out and "removed:" in err
    assert len(datasets.load_from_disk(str(tmp_path / "mix"))["train"]) == 80
    code, _, err = run_cli("data", "build", spec, "--out", spec)
    assert code == 2 and "exists and is not a directory" in err


def test_a_bad_extra_file_is_named_also_from_a_worker_process(tmp_path):
    bad = tmp_path / "generated.jsonl"
    bad.write_text('{"input_field": "q"}\n', encoding="utf-8")
    spec = small_spec(capabilities=["multilingual_ability"], extra_examples=[bad])
    with pytest.raises(ShoptuneError, match=r"generated.jsonl:1: field 'task_name': is missing"):
        build_mixture(spec, tmp_path / "mix", workers=2)
    assert not (tmp_path / "mix").exists()
