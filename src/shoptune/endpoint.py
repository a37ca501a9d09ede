"""An OpenAI-compatible endpoint, as the teacher and the openai evaluation backend both reach it: bounded waits
(a connect timeout of its own, a read timeout, a bounded number of retries), a probe that fails in seconds with
what to set, and one short name for each way a request can fail, so failures can be counted by cause."""

from __future__ import annotations

import os
from typing import Any

from shoptune.errors import ShoptuneError

CONNECT_TIMEOUT = 10.0  # seconds to open a connection; a server that is not there says so quickly
PROBE_TIMEOUT = 15.0  # the probe's whole budget: one request, no retries


def client(base_url: str, api_key_env: str, *, timeout: float, max_retries: int) -> Any:
    import openai

    return openai.OpenAI(
        base_url=base_url,
        api_key=os.environ.get(api_key_env) or "EMPTY",  # local servers take any key; the probe tells the rest
        timeout=openai.Timeout(timeout, connect=min(CONNECT_TIMEOUT, timeout)),
        max_retries=max_retries,
    )


def cause(exc: BaseException) -> str:
    """A failure's kind: timeout, connection, auth, not found, rate limit, http <status>, malformed reply."""
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return "timeout"
    if isinstance(exc, openai.APIConnectionError):
        return "connection"
    if isinstance(exc, (openai.AuthenticationError, openai.PermissionDeniedError)):
        return "auth"
    if isinstance(exc, openai.NotFoundError):
        return "not found"
    if isinstance(exc, openai.RateLimitError):
        return "rate limit"
    if isinstance(exc, openai.APIStatusError):
        return f"http {exc.status_code}"
    return "malformed reply"


def probe(
    base: Any, *, model: str, base_url: str, api_key_env: str, timeout: float = PROBE_TIMEOUT, chat: bool = True
) -> None:
    """One one-token request, no retries, `timeout` (PROBE_TIMEOUT at most): the endpoint, the key and the model
    checked before any real work, each failure one line saying what to set."""
    import openai

    timeout = min(timeout, PROBE_TIMEOUT)
    quick = base.with_options(timeout=openai.Timeout(timeout, connect=min(CONNECT_TIMEOUT, timeout)), max_retries=0)
    try:
        if chat:
            quick.chat.completions.create(model=model, messages=[{"role": "user", "content": "ping"}], max_tokens=1)
        else:
            quick.completions.create(model=model, prompt="ping", max_tokens=1)
    except openai.APIError as exc:
        kind = cause(exc)
        unset = "" if os.environ.get(api_key_env) else f" ({api_key_env} is not set)"
        advice = {
            "timeout": f"no answer within {timeout:g} s: check that the server at base_url is up and serving",
            "connection": "cannot connect: check base_url (the spec's, or OPENAI_BASE_URL) and that the server runs",
            "auth": f"the key was refused{unset}: set {api_key_env} to a key this endpoint accepts",
            "not found": f"no model {model!r} there (or base_url does not end in /v1): check model and base_url",
        }.get(kind, f"it answered {kind}: {str(exc)[:160]}")
        raise ShoptuneError(f"endpoint {base_url}: {advice}") from None
