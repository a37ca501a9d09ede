"""Reliability, by class of failure: no silent wrong result, one writer per folder, exit codes that tell
the truth, one clear line instead of a traceback, and Ctrl-C that says what was kept."""

import contextlib
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch

from shoptune.evaluate.backends import HFBackend
from shoptune.locks import lock_path
from tests.helpers.files import write_lines
from tests.helpers.tiny_model import build_tiny_model

ROOT = Path(__file__).resolve().parents[1]
RAW = ROOT / "data" / "raw"
GEN = {
    "input_field": "Describe this product in one sentence: a red cotton shirt.",
    "output_field": "A red shirt made of cotton.",
    "task_name": "t1",
    "task_type": "generation",
    "metric": "rougel",
    "is_multiple_choice": False,
    "track": "x",
}


@pytest.fixture(scope="module")
def short_context_model(tmp_path_factory) -> Path:
    """The tiny model with a 64-token context, so prompts and budgets meet its limit."""
    return build_tiny_model(tmp_path_factory.mktemp("ctx64"), context=64)


def tree(folder: Path) -> dict[str, bytes]:
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --- Silent wrong results: the budget gives way, not the prompt ------------------------------------------------


def test_a_large_budget_never_cuts_a_prompt_that_fits(short_context_model):
    backend = HFBackend(str(short_context_model), system_prompt=None, chat_template=False)
    prompt = "Which colour is this shirt? red"
    full = backend.tokenizer(prompt)["input_ids"]
    assert 5 < len(full) < 40
    enc = backend.encode([prompt], rendered=True)
    assert enc["input_ids"][0].tolist() == full
    from shoptune.evaluate.engine import Request

    (answered,) = backend.engine.run([Request(backend.tokenize([prompt])[0], budget=5000)])
    assert answered.ids == full and answered.budget == 64 - len(full) and len(answered.new) <= 64 - len(full)
    assert backend.truncated_prompts == 0


def test_only_a_prompt_longer_than_the_context_loses_its_beginning_and_is_counted(short_context_model):
    backend = HFBackend(str(short_context_model), system_prompt=None, chat_template=False)
    long = " ".join(["shirt"] * 200) + " Answer: "
    full = backend.tokenizer(long)["input_ids"]
    enc = backend.encode([long, "short"], rendered=True)
    assert enc["attention_mask"][0].sum() == 63 and enc["input_ids"][0].tolist() == full[-63:]
    assert enc["attention_mask"][1].sum() == len(backend.tokenizer("short")["input_ids"])
    assert backend.truncated_prompts == 1
    assert len(backend.generate([long], max_new_tokens=50)) == 1  # one token of room is left to answer


def test_eval_run_records_and_reports_truncated_prompts(short_context_model, tmp_path, run_cli):
    data = write_lines(tmp_path / "d.jsonl", [GEN, {**GEN, "input_field": "word " * 300}])
    out = tmp_path / "run"
    args = ("eval", "run", data, "--model", short_context_model, "--out", out, "--no-progress", "--no-system-prompt")
    code, _, err = run_cli(*args, "--max-new-tokens", "generation=5000")
    assert code == 0, err
    assert "warning: 1 prompt(s) were longer than the model's context" in err
    assert json.loads((out / "run.json").read_text())["truncated_prompts"] == 1


# --- One writer per folder, and no folder reused with other settings ----------------------------------------------


@contextlib.contextmanager
def another_run_writing(target: Path):
    """A separate process that holds `target` the way every shoptune command does, until released."""
    code = (
        "import sys; from pathlib import Path; from shoptune.locks import writing\n"
        "with writing(Path(sys.argv[1])):\n    print('held', flush=True); sys.stdin.read()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(target)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "held"
    try:
        yield proc.pid
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)


def _mixture_spec(tmp_path: Path, examples: int = 8) -> Path:
    spec = tmp_path / "mix.yaml"
    spec.write_text(f"name: mix\nraw_dir: {RAW}\nsubtasks: [category_parent, same_product]\n")
    spec.write_text(spec.read_text() + f"examples_per_subtask: {examples}\nvalidation_per_subtask: 2\n")
    return spec


def _train_config(tmp_path: Path, model: Path, rank: int = 4) -> Path:
    data = write_lines(
        tmp_path / "train.jsonl",
        [{**GEN, "input_field": f"Describe product {i}: a shirt.", "output_field": f"Shirt {i}."} for i in range(8)],
    )
    config = tmp_path / "train.yaml"
    config.write_text(
        f"model: {model}\ndata: {data}\nbatch_size: 4\nmax_steps: 2\nmax_length: 64\nreport_to: []\n"
        f"save_steps: 1000\nlora:\n  rank: {rank}\n"
    )
    return config


