"""The first hour: nothing waits forever, every config verb can be made small from the command line, evaluation
selects like lm-evaluation-harness, no verb writes into another's folder, one lock per real folder, names users
already know, and run records that say what made them."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from shoptune.errors import ShoptuneError
from shoptune.evaluate.selection import select
from shoptune.locks import writing
from shoptune.schema import read_examples, write_jsonl
from tests.helpers.http import JsonHandler

ROOT = Path(__file__).resolve().parents[1]
DEV = ROOT / "data" / "shopbench" / "development.json"


# --- the teacher: bounded waits, a probe, a dry run, a cap, failures by cause, no double billing -----------------


@pytest.fixture
def silent_endpoint():
    """A socket that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}/v1"
    stop.set()
    for conn in held:
        conn.close()
    server.close()


class Teacher(JsonHandler):
    """Answers the probe; real requests get `status` (200: a valid category_parent example, by number)."""

    status: ClassVar[int] = 200
    requests: ClassVar[list[str]] = []
    key: ClassVar[str | None] = None

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["messages"][-1]["content"]
        if self.key is not None and self.headers.get("Authorization") != f"Bearer {self.key}":
            return self._send(401, {"error": {"message": "bad key"}})
        if prompt != "ping":
            Teacher.requests.append(prompt)
            if self.status != 200:
                return self._send(self.status, {"error": {"message": "boom"}})
        number = prompt.split("example number ")[1].split(":")[0] if "example number" in prompt else "0"
        content = json.dumps(
            {"input_field": f"Parent of item {number}?\n0. a\n1. b\n2. c\n3. d\nAnswer: ", "output_field": 1}
        )
        choice = {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}
        usage = {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}
        self._send(
            200,
            {"id": "c", "object": "chat.completion", "created": 0, "model": "m", "choices": [choice], "usage": usage},
        )


@pytest.fixture
def teacher():
    Teacher.status, Teacher.requests, Teacher.key = 200, [], None
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Teacher)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()


def generation_spec(tmp_path: Path, url: str, **extra: object) -> Path:
    settings = {
        "name": "g",
        "model": "m",
        "base_url": url,
        "subtasks": ["category_parent"],
        "examples_per_subtask": 6,
        "attempts": 1,
        "timeout": 2,
        "max_retries": 1,
        "concurrency": 2,
        "raw_dir": None,
        "price_per_1k_prompt_tokens": 0.01,
        "price_per_1k_completion_tokens": 0.03,
        **extra,
    }
    path = tmp_path / "gen.yaml"
    path.write_text(json.dumps(settings))
    return path


def test_an_endpoint_that_never_answers_fails_in_seconds_with_what_to_check(silent_endpoint, tmp_path):
    import subprocess
    import sys

    spec = generation_spec(tmp_path, silent_endpoint)
    began = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "shoptune",
            "data",
            "generate",
            str(spec),
            "--out",
            str(tmp_path / "o"),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=60,  # a hang fails the test here
    )
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "no answer within 2 s" in done.stderr and silent_endpoint in done.stderr
    assert time.monotonic() - began < 30


def test_a_refused_connection_and_a_refused_key_say_what_to_set(teacher, tmp_path, run_cli, monkeypatch):
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{free.getsockname()[1]}/v1"
    code, _, err = run_cli(
        "data", "generate", generation_spec(tmp_path, closed), "--out", tmp_path / "a", "--no-progress"
    )
    assert code == 2 and "cannot connect: check base_url" in err, err
    Teacher.key = "right"
    monkeypatch.setenv("ACME_KEY", "wrong")
    spec = generation_spec(tmp_path, teacher, api_key_env="ACME_KEY")
    code, _, err = run_cli("data", "generate", spec, "--out", tmp_path / "b", "--no-progress")
    assert code == 2 and "the key was refused: set ACME_KEY" in err, err
    assert Teacher.requests == [], "nothing but the probe is sent"


