"""`shoptune serve MODEL [--adapter DIR]`: an OpenAI-compatible server for a base model plus adapter.

Shop services call the adapted model with any OpenAI client, and the server can act as the teacher
endpoint of `shoptune data generate` or as the backend of `shoptune eval run --backend openai`.
Endpoints: GET /v1/models, POST /v1/chat/completions and /v1/completions, both with `stream: true`.

The HTTP side is FastAPI on Hypercorn, chosen over a hand-written server for what a server exposed to
other programs needs: request validation, OpenAI-style error objects for every failure, server-sent
events, and (Hypercorn rather than uvicorn) an idle timer that also runs while a request's headers are
incomplete, so connections that never finish sending a request are closed instead of held; a body that
does not arrive in time gets 408. vLLM's own OpenAI server is the better choice on a GPU when vLLM is
installed; this one serves any transformers model with a PEFT adapter, on a CPU too.

One thread owns the model and answers every request's prompts in one continuous batch (`evaluate.engine`, the
loop evaluation uses): up to `batch` answers decode together, an ended answer's place goes to a waiting prompt,
and requests take turns to join, so a large request delays a small one by the answers already running at most;
requests beyond `max_queue` are refused with 503 rather than held. Bodies, prompts per request, prompt length and
max_tokens are bounded. An API key (the SHOPTUNE_API_KEY variable) is checked when set, and required
to listen beyond loopback.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ipaddress
import json
import logging
import queue
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from shoptune.config import StrictConfig
from shoptune.errors import ShoptuneError
from shoptune.evaluate.backends import HFBackend
from shoptune.evaluate.constraints import CONSTRAINED, constrainable, rule_for, task_type_of
from shoptune.evaluate.engine import Request as Row
from shoptune.schema import TaskType
from shoptune.tasks.render import render_chat

API_KEY_ENV = "SHOPTUNE_API_KEY"
log = logging.getLogger("shoptune.serve")


class ServeLimits(StrictConfig):
    """What one client may ask of the server, so that no client can take it from the others."""

    max_body_bytes: int = Field(1 << 20, ge=1024, description="the largest request body")
    max_prompts: int = Field(64, ge=1, description="prompts per /v1/completions request")
    max_tokens: int = Field(1024, ge=1, description="the most tokens one request may ask for")
    batch: int = Field(16, ge=1, description="answers decoded together (the continuous batch's width)")
    max_queue: int = Field(64, ge=1, description="requests waiting or running; more get 503")
    read_timeout: float = Field(10.0, gt=0, description="seconds a client may take to send its request")


class ApiError(Exception):
    """An OpenAI-style error: the client's fault (4xx) or the server's state (503)."""

    def __init__(self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.kind = status, message, param, kind

    def body(self) -> dict[str, Any]:
        code = {401: "invalid_api_key", 404: "model_not_found"}.get(self.status)
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": code}}


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant", "developer"]
    content: str


class Common(BaseModel):
    """The OpenAI request fields shoptune honours; others a client sends (top_p, user, ...) are ignored."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)
    model: str
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    n: Literal[1] = 1
    stream: bool = False
    # shoptune's extension (an OpenAI client sends it with extra_body): the ShopBench task type the prompt asks
    # for, which a server started with --constrained keeps the answer to; without it, told from the prompt.
    task_type: TaskType | None = None

    def budget(self, limit: int) -> int:
        """Tokens to generate at most: as asked, or 256 (capped by the server's limit) when not asked."""
        asked = self.max_completion_tokens or self.max_tokens
        if asked is not None and asked > limit:
            raise ApiError(400, f"'max_tokens' must be at most {limit} on this server", "max_tokens")
        return asked or min(256, limit)


class ChatRequest(Common):
    messages: list[Message] = Field(min_length=1)


class CompletionRequest(Common):
    prompt: str | list[str]


class Answer(NamedTuple):
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish: str  # OpenAI's finish_reason: "stop" or "length"


@dataclass
class Job:
    """The prompts of one request, answered in the scheduler's continuous batch."""

    texts: list[str]
    max_tokens: int
    temperature: float
    constrain: list[tuple[TaskType | None, str] | None] = field(default_factory=list)  # per text: type, question
    future: Future = field(default_factory=Future)
    stream: queue.Queue | None = None  # a streamed reply's text, piece by piece, then None
    cancelled: threading.Event = field(default_factory=threading.Event)
    answers: list[Answer | None] = field(default_factory=list)


