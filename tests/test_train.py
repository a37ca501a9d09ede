"""`shoptune train`: LoRA on the tiny model, rank arithmetic, resume, distributed, merge."""

import json
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from shoptune.hub import tiny_model_path
from shoptune.train.config import TrainConfig
from shoptune.train.trainer import count_parameters, last_checkpoint, load_model, train

ROOT = Path(__file__).resolve().parents[1]


def config(examples_file, model, **overrides):
    settings = {
        "model": str(model),
        "data": examples_file / "train.jsonl",
        "eval_data": examples_file / "held.jsonl",
        "batch_size": 8,
        "learning_rate": 2e-3,
        "max_length": 256,
        "report_to": [],
        "eval_steps": 1000,
        "save_steps": 1000,
        "logging_steps": 5,
        **overrides,
    }
    return TrainConfig(**settings)


def lora_formula(model, rank):
    """r x (in + out) for every linear layer LoRA targets ("all-linear": all but the output head)."""
    return sum(
        rank * (m.in_features + m.out_features)
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and "lm_head" not in name
    )


@pytest.mark.parametrize("rank", [4, 8, 16, 32, 64])
def test_trainable_parameters_match_the_lora_formula(rank, examples_file):
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_path())
    model, _ = load_model(config(examples_file, tiny_model_path(), lora={"rank": rank}))
    assert count_parameters(model)["trainable"] == lora_formula(base, rank)


@pytest.mark.slow
def test_lora_on_the_tiny_model_lowers_held_out_loss_evaluating_once_at_the_end(examples_file, tmp_path):
    summary = train(config(examples_file, tiny_model_path(), max_steps=24, eval_steps=12), tmp_path, progress=False)
    assert summary["final_eval_loss"] < summary["initial_eval_loss"] - 0.1
    # Before training (initial_eval_loss), mid-way and once at the end, not twice.
    assert [e["step"] for e in summary["log_history"] if "eval_loss" in e] == [0, 12, 24]
    assert summary["initial_eval_loss"] == summary["log_history"][0]["eval_loss"]
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    assert "rank: 16" in (tmp_path / "config.yaml").read_text()
    assert summary["parameters"]["trainable"] < summary["parameters"]["total"] / 5


def test_shopbench_validation_during_training_is_the_score_eval_score_gives_and_chooses_the_kept_adapter(
    examples_file, tiny_model, tmp_path, run_cli
):
    from shoptune.evaluate.during_training import QUESTIONS, validator_for
    from shoptune.train.trainer import VALIDATION_ANSWERS as FOLDER

    cfg = config(
        examples_file, tiny_model, max_steps=6, eval_steps=3, save_steps=3, shopbench_eval_examples=8, keep="shopbench"
    )
    summary = train(cfg, tmp_path / "run", progress=False, validator=validator_for(cfg))
    curve = summary["shopbench_validation"]
    assert [point["step"] for point in curve] == [0, 3, 6]  # before training, mid-way, at the end
    questions = tmp_path / "run" / FOLDER / QUESTIONS
    assert len(questions.read_text().splitlines()) == 8
    assert len({json.loads(line)["task_name"] for line in questions.read_text().splitlines()}) == 4  # stratified
    for point in curve:
        answers = tmp_path / "run" / FOLDER / f"step-{point['step']}" / "predictions.jsonl"
        code, _, err = run_cli("eval", "score", questions, answers, "--out", tmp_path / f"s{point['step']}")
        assert code == 0, err
        scored = json.loads((tmp_path / f"s{point['step']}" / "scores.json").read_text())
        assert point["overall"] == pytest.approx(scored["overall"], abs=1e-12)
    best = max((p for p in curve if p["step"] > 0), key=lambda p: (p["overall"], -p["step"]))
    assert summary["kept_checkpoint"].endswith(f"checkpoint-{best['step']}")
    code, _, err = run_cli("train", "--data", examples_file / "train.jsonl", "--keep", "shopbench", "--out", tmp_path)
    assert code == 2 and "shopbench_eval_examples above 0" in err
    code, _, err = run_cli("train", "--data", examples_file / "train.jsonl", "--keep", "loss", "--out", tmp_path / "n")
    assert code == 2 and "no validation examples to choose the checkpoint on" in err and not (tmp_path / "n").exists()


