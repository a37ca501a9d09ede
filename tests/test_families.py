"""The family matrix: every family users bring (tests/helpers/families.py) through every step of shoptune: prompts
rendered through its template (a system message it refuses folded into the user turn), the loss masking exactly the
answer, LoRA training and resume, multiple choice by option logits, a constrained two-word entity, generation,
merging, and one request served."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from shoptune.evaluate.backends import HFBackend
from shoptune.evaluate.constraints import rule_for
from shoptune.schema import TaskType, read_examples, write_jsonl
from shoptune.tasks.render import SHOPBENCH_SYSTEM_PROMPT, answer_text, render_prompt
from shoptune.train.config import TrainConfig
from shoptune.train.trainer import encode, merge, train
from tests.helpers.families import FAMILIES, build_family_model
from tests.helpers.tiny_model import DEV_SET

NAMES = sorted(FAMILIES)


@pytest.fixture(scope="module", params=NAMES)
def family(request, tmp_path_factory) -> tuple[str, Path]:
    return request.param, build_family_model(request.param, tmp_path_factory.mktemp(request.param))


def tokenizer_of(model: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model)


QUESTION = "Which brand is named in this title?\nInput: blue kettle Acme 1.7 l\nOutput:"


def test_prompts_render_through_the_template_with_the_system_text_kept(family):
    name, model = family
    tokenizer = tokenizer_of(model)
    prompt = render_prompt(QUESTION, tokenizer)
    assert SHOPBENCH_SYSTEM_PROMPT in prompt and QUESTION in prompt  # never lost, never a crash
    assert prompt.index(SHOPBENCH_SYSTEM_PROMPT) < prompt.index(QUESTION)
    if FAMILIES[name].template is None:
        assert prompt == f"{SHOPBENCH_SYSTEM_PROMPT}\n\n{QUESTION}"
    else:
        assert prompt != f"{SHOPBENCH_SYSTEM_PROMPT}\n\n{QUESTION}"  # the template was applied


@pytest.mark.parametrize("task_type", ["multiple-choice", "ranking", "named_entity_recognition", "generation"])
def test_the_loss_covers_exactly_the_answer_and_its_end(family, task_type):
    _, model = family
    tokenizer = tokenizer_of(model)
    example = next(ex for ex in read_examples(DEV_SET) if ex.task_type.value == task_type)
    encoded = encode(example, tokenizer, TrainConfig(model=str(model), data=Path("x")))
    labels = [t for t in encoded["labels"] if t != -100]
    assert encoded["labels"][: len(encoded["labels"]) - len(labels)] == [-100] * (len(encoded["labels"]) - len(labels))
    assert labels[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(labels[:-1]).strip() == answer_text(example.output_field, example.task_type)
    prompt = tokenizer(render_prompt(example.input_field, tokenizer))["input_ids"]
    assert encoded["input_ids"][: len(prompt)] == prompt  # the prompt as evaluation renders it


def question(prompt: str, truth, task_type: str = "generation", metric: str = "rougel") -> dict:
    return {
        "input_field": prompt,
        "output_field": truth,
        "task_name": f"t-{task_type}",
        "task_type": task_type,
        "metric": metric,
        "is_multiple_choice": task_type == "multiple-choice",
        "track": "amazon-kdd-cup-24-understanding-shopping-concepts",
    }


def test_lora_training_resumes_and_merges_to_the_same_model(family, tmp_path):
    _, model = family
    rows = [question(f"Describe product {i}: a blue shirt.", f"Shirt {i} in blue.") for i in range(12)]
    rows += [
        question(f"Best for {i}?\n0. a\n1. b\n2. c\nAnswer: ", i % 3, "multiple-choice", "accuracy") for i in range(4)
    ]
    write_jsonl(tmp_path / "train.jsonl", rows * 2)
    settings = {"model": str(model), "data": tmp_path / "train.jsonl", "batch_size": 4, "max_length": 128}
    config = TrainConfig(**settings, max_steps=4, save_steps=2, save_total_limit=4, report_to=[], learning_rate=1e-2)
    whole = train(config, tmp_path / "whole", progress=False)
    assert whole["steps"] == 4 and whole["parameters"]["trainable"] > 0
    run = tmp_path / "resumed"  # as if killed after its first checkpoint
    shutil.copytree(tmp_path / "whole" / "checkpoints" / "checkpoint-2", run / "checkpoints" / "checkpoint-2")
    shutil.copy(tmp_path / "whole" / "run.json", run / "run.json")
    train(config, run, progress=False)
    one = load_file(str(tmp_path / "whole" / "adapter" / "adapter_model.safetensors"))
    two = load_file(str(run / "adapter" / "adapter_model.safetensors"))
    assert one.keys() == two.keys() and one
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-5)

    assert merge(str(model), tmp_path / "whole" / "adapter", tmp_path / "merged") is False
    from transformers import AutoModelForCausalLM

    tuned = HFBackend(str(model), adapter=str(tmp_path / "whole" / "adapter"))
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    ids = tuned.encode(["A blue shirt."])
    with torch.no_grad():
        torch.testing.assert_close(
            merged(**ids).logits, tuned.model(**ids).logits, rtol=1e-4, atol=1e-4
        )  # the merged weights answer as base + adapter


def test_multiple_choice_generation_and_a_served_request(family):
    _, model = family
    backend = HFBackend(str(model))
    mc = "Which colour is the sky?\n0. red\n1. blue\n2. green\n3. black\nAnswer: "
    assert all(backend._digit_ids[d] for d in "0123")  # every option label is one token in this family
    assert backend.choose([mc, mc.replace("sky", "grass")])[0] in "0123"
    assert set(backend.option_scores([mc])[0]) == set("0123")
    texts = backend.generate([QUESTION, "Describe a kettle."], 6)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)

    from shoptune.serve import ChatRequest, ModelServer, ServeLimits

    server = ModelServer(HFBackend(str(model), system_prompt=None), "shop", ServeLimits())
    try:
        messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Describe a kettle."}]
        body = ChatRequest(model="shop", messages=messages, max_tokens=4)
        (answer,) = server.job(body, [server.chat_text(body.messages)]).future.result(60)
        assert isinstance(answer.text, str) and answer.prompt_tokens > 0 and answer.completion_tokens <= 4
    finally:
        server.scheduler.close()


def test_a_constrained_answer_can_be_a_two_word_entity(family):
    """Walked token by token as the model would write it, a two-word entity of the question is allowed at every step
    and may end there: the constraint reads each candidate token as it reads inside an answer."""
    _, model = family
    tokenizer = tokenizer_of(model)
    for entity in ("blue kettle", "kettle Acme"):
        target = tokenizer(entity, add_special_tokens=False)["input_ids"]
        allowed = rule_for(tokenizer, TaskType.NER, QUESTION)
        written: list[int] = []
        for token in target:
            assert token in allowed(written), (entity, tokenizer.convert_ids_to_tokens(target))
            written.append(token)
        assert tokenizer.eos_token_id in allowed(written), entity
        backend = HFBackend(str(model))
        answer = backend.generate([QUESTION], 12, TaskType.NER)[0]
        assert all(part.strip() in QUESTION for part in answer.split(",")), answer


def test_the_family_matrix_covers_what_users_bring():
    assert set(NAMES) == {"llama2", "llama3", "qwen2", "mistral", "gemma", "phi3", "gpt2"}


# --- where a model comes from: complete downloads, an adapter that knows its base --------------------------------


@pytest.mark.parametrize("weights", ["safetensors", "bin"])
def test_a_download_takes_every_file_a_model_and_its_template_load_from(weights, tmp_path):
    """A fake hub repository (a family model as `save_pretrained` writes it, plus what a real repository also holds),
    filtered by shoptune's patterns exactly as `snapshot_download` filters: the copy loads, template included."""
    from huggingface_hub.utils import filter_repo_objects
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from shoptune.hub import download_patterns

    repo = build_family_model("gemma", tmp_path / "repo")
    if weights == "bin":  # an older repository: PyTorch's pickled weights only
        torch.save(AutoModelForCausalLM.from_pretrained(repo).state_dict(), repo / "pytorch_model.bin")
        (repo / "model.safetensors").unlink()
    (repo / "original").mkdir()
    (repo / "original" / "consolidated.00.pth").write_bytes(b"the same weights in another format")
    (repo / "optimizer.pt").write_bytes(b"training state")
    (repo / "README.md").write_text("# a model card")
    files = sorted(str(p.relative_to(repo)) for p in repo.rglob("*") if p.is_file())
    chosen = list(filter_repo_objects(files, allow_patterns=download_patterns(files)))
    assert "chat_template.jinja" in chosen and "tokenizer.json" in chosen and "config.json" in chosen
    assert "optimizer.pt" not in chosen and "original/consolidated.00.pth" not in chosen
    assert any(f.endswith(f".{weights}") for f in chosen)
    copy = tmp_path / "downloaded"
    for name in chosen:
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(repo / name, copy / name)
    tokenizer = AutoTokenizer.from_pretrained(copy)
    assert tokenizer.chat_template == FAMILIES["gemma"].template
    model, original = AutoModelForCausalLM.from_pretrained(copy), AutoModelForCausalLM.from_pretrained(repo)
    mine, theirs = model.state_dict(), original.state_dict()
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)