COMMANDS = {
    "eval run": lambda tmp, model, out: ["eval", "run", ROOT / "data/shopbench/development.json", "--model", model,
                                         "--limit", "6", "--no-progress", "--out", out],
    "train": lambda tmp, model, out: ["train", _train_config(tmp, model), "--out", out, "--no-progress"],
    "data build": lambda tmp, model, out: ["data", "build", _mixture_spec(tmp), "--out", out, "--no-progress"],
}  # fmt: skip
RESULT = {"eval run": "predictions.jsonl", "train": "adapter/adapter_model.safetensors", "data build": "manifest.json"}


@pytest.mark.parametrize("command", COMMANDS)
def test_a_second_writer_is_refused_and_the_first_result_equals_a_lone_run(command, tiny_model, tmp_path, run_cli):
    out, alone = tmp_path / "out", tmp_path / "alone"
    args = COMMANDS[command](tmp_path, tiny_model, out)
    with another_run_writing(out) as pid:
        code, _, err = run_cli(*args)
    assert code == 2 and err.count("\n") == 1, err
    assert f"is being written by another run (pid {pid} on " in err
    assert not out.exists()  # nothing half-written, nothing out of place

    code, _, err = run_cli(*args)  # the holder has finished: now it runs
    assert code == 0, err
    code, _, err = run_cli(*COMMANDS[command](tmp_path, tiny_model, alone))
    assert code == 0, err
    if command == "data build":
        assert tree(out) == tree(alone)
    else:
        assert (out / RESULT[command]).read_bytes() == (alone / RESULT[command]).read_bytes()
    assert not lock_path(out).exists() and not lock_path(alone).exists()


def test_train_refuses_a_folder_trained_with_other_settings(tiny_model, tmp_path, run_cli):
    out = tmp_path / "run"
    code, _, err = run_cli("train", _train_config(tmp_path, tiny_model), "--out", out, "--no-progress")
    assert code == 0, err
    before = tree(out)
    code, _, err = run_cli("train", _train_config(tmp_path, tiny_model), "--out", out, "--rank", "8", "--no-progress")
    assert code == 2 and "holds a run trained with other settings or data (lora)" in err
    (tmp_path / "train.jsonl").write_text((tmp_path / "train.jsonl").read_text().replace("Shirt 1.", "Shirt one."))
    code, _, err = run_cli("train", tmp_path / "train.yaml", "--out", out, "--no-progress")
    assert code == 2 and "(data)" in err
    assert tree(out) == before


def test_a_run_from_a_mixture_spec_is_resumed_not_refused(tiny_model, tmp_path, run_cli):
    config = tmp_path / "spec-train.yaml"
    config.write_text(
        f"model: {tiny_model}\nmixture: {_mixture_spec(tmp_path)}\nbatch_size: 4\nmax_steps: 2\nmax_length: 64\n"
        "report_to: []\nsave_steps: 1\n"
    )
    out = tmp_path / "run"
    assert run_cli("train", config, "--out", out, "--no-progress")[0] == 0
    code, _, err = run_cli("train", config, "--out", out, "--no-progress")
    assert code == 0, err
    assert json.loads((out / "train_summary.json").read_text())["steps"] == 2


def test_data_build_refuses_a_folder_built_from_another_spec_and_clears_killed_temporaries(tmp_path, run_cli):
    out = tmp_path / "mix"
    killed = tmp_path / ".mix.k1ll3d"  # what a build killed inside its save leaves
    killed.mkdir()
    (killed / "data-00000-of-00001.arrow").write_bytes(b"half")
    code, _, err = run_cli("data", "build", _mixture_spec(tmp_path), "--out", out, "--no-progress")
    assert code == 0, err
    assert not killed.exists()
    before = tree(out)
    code, _, err = run_cli("data", "build", _mixture_spec(tmp_path, examples=9), "--out", out, "--no-progress")
    assert code == 2 and "holds a mixture built with other settings or data (examples_per_subtask)" in err
    assert tree(out) == before


