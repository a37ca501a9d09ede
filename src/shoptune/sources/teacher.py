"""A teacher LLM behind any OpenAI-compatible chat endpoint, with an on-disk cache.

Retries with backoff on 429, 5xx, timeouts and dropped connections are the official `openai`
client's own; this module adds the cache, keyed by the whole request, so a rerun (or a resumed run)
pays only for requests it has never completed.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shoptune.errors import ShoptuneError
from shoptune.schema import atomic_write_text, read_state


class TeacherError(Exception):
    """A request that failed for good (retries exhausted, or an answer that is not a chat completion)."""


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    cached: bool


class Teacher:
    def __init__(
        self,
        *,
        base_url: str | None,
        model: str,
        cache_dir: Path,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 60.0,
        max_retries: int = 5,
    ) -> None:
        import openai

        base_url = base_url or os.environ.get("OPENAI_BASE_URL")
        if not base_url:
            raise ShoptuneError("the teacher needs base_url (in the spec, or OPENAI_BASE_URL), e.g. http://host/v1")
        self.model = model
        self.cache_dir = Path(cache_dir)
        self.client = openai.OpenAI(
            base_url=base_url, api_key=os.environ.get(api_key_env, "EMPTY"), timeout=timeout, max_retries=max_retries
        )
        self._lock = threading.Lock()
        self.http_calls = 0

    def _key(self, request: dict[str, Any]) -> Path:
        digest = hashlib.sha256(json.dumps(request, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
        return self.cache_dir / digest[:2] / f"{digest}.json"

    def remember(self, job: dict[str, Any], attempt: int) -> None:
        """Record which attempt of a job succeeded, so a rerun replays it without repeating failed requests."""
        atomic_write_text(self._key({"job": job}), json.dumps({"attempt": attempt}))

    def recall(self, job: dict[str, Any]) -> int | None:
        path = self._key({"job": job})
        return read_state(path)["attempt"] if path.is_file() else None

    def complete(self, messages: list[dict[str, str]], *, temperature: float, max_tokens: int, seed: int) -> Completion:
        import openai

        request = {
            "model": self.model,
            "messages": messages,
            "temperature": temperature,
            "max_tokens": max_tokens,
            "seed": seed,
        }
        path = self._key(request)
        if path.is_file():
            cached = read_state(path)
            return Completion(cached["text"], cached["prompt_tokens"], cached["completion_tokens"], cached=True)
        with self._lock:
            self.http_calls += 1
        try:
            reply = self.client.chat.completions.create(**request)
            text = reply.choices[0].message.content or ""
        except (openai.APIError, IndexError, AttributeError, ValueError) as exc:
            raise TeacherError(f"{type(exc).__name__}: {str(exc)[:200]}") from None
        usage = reply.usage
        result = {
            "text": text,
            "prompt_tokens": getattr(usage, "prompt_tokens", 0) or 0,
            "completion_tokens": getattr(usage, "completion_tokens", 0) or 0,
        }
        atomic_write_text(path, json.dumps({**result, "request": request}, ensure_ascii=False))
        return Completion(**result, cached=False)
