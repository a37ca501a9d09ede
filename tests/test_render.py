"""Prompt rendering shared by training and evaluation."""

import pytest
from transformers import AutoTokenizer

from shoptune.errors import ShoptuneError
from shoptune.tasks.render import SHOPBENCH_SYSTEM_PROMPT, option_labels, render_prompt

TEMPLATE = (
    "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def test_plain_prompt_gets_the_baselines_system_prompt():
    assert render_prompt("Q?") == f"{SHOPBENCH_SYSTEM_PROMPT}\n\nQ?"
    assert render_prompt("Q?", system_prompt=None) == "Q?"


def test_chat_template_is_used_when_the_tokenizer_has_one(tiny_model):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    assert render_prompt("Q?", tokenizer) == f"{SHOPBENCH_SYSTEM_PROMPT}\n\nQ?"
    with pytest.raises(ShoptuneError, match="has none"):
        render_prompt("Q?", tokenizer, chat_template=True)
    tokenizer.chat_template = TEMPLATE
    assert render_prompt("Q?", tokenizer) == f"<|system|>{SHOPBENCH_SYSTEM_PROMPT}\n<|user|>Q?\n<|assistant|>"
    assert render_prompt("Q?", tokenizer, chat_template=False, system_prompt=None) == "Q?"


def test_option_labels_come_from_the_prompt():
    assert option_labels("Pick one.\n0. red\n1. blue\n2. green\nAnswer: ") == ("0", "1", "2")
    # The review-rating task lists no options: any digit may be the answer.
    assert option_labels("Rate from 1 to 5.\nAnswer: ") == tuple("0123456789")


def test_vllm_backend_without_vllm_is_a_clear_error(tiny_model):
    pytest.importorskip("torch")
    try:
        import vllm  # noqa: F401

        pytest.skip("vLLM is installed here")
    except ImportError:
        pass
    from shoptune.evaluate.config import EvalConfig
    from shoptune.evaluate.runner import make_backend

    with pytest.raises(ShoptuneError, match=r"pip install 'shoptune\[vllm\]'"):
        make_backend(EvalConfig(model=str(tiny_model), backend="vllm"))
