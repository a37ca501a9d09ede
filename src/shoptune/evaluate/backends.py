"""Where answers come from: a Hugging Face model in-process (default), any OpenAI-compatible HTTP
endpoint, or vLLM in-process when it is installed. The runner and the KDD Cup predictor only see
`generate` and `choose`, so a backend is chosen by one setting.

Adding a backend: a class with `generate`, `choose`, `describe` and a `from_config` that takes its settings
from an `EvalConfig`, and one entry in `BACKENDS` at the end of this file; `--backend NAME` and the
`backend:` setting accept it from then on.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Literal, Protocol

from shoptune.errors import ShoptuneError
from shoptune.evaluate.constraints import allowed_tokens
from shoptune.hub import load_causal_lm, resolve_model_source, with_adapter
from shoptune.schema import TaskType
from shoptune.tasks.render import DIGITS, SHOPBENCH_SYSTEM_PROMPT, option_labels, render_prompt

if TYPE_CHECKING:
    from shoptune.evaluate.runner import EvalConfig


class Backend(Protocol):
    def generate(self, prompts: Sequence[str], max_new_tokens: int, constrain: TaskType | None = None) -> list[str]:
        """Greedy continuations of ShopBench prompts (rendered by the backend); with `constrain`, answers kept to
        what that task type's parser reads in full (`evaluate.constraints`), where the backend can."""
        ...

    def choose(self, prompts: Sequence[str]) -> list[str]:
        """One option digit per multiple-choice prompt, by comparing next-token scores of the options."""
        ...

    def describe(self) -> dict[str, Any]:
        """What produced the answers, for the run record and for refusing to mix runs on resume."""
        ...


class HFBackend:
    """transformers in-process: batched, left-padded, KV-cached greedy decoding; MC by one forward pass."""

    def __init__(
        self,
        model: str,
        *,
        adapter: str | None = None,
        dtype: str = "auto",
        device: str = "auto",
        system_prompt: str | None = SHOPBENCH_SYSTEM_PROMPT,
        chat_template: bool | None = None,
        allow_download: bool = False,
    ) -> None:
        import torch

        self.torch = torch
        self.device = _device(torch, device)
        torch_dtype = _torch_dtype(torch, dtype, self.device)
        self.model, self.tokenizer = load_causal_lm(model, allow_download, dtype=torch_dtype)
        if adapter:
            self.model = with_adapter(self.model, adapter, model)
        self.model.to(self.device).eval()
        self.tokenizer.padding_side = "left"
        self.tokenizer.truncation_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.system_prompt = system_prompt
        self.chat_template = chat_template
        self.info = {"backend": "hf", "model": model, "adapter": adapter, "dtype": str(torch_dtype)}
        self._digit_ids = {d: _single_token_variants(self.tokenizer, d) for d in DIGITS}
        self.truncated_prompts = 0  # prompts longer than the context, cut since this backend was made

    @classmethod
    def from_config(cls, config: EvalConfig) -> HFBackend:
        return cls(config.model, device=config.device, **_in_process(config))

    def render(self, prompt: str) -> str:
        return render_prompt(prompt, self.tokenizer, system_prompt=self.system_prompt, chat_template=self.chat_template)

    def encode(self, prompts: Sequence[str], *, rendered: bool = False) -> dict[str, Any]:
        """Rendered, left-padded batch. A prompt loses tokens only when it alone does not fit the model's context
        (keeping room for one answer token); it then loses its beginning, since a ShopBench prompt ends with the
        question and the answer format, and `truncated_prompts` counts it."""
        texts = list(prompts) if rendered else [self.render(p) for p in prompts]
        limit = self.context_length()
        enc = self.tokenizer(texts, return_tensors="pt", padding=True)
        if limit is not None and enc["input_ids"].shape[1] >= limit:
            self.truncated_prompts += int((enc["attention_mask"].sum(dim=1) >= limit).sum())
            enc = self.tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=limit - 1)
        return {k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}

    def context_length(self) -> int | None:
        return getattr(self.model.config, "max_position_embeddings", None)

    def generate(self, prompts: Sequence[str], max_new_tokens: int, constrain: TaskType | None = None) -> list[str]:
        texts = [self.render(p) for p in prompts]
        rule = None
        if constrain is not None:
            rule = partial(allowed_tokens, self.tokenizer, [constrain] * len(prompts), prompts)
        _, new_tokens = self._new_tokens(texts, max_new_tokens, 0.0, rule_for_width=rule)
        return self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)

    def continue_texts(
        self, texts: Sequence[str], max_new_tokens: int, temperature: float = 0.0, **generate: Any
    ) -> tuple[list[str], list[int], list[int]]:
        """Continuations of already rendered texts, with prompt and completion token counts (for serving);
        `generate` passes a streamer or stopping criteria on to the model's generate."""
        enc, new_tokens = self._new_tokens(texts, max_new_tokens, temperature, **generate)
        special = set(self.tokenizer.all_special_ids)
        return (
            self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True),
            enc["attention_mask"].sum(dim=1).tolist(),
            [sum(1 for t in row.tolist() if t not in special) for row in new_tokens],
        )

    def _new_tokens(
        self,
        texts: Sequence[str],
        max_new_tokens: int,
        temperature: float,
        rule_for_width: Callable[[int], Any] | None = None,
        **generate: Any,
    ) -> tuple[Any, Any]:
        """The encoded batch and the generated token ids alone (greedy unless temperature > 0). The budget gives
        way, not the prompt: at most what the context has left after the batch's longest prompt. `rule_for_width`
        makes a `prefix_allowed_tokens_fn` from the encoded batch's width (constrained answers)."""
        enc = self.encode(texts, rendered=True)
        if rule_for_width is not None:
            generate["prefix_allowed_tokens_fn"] = rule_for_width(enc["input_ids"].shape[1])
        limit = self.context_length()
        if limit is not None:
            max_new_tokens = min(max_new_tokens, limit - int(enc["attention_mask"].sum(dim=1).max()))
        sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
        with self.torch.inference_mode():
            out = self.model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                pad_token_id=self.tokenizer.pad_token_id,
                **sampling,
                **generate,
            )
        return enc, out[:, enc["input_ids"].shape[1] :]

    def choose(self, prompts: Sequence[str]) -> list[str]:
        return [max(scores, key=scores.__getitem__) if scores else "" for scores in self.option_scores(prompts)]

    def option_scores(self, prompts: Sequence[str]) -> list[dict[str, float]]:
        """Per prompt, the log-probability of each listed option digit as the next token (normalised over them)."""
        enc = self.encode(prompts)
        # Positions must count real tokens only, as generate() does, or left padding shifts them.
        positions = (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)
        with self.torch.inference_mode():
            logits = self.model(**enc, position_ids=positions, logits_to_keep=1).logits[:, -1, :].float()
        out = []
        for row, prompt in zip(logits, prompts, strict=True):
            labels = [d for d in option_labels(prompt) if self._digit_ids[d]]
            raw = self.torch.stack([row[self._digit_ids[d]].max() for d in labels]) if labels else row[:0]
            out.append(dict(zip(labels, self.torch.log_softmax(raw, dim=0).tolist(), strict=True)))
        return out

    def describe(self) -> dict[str, Any]:
        return dict(self.info)


