"""The OpenAI-compatible backend against a real HTTP server on loopback."""

import json
import threading
import typing
from http.server import ThreadingHTTPServer

import pytest

from shoptune.evaluate.config import EvalConfig
from shoptune.evaluate.runner import run_eval
from shoptune.schema import read_examples
from tests.helpers.http import JsonHandler


def reply_for(text: str) -> str:
    """The test server's fixed policy: a digit for anything that asks for an 'Answer:', else a list."""
    return "1" if "Answer:" in text else "2, 1, 3"


class Handler(JsonHandler):
    seen: typing.ClassVar[list] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if "ping" not in (body.get("prompt"), (body.get("messages") or [{}])[-1].get("content")):
            Handler.seen.append((self.path, body))  # the probe before the first request is not an answer
        if body["model"] != "shop-model":
            return self._send(404, {"error": {"message": f"model {body['model']} not found", "type": "not_found"}})
        if self.path == "/v1/chat/completions":
            text = reply_for(body["messages"][-1]["content"])
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            obj = "chat.completion"
        else:
            choice = {"index": 0, "text": reply_for(body["prompt"]), "finish_reason": "stop"}
            obj = "text_completion"
        usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
        self._send(
            200, {"id": "x", "object": obj, "created": 0, "model": body["model"], "choices": [choice], "usage": usage}
        )


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()


@pytest.mark.parametrize("api", ["chat", "completions"])
def test_answers_come_from_the_server(api, server, dev_set, tmp_path):
    Handler.seen.clear()
    config = EvalConfig(backend="openai", model="shop-model", base_url=server, api=api, concurrency=4)
    result = run_eval(dev_set, tmp_path, config, progress=False)
    examples = read_examples(dev_set)
    rows = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert [r["response"] for r in rows] == [reply_for(ex.input_field) for ex in examples]
    assert len(Handler.seen) == 96 and result.computed == 96
    path, body = Handler.seen[0]
    assert path == f"/v1/{'chat/completions' if api == 'chat' else 'completions'}"
    assert body["temperature"] == 0.0
    # Multiple choice asks for one token; the system prompt of the official baselines is sent.
    sent = body["messages"][0]["content"] if api == "chat" else body["prompt"]
    assert sent.startswith("You are a helpful online shopping assistant")
    assert json.loads((tmp_path / "scores.json").read_text())["tasks"]["task2"]["n"] == 4


def test_server_errors_are_user_errors(server, dev_set, tmp_path, run_cli):
    code, _, err = run_cli(
        "eval",
        "run",
        dev_set,
        "--out",
        tmp_path / "out",
        "--backend",
        "openai",
        "--base-url",
        server,
        "--model",
        "no-such-model",
        "--no-progress",
    )
    assert code == 2 and err.count("\n") == 1 and "no model 'no-such-model' there" in err
