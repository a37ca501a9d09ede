"""Capability adapters made into one (`shoptune combine`), an ensemble of them, and wise-ft at evaluation."""

import json

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM

from shoptune.evaluate.backends import HFBackend
from shoptune.evaluate.config import EvalConfig

IDS = torch.tensor([[5, 17, 42, 99, 3, 8]])
MC = "Which is a phone?\n0. apple\n1. iPhone 12\n2. sofa\n3. socks\nAnswer: "


def random_adapter(model_path, out, seed, rank=4, **extra):
    """A LoRA whose B is not zero, so the adapter changes the model (no training needed)."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(model_path)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules="all-linear", init_lora_weights=False, **extra)
    get_peft_model(model, config).save_pretrained(out)
    return out


def logits(model_path, adapter=None):
    model = AutoModelForCausalLM.from_pretrained(model_path)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, adapter)
    with torch.no_grad():
        return model(IDS).logits


@pytest.fixture(scope="module")
def adapters(tiny_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("adapters")
    return [random_adapter(tiny_model, folder / f"a{i}", seed=i) for i in range(2)]


def test_two_identical_adapters_combined_linearly_give_the_same_logits(tiny_model, adapters, tmp_path, run_cli):
    code, _, err = run_cli("combine", adapters[0], adapters[0], "--out", tmp_path / "c", "--model", tiny_model)
    assert code == 0, err
    torch.testing.assert_close(
        logits(tiny_model, tmp_path / "c"), logits(tiny_model, adapters[0]), rtol=1e-4, atol=1e-5
    )
    record = json.loads((tmp_path / "c" / "combined.json").read_text())
    assert record["method"] == "linear" and record["weights"] == [0.5, 0.5]


def test_linear_is_the_weighted_sum_of_the_updates(tiny_model, adapters, tmp_path, run_cli):
    code, _, err = run_cli(
        "combine", *adapters, "--out", tmp_path / "c", "--model", tiny_model, "--weight", "0.25", "--weight", "0.75"
    )
    assert code == 0, err

    def merged(adapter):
        model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), adapter)
        return model.merge_and_unload().state_dict()

    base = AutoModelForCausalLM.from_pretrained(tiny_model).state_dict()
    one, two, combined = merged(adapters[0]), merged(adapters[1]), merged(tmp_path / "c")
    moved = [k for k in base if not torch.equal(one[k], base[k])]
    assert moved
    for key in moved:
        expected = base[key] + 0.25 * (one[key] - base[key]) + 0.75 * (two[key] - base[key])
        torch.testing.assert_close(combined[key], expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method", ["ties", "dare_ties", "dare_linear"])
def test_pruning_methods_give_an_adapter_between_the_parts(method, tiny_model, adapters, tmp_path, run_cli):
    out = tmp_path / method
    code, _, err = run_cli("combine", *adapters, "--out", out, "--model", tiny_model, "--method", method)
    assert code == 0, err
    combined = logits(tiny_model, out)
    assert torch.isfinite(combined).all()
    assert not torch.allclose(combined, logits(tiny_model)) and not torch.allclose(
        combined, logits(tiny_model, adapters[0])
    )
    assert json.loads((out / "combined.json").read_text())["density"] == 0.5


def test_combine_refuses_what_it_cannot_do(tiny_model, adapters, tmp_path, run_cli):
    code, _, err = run_cli("combine", adapters[0], "--out", tmp_path / "c", "--model", tiny_model)
    assert code == 2 and "at least two adapters" in err
    code, _, err = run_cli("combine", *adapters, "--out", tmp_path / "c", "--model", tiny_model, "--method", "svd")
    assert code == 2 and "unknown combination method 'svd'" in err
    code, _, err = run_cli("combine", *adapters, "--out", tmp_path / "c", "--model", tiny_model, "--weight", "1")
    assert code == 2 and "1 weight(s) for 2 adapter(s)" in err
    code, _, err = run_cli(
        "combine", *adapters, "--out", tmp_path / "c", "--model", tiny_model, "--method", "ties", "--density", "0"
    )
    assert code == 2 and "--density 0" in err
    other = random_adapter(tiny_model, tmp_path / "r8", seed=3, rank=8)
    code, _, err = run_cli(
        "combine", adapters[0], other, "--out", tmp_path / "c", "--model", tiny_model, "--method", "ties"
    )
    assert code == 2 and "cannot combine these adapters with ties" in err
    dora = random_adapter(tiny_model, tmp_path / "dora", seed=4, use_dora=True)
    code, _, err = run_cli("combine", dora, adapters[0], "--out", tmp_path / "c", "--model", tiny_model)
    assert code == 2 and "DoRA" in err
    assert not (tmp_path / "c").exists()


def test_an_ensemble_of_identical_adapters_answers_like_one(tiny_model, adapters):
    one = HFBackend(str(tiny_model), adapter=str(adapters[0]), chat_template=False)
    two = HFBackend(str(tiny_model), ensemble=[str(adapters[0])] * 2, chat_template=False)
    for a, b in zip(one.option_scores([MC]), two.option_scores([MC]), strict=True):
        assert a.keys() == b.keys() and all(abs(a[k] - b[k]) < 1e-4 for k in a)
    assert one.generate([MC], 8) == two.generate([MC], 8)


def test_an_ensemble_averages_its_parts_option_scores(tiny_model, adapters):
    parts = [HFBackend(str(tiny_model), adapter=str(a), chat_template=False).option_scores([MC])[0] for a in adapters]
    both = HFBackend(str(tiny_model), ensemble=[str(a) for a in adapters], chat_template=False).option_scores([MC])[0]
    assert parts[0] != parts[1]
    for label in both:
        assert both[label] == pytest.approx((parts[0][label] + parts[1][label]) / 2, abs=1e-5)


def test_alpha_zero_and_one_answer_like_the_base_and_the_tuned_model(tiny_model, adapters):
    def scores(**kw):
        return HFBackend(str(tiny_model), chat_template=False, **kw).option_scores([MC])[0]

    base, tuned = scores(), scores(adapter=str(adapters[0]))
    assert base != tuned
    for got, want in (
        (scores(adapter=str(adapters[0]), alpha=0.0), base),
        (scores(adapter=str(adapters[0]), alpha=1.0), tuned),
    ):
        assert all(abs(got[k] - want[k]) < 1e-5 for k in want)


def test_alpha_and_ensemble_settings_are_checked():
    with pytest.raises(ValueError, match="give --adapter"):
        EvalConfig(alpha=0.5)
    with pytest.raises(ValueError, match="two or more adapters"):
        EvalConfig(ensemble=["a"])
    with pytest.raises(ValueError, match="two or more adapters"):
        EvalConfig(adapter="x", ensemble=["a", "b"])
    with pytest.raises(ValueError):
        EvalConfig(adapter="x", alpha=1.5)
