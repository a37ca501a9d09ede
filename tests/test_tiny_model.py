"""The embedded tiny model (shoptune-tiny-5m): loads like any Hugging Face model and runs the pipeline end to end."""

import json

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from shoptune.hub import tiny_model_path


def test_loads_with_auto_classes_and_is_small():
    path = tiny_model_path()
    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert model.config.model_type == "llama"
    assert sum(p.numel() for p in model.parameters()) < 10_000_000
    assert (path / "model.safetensors").stat().st_size < 40 * 1024 * 1024
    for text in ("Küchenmaschine mit Rührschüssel", "電気ケトル 1.7L"):
        ids = tokenizer(text)["input_ids"]
        assert tokenizer.decode(ids, skip_special_tokens=True) == text  # byte-level: any script round-trips
    assert (path / "README.md").read_text().startswith("# shoptune-tiny-5m: the tiny model inside the package")


@pytest.mark.slow
def test_eval_run_by_name_on_all_96_questions(run_cli, dev_set, tmp_path):
    """`--model shoptune-tiny-5m`: a model name works like a path, on all 96 questions."""
    code, out, err = run_cli("eval", "run", dev_set, "--model", "shoptune-tiny-5m", "--out", tmp_path, "--no-progress")
    assert code == 0, err
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert len(scores["tracks"]) == 4 and scores["missing"] == 0
    assert "answered 96 question(s)" in err and "overall" in out
    assert "model: shoptune-tiny-5m" in (tmp_path / "config.yaml").read_text()
