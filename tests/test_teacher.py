"""Teacher generation against a real HTTP server on loopback that injects faults."""

import hashlib
import json
import re
import threading
import time
import typing
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from shoptune.data.generate import GenerateSpec, generate
from shoptune.schema import read_examples

ROOT = Path(__file__).resolve().parents[1]
SUBTASKS = ["category_parent", "brand_ner", "query_offer_ranking", "subcategory_retrieval", "category_explanation"]


def valid_content(task_type: str, name: str, k: int) -> dict:
    if task_type == "multiple-choice":
        return {
            "input_field": f"Question {k} on {name}?\n0. a{k}\n1. b{k}\n2. c{k}\n3. d{k}\nAnswer: ",
            "output_field": k % 4,
        }
    if task_type == "retrieval":
        return {"input_field": f"Pick for {name} {k}:\n1. x\n2. y\n3. z\n4. w\nOutput:", "output_field": [1, 3]}
    if task_type == "ranking":
        cands = "\n".join(f"{i}. item {i} v{k}" for i in range(1, 6))
        return {"input_field": f"Rank for {name} {k}:\n{cands}\nOutput:", "output_field": [1, 0.1, 0, 0.01, 0]}
    if task_type == "named_entity_recognition":
        return {"input_field": f"Title {k}: AcmeCo{k} kettle\nOutput:", "output_field": [f"AcmeCo{k}"]}
    return {"input_field": f"Explain item {k} of {name}\nOutput:", "output_field": f"Item {k} is a useful product."}


class FaultyTeacher(BaseHTTPRequestHandler):
    """The first request for each (subtask, example number) fails in one of seven ways; later ones succeed."""

    lock = threading.Lock()
    calls: typing.ClassVar[Counter] = Counter()
    first_seen: typing.ClassVar[set] = set()
    always_invalid: typing.ClassVar[set] = set()

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["messages"][-1]["content"]
        if prompt == "ping":  # the probe before the first request
            return self._send(200, self._envelope(body, "pong"))
        name = re.search(r"Subtask: (\w+)", prompt).group(1)
        task_type = re.search(r"Task type: (\S+)", prompt).group(1)
        k = int(re.search(r"example number (\d+)", prompt).group(1))
        with self.lock:
            first = (name, k) not in self.first_seen
            self.first_seen.add((name, k))
            fault = int(hashlib.sha1(f"{name}{k}".encode()).hexdigest(), 16) % 8 if first else 7
            self.calls["total"] += 1
            self.calls[f"fault{fault}"] += 1
        content = json.dumps(valid_content(task_type, name, k))
        if (name, k) in self.always_invalid:
            content = json.dumps({"input_field": "no options here", "output_field": 9})
        if fault == 0:
            return self._send(429, {"error": {"message": "slow down"}}, {"retry-after": "0"})
        if fault == 1:
            return self._send(500, {"error": {"message": "boom"}})
        if fault == 2:
            time.sleep(1.2)  # past the client's timeout: the client gives up and retries
            return self._send(200, self._envelope(body, content))
        if fault == 3:
            return self._send_raw(200, b'{"id": "x", "choices": [ {"mess')
        if fault == 4:
            content = "Sure! Here is a new example for you."
        if fault == 5:
            content = "```json\n" + content + "\n```"  # fenced JSON is accepted
        self._send(200, self._envelope(body, content))

    @staticmethod
    def _envelope(body, content):
        return {
            "id": "c",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
        }

    def _send(self, status, payload, headers=None):
        self._send_raw(status, json.dumps(payload).encode(), headers)

    def _send_raw(self, status, data, headers=None):
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client timed out and went away

    def log_message(self, *args):
        pass


class QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        pass


@pytest.fixture
def teacher_url():
    FaultyTeacher.calls.clear()
    FaultyTeacher.first_seen.clear()
    FaultyTeacher.always_invalid.clear()
    httpd = QuietServer(("127.0.0.1", 0), FaultyTeacher)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()


def spec(url, **overrides):
    settings = {
        "name": "t",
        "model": "teacher-x",
        "base_url": url,
        "subtasks": SUBTASKS,
        "examples_per_subtask": 6,
        "timeout": 0.5,
        "max_retries": 3,
        "concurrency": 6,
        "raw_dir": ROOT / "data" / "raw",
        "price_per_1k_prompt_tokens": 0.01,
        "price_per_1k_completion_tokens": 0.03,
    }
    return GenerateSpec(**{**settings, **overrides})


@pytest.mark.slow
def test_faults_lose_and_duplicate_nothing_and_a_rerun_makes_no_call(teacher_url, tmp_path):
    stats = generate(spec(teacher_url), tmp_path, progress=False)
    examples = read_examples(tmp_path / "generated.jsonl")
    assert (stats["requested"], stats["produced"], stats["dropped"]) == (30, 30, 0)
    assert len(examples) == 30 and len({ex.id for ex in examples}) == 30
    assert Counter(ex.task_name for ex in examples) == dict.fromkeys(SUBTASKS, 6)
    assert all(ex.source == "teacher:teacher-x" for ex in examples)
    # Every kind of fault happened, and was either retried by the client or asked again by shoptune.
    assert all(FaultyTeacher.calls[f"fault{f}"] for f in range(6)), FaultyTeacher.calls
    assert stats["failed_requests"] >= 1 and stats["invalid"].get("not JSON", 0) >= 1
    assert stats["http_calls"] > 30 and stats["cache_hits"] == 0
    assert stats["cost"] == pytest.approx((stats["prompt_tokens"] * 0.01 + stats["completion_tokens"] * 0.03) / 1000)

    first = (tmp_path / "generated.jsonl").read_bytes()
    calls_before = FaultyTeacher.calls["total"]
    again = generate(spec(teacher_url), tmp_path, progress=False)
    assert FaultyTeacher.calls["total"] == calls_before, "the rerun must be served from the cache"
    assert again["http_calls"] == 0 and again["produced"] == 30
    assert (tmp_path / "generated.jsonl").read_bytes() == first


def test_examples_that_never_validate_are_dropped_and_counted(teacher_url, tmp_path):
    FaultyTeacher.always_invalid.update({("category_parent", 2), ("category_parent", 4)})
    stats = generate(spec(teacher_url, subtasks=["category_parent"], attempts=2), tmp_path, progress=False)
    assert (stats["produced"], stats["dropped"]) == (4, 2)
    assert stats["invalid"]["answer is not one of the listed options"] >= 2
    assert len(read_examples(tmp_path / "generated.jsonl")) == 4


def test_generated_examples_join_a_mixture(teacher_url, tmp_path):
    from shoptune.data.build import build_mixture
    from shoptune.data.spec import MixtureSpec

    generate(spec(teacher_url, subtasks=["brand_ner"]), tmp_path / "gen", progress=False)
    mixture = MixtureSpec(
        name="m",
        raw_dir=ROOT / "data" / "raw",
        subtasks=["brand_ner"],
        examples_per_subtask=10,
        validation_per_subtask=0,
        extra_examples=[tmp_path / "gen" / "generated.jsonl"],
    )
    info = build_mixture(mixture, tmp_path / "mix")
    assert info["by_source"]["teacher:teacher-x"] == 6
