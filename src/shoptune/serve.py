"""`shoptune serve MODEL [--adapter DIR]`: an OpenAI-compatible server for a base model plus adapter.

Shop services call the adapted model with any OpenAI client, and the server can act as the teacher
endpoint of `shoptune data generate` or as the backend of `shoptune eval run --backend openai`.
Endpoints: GET /v1/models, POST /v1/chat/completions, POST /v1/completions (no streaming). Bad
requests get OpenAI-style error objects. One generation runs at a time; requests queue.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from shoptune.evaluate.backends import HFBackend


class RequestError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.kind = status, message, param, kind


def _field(body: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
    value = body.get(name)
    if value is None:
        if default is None:
            raise RequestError(400, f"'{name}' is required", name)
        return default
    if value is not None and not isinstance(value, kind):
        raise RequestError(400, f"'{name}' has the wrong type", name)
    return value


class ModelServer:
    """The model and the request logic, apart from HTTP, so both are simple to read and to test."""

    def __init__(self, backend: HFBackend, name: str, max_tokens_limit: int = 2048) -> None:
        self.backend, self.name, self.max_tokens_limit = backend, name, max_tokens_limit
        self.lock = threading.Lock()

    def chat_text(self, messages: list[Any]) -> str:
        if not messages or not all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in messages):
            raise RequestError(400, "'messages' must be a non-empty list of {role, content} objects", "messages")
        tokenizer = self.backend.tokenizer
        if getattr(tokenizer, "chat_template", None):
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        # No template: the plain layout shoptune trains and evaluates with (system, blank line, user).
        return "\n\n".join(m["content"] for m in messages)

    def _options(self, body: dict[str, Any]) -> tuple[int, float]:
        if body.get("stream"):
            raise RequestError(400, "streaming is not supported by shoptune serve", "stream")
        if _field(body, "n", int, 1) != 1:
            raise RequestError(400, "only n=1 is supported", "n")
        model = _field(body, "model", str)
        if model != self.name:
            raise RequestError(
                404, f"The model '{model}' does not exist; this server serves '{self.name}'", "model", "model_not_found"
            )
        max_tokens = _field(body, "max_tokens", int, 256)
        if not 1 <= max_tokens <= self.max_tokens_limit:
            raise RequestError(400, f"'max_tokens' must be between 1 and {self.max_tokens_limit}", "max_tokens")
        temperature = _field(body, "temperature", (int, float), 0.0)
        if not 0 <= temperature <= 2:
            raise RequestError(400, "'temperature' must be between 0 and 2", "temperature")
        return max_tokens, float(temperature)

    def _generate(
        self, texts: list[str], max_tokens: int, temperature: float
    ) -> tuple[list[str], list[int], list[int]]:
        with self.lock:
            return self.backend.continue_texts(texts, max_tokens, temperature)

    def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        max_tokens, temperature = self._options(body)
        text = self.chat_text(_field(body, "messages", list))
        (reply,), (prompt_tokens,), (completion_tokens,) = self._generate([text], max_tokens, temperature)
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": reply},
            "finish_reason": "length" if completion_tokens >= max_tokens else "stop",
        }
        return self._envelope("chat.completion", choice, prompt_tokens, completion_tokens)

    def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        max_tokens, temperature = self._options(body)
        prompt = _field(body, "prompt", (str, list))
        prompts = [prompt] if isinstance(prompt, str) else prompt
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise RequestError(400, "'prompt' must be a string or a list of strings", "prompt")
        replies, prompt_counts, completion_counts = self._generate(prompts, max_tokens, temperature)
        choices = [
            {"index": i, "text": r, "logprobs": None, "finish_reason": "length" if c >= max_tokens else "stop"}
            for i, (r, c) in enumerate(zip(replies, completion_counts, strict=True))
        ]
        return self._envelope("text_completion", choices, sum(prompt_counts), sum(completion_counts))

    def _envelope(self, kind: str, choices: Any, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
        return {
            "id": f"shoptune-{uuid.uuid4().hex[:12]}",
            "object": kind,
            "created": int(time.time()),
            "model": self.name,
            "choices": choices if isinstance(choices, list) else [choices],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    def models(self) -> dict[str, Any]:
        return {"object": "list", "data": [{"id": self.name, "object": "model", "created": 0, "owned_by": "shoptune"}]}


def make_handler(server: ModelServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.rstrip("/") == "/v1/models":
                return self._reply(200, server.models())
            self._error(RequestError(404, f"no route {self.path}", kind="not_found_error"))

        def do_POST(self) -> None:
            routes = {"/v1/chat/completions": server.chat, "/v1/completions": server.complete}
            route = routes.get(self.path.rstrip("/"))
            try:
                if route is None:
                    raise RequestError(404, f"no route {self.path}", kind="not_found_error")
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"null")
                except json.JSONDecodeError:
                    raise RequestError(400, "the request body is not valid JSON") from None
                if not isinstance(body, dict):
                    raise RequestError(400, "the request body must be a JSON object")
                self._reply(200, route(body))
            except RequestError as exc:
                self._error(exc)
            except Exception as exc:
                self._error(RequestError(500, f"{type(exc).__name__}: {exc}", kind="server_error"))

        def _error(self, exc: RequestError) -> None:
            self._reply(
                exc.status,
                {
                    "error": {
                        "message": exc.message,
                        "type": exc.kind,
                        "param": exc.param,
                        "code": exc.kind if exc.status == 404 else None,
                    }
                },
            )

        def _reply(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload, ensure_ascii=False).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def build_server(model_server: ModelServer, host: str, port: int) -> ThreadingHTTPServer:
    return ThreadingHTTPServer((host, port), make_handler(model_server))
