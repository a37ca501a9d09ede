"""`shoptune serve`: the official openai client against the server on loopback."""

import json
import threading

import openai
import pytest

from shoptune.evaluate.backends import HFBackend
from shoptune.evaluate.runner import EvalConfig, run_eval
from shoptune.serve import ModelServer, build_server


@pytest.fixture(scope="module")
def served(tiny_model):
    server = build_server(ModelServer(HFBackend(str(tiny_model), system_prompt=None), "shop"), "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def client(url):
    return openai.OpenAI(base_url=url, api_key="none", max_retries=0)


def test_chat_completions_and_models(served):
    api = client(served)
    assert [m.id for m in api.models.list()] == ["shop"]
    reply = api.chat.completions.create(
        model="shop", messages=[{"role": "user", "content": "A kettle"}], max_tokens=5, temperature=0
    )
    again = api.chat.completions.create(
        model="shop", messages=[{"role": "user", "content": "A kettle"}], max_tokens=5, temperature=0
    )
    assert reply.choices[0].message.content == again.choices[0].message.content  # greedy is deterministic
    assert reply.usage.completion_tokens <= 5 and reply.usage.prompt_tokens > 0
    text = api.completions.create(model="shop", prompt=["one", "two"], max_tokens=3)
    assert [c.index for c in text.choices] == [0, 1]


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        ({"model": "other", "messages": [{"role": "user", "content": "x"}]}, openai.NotFoundError, "does not exist"),
        ({"model": "shop", "messages": []}, openai.BadRequestError, "non-empty list"),
        (
            {"model": "shop", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0},
            openai.BadRequestError,
            "max_tokens",
        ),
        (
            {"model": "shop", "messages": [{"role": "user", "content": "x"}], "stream": True},
            openai.BadRequestError,
            "streaming",
        ),
        ({"model": "shop", "messages": [{"role": "user", "content": "x"}], "n": 2}, openai.BadRequestError, "n=1"),
    ],
)
def test_bad_requests_get_openai_error_objects(served, kwargs, error, fragment):
    with pytest.raises(error) as raised:
        client(served).chat.completions.create(**kwargs)
    assert fragment in raised.value.body["message"] if isinstance(raised.value.body, dict) else str(raised.value)


def test_eval_over_the_server_matches_the_model_in_process(served, tiny_model, dev_set, tmp_path):
    """The server renders chat as shoptune renders prompts, so answers over HTTP equal in-process answers."""
    remote = EvalConfig(backend="openai", model="shop", base_url=served, limit=24, mc_mode="generate")
    local = EvalConfig(model=str(tiny_model), limit=24, mc_mode="generate")
    run_eval(dev_set, tmp_path / "remote", remote, progress=False)
    run_eval(dev_set, tmp_path / "local", local, progress=False)
    read = [json.loads(line) for line in (tmp_path / "remote" / "predictions.jsonl").read_text().splitlines()]
    mine = [json.loads(line) for line in (tmp_path / "local" / "predictions.jsonl").read_text().splitlines()]
    same = sum(a["response"] == b["response"] for a, b in zip(read, mine, strict=True))
    assert same >= 22, f"only {same}/24 answers agree"