def test_dry_run_counts_requests_tokens_and_cost_and_asks_nothing(teacher, tmp_path, run_cli):
    spec = generation_spec(tmp_path, teacher, raw_dir=str(ROOT / "data" / "raw"))
    code, _, err = run_cli(
        "data", "generate", spec, "--out", tmp_path / "o", "--dry-run", "--set", "examples_per_subtask=5"
    )
    assert code == 0, err
    assert "5 examples of 1 subtask(s): 0 answered in the cache, 5 new request(s)" in err
    assert "at the spec's prices" in err and Teacher.requests == []
    assert not (tmp_path / "o").exists()


def test_a_dry_run_needs_no_endpoint_and_a_run_without_one_says_what_to_set(tmp_path, run_cli, monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    spec = generation_spec(tmp_path, None)
    code, _, err = run_cli("data", "generate", spec, "--out", tmp_path / "o", "--dry-run")
    assert code == 0 and "6 new request(s)" in err, err
    code, _, err = run_cli("data", "generate", spec, "--out", tmp_path / "o", "--no-progress")
    assert code == 2 and err.count("\n") == 1 and "the teacher needs base_url" in err, err


def test_a_cap_keeps_what_was_made_and_a_partial_run_says_so_in_its_exit_status(teacher, tmp_path, run_cli):
    spec = generation_spec(tmp_path, teacher, max_requests=3)
    code, _, err = run_cli("data", "generate", spec, "--out", tmp_path / "o", "--no-progress")
    assert code == 1 and "partial: 3 of 6 examples" in err and "max_requests 3 reached" in err, err
    stats = json.loads((tmp_path / "o" / "stats.json").read_text())
    assert stats["produced"] == 3 and stats["http_calls"] == 3 and stats["failed"] == {"capped": 3}
    assert len(read_examples(tmp_path / "o" / "generated.jsonl")) == 3
    code, _, err = run_cli("data", "generate", spec, "--out", tmp_path / "o", "--no-progress", "--allow-partial")
    assert code == 0, err
    again = json.loads((tmp_path / "o" / "stats.json").read_text())
    # The rerun reads the three made before from the cache, bills none of them, and makes three more.
    assert again["cache_hits"] == 3 and again["produced"] == 6 and again["http_calls"] == 3
    assert again["prompt_tokens"] == 300 and again["cached_prompt_tokens"] == 300
    assert again["cost"] == pytest.approx((300 * 0.01 + 60 * 0.03) / 1000)


def test_failed_requests_are_counted_by_cause_and_the_first_is_printed(teacher, tmp_path, run_cli):
    Teacher.status = 500
    code, _, err = run_cli(
        "data", "generate", generation_spec(tmp_path, teacher), "--out", tmp_path / "o", "--no-progress"
    )
    assert code == 2 and "produced 0 of 6 examples (first failure: InternalServerError" in err, err
    stats = json.loads((tmp_path / "o" / "stats.json").read_text())
    assert stats["failed"] == {"http 500": 6} and stats["failed_requests"] == 6


# --- every config verb takes options and --set; study run --dry-run ----------------------------------------------


def test_data_build_is_made_small_from_the_command_line(tmp_path, run_cli):
    code, _, err = run_cli(
        "data",
        "build",
        ROOT / "configs" / "mixtures" / "all.yaml",
        "--out",
        tmp_path / "m",
        "--no-progress",
        "--examples-per-subtask",
        "2",
        "--set",
        "validation_per_subtask=0",
        "--set",
        "decontaminate=[]",
        "--capabilities",
        "knowledge",
    )
    assert code == 0, err
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    assert set(manifest["by_capability"]) == {"shopping_knowledge_reasoning"}
    assert set(manifest["by_subtask"].values()) == {2}


def test_study_run_dry_run_lists_cells_and_a_rough_time_and_runs_nothing(tmp_path, run_cli):
    code, out, err = run_cli(
        "study",
        "run",
        ROOT / "configs" / "studies" / "demo.yaml",
        "--out",
        tmp_path / "s",
        "--dry-run",
        "--ranks",
        "4",
        "--ranks",
        "8",
        "--set",
        "train.max_steps=10",
    )
    assert code == 0, err
    # Two ranks: the base cell and two trained ones, 10 steps each (the --set), at the default model's rough rates:
    # 0.2 s a question, 5.6 s a step. A cell answers 672 questions plainly, about half again under its chosen
    # settings (336) and plain and each candidate on 72 validation questions (counted twice: 144); a trained one
    # also answers 36 validation questions before its first step and at its one evaluation (72). So
    # (3 x 1152 + 2 x 72) x 0.2 + 20 x 5.6 = 832 s.
    assert "3 cell(s), 3 to run, roughly 14 min" in err and "base" in out
    assert not (tmp_path / "s").exists()


# --- evaluation selection ----------------------------------------------------------------------------------------


def test_limit_is_spread_across_tasks_and_tasks_take_names_tracks_types_and_globs():
    examples = read_examples(DEV)
    spread = select(examples, limit=4)
    assert len(spread.indices) == 4 and len(spread.tasks) == 4
    assert "the overall score is over" in spread.describe()
    by_type = select(examples, tasks=["ranking"])
    assert {examples[i].task_type.value for i in by_type.indices} == {"ranking"}
    by_track = select(examples, tasks=["knowledge"], limit_per_task=1)
    assert {examples[i].track for i in by_track.indices} == {"amazon-kdd-cup-24-shopping-knowledge-reasoning"}
    assert len(by_track.indices) == len(by_track.tasks)
    assert select(examples, tasks=["task1*"]).tasks == [t for t in spread.all_tasks if t.startswith("task1")]
    assert not select(examples).partial
    with pytest.raises(ShoptuneError, match="--tasks nothing_like_it: matches no question"):
        select(examples, tasks=["nothing_like_it"])


def test_eval_run_says_what_a_limit_kept(tiny_model, tmp_path, run_cli):
    code, _, err = run_cli(
        "eval",
        "run",
        DEV,
        "--model",
        tiny_model,
        "--out",
        tmp_path / "e",
        "--limit",
        "4",
        "--no-progress",
        "--bootstrap",
        "0",
    )
    assert code == 0, err
    assert "scored 4 of 96 questions, 4 of" in err
    scores = json.loads((tmp_path / "e" / "scores.json").read_text())
    assert len(scores["tasks"]) == 4
    record = json.loads((tmp_path / "e" / "run.json").read_text())["provenance"]
    assert record["versions"]["shoptune"] and record["versions"]["torch"] and record["started"]
    assert record["wall_seconds"] > 0 and record["model_identity"]["weights"]


# --- no verb writes into another verb's folder; one lock per real folder --------------------------------------------


def test_eval_score_refuses_another_verbs_folder_and_scores_of_other_answers(tiny_model, tmp_path, run_cli):
    run = tmp_path / "run"
    code, _, err = run_cli("eval", "run", DEV, "--model", tiny_model, "--out", run, "--limit", "2", "--no-progress")
    assert code == 0, err
    before = (run / "scores.json").read_bytes()
    preds = tmp_path / "p.jsonl"
    write_jsonl(preds, [{"index": i, "response": "1"} for i in range(96)])
    code, _, err = run_cli("eval", "score", DEV, preds, "--out", run)
    assert code == 2 and "which `shoptune eval score` does not write" in err, err
    assert (run / "scores.json").read_bytes() == before
    code, _, err = run_cli("eval", "score", DEV, preds, "--out", tmp_path / "s")
    assert code == 0, err
    code, _, err = run_cli("eval", "score", DEV, preds, "--out", tmp_path / "s", "--bootstrap", "0")
    assert code == 0, err  # the same inputs, rescored
    write_jsonl(preds, [{"index": i, "response": "2"} for i in range(96)])
    code, _, err = run_cli("eval", "score", DEV, preds, "--out", tmp_path / "s")
    assert code == 2 and "holds scores computed with other settings or data (predictions)" in err


def test_a_symlink_and_its_folder_are_one_lock(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    with (
        writing(real),
        pytest.raises(ShoptuneError, match="is being written by another run"),
        writing(tmp_path / "link"),
    ):
        pass


def test_train_refuses_a_folder_that_is_not_its_own(tiny_model, tmp_path, run_cli):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("a user's file")
    code, _, err = run_cli("train", "--data", DEV, "--model", tiny_model, "--out", out, "--max-steps", "1")
    assert code == 2 and "holds notes.txt, which `shoptune train` does not write" in err, err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


# --- names users know: capabilities, config errors at once, Hugging Face habits ------------------------------------


def test_a_capability_is_taken_by_any_of_its_names_and_a_wrong_one_lists_the_short_ones(tmp_path, run_cli):
    from shoptune.config import load_config
    from shoptune.data.spec import MixtureSpec

    names = ["concepts", "shopping_knowledge_reasoning", "amazon-kdd-cup-24-user-behavior-alignment"]
    spec = load_config(MixtureSpec, None, {"name": "x", "capabilities": names})
    assert [c.short for c in spec.capabilities] == ["concepts", "knowledge", "behavior"]
    with pytest.raises(ShoptuneError, match="expected one of concepts, knowledge, behavior, multilingual"):
        load_config(MixtureSpec, None, {"name": "x", "capabilities": ["concept"]})


def test_config_errors_come_all_at_once_with_did_you_mean_and_the_names_of_habit(tmp_path, run_cli):
    config = tmp_path / "t.yaml"
    config.write_text(
        "data: x.jsonl\nnum_train_epochs: 2\nper_device_train_batch_size: 4\noutput_dir: runs/x\nlearnig_rate: 0.1\n"
        "lora: {rnk: 4}\n"
    )
    code, _, err = run_cli("train", config, "--out", tmp_path / "o")
    assert code == 2 and "5 problems" in err, err
    assert "'num_train_epochs': unknown; shoptune calls it 'epochs'" in err
    assert "'per_device_train_batch_size': unknown; shoptune calls it 'batch_size'" in err
    assert "'output_dir': unknown; shoptune takes it as --out" in err
    assert "'learnig_rate': unknown setting (did you mean 'learning_rate'?)" in err
    assert "'lora.rnk': unknown setting (did you mean 'rank'?)" in err


def test_version_names_the_software(run_cli):
    code, out, _ = run_cli("--version")
    assert code == 0 and out.startswith("shoptune ") and "torch " in out and "transformers " in out


# --- tasks list at 80 columns and away from the data; --allow-download wherever a model is taken ------------------


def test_tasks_list_fits_80_columns_and_warns_where_it_found_no_data(tmp_path):
    import subprocess
    import sys

    env = {**os.environ, "COLUMNS": "80"}
    listed = subprocess.run(
        [sys.executable, "-m", "shoptune", "tasks", "list"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert listed.returncode == 0 and "brand_ner" in listed.stdout
    assert max(len(line) for line in listed.stdout.splitlines()) <= 80
    away = subprocess.run(
        [sys.executable, "-m", "shoptune", "tasks", "list"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert away.returncode == 0 and f"no raw data found in {(tmp_path / 'data' / 'raw').resolve()}" in away.stderr


@pytest.mark.parametrize("verb", [["merge", "adapter", "--out", "o"], ["combine", "a", "b", "--out", "o"], ["serve"]])
def test_a_hub_id_is_fetched_only_with_allow_download(verb, tmp_path, run_cli, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.chdir(tmp_path)
    for adapter in ("adapter", "a", "b"):
        (tmp_path / adapter).mkdir()
        (tmp_path / adapter / "adapter_config.json").write_text("{}")
    model = ["--model", "nobody/no-such-model"] if verb[0] != "serve" else ["nobody/no-such-model"]
    code, _, err = run_cli(*verb, *model)
    assert code == 2 and "(--allow-download)" in err, err
    # With it, the model is fetched: the hub is offline here, so the fetch is what fails.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    code, _, err = run_cli(*verb, *model, "--allow-download")
    assert code == 2 and "couldn't connect to 'https://huggingface.co'" in err, err


def test_a_dry_run_of_a_model_not_here_says_it_has_no_estimate_rather_than_zero(tmp_path, run_cli):
    from shoptune.hub import parameter_count

    if parameter_count("Qwen/Qwen2-7B-Instruct") is not None:
        pytest.skip("the paper's model is in this machine's cache: its cells can be timed")
    code, _, err = run_cli(
        "study", "run", ROOT / "configs" / "studies" / "paper.yaml", "--out", tmp_path / "p", "--dry-run"
    )
    assert code == 0, err
    # Qwen2-7B is not in the cache: its 106 cells cannot be timed, and nothing says "0 min".
    assert "106 cell(s), 106 to run, no estimate" in err and "0 min" not in err
    assert not (tmp_path / "p").exists()