def test_answer_only_loss_and_packing(examples_file, tiny_model):
    from transformers import AutoTokenizer, DataCollatorWithFlattening

    from shoptune.schema import read_examples
    from shoptune.tasks.render import answer_text
    from shoptune.train.trainer import encode

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    cfg = config(examples_file, tiny_model)
    exs = read_examples(examples_file / "train.jsonl")[:3]
    encoded = [encode(ex, tokenizer, cfg) for ex in exs]
    for ex, enc in zip(exs, encoded, strict=True):
        answer = [t for t in enc["labels"] if t != -100]
        assert tokenizer.decode(answer, skip_special_tokens=True) == answer_text(ex.output_field, ex.task_type)
        assert answer[-1] == tokenizer.eos_token_id
    batch = DataCollatorWithFlattening(return_position_ids=True)(encoded)
    assert batch["input_ids"].shape[0] == 1  # one packed row, no padding
    starts = (batch["position_ids"][0] == 0).nonzero().flatten().tolist()
    assert starts == [0, len(encoded[0]["input_ids"]), len(encoded[0]["input_ids"]) + len(encoded[1]["input_ids"])]


def test_the_loss_on_answer_positions_only_equals_the_models_own_loss(examples_file, tiny_model):
    """Logits are computed only where an answer token is predicted, for packed and for padded batches."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, DataCollatorWithFlattening

    from shoptune.schema import read_examples
    from shoptune.train.trainer import answer_only_loss, encode

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    encoded = [
        encode(ex, tokenizer, config(examples_file, tiny_model))
        for ex in read_examples(examples_file / "train.jsonl")[:5]
    ]
    for collate in (
        DataCollatorWithFlattening(return_position_ids=True),
        DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100),
    ):
        batch = {
            k: v for k, v in collate(encoded).items() if k in ("input_ids", "attention_mask", "position_ids", "labels")
        }
        expected = model(**batch).loss
        torch.testing.assert_close(answer_only_loss(model, dict(batch)), expected)
        answer_tokens = (batch["labels"][:, 1:] != -100).sum()
        torch.testing.assert_close(
            answer_only_loss(model, dict(batch), num_items_in_batch=2 * answer_tokens), expected / 2
        )
        # Label smoothing eps: (1 - eps) x the cross-entropy + eps x the mean over the vocabulary of -log p.
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits[:, :-1].float()
        targets = batch["labels"][:, 1:]
        log_p = torch.log_softmax(logits[targets != -100], dim=-1)
        uniform = -log_p.mean(dim=-1).mean()
        torch.testing.assert_close(
            answer_only_loss(model, dict(batch), label_smoothing=0.1), 0.9 * expected + 0.1 * uniform
        )


def test_a_capped_validation_set_covers_every_subtask(examples_file):
    from shoptune.schema import read_examples
    from shoptune.train.trainer import stratified

    held = read_examples(examples_file / "held.jsonl")  # written subtask by subtask
    picked = stratified(held, 8)
    assert len(picked) == 8 and Counter(ex.task_name for ex in picked) == dict.fromkeys(
        ("category_parent", "same_product", "query_offer_ranking", "category_translation_en_de"), 2
    )
    everything = stratified(held, 1000)
    assert sorted(ex.input_field for ex in everything) == sorted(ex.input_field for ex in held)


def adapter_tensors(run: Path) -> dict:
    return load_file(str(run / "adapter" / "adapter_model.safetensors"))


@pytest.mark.slow
def test_kill_and_resume_reaches_the_uninterrupted_adapter(examples_file, tiny_model, tmp_path):
    cfg = tmp_path / "train.yaml"
    cfg.write_text(
        json.dumps(
            {
                "model": str(tiny_model),
                "data": str(examples_file / "train.jsonl"),
                "batch_size": 4,
                "learning_rate": 2e-3,
                "max_length": 256,
                "report_to": [],
                "max_steps": 24,
                "save_steps": 4,
                "logging_steps": 4,
            }
        )
    )
    cmd = [sys.executable, "-m", "shoptune", "train", str(cfg), "--no-progress", "--out"]
    subprocess.run([*cmd, str(tmp_path / "whole")], check=True, capture_output=True)

    proc = subprocess.Popen([*cmd, str(tmp_path / "killed")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = tmp_path / "killed" / "checkpoints" / "checkpoint-12"
    deadline = time.monotonic() + 300
    while not (checkpoint / "trainer_state.json").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / "adapter").exists(), "killed before the end"
    subprocess.run([*cmd, str(tmp_path / "killed")], check=True, capture_output=True)

    whole, resumed = adapter_tensors(tmp_path / "whole"), adapter_tensors(tmp_path / "killed")
    assert whole.keys() == resumed.keys()
    for key in whole:
        torch.testing.assert_close(resumed[key], whole[key], rtol=1e-4, atol=1e-5)
    from peft import get_peft_model_state_dict

    initial = get_peft_model_state_dict(load_model(TrainConfig(model=str(tiny_model), data=examples_file / "x"))[0])
    assert initial.keys() == whole.keys()
    assert not all(torch.equal(whole[k], initial[k]) for k in whole), "the adapter must have trained"


def test_a_checkpoint_cut_short_by_a_kill_is_passed_over_on_resume(examples_file, tiny_model, tmp_path):
    settings = {"max_steps": 8, "save_steps": 4, "batch_size": 4, "save_total_limit": 5}
    whole = train(config(examples_file, tiny_model, **settings), tmp_path / "whole", progress=False)
    run = tmp_path / "cut"
    shutil.copytree(tmp_path / "whole" / "checkpoints", run / "checkpoints")
    # A kill while checkpoint-8 was being written: its weights are there, its trainer state (written last) is not.
    (run / "checkpoints" / "checkpoint-8" / "trainer_state.json").write_text('{"global_st')
    assert last_checkpoint(run) == str(run / "checkpoints" / "checkpoint-4")
    resumed = train(config(examples_file, tiny_model, **settings), run, progress=False)
    assert resumed["steps"] == whole["steps"] == 8
    # The summary is of the whole run, not of the steps since the resume.
    assert resumed["train_loss"] == pytest.approx(whole["train_loss"], rel=1e-4)
    assert resumed["initial_eval_loss"] == pytest.approx(whole["initial_eval_loss"], rel=1e-6)
    made = json.loads((run / "run.json").read_text())["provenance"]
    assert made == resumed["provenance"] and made["wall_seconds"] > 0 and made["versions"]["peft"]
    assert made["model_identity"]["weights"]  # the tiny model's folder, hashed
    one, two = adapter_tensors(tmp_path / "whole"), adapter_tensors(run)
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-5)


def test_merge_gives_the_same_outputs(examples_file, tiny_model, tmp_path, run_cli):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    train(config(examples_file, tiny_model, max_steps=4), tmp_path / "run", progress=False)
    code, _, err = run_cli("merge", tmp_path / "run" / "adapter", "--out", tmp_path / "merged", "--model", tiny_model)
    assert code == 0, err
    ids = torch.tensor([[5, 17, 42, 99, 3]])
    with torch.no_grad():
        peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), tmp_path / "run" / "adapter")
        merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
        torch.testing.assert_close(merged(ids).logits, peft(ids).logits, rtol=1e-4, atol=1e-4)


def test_merge_alpha_interpolates_between_the_base_and_the_tuned_weights(examples_file, tiny_model, tmp_path, run_cli):
    from transformers import AutoModelForCausalLM

    train(
        config(examples_file, tiny_model, max_steps=4, lora={"rank": 4, "alpha": 32}), tmp_path / "run", progress=False
    )
    weights = {}
    for alpha in ("0", "0.5", "1"):
        code, _, err = run_cli(
            "merge", tmp_path / "run" / "adapter", "--out", tmp_path / alpha, "--model", tiny_model, "--alpha", alpha
        )
        assert code == 0, err
        weights[alpha] = AutoModelForCausalLM.from_pretrained(tmp_path / alpha).state_dict()
    base = AutoModelForCausalLM.from_pretrained(tiny_model).state_dict()
    changed = [k for k in base if not torch.equal(base[k], weights["1"][k])]
    assert changed  # LoRA moved the weights it targets
    for key in base:
        torch.testing.assert_close(weights["0"][key], base[key], rtol=0, atol=1e-6)
        torch.testing.assert_close(weights["0.5"][key], (base[key] + weights["1"][key]) / 2, rtol=1e-5, atol=1e-6)
    ids = torch.tensor([[5, 17, 42, 99, 3]])
    with torch.no_grad():
        plain = AutoModelForCausalLM.from_pretrained(tiny_model)(ids).logits
        torch.testing.assert_close(AutoModelForCausalLM.from_pretrained(tmp_path / "0")(ids).logits, plain)


def test_config_errors(run_cli, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("lora:\n  rnak: 8\ndata: x.jsonl\n")
    code, _, err = run_cli("train", cfg, "--out", tmp_path / "o")
    assert code == 2 and "setting 'lora.rnak': unknown setting" in err
    cfg.write_text("data: x.jsonl\nmixture: y\n")
    code, _, err = run_cli("train", cfg, "--out", tmp_path / "o")
    assert code == 2 and "exactly one of mixture" in err


def test_packed_examples_do_not_attend_to_each_other(tiny_model):
    """The second example's logits in a packed row equal its logits when run alone."""
    from transformers import AutoModelForCausalLM, DataCollatorWithFlattening

    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    first, second = [5, 17, 42, 99, 3, 8], [11, 12, 13, 14]
    batch = DataCollatorWithFlattening(return_position_ids=True)(
        [{"input_ids": first, "labels": first}, {"input_ids": second, "labels": second}]
    )
    with torch.no_grad():
        # As in training: no KV cache, so transformers reads the restarting position ids as packed sequences.
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
        alone = model(input_ids=torch.tensor([second]), use_cache=False).logits[0]
    packed = packed[0, len(first) :]
    torch.testing.assert_close(packed, alone, rtol=1e-4, atol=1e-5)