def test_every_verb_that_takes_an_adapter_loads_the_base_it_was_trained_on(family, tmp_path, run_cli):
    _, model = family
    rows = [question(f"Describe product {i}: a blue shirt.", f"Shirt {i}.") for i in range(8)]
    write_jsonl(tmp_path / "train.jsonl", rows)
    code, _, err = run_cli(
        "train", "--model", model, "--data", tmp_path / "train.jsonl", "--max-steps", "1", "--batch-size", "4",
        "--max-length", "96", "--set", "report_to=[]", "--no-progress", "--out", tmp_path / "run",
    )  # fmt: skip
    assert code == 0, err
    adapter = tmp_path / "run" / "adapter"
    code, _, err = run_cli("merge", adapter, "--out", tmp_path / "merged")  # no --model: the adapter's own base
    assert code == 0, err
    from transformers import AutoConfig

    assert AutoConfig.from_pretrained(tmp_path / "merged").model_type == AutoConfig.from_pretrained(model).model_type
    dev = ["eval", "run", DEV_SET, "--adapter", adapter, "--limit", "2", "--no-progress", "--bootstrap", "0"]
    code, _, err = run_cli(*dev, "--out", tmp_path / "e")
    assert code == 0, err
    import json

    assert json.loads((tmp_path / "e" / "run.json").read_text())["answer_settings"]["model"] == str(model.resolve())
    other = build_family_model("llama3" if family[0] != "llama3" else "qwen2", tmp_path / "other")
    code, _, err = run_cli("merge", adapter, "--model", other, "--out", tmp_path / "wrong")
    assert code == 2 and f"was trained on {str(model.resolve())!r}" in err and len(err.strip().splitlines()) == 1, err