def _in_process(config: EvalConfig) -> dict[str, Any]:
    """The settings of a backend that loads the model itself (hf, vllm)."""
    return {
        "adapter": config.adapter,
        "dtype": config.dtype,
        "system_prompt": config.system_prompt,
        "chat_template": config.chat_template,
        "allow_download": config.allow_download,
    }


def _device(torch: Any, device: str) -> str:
    """auto: a GPU when there is one; anything else must name a device this machine has."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        kind = torch.device(device).type
    except RuntimeError:
        raise ShoptuneError(f"device {device!r}: expected auto, cpu, cuda, cuda:N or mps") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise ShoptuneError(f"device {device!r}: this machine has no CUDA GPU that torch can use; use cpu or auto")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise ShoptuneError(f"device {device!r}: this machine has no Apple GPU that torch can use; use cpu or auto")
    if kind not in ("cpu", "cuda", "mps"):
        raise ShoptuneError(f"device {device!r}: expected auto, cpu, cuda, cuda:N or mps")
    return device


def _torch_dtype(torch: Any, dtype: str, device: str) -> Any:
    if dtype == "auto":
        if device.startswith("cuda") and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float16 if device.startswith("cuda") else torch.float32
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    except KeyError:
        raise ShoptuneError(f"dtype {dtype!r}: expected auto, float32, bfloat16 or float16") from None


def _single_token_variants(tokenizer: Any, digit: str) -> list[int]:
    """Every single token that reads as this digit once stripped: "2", " 2", "▁2" (tokenizers differ)."""
    ids = set()
    for token in (digit, f"Ġ{digit}", f"▁{digit}"):
        token_id = tokenizer.convert_tokens_to_ids(token)
        known = isinstance(token_id, int) and token_id != tokenizer.unk_token_id
        if known and tokenizer.decode([token_id]).strip() == digit:
            ids.add(token_id)
    encoded = tokenizer.encode(digit, add_special_tokens=False)
    if len(encoded) == 1:
        ids.add(encoded[0])
    return sorted(ids)


class OpenAIBackend:
    """Any OpenAI-compatible server (vLLM, TGI, a hosted API, `shoptune serve`). No logits: MC is generated."""

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None,
        api_key_env: str = "OPENAI_API_KEY",
        api: Literal["chat", "completions"] = "chat",
        concurrency: int = 8,
        timeout: float = 60.0,
        system_prompt: str | None = SHOPBENCH_SYSTEM_PROMPT,
    ) -> None:
        import openai

        if not base_url:
            raise ShoptuneError("the openai backend needs base_url (--base-url), e.g. http://127.0.0.1:8000/v1")
        self.client = openai.OpenAI(
            base_url=base_url, api_key=os.environ.get(api_key_env, "EMPTY"), timeout=timeout, max_retries=3
        )
        self.model, self.api, self.concurrency, self.system_prompt = model, api, concurrency, system_prompt
        self.info = {"backend": "openai", "model": model, "base_url": base_url, "api": api}

    @classmethod
    def from_config(cls, config: EvalConfig) -> OpenAIBackend:
        return cls(
            config.model,
            base_url=config.base_url,
            api=config.api,
            api_key_env=config.api_key_env,
            concurrency=config.concurrency,
            system_prompt=config.system_prompt,
        )

    def _one(self, prompt: str, max_tokens: int) -> str:
        import openai

        try:
            if self.api == "chat":
                messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
                messages.append({"role": "user", "content": prompt})
                reply = self.client.chat.completions.create(
                    model=self.model, messages=messages, max_tokens=max_tokens, temperature=0.0
                )
                return reply.choices[0].message.content or ""
            reply = self.client.completions.create(
                model=self.model,
                prompt=render_prompt(prompt, system_prompt=self.system_prompt),
                max_tokens=max_tokens,
                temperature=0.0,
            )
            return reply.choices[0].text
        except openai.APIConnectionError as exc:
            raise ShoptuneError(f"openai backend: cannot reach {self.info['base_url']} ({exc})") from None
        except openai.APIStatusError as exc:
            raise ShoptuneError(f"openai backend: the server answered {exc.status_code}: {exc.message}") from None

    def generate(self, prompts: Sequence[str], max_new_tokens: int, constrain: TaskType | None = None) -> list[str]:
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(lambda p: self._one(p, max_new_tokens), prompts))

    def choose(self, prompts: Sequence[str]) -> list[str]:
        return self.generate(prompts, 1)

    def describe(self) -> dict[str, Any]:
        return dict(self.info)


class VLLMBackend:
    """vLLM in-process (GPU). MC restricts the one generated token to the option digits."""

    def __init__(
        self,
        model: str,
        *,
        adapter: str | None = None,
        dtype: str = "auto",
        system_prompt: str | None = SHOPBENCH_SYSTEM_PROMPT,
        chat_template: bool | None = None,
        allow_download: bool = False,
    ) -> None:
        try:
            from vllm import LLM, SamplingParams
        except ImportError:
            raise ShoptuneError("the vllm backend needs vLLM: pip install 'shoptune[vllm]' (GPU machines)") from None
        self.SamplingParams = SamplingParams
        self.llm = LLM(model=resolve_model_source(model, allow_download), dtype=dtype, enable_lora=bool(adapter))
        self.tokenizer = self.llm.get_tokenizer()
        self.lora = None
        if adapter:
            from vllm.lora.request import LoRARequest

            self.lora = LoRARequest("adapter", 1, adapter)
        self.system_prompt, self.chat_template = system_prompt, chat_template
        self.info = {"backend": "vllm", "model": model, "adapter": adapter, "dtype": dtype}
        self._digit_ids = {d: _single_token_variants(self.tokenizer, d) for d in DIGITS}

    @classmethod
    def from_config(cls, config: EvalConfig) -> VLLMBackend:
        return cls(config.model, **_in_process(config))

    def render(self, prompt: str) -> str:
        return render_prompt(prompt, self.tokenizer, system_prompt=self.system_prompt, chat_template=self.chat_template)

    def _run(self, prompts: Sequence[str], params: Sequence[Any]) -> list[str]:
        outs = self.llm.generate(
            [self.render(p) for p in prompts], list(params), lora_request=self.lora, use_tqdm=False
        )
        return [o.outputs[0].text for o in outs]

    def generate(self, prompts: Sequence[str], max_new_tokens: int, constrain: TaskType | None = None) -> list[str]:
        params = self.SamplingParams(temperature=0.0, max_tokens=max_new_tokens)
        return self._run(prompts, [params] * len(prompts))

    def choose(self, prompts: Sequence[str]) -> list[str]:
        params = []
        for prompt in prompts:
            allowed = sorted({i for d in option_labels(prompt) for i in self._digit_ids[d]})
            params.append(self.SamplingParams(temperature=0.0, max_tokens=1, allowed_token_ids=allowed or None))
        return [text.strip() for text in self._run(prompts, params)]

    def describe(self) -> dict[str, Any]:
        return dict(self.info)


# --- the table --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackendEntry:
    make: Callable[[EvalConfig], Backend]
    help: str
    token_level: bool = False  # sees next-token scores: constrained answers, debiased multiple choice


BACKENDS: dict[str, BackendEntry] = {
    "hf": BackendEntry(
        HFBackend.from_config, "transformers in-process; multiple choice by one forward pass", token_level=True
    ),
    "openai": BackendEntry(OpenAIBackend.from_config, "any OpenAI-compatible server at base_url"),
    "vllm": BackendEntry(VLLMBackend.from_config, "vLLM in-process, on a GPU (pip install 'shoptune[vllm]')"),
}
