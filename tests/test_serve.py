"""`shoptune serve`: the official openai client against the server on loopback, and its limits."""

import asyncio
import contextlib
import json
import socket
import threading
import time
import urllib.error
import urllib.request

import openai
import pytest

from shoptune.evaluate.backends import HFBackend
from shoptune.evaluate.config import EvalConfig
from shoptune.evaluate.runner import run_eval
from shoptune.schema import read_examples
from shoptune.serve import ModelServer, ServeLimits, listen, make_app, run

KEY = "test-key"


@contextlib.contextmanager
def serving(model, limits: ServeLimits, api_key: str | None = KEY):
    """The real server (FastAPI on Hypercorn) in a thread, on a free loopback port; stopped on exit."""
    server = ModelServer(HFBackend(str(model), system_prompt=None), "shop", limits)
    sock = listen("127.0.0.1", 0)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"  # listening already: clients wait in its backlog
    loop, stop = asyncio.new_event_loop(), None
    started = threading.Event()

    def main() -> None:
        nonlocal stop
        asyncio.set_event_loop(loop)
        stop = asyncio.Event()
        started.set()
        loop.run_until_complete(run(make_app(server, api_key), sock, limits, stop))

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    started.wait()
    try:
        yield url
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=30)
        server.scheduler.close()


@pytest.fixture(scope="module")
def served(tiny_model):
    with serving(tiny_model, ServeLimits(max_tokens=128, max_prompts=4, read_timeout=2, max_body_bytes=65536)) as url:
        yield url


def client(url, key=KEY):
    return openai.OpenAI(base_url=url, api_key=key, max_retries=0)