def test_full_fine_tuning_trains_every_weight(examples_file, tiny_model, tmp_path):
    summary = train(config(examples_file, tiny_model, method="full", max_steps=2), tmp_path, progress=False)
    assert summary["parameters"]["trainable"] == summary["parameters"]["total"]
    assert (tmp_path / "adapter" / "model.safetensors").is_file()


@pytest.mark.slow
@pytest.mark.slow
def test_demo_config_trains_the_default_model_on_a_shipped_mixture(run_cli, tmp_path):
    code, _, err = run_cli(
        "train",
        ROOT / "configs" / "train" / "demo.yaml",
        "--out",
        tmp_path,
        "--max-steps",
        "2",
        "--max-eval-examples",
        "8",  # the two validation passes on 64 would be most of this test's time
        "--no-progress",
    )
    assert code == 0, err
    summary = json.loads((tmp_path / "train_summary.json").read_text())
    assert summary["steps"] == 2 and summary["train_examples"] >= 4 * 1000
    assert (tmp_path / "mixture" / "manifest.json").is_file()
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()


def test_activation_checkpointing_full_or_selective_trains_the_same_adapter(examples_file, tiny_model, tmp_path):
    """Recomputing activations (all of them, or all but attention's output) changes memory and time, not weights:
    dropout masks are drawn again from the same random state."""
    adapters = {}
    for name, settings in {
        "none": {},
        "full": {"gradient_checkpointing": True},
        "selective": {"gradient_checkpointing": True, "selective_checkpointing": True},
    }.items():
        cfg = config(
            examples_file, tiny_model, max_steps=3, eval_data=None, lora={"rank": 4, "dropout": 0.1}, **settings
        )
        train(cfg, tmp_path / name, progress=False)
        adapters[name] = load_file(tmp_path / name / "adapter" / "adapter_model.safetensors")
    for name in ("full", "selective"):
        for key, value in adapters["none"].items():
            torch.testing.assert_close(adapters[name][key], value, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("selective", [False, True])
def test_checkpointing_is_switched_on_for_every_decoder_layer(examples_file, tiny_model, selective):
    from shoptune.train.trainer import checkpoint_activations

    model, _ = load_model(config(examples_file, tiny_model))
    checkpoint_activations(model, selective=selective)
    layers = model.get_base_model().model.layers
    assert all(layer.gradient_checkpointing for layer in layers)
    assert ("context_fn" in layers[0]._gradient_checkpointing_func.keywords) is selective
