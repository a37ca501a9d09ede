"""A teacher LLM behind any OpenAI-compatible chat endpoint, with an on-disk cache.

Retries with backoff on 429, 5xx, timeouts and dropped connections are the official `openai`
client's own (bounded: `shoptune.endpoint`); this module adds the cache, keyed by the whole request, so a
rerun (or a resumed run) pays only for requests it has never completed, a probe before the first request that
is not in the cache, and a cap on the requests a run may make.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shoptune import endpoint
from shoptune.errors import ShoptuneError
from shoptune.files import atomic_write_text, read_state


class TeacherError(Exception):
    """A request that failed for good (retries exhausted, or an answer that is not a chat completion)."""

    def __init__(self, cause: str, message: str) -> None:
        super().__init__(message)
        self.cause = cause  # endpoint.cause's short name, or "capped"


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
        max_retries: int = 2,
        max_requests: int | None = None,
    ) -> None:
        self.model, self.api_key_env = model, api_key_env
        self.base_url = base_url or os.environ.get("OPENAI_BASE_URL")
        self.cache_dir = Path(cache_dir)
        self.max_requests, self.timeout, self.max_retries = max_requests, timeout, max_retries
        self._client: Any = None
        self._lock = threading.Lock()
        self._probed: ShoptuneError | bool = False
        self.http_calls = 0

    @property
    def client(self) -> Any:
        """Made at the first request that is not in the cache: reading the cache (a dry run, a rerun) needs no
        endpoint."""
        if self._client is None:
            if not self.base_url:
                raise ShoptuneError("the teacher needs base_url (in the spec, or OPENAI_BASE_URL), e.g. http://host/v1")
            self._client = endpoint.client(
                self.base_url, self.api_key_env, timeout=self.timeout, max_retries=self.max_retries
            )
        return self._client

    def _probe(self) -> None:
        """Before the first request that is not in the cache (the caller holds the lock): a failed probe is raised
        again for every later request, so a run with thousands queued ends at once."""
        if self._probed is False:
            try:
                endpoint.probe(
                    self.client,
                    model=self.model,
                    base_url=self.base_url,
                    api_key_env=self.api_key_env,
                    timeout=self.timeout,
                )
                self._probed = True
            except ShoptuneError as exc:
                self._probed = exc
        if isinstance(self._probed, ShoptuneError):
            raise self._probed

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
            self._probe()
            if self.max_requests is not None and self.http_calls >= self.max_requests:
                raise TeacherError("capped", f"max_requests {self.max_requests} reached")
            self.http_calls += 1
        try:
            reply = self.client.chat.completions.create(**request)
            text = reply.choices[0].message.content or ""
        except (openai.APIError, IndexError, AttributeError, ValueError) as exc:
            raise TeacherError(endpoint.cause(exc), f"{type(exc).__name__}: {str(exc)[:200]}") from None
        usage = reply.usage
        result = {
            "text": text,
            "prompt_tokens": getattr(usage, "prompt_tokens", 0) or 0,
            "completion_tokens": getattr(usage, "completion_tokens", 0) or 0,
        }
        atomic_write_text(path, json.dumps({**result, "request": request}, ensure_ascii=False))
        return Completion(**result, cached=False)
