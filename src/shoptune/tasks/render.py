"""How an example is shown to a model and what it is taught to answer.

Training and evaluation must render prompts the same way, and the answer text must be exactly what
ShopBench's parsers turn back into `output_field`; both live here so neither side can drift.
"""

from __future__ import annotations

import re
from typing import Any, Protocol

from shoptune.errors import ShoptuneError, note
from shoptune.schema import TaskType

# The system prompt both official baselines (the KDD Cup starter kit and Shopping MMLU) prepend.
SHOPBENCH_SYSTEM_PROMPT = (
    "You are a helpful online shopping assistant. Please answer the following question about online "
    "shopping and follow the given instructions."
)

OPTION_LINE = re.compile(r"^\s*(\d)\.\s", re.MULTILINE)
DIGITS = tuple(str(d) for d in range(10))


class ChatTokenizer(Protocol):
    chat_template: Any

    def apply_chat_template(self, conversation: list[dict[str, str]], **kwargs: Any) -> Any: ...


def answer_text(output_field: Any, task_type: TaskType) -> str:
    """The response a perfect model gives: MC "2"; retrieval/ranking "3,1,5"; NER "a, b"; generation the text."""
    if task_type is TaskType.MULTIPLE_CHOICE:
        return str(output_field)
    if task_type is TaskType.RETRIEVAL:
        return ",".join(str(i) for i in output_field)
    if task_type is TaskType.RANKING:
        # output_field holds relevances in candidate order; the answer is candidates best first.
        order = sorted(range(len(output_field)), key=lambda i: (-output_field[i], i))
        return ",".join(str(i + 1) for i in order)
    if task_type is TaskType.NER:
        return ", ".join(output_field)
    return output_field if isinstance(output_field, str) else output_field[0]


def render_prompt(
    text: str,
    tokenizer: ChatTokenizer | None = None,
    *,
    system_prompt: str | None = SHOPBENCH_SYSTEM_PROMPT,
    chat_template: bool | None = None,
) -> str:
    """The exact string fed to the model. chat_template=None means: use it when the tokenizer has one."""
    has_template = bool(tokenizer is not None and getattr(tokenizer, "chat_template", None))
    if chat_template and not has_template:
        raise ShoptuneError("a chat template was asked for, but the model's tokenizer has none")
    use_chat = has_template if chat_template is None else chat_template
    if use_chat:
        messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
        messages.append({"role": "user", "content": text})
        return render_chat(messages, tokenizer)
    return f"{system_prompt}\n\n{text}" if system_prompt else text


def render_chat(messages: list[dict[str, str]], tokenizer: ChatTokenizer) -> str:
    """A conversation through the model's chat template, ready for the reply. Some families' templates take no
    system message: Gemma's raise, older Mistral ones insist on alternating user and assistant turns, the first
    Phi-3 one drops it without a word. For those the system text opens the first user turn (what their model cards
    advise), and the user is told once."""
    if messages and messages[0]["role"] == "system" and not takes_system(tokenizer):
        system, rest = messages[0]["content"], messages[1:]
        if rest and rest[0]["role"] == "user":
            rest = [{"role": "user", "content": f"{system}\n\n{rest[0]['content']}"}, *rest[1:]]
        else:
            rest = [{"role": "user", "content": system}, *rest]
        note(
            "this model's chat template takes no system message; the system prompt opens the first user turn "
            "instead (in training, evaluation and serving alike)"
        )
        messages = rest
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


_TAKES_SYSTEM: dict[str, bool] = {}  # by template: whether a system message comes through it


def takes_system(tokenizer: ChatTokenizer) -> bool:
    """Whether the tokenizer's chat template renders a system message: it neither raises on one nor drops it."""
    template = str(tokenizer.chat_template)
    if template not in _TAKES_SYSTEM:
        probe = "\x1fshoptune-system-probe\x1f"
        try:
            shown = tokenizer.apply_chat_template(
                [{"role": "system", "content": probe}, {"role": "user", "content": "hello"}],
                tokenize=False,
                add_generation_prompt=True,
            )
            _TAKES_SYSTEM[template] = probe in shown
        except Exception:  # a template's own refusal: jinja2's TemplateError, or whatever its raise_exception raises
            _TAKES_SYSTEM[template] = False
    return _TAKES_SYSTEM[template]


def option_labels(prompt: str) -> tuple[str, ...]:
    """The digits a multiple-choice answer may be: the prompt's "0. …", "1. …" lines, else any digit.

    Questions without listed options (ShopBench's 1-5 review rating) fall back to all ten digits,
    which is what an unconstrained model could answer anyway.
    """
    labels = sorted(set(OPTION_LINE.findall(prompt)))
    return tuple(labels) if len(labels) >= 2 else DIGITS