@pytest.mark.parametrize("spec", sorted((ROOT / "configs" / "mixtures").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_mixture_specs_find_their_data_from_any_directory(spec, tmp_path, monkeypatch):
    from shoptune.config import load_config
    from shoptune.data.spec import MixtureSpec

    monkeypatch.chdir(tmp_path)
    resolved = load_config(MixtureSpec, spec)
    assert (resolved.raw_dir / "google-taxonomy").is_dir()
    assert resolved.decontaminate and all(p.is_file() for p in resolved.decontaminate)


# --- Exit codes that tell the truth ---------------------------------------------------------------------------------


def test_merge_never_writes_into_an_existing_file_or_folder(tiny_model, tmp_path, run_cli):
    adapter = _adapter_for(tiny_model, tmp_path / "adapter")
    (tmp_path / "file").write_text("keep me")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "mine.txt").write_text("keep me")
    code, _, err = run_cli("merge", adapter, "--model", tiny_model, "--out", tmp_path / "file")
    assert code == 2 and "exists and is not a directory" in err
    code, _, err = run_cli("merge", adapter, "--model", tiny_model, "--out", tmp_path / "full")
    assert code == 2 and "holds mine.txt, which `shoptune merge` does not write" in err
    assert (tmp_path / "file").read_text() == "keep me"
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["mine.txt"]
    code, _, err = run_cli("merge", adapter, "--model", tiny_model, "--out", tmp_path / "merged")
    assert code == 0, err
    assert (tmp_path / "merged" / "config.json").is_file()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".merged")]
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "merged").iterdir()}
    code, _, err = run_cli("merge", adapter, "--model", tiny_model, "--out", tmp_path / "merged")
    assert code == 0 and "finished earlier" in err, err
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "merged").iterdir()} == before
    code, _, err = run_cli("merge", adapter, "--model", tiny_model, "--out", tmp_path / "merged", "--alpha", "0.5")
    assert code == 2 and "holds a merged model made with other settings or data (alpha)" in err


def test_an_unreachable_teacher_is_one_line_saying_what_to_check(tmp_path, run_cli):
    spec = tmp_path / "gen.yaml"
    spec.write_text(
        "name: g\nmodel: m\nbase_url: http://127.0.0.1:9/[bold]v1\nsubtasks: [category_parent]\n"
        "examples_per_subtask: 2\nattempts: 1\nmax_retries: 0\ntimeout: 5\nraw_dir: null\n"
    )
    code, _, err = run_cli("data", "generate", spec, "--out", tmp_path / "gen", "--no-progress")
    assert code == 2 and err.count("\n") == 1, err
    assert "cannot connect: check base_url" in err and "[bold]v1" in err  # printed as it is, never read as markup


def test_a_mixture_name_cannot_leave_the_study_folder(tiny_model, tmp_path, run_cli):
    mixture = tmp_path / "m.yaml"
    mixture.write_text(f"name: ../../../escaped\nraw_dir: {RAW}\nsubtasks: [category_parent]\n")
    study = tmp_path / "s.yaml"
    study.write_text(
        f"name: s\nmodels: ['{tiny_model}']\ndesigns:\n  capability: [{mixture}]\n"
        f"eval:\n  sets: [{ROOT / 'data/shopbench/development.json'}]\n"
    )
    code, _, err = run_cli("study", "run", study, "--out", tmp_path / "study", "--no-progress")
    assert code == 2 and "setting 'name'" in err
    assert not list(tmp_path.parent.glob("**/escaped*"))


def test_a_study_spec_is_checked_whole_before_anything_is_built(tiny_model, tmp_path, run_cli):
    mixture = tmp_path / "m.yaml"
    mixture.write_text(f"name: m\nraw_dir: {RAW}\nsubtasks: [category_parent]\n")
    base = f"name: s\nmodels: ['{tiny_model}']\ndesigns:\n  capability: [{mixture}]\n"
    dev = ROOT / "data/shopbench/development.json"
    cases = {
        f"train:\n  learning_rat: 0.1\neval:\n  sets: [{dev}]\n": "train: setting 'learning_rat': unknown setting",
        f"eval:\n  sets: [{tmp_path / 'missing.jsonl'}]\n": "evaluation set(s) not found",
    }
    for extra, expected in cases.items():
        (tmp_path / "s.yaml").write_text(base + extra)
        code, _, err = run_cli("study", "run", tmp_path / "s.yaml", "--out", tmp_path / "study", "--no-progress")
        assert code == 2 and expected in err, err
        assert not (tmp_path / "study" / "mixtures").exists()


# --- One clear line, never a traceback ------------------------------------------------------------------------------


