"""SmolLM2-135M-Instruct, the default model, end to end: evaluate, train, evaluate the adapter (slow)."""

import json
from pathlib import Path

import pytest

from shoptune.schema import read_examples, write_jsonl

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_default_model_evaluates_trains_and_improves_its_answer_format(run_cli, tmp_path):
    """With no --model, eval run and train use SmolLM2; a few LoRA steps on retrieval teach the answer shape."""
    heldout = read_examples(ROOT / "data" / "heldout" / "heldout.jsonl")
    questions = [ex for ex in heldout if ex.task_name == "subcategory_retrieval"][:8]
    write_jsonl(tmp_path / "q.jsonl", (ex.to_json() for ex in questions))

    code, _, err = run_cli("eval", "run", tmp_path / "q.jsonl", "--out", tmp_path / "base", "--no-progress")
    assert code == 0, err
    assert "smollm2-135m-instruct" in (tmp_path / "base" / "config.yaml").read_text()

    spec = tmp_path / "mix.yaml"
    spec.write_text(
        f"name: retrieval\nraw_dir: {ROOT / 'data' / 'raw'}\nsubtasks: [subcategory_retrieval]\n"
        "capabilities: [shopping_concept_understanding]\nexamples_per_subtask: 48\nvalidation_per_subtask: 4\n"
    )
    cfg = tmp_path / "train.yaml"
    cfg.write_text(
        f"mixture: {spec}\nmax_steps: 12\nbatch_size: 4\nlearning_rate: 0.002\nmax_length: 512\n"
        "save_steps: 100\neval_steps: 100\nmax_eval_examples: 4\nreport_to: []\n"
    )
    code, _, err = run_cli("train", cfg, "--out", tmp_path / "run", "--no-progress")
    assert code == 0, err
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["final_eval_loss"] < summary["initial_eval_loss"]

    adapter = tmp_path / "run" / "adapter"
    code, _, err = run_cli(
        "eval", "run", tmp_path / "q.jsonl", "--adapter", adapter, "--out", tmp_path / "tuned", "--no-progress"
    )
    assert code == 0, err
    tuned = [
        json.loads(line)["response"] for line in (tmp_path / "tuned" / "predictions.jsonl").read_text().splitlines()
    ]
    three_numbers = sum(len([p for p in r.split(",") if p.strip().isdigit()]) == 3 for r in tuned)
    assert three_numbers >= 6, tuned