class Scheduler:
    """The one thread that runs the model. Every request's prompts join one continuous batch (`evaluate.engine`):
    a prompt takes the place an ended answer frees, and requests take turns to join, so a large request delays a
    small one by at most the answers already running, never by its own queue of prompts."""

    def __init__(self, backend: HFBackend, limits: ServeLimits) -> None:
        self.backend, self.limits = backend, limits
        backend.width = limits.batch
        self._incoming: collections.deque[tuple[Job, list[Row]]] = collections.deque()
        self._of: dict[int, tuple[Job, int]] = {}  # each prompt's job, and its place there
        self._open = 0  # submitted and not yet answered: waiting or being worked on
        self._ready = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._work, name="shoptune-model", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> Job:
        rows = self.backend.tokenize(job.texts)
        job.answers = [None] * len(job.texts)
        requests = []
        for k, (ids, rule) in enumerate(zip(rows, job.constrain or [None] * len(rows), strict=True)):
            kind, question = rule if rule is not None else (None, "")
            request = Row(
                ids,
                job.max_tokens,
                temperature=job.temperature,
                rule=rule_for(self.backend.tokenizer, kind, question) if kind is not None else None,
                group=id(job),  # a job's prompts take turns with other jobs' to join
                on_tokens=self._streamer(job, kind, question) if job.stream is not None else None,
                cancelled=job.cancelled.is_set,
            )
            requests.append(request)
            self._of[id(request)] = (job, k)
        with self._ready:
            if self._open >= self.limits.max_queue:
                raise ApiError(503, "the server is busy; retry later", kind="server_busy")
            self._open += 1
            self._incoming.append((job, requests))
            self._ready.notify()
        return job

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify()

    def _work(self) -> None:
        engine = self.backend.engine
        engine.join_at = 1  # a waiting request joins at the first free slot
        while True:
            with self._ready:
                while not self._incoming and not engine.busy() and not self._closed:
                    self._ready.wait()
                if self._closed:
                    return
                arrived = list(self._incoming)
                self._incoming.clear()
            try:
                for _, requests in arrived:
                    for request in requests:
                        engine.submit(request)
                        if request.done:  # no room to answer at all
                            self._answered(request)
                for request in engine.step():
                    self._answered(request)
            except Exception as exc:  # the answers under way fail, the server goes on
                log.exception("generation failed")
                under_way = [*engine.running, *engine.waiting]
                failed = {id(job): job for job, _ in (self._of.pop(id(r)) for r in under_way if id(r) in self._of)}
                failed.update({id(job): job for job, _ in arrived})
                engine.running.clear()
                engine.lengths.clear()
                engine.waiting.clear()
                for job in failed.values():
                    self._settle(job, exc)

    def _answered(self, request: Row) -> None:
        job, index = self._of.pop(id(request))
        kind, question = (job.constrain[index] if job.constrain else None) or (None, "")
        text = self.backend.finish_text(request, kind, question)
        special = set(self.backend.tokenizer.all_special_ids)
        made = sum(1 for t in request.new if t not in special)
        job.answers[index] = Answer(text, len(request.ids), made, "length" if request.finish == "length" else "stop")
        if all(a is not None for a in job.answers) or request.finish == "cancelled":
            self._settle(job)

    def _streamer(self, job: Job, kind: TaskType | None, question: str) -> Callable[[Row], None]:
        """What a streamed request does after each step: the text its new tokens add (held back while a character
        is incomplete), then, once it has ended, the rest (a constrained word the budget cut, run to its end)."""
        sent = ""

        def on_tokens(request: Row) -> None:
            nonlocal sent
            assert job.stream is not None
            if request.done:
                text = self.backend.finish_text(request, kind, question)
            else:
                text = self.backend.tokenizer.decode(request.new, skip_special_tokens=True)
                if text.endswith("\ufffd"):
                    return
            if text.startswith(sent) and len(text) > len(sent):
                job.stream.put(text[len(sent) :])
                sent = text
            if request.done:
                job.stream.put(None)

        return on_tokens

    def _settle(self, job: Job, error: Exception | None = None) -> None:
        if job.future.done():
            return
        with self._ready:
            self._open -= 1
        if job.stream is not None and error is not None:
            job.stream.put(None)
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(job.answers)