def _adapter_for(model: Path, out: Path, hidden: int | None = None) -> Path:
    """A fresh LoRA adapter for `model` (or for a tiny model of another width), saved in PEFT's format."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    if hidden is not None:
        model = build_tiny_model(out.parent / f"other-{hidden}", hidden=hidden)
    lora = LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM", init_lora_weights=False)
    get_peft_model(AutoModelForCausalLM.from_pretrained(model), lora).save_pretrained(out)
    return out


def _bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _with_surrogate(path: Path) -> Path:
    """A JSON Lines file whose prompt holds the escape of a lone surrogate, valid JSON but not text."""
    line = json.dumps({**GEN, "input_field": "a SURROGATE b"}).replace("SURROGATE", "\\ud800")
    return _bytes(path, line.encode() + b"\n")


def _text(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _mlflow(config: str) -> str:
    return config.replace("report_to: []", "report_to: [mlflow]")


def _folder(path: Path) -> Path:
    path.mkdir()
    return path


def _damaged_run(parent: Path) -> Path:
    """`parent` with an eval run folder o/ whose run record was torn by a disk fault or a hand edit."""
    _folder(parent / "o")
    _bytes(parent / "o" / "run.json", b'{"data": "x", "answer_se')
    return parent


DEV = ROOT / "data/shopbench/development.json"


def _eval_run(p: Path, m: Path, *extra: object) -> list:
    return ["eval", "run", DEV, "--model", m, "--out", p / "o", *extra]


def _eval_score(p: Path, data: Path = DEV, responses: Path | None = None, *extra: object) -> list:
    responses = responses or write_lines(p / "r.jsonl", [{"index": 0, "response": "x"}])
    return ["eval", "score", data, responses, "--out", p / "o", *extra]


ERROR_CASES = {
    "config is a folder": (lambda p, m: _eval_run(p, m, "--config", p), "is a folder"),
    "config not utf-8": (
        lambda p, m: _eval_run(p, m, "--config", _bytes(p / "c.yaml", b"limit: 2\nmodel: \xff\n")),
        "c.yaml:2: not UTF-8 text",
    ),
    "lone surrogate in data": (
        lambda p, m: _eval_score(p, _with_surrogate(p / "d.jsonl")),
        "d.jsonl:1: field 'input_field': holds a lone surrogate",
    ),
    "lone surrogate in a response": (
        lambda p, m: _eval_score(p, DEV, _bytes(p / "r.jsonl", b'{"index": 0, "response": "\\udc80"}\n')),
        "r.jsonl:1: field 'response': holds a lone surrogate",
    ),
    "huge bootstrap": (lambda p, m: _eval_score(p, DEV, None, "--bootstrap", "1000000000"), "setting 'bootstrap'"),
    "unknown embedding metric": (
        lambda p, m: _eval_score(p, DEV, None, "--embedding-model", "sentence-bert=/x"),
        "unknown embedding metric(s) ['sentence-bert']",
    ),
    "unknown device": (lambda p, m: _eval_run(p, m, "--device", "banana"), "device 'banana': expected auto, cpu"),
    "rank 0": (lambda p, m: ["train", _train_config(p, m), "--rank", "0", "--out", p / "o"], "setting 'lora.rank'"),
    "negative weight": (
        lambda p, m: [
            "data",
            "build",
            _text(p / "w.yaml", "name: w\nweights: {category_parent: -1}\n"),
            "--out",
            p / "o",
        ],
        "are negative",
    ),
    "folder that is not a model": (lambda p, m: _eval_run(p, _folder(p / "empty")), "could not be loaded"),
    "adapter of another model": (
        lambda p, m: _eval_run(p, m, "--adapter", _adapter_for(m, p / "a", hidden=32)),
        "was trained on",
    ),
    "target modules that match nothing": (
        lambda p, m: [
            "train",
            _text(p / "t.yaml", _train_config(p, m).read_text() + "  target_modules: [nope]\n"),
            "--out",
            p / "o",
        ],
        "LoRA on",
    ),
    "damaged run record": (lambda p, m: _eval_run(_damaged_run(p), m), "o/run.json: damaged run record"),
}
if importlib.util.find_spec("mlflow") is None:
    ERROR_CASES["mlflow without mlflow"] = (
        lambda p, m: ["train", _text(p / "t.yaml", _mlflow(_train_config(p, m).read_text())), "--out", p / "o"],
        "mlflow is not installed",
    )
if not torch.cuda.is_available():
    ERROR_CASES["cuda without a GPU"] = (
        lambda p, m: _eval_run(p, m, "--device", "cuda"),
        "no CUDA GPU",
    )


@pytest.mark.parametrize("case", ERROR_CASES)
def test_bad_input_is_one_clear_line(case, tiny_model, tmp_path, run_cli):
    make, expected = ERROR_CASES[case]
    args = make(tmp_path, tiny_model)
    before = tree(tmp_path / "o")
    code, _, err = run_cli(*args)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert expected in err
    assert tree(tmp_path / "o") == before  # nothing written


def test_a_bad_port_is_a_usage_error(run_cli):
    code, _, err = run_cli("serve", "--port", "99999")
    assert code == 2 and "Invalid value for '--port'" in err and "65535" in err and "Traceback" not in err


def test_a_damaged_study_result_is_one_clear_line(tmp_path, run_cli):
    cell = tmp_path / "study" / "cells" / "abc"
    cell.mkdir(parents=True)
    (cell / "result.json").write_bytes(b'{"cell": {"model": "m"')
    code, _, err = run_cli("study", "report", tmp_path / "study")
    assert code == 2 and "result.json: damaged run record" in err and err.count("\n") == 1


def test_a_journal_torn_inside_a_character_resumes(tiny_model, tmp_path, run_cli):
    out = tmp_path / "o"
    args = ("eval", "run", DEV, "--model", tiny_model, "--limit", "4", "--no-progress")
    code, _, err = run_cli(*args, "--out", out)
    assert code == 0, err
    first = (out / "predictions.jsonl").read_text()
    kept = first.splitlines()[0] + "\n"
    (out / "predictions.jsonl").unlink()
    (out / "predictions.partial.jsonl").write_bytes(kept.encode() + '{"index": 1, "response": "é'.encode()[:-1])
    code, _, err = run_cli(*args, "--out", out)
    assert code == 0, err
    assert "answered 3 question(s), reused 1" in err
    assert (out / "predictions.jsonl").read_text() == first


def _shoptune(*args: object) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "shoptune", *map(str, args)],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


@pytest.mark.slow
def test_ctrl_c_says_what_was_kept_and_how_to_resume(tiny_model, tmp_path, run_cli):
    out = tmp_path / "o"
    proc = _shoptune("eval", "run", DEV, "--model", tiny_model, "--out", out, "--batch-size", "1")
    try:
        seen = ""
        while not re.search(r" [1-9]\d*/96 ", seen):  # the progress bar has moved: some answers are journalled
            seen += proc.stderr.read(1) or " 1/96 "
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted: what was finished is kept; run the same command again to resume" in err
    assert "Traceback" not in err
    kept = len((out / "predictions.partial.jsonl").read_text().splitlines())
    code, _, err = run_cli("eval", "run", DEV, "--model", tiny_model, "--out", out, "--no-progress")
    assert code == 0 and f"reused {kept} from earlier runs" in err, err


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_the_server_command_honours_its_limits_and_stops_gracefully(stop, tiny_model):
    proc = _shoptune("serve", tiny_model, "--port", "0", "--name", "shop", "--max-tokens", "8")
    try:
        line = proc.stderr.readline()
        assert "serving 'shop' at http://127.0.0.1:" in line, line
        url = line.split(" at ")[1].split(",")[0]
        for _ in range(100):  # until Hypercorn answers (it installs its signal handlers first)
            with contextlib.suppress(OSError), urllib.request.urlopen(url + "/models", timeout=5) as reply:
                assert json.loads(reply.read())["data"][0]["id"] == "shop"
                break
            time.sleep(0.1)
        ask = json.dumps({"model": "shop", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 9})
        request = urllib.request.Request(
            url + "/chat/completions", data=ask.encode(), headers={"Content-Type": "application/json"}
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=30)
        assert refused.value.code == 400 and "at most 8" in refused.value.read().decode()
        # A chunked body over the limit: 413, and the connection closed once the client has sent it, not left
        # open until the client's own timeout; a connection still sending when the stop comes is cut quietly.
        port = int(url.split(":")[2].split("/")[0])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
            piece = b"x" * 65536
            for _ in range(20):  # 1.3 MB, over the 1 MB limit
                conn.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
            conn.sendall(b"0\r\n\r\n")
            reply = b""
            while chunk := conn.recv(65536):  # ends when the server closes; the timeout fails the test otherwise
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 413") and b"connection: close" in reply.lower()
        still_sending = socket.create_connection(("127.0.0.1", port), timeout=10)
        still_sending.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        still_sending.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
        proc.send_signal(stop)
        _, err = proc.communicate(timeout=60)
        still_sending.close()
    finally:
        proc.kill()
    assert proc.returncode == 0 and "stopped serving" in err and "Traceback" not in err, err