def raw(url: str, method: str, path: str, body: bytes | None = None, key: str = KEY) -> tuple[int, dict]:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    request = urllib.request.Request(url + path, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_chat_completions_and_models(served):
    api = client(served)
    assert [m.id for m in api.models.list()] == ["shop"]
    ask = {"model": "shop", "messages": [{"role": "user", "content": "A kettle"}], "max_tokens": 5, "temperature": 0}
    reply, again = api.chat.completions.create(**ask), api.chat.completions.create(**ask)
    assert reply.choices[0].message.content == again.choices[0].message.content  # greedy is deterministic
    assert reply.usage.completion_tokens <= 5 and reply.usage.prompt_tokens > 0
    text = api.completions.create(model="shop", prompt=["one", "two"], max_tokens=3)
    assert [c.index for c in text.choices] == [0, 1]


def test_streaming_gives_the_same_text_as_one_reply(served):
    api = client(served)
    ask = {"model": "shop", "messages": [{"role": "user", "content": "A kettle"}], "max_tokens": 8}
    whole = api.chat.completions.create(**ask).choices[0]
    chunks = list(api.chat.completions.create(**ask, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == whole.message.content
    assert chunks[-1].choices[0].finish_reason == whole.finish_reason
    pieces = list(api.completions.create(model="shop", prompt="A kettle", max_tokens=8, stream=True))
    assert (
        "".join(p.choices[0].text for p in pieces)
        == api.completions.create(model="shop", prompt="A kettle", max_tokens=8).choices[0].text
    )


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        ({"model": "other", "messages": [{"role": "user", "content": "x"}]}, openai.NotFoundError, "does not exist"),
        ({"model": "shop", "messages": []}, openai.BadRequestError, "messages"),
        ({"model": "shop", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, openai.BadRequestError,
         "max_tokens"),
        ({"model": "shop", "messages": [{"role": "user", "content": "x"}], "max_tokens": 129}, openai.BadRequestError,
         "at most 128"),
        ({"model": "shop", "messages": [{"role": "user", "content": "x"}], "n": 2}, openai.BadRequestError, "n"),
        ({"model": "shop", "messages": [{"role": "user", "content": "word " * 3000}]}, openai.BadRequestError,
         "context holds"),
    ],
)  # fmt: skip
def test_bad_requests_get_openai_error_objects(served, kwargs, error, fragment):
    with pytest.raises(error) as raised:
        client(served).chat.completions.create(**kwargs)
    assert fragment in raised.value.body["message"]


def test_the_api_key_is_enforced(served):
    with pytest.raises(openai.AuthenticationError):
        client(served, key="wrong").models.list()
    assert raw(served, "GET", "/models", key="")[0] == 401


def test_limits_and_odd_requests_get_json_errors_without_internals(served):
    status, body = raw(served, "POST", "/completions", json.dumps({"model": "shop", "prompt": ["a"] * 5}).encode())
    assert status == 400 and "1 to 4 prompts" in body["error"]["message"]
    status, body = raw(served, "POST", "/completions", b'{"model": "shop", "prompt": "' + b"a" * 70000 + b'"}')
    assert status == 413 and "exceeds 65536 bytes" in body["error"]["message"]
    assert raw(served, "PUT", "/models")[0] == 405
    status, body = raw(served, "POST", "/chat/completions", b"{not json")
    assert status == 400 and set(body["error"]) >= {"message", "type"}
    status, body = raw(served, "POST", "/chat/completions", b'{"model": "shop", "messages": [{"role": "user"}]}')
    assert status == 400 and "Traceback" not in body["error"]["message"]


@pytest.mark.parametrize(
    ("sent", "expected"),
    [
        (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Le", b""),  # headers never complete: closed
        (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{", b"HTTP/1.1 408"),
    ],
)
@pytest.mark.slow
def test_a_half_sent_request_is_timed_out(served, sent, expected):
    port = int(served.split(":")[2].removesuffix("/v1"))
    with socket.create_connection(("127.0.0.1", port)) as half:
        half.sendall(sent)
        half.settimeout(15)  # a server that held the connection would make recv time out here
        start = time.monotonic()
        data = half.recv(4096)
        assert data.startswith(expected) if expected else data == b"", data
        assert time.monotonic() - start < 8  # the fixture's read timeout is 2 s


def test_a_slow_answer_keeps_its_connection(tiny_model):
    """A client quietly waiting longer than the read timeout for its answer is not cut off."""
    with serving(tiny_model, ServeLimits(max_tokens=256, read_timeout=1, batch=1)) as url:
        reply = client(url).completions.create(model="shop", prompt=["word " * 200] * 4, max_tokens=256)
    assert len(reply.choices) == 4


@pytest.mark.slow
def test_a_large_request_does_not_starve_small_ones(tiny_model):
    with serving(tiny_model, ServeLimits(max_tokens=32, max_prompts=64, batch=2)) as url:
        api, done = client(url), {}

        def big() -> None:
            api.completions.create(model="shop", prompt=["word " * 40] * 64, max_tokens=32)
            done["big"] = time.monotonic()

        thread = threading.Thread(target=big)
        thread.start()
        time.sleep(0.5)  # the big request is being answered, 2 of its 64 prompts per turn
        api.completions.create(model="shop", prompt="small", max_tokens=4)
        done["small"] = time.monotonic()
        thread.join()
    assert done["small"] < done["big"]


@pytest.mark.slow
def test_a_full_queue_is_refused_with_503(tiny_model):
    with serving(tiny_model, ServeLimits(max_queue=1, batch=1, max_tokens=64, max_prompts=64)) as url:
        api = client(url)
        big = threading.Thread(target=lambda: api.completions.create(model="shop", prompt=["x"] * 64, max_tokens=64))
        big.start()
        time.sleep(0.5)
        with pytest.raises(openai.APIStatusError) as raised:
            api.completions.create(model="shop", prompt="small", max_tokens=2)
        big.join()
    assert raised.value.status_code == 503


def test_eval_over_the_server_matches_the_model_in_process(served, tiny_model, dev_set, tmp_path, monkeypatch):
    """The server renders chat as shoptune renders prompts, so answers over HTTP equal in-process answers."""
    monkeypatch.setenv("SHOPTUNE_TEST_KEY", KEY)
    remote = EvalConfig(
        backend="openai", model="shop", base_url=served, limit=24, mc_mode="generate", api_key_env="SHOPTUNE_TEST_KEY"
    )
    local = EvalConfig(model=str(tiny_model), limit=24, mc_mode="generate")
    run_eval(dev_set, tmp_path / "remote", remote, progress=False)
    run_eval(dev_set, tmp_path / "local", local, progress=False)
    read = [json.loads(line) for line in (tmp_path / "remote" / "predictions.jsonl").read_text().splitlines()]
    mine = [json.loads(line) for line in (tmp_path / "local" / "predictions.jsonl").read_text().splitlines()]
    same = sum(a["response"] == b["response"] for a, b in zip(read, mine, strict=True))
    assert same >= 22, f"only {same}/24 answers agree"


def test_a_constrained_server_answers_what_the_parsers_read(tiny_model):
    from shoptune.evaluate.constraints import numbers_for
    from shoptune.evaluate.parsers import parse_response
    from shoptune.schema import TaskType
    from tests.helpers.tiny_model import DEV_SET

    examples = read_examples(DEV_SET)
    ranking = next(ex.input_field for ex in examples if ex.task_type is TaskType.RANKING)
    mc = next(ex.input_field for ex in examples if ex.is_multiple_choice)
    limits = ServeLimits(max_tokens=64)
    with serving(tiny_model, limits) as url:  # the same model, unconstrained, for contrast
        loose = client(url).completions.create(model="shop", prompt=ranking, max_tokens=24).choices[0].text
    server = ModelServer(HFBackend(str(tiny_model), system_prompt=None), "shop", limits, constrained=True)
    sock = listen("127.0.0.1", 0)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    thread = threading.Thread(target=lambda: loop.run_until_complete(run(make_app(server, KEY), sock, limits, stop)))
    thread.start()
    try:
        api = client(url)
        told = api.completions.create(model="shop", prompt=ranking, max_tokens=24).choices[0].text  # from the prompt
        parsed = parse_response(told, TaskType.RANKING)
        assert sorted(parsed) == sorted(numbers_for(TaskType.RANKING, ranking).allowed), (told, loose)
        chat = api.chat.completions.create(
            model="shop",
            messages=[{"role": "user", "content": mc}],
            max_tokens=5,
            extra_body={"task_type": "multiple-choice"},
        )
        assert chat.choices[0].message.content.strip() in {
            str(n) for n in numbers_for(TaskType.MULTIPLE_CHOICE, mc).allowed
        }
        status, body = raw(
            url, "POST", "/completions", json.dumps({"model": "shop", "prompt": "x", "task_type": "poem"}).encode()
        )
        assert status == 400 and "task_type" in json.dumps(body)
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=30)
        server.scheduler.close()