class ModelServer:
    """The request logic apart from HTTP: rendering, limits, and OpenAI's response shapes."""

    def __init__(
        self, backend: HFBackend, name: str, limits: ServeLimits | None = None, constrained: bool = False
    ) -> None:
        self.backend, self.name, self.constrained = backend, name, constrained
        self.limits = limits or ServeLimits()
        self.scheduler = Scheduler(backend, self.limits)
        self.context = backend.context_length()

    def chat_text(self, messages: list[Message]) -> str:
        tokenizer = self.backend.tokenizer
        plain = [{"role": m.role, "content": m.content} for m in messages]
        if getattr(tokenizer, "chat_template", None):
            try:
                return render_chat(plain, tokenizer)  # a system message where the template takes none: folded in
            except Exception as exc:  # the template's own refusal of this conversation (roles out of turn, say)
                raise ApiError(400, f"the model's chat template refuses these messages: {exc}", "messages") from None
        # No template: the plain layout shoptune trains and evaluates with (system, blank line, user).
        return "\n\n".join(m.content for m in messages)

    def check(self, body: Common, texts: list[str]) -> int:
        """The request's token budget, once its model and prompts are known to fit."""
        if body.model != self.name:
            raise ApiError(404, f"The model '{body.model}' does not exist; this server serves '{self.name}'", "model")
        budget = body.budget(self.limits.max_tokens)
        if self.context is not None:
            lengths = self.backend.tokenizer(texts, add_special_tokens=False)["input_ids"]
            longest = max(len(ids) for ids in lengths)
            if longest >= self.context:
                raise ApiError(
                    400, f"a prompt has {longest} tokens; this model's context holds {self.context - 1}", "prompt"
                )
        return budget

    def job(
        self, body: Common, texts: list[str], stream: queue.Queue | None = None, questions: list[str] | None = None
    ) -> Job:
        """`questions`: what each text asks, as written (a chat's last user message), for constrained answers."""
        budget = self.check(body, texts)
        constrain: list[tuple[TaskType | None, str] | None] = []
        if self.constrained:
            for question in questions or texts:
                kind = body.task_type or task_type_of(question, is_multiple_choice=False)
                if kind in CONSTRAINED and not constrainable(kind, question):  # only a named type gets here
                    raise ApiError(
                        400,
                        f"task_type {kind.value}: the prompt lists no numbered candidates, so its answer cannot be "
                        "kept to that form; list them ('1. ...') or leave task_type out",
                        "task_type",
                    )
                constrain.append((kind, question) if kind in CONSTRAINED else None)
        return self.scheduler.submit(Job(texts, budget, body.temperature, constrain, stream=stream))

    def envelope(self, kind: str, choices: list[dict[str, Any]], answers: list[Answer]) -> dict:
        prompt_tokens = sum(a.prompt_tokens for a in answers)
        completion_tokens = sum(a.completion_tokens for a in answers)
        return {
            "id": f"shoptune-{uuid.uuid4().hex[:12]}",
            "object": kind,
            "created": int(time.time()),
            "model": self.name,
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    def models(self) -> dict[str, Any]:
        return {"object": "list", "data": [{"id": self.name, "object": "model", "created": 0, "owned_by": "shoptune"}]}


def make_app(server: ModelServer, api_key: str | None = None) -> Any:
    """The FastAPI application: routes, the API key, the body limit, and OpenAI-style errors for everything."""
    app = FastAPI(title="shoptune", docs_url=None, redoc_url=None, openapi_url=None)

    def authorised(request: Request) -> None:
        if api_key is None:
            return
        given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not secrets.compare_digest(given.encode(), api_key.encode()):
            raise ApiError(401, "a valid API key is required (Authorization: Bearer KEY)")

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"] if p != "body") or None
        message = f"'{where}': {first['msg']}" if where else str(first["msg"])
        return JSONResponse(ApiError(400, message, where).body(), status_code=400)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return JSONResponse(ApiError(exc.status_code, str(exc.detail), kind=kind).body(), status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        log.error("request failed", exc_info=exc)  # the details go to the server's log, not to the client
        return JSONResponse(ApiError(500, "internal error", kind="server_error").body(), status_code=500)

    @app.get("/v1/models", dependencies=[Depends(authorised)])
    async def models() -> dict[str, Any]:
        return server.models()

    @app.post("/v1/chat/completions", dependencies=[Depends(authorised)])
    async def chat(body: ChatRequest) -> Any:
        text = server.chat_text(body.messages)
        question = [m.content for m in body.messages if m.role == "user"][-1:] or [""]
        if body.stream:
            return _stream(server, body, text, "chat.completion.chunk", question)
        answers = await asyncio.wrap_future(server.job(body, [text], questions=question).future)
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": answers[0].text},
            "finish_reason": answers[0].finish,
        }
        return server.envelope("chat.completion", [choice], answers)

    @app.post("/v1/completions", dependencies=[Depends(authorised)])
    async def complete(body: CompletionRequest) -> Any:
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if not prompts or len(prompts) > server.limits.max_prompts:
            raise ApiError(400, f"'prompt' must hold 1 to {server.limits.max_prompts} prompts", "prompt")
        if body.stream:
            if len(prompts) != 1:
                raise ApiError(400, "streaming takes one prompt", "prompt")
            return _stream(server, body, prompts[0], "text_completion")
        answers = await asyncio.wrap_future(server.job(body, prompts).future)
        choices = [
            {"index": i, "text": a.text, "logprobs": None, "finish_reason": a.finish} for i, a in enumerate(answers)
        ]
        return server.envelope("text_completion", choices, answers)

    return RequestGuard(app, server.limits.max_body_bytes, server.limits.read_timeout)


def _stream(
    server: ModelServer, body: Common, text: str, kind: str, question: list[str] | None = None
) -> StreamingResponse:
    """Server-sent events as OpenAI sends them: a chunk per piece of text, a last one with the finish reason."""
    pieces: queue.Queue = queue.Queue()
    job = server.job(body, [text], stream=pieces, questions=question)
    ident, created = f"shoptune-{uuid.uuid4().hex[:12]}", int(time.time())

    def chunk(piece: str | None, finish: str | None) -> str:
        if kind == "chat.completion.chunk":
            delta = {"content": piece} if piece is not None else {}
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": piece or "", "logprobs": None, "finish_reason": finish}
        event = {"id": ident, "object": kind, "created": created, "model": server.name, "choices": [choice]}
        return f"data: {json.dumps(event, ensure_ascii=False)}\n\n"

    def events() -> Iterator[str]:
        try:
            if kind == "chat.completion.chunk":
                yield chunk("", None)  # OpenAI's first chunk names the role; its content starts empty
            for piece in iter(pieces.get, None):
                yield chunk(piece, None)
            (answer, *_) = job.future.result()
            yield chunk(None, answer.finish)
            yield "data: [DONE]\n\n"
        finally:
            job.cancelled.set()  # a client that went away stops its generation

    return StreamingResponse(events(), media_type="text/event-stream")


class RequestGuard:
    """ASGI middleware for the request's body: over `limit` bytes gets 413 (declared or not), and a body not
    received whole within `seconds` gets 408. (Hypercorn's idle timer covers headers that never complete; its
    read timeout would also cut a client that is quietly waiting for a long answer, so it is not used.)"""

    def __init__(self, app: Any, limit: int, seconds: float) -> None:
        self.app, self.limit, self.seconds = app, limit, seconds

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await self._refuse(send, 413, f"the request body exceeds {self.limit} bytes")
        deadline = asyncio.get_running_loop().time() + self.seconds
        seen, complete = 0, False

        async def guarded() -> dict:
            nonlocal seen, complete
            if complete:  # the body is in: what remains is waiting for a disconnect, with no deadline
                return await receive()
            left = deadline - asyncio.get_running_loop().time()
            try:
                message = await asyncio.wait_for(receive(), max(left, 0.001))
            except TimeoutError:
                raise _Refused(408, f"the request body did not arrive within {self.seconds:g} s") from None
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _Refused(413, f"the request body exceeds {self.limit} bytes")
            complete = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        try:
            await self.app(scope, guarded, send)
        except _Refused as refused:
            # The rest of the body is read while the refusal goes out: the server closes the connection (the
            # refusal says `connection: close`) only once its reader is not held up by a body nobody reads.
            draining = None if complete else asyncio.ensure_future(self._drain(receive))
            await self._refuse(send, refused.status, refused.message)
            if draining is not None:
                await draining

    async def _drain(self, receive: Any) -> None:
        """Read and drop what the client still sends of a refused body, up to 8 times the limit, for `seconds`."""
        loop = asyncio.get_running_loop()
        deadline, budget = loop.time() + self.seconds, 8 * self.limit
        with contextlib.suppress(TimeoutError):
            while budget > 0:
                message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0.001))
                budget -= len(message.get("body", b""))
                if message["type"] != "http.request" or not message.get("more_body", False):
                    return

    async def _refuse(self, send: Any, status: int, message: str) -> None:
        body = json.dumps(ApiError(status, message).body()).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        headers.append((b"connection", b"close"))  # the rest of a refused body is never read: the client must stop
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class _Refused(BaseException):  # not an Exception: FastAPI's body parsing would turn it into a 400
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def listen(host: str, port: int) -> socket.socket:
    """The bound, listening socket (port 0: any free port, which the socket then names)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ShoptuneError(f"cannot listen on {host}:{port} ({exc.strerror})") from None
    except socket.gaierror as exc:
        sock.close()
        raise ShoptuneError(f"cannot listen on {host}:{port} ({exc})") from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


async def run(app: Any, sock: socket.socket, limits: ServeLimits, stop: asyncio.Event | None = None) -> None:
    """Serve on `sock` until `stop` is set (or forever)."""
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"fd://{sock.detach()}"]  # Hypercorn owns (and closes) the socket from here on
    config.keep_alive_timeout = limits.read_timeout  # also closes a connection whose headers never complete
    config.accesslog = None
    config.errorlog = log
    trigger = stop.wait if stop is not None else None
    asyncio.get_running_loop().set_exception_handler(_quiet_cancellations)
    await serve(app, config, shutdown_trigger=trigger)


def _quiet_cancellations(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """A stop (Ctrl-C, SIGTERM) cancels the connections still open, which asyncio would report as errors with a
    traceback each; they are the stop doing its work. Anything else is reported as usual."""
    if isinstance(context.get("exception"), asyncio.CancelledError):
        return
    loop.default_exception_handler(context)
