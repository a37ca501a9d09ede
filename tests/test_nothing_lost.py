"""Nothing lost off the demo path: every long verb killed with -9 and run again ends as an uninterrupted run does, a
finished run says so, a run is its inputs (not their spelling), and every mistake in what a user gives is one line."""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
import threading
import time
from http.server import ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import load_file

from shoptune.errors import ShoptuneError
from shoptune.schema import write_jsonl
from tests.helpers.http import JsonHandler
from tests.helpers.processes import killed_when, shoptune

ROOT = Path(__file__).resolve().parents[1]
RAW = ROOT / "data" / "raw"
DEV = ROOT / "data" / "shopbench" / "development.json"


def tensors(folder: Path) -> dict:
    return load_file(str(folder / "adapter_model.safetensors"))


def assert_same_adapter(a: Path, b: Path) -> None:
    one, two = tensors(a), tensors(b)
    assert one.keys() == two.keys()
    for key in one:
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-5)


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --- training with ShopBench validation, killed at a checkpoint --------------------------------------------------


def train_config(tmp_path: Path, model: Path, data: Path, keep: str) -> Path:
    config = tmp_path / f"train-{keep}.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model": str(model),
                "data": str(data / "train.jsonl"),
                "eval_data": str(data / "held.jsonl"),
                "batch_size": 4,
                "learning_rate": 2e-3,
                "max_length": 256,
                "max_steps": 16,
                "save_steps": 4,
                "eval_steps": 4,
                "logging_steps": 4,
                "save_total_limit": 8,
                "max_eval_examples": 8,
                "shopbench_eval_examples": 8 if keep != "loss" else 4,
                "keep": keep,
                "report_to": [],
            }
        )
    )
    return config


@pytest.mark.slow
@pytest.mark.parametrize("keep", ["last", "loss", "shopbench"])
def test_training_with_shopbench_validation_killed_at_a_checkpoint_resumes_to_the_uninterrupted_result(
    keep, examples_file, tiny_model, tmp_path
):
    config = train_config(tmp_path, tiny_model, examples_file, keep)
    whole = shoptune("train", config, "--no-progress", "--out", tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr
    run = tmp_path / "killed"
    checkpoint = run / "checkpoints" / "checkpoint-8" / "trainer_state.json"
    killed_when(["train", config, "--no-progress", "--out", run], checkpoint.is_file)
    assert (run / "shopbench_validation").is_dir() and not (run / "adapter").exists()

    resumed = shoptune("train", config, "--no-progress", "--out", run)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_adapter(tmp_path / "whole" / "adapter", run / "adapter")
    one = json.loads((tmp_path / "whole" / "train_summary.json").read_text())
    two = json.loads((run / "train_summary.json").read_text())
    assert [p["step"] for p in two["shopbench_validation"]] == [0, 4, 8, 12, 16]
    assert two["shopbench_validation"] == one["shopbench_validation"]  # the same answers at every step
    assert Path(two["kept_checkpoint"] or "").name == Path(one["kept_checkpoint"] or "").name
    assert two["steps"] == 16 and two["train_loss"] == pytest.approx(one["train_loss"], rel=1e-4)

    again = shoptune("train", config, "--no-progress", "--out", run)
    assert again.returncode == 0 and "finished earlier" in again.stderr, again.stderr
    assert json.loads((run / "train_summary.json").read_text()) == two


# --- the study killed during its tuned cell's evaluation --------------------------------------------------------


def study_spec(tmp_path: Path, model: Path) -> Path:
    mixture = tmp_path / "one.yaml"
    mixture.write_text(f"name: one\nraw_dir: {RAW}\nsubtasks: [category_parent, same_product]\n")
    spec = {
        "name": "t",
        "models": [str(model)],
        "ranks": [4],
        "designs": {"capability": [str(mixture)]},
        "mixture": {"examples_per_subtask": 24, "validation_per_subtask": 4},
        "train": {
            "max_steps": 4,
            "batch_size": 4,
            "eval_steps": 2,
            "save_steps": 2,
            "report_to": [],
            "max_eval_examples": 8,
            "max_length": 256,
            "shopbench_eval_examples": 8,
            "keep": "shopbench",
        },
        "eval": {"sets": [str(DEV)], "limit": 24, "best_of": {}},
    }
    path = tmp_path / "study.yaml"
    path.write_text(json.dumps(spec))
    return path


def results(out: Path) -> pd.DataFrame:
    columns = ["cell", "design", "eval_set", "level", "name", "score"]
    return pd.read_csv(out / "results.csv")[columns].sort_values(columns[:5]).reset_index(drop=True)


@pytest.mark.slow
def test_the_study_killed_during_its_tuned_cells_evaluation_finishes_on_rerun(tiny_model, tmp_path):
    spec = study_spec(tmp_path, tiny_model)
    whole = shoptune("study", "run", spec, "--no-progress", "--out", tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr
    out = tmp_path / "killed"

    def evaluating() -> bool:  # the tuned cell trained and began answering the benchmark
        return any(out.glob("cells/*/train/train_summary.json")) and any(out.glob("cells/*/eval/development/*.jsonl"))

    killed_when(["study", "run", spec, "--no-progress", "--out", out], evaluating)
    rerun = shoptune("study", "run", spec, "--no-progress", "--out", out)
    assert rerun.returncode == 0, rerun.stderr
    assert "cells 2" in rerun.stderr and "failed 0" in rerun.stderr
    pd.testing.assert_frame_equal(results(tmp_path / "whole"), results(out))
    again = shoptune("study", "run", spec, "--no-progress", "--out", out)
    assert again.returncode == 0 and "finished earlier" in again.stderr


@pytest.mark.slow
def test_a_study_resumed_under_another_spelling_of_its_folder_reuses_its_training(tiny_model, tmp_path):
    spec = study_spec(tmp_path, tiny_model)
    (tmp_path / "work").mkdir()
    first = shoptune("study", "run", spec, "--no-progress", "--out", tmp_path / "s")
    assert first.returncode == 0, first.stderr
    tuned = next((tmp_path / "s" / "cells").glob("*/train/train_summary.json")).parent.parent
    summary = (tuned / "train" / "train_summary.json").stat().st_mtime_ns
    (tuned / "result.json").unlink()  # as if killed after training, before its result was written
    shutil.rmtree(tuned / "eval" / "development")
    rerun = shoptune("study", "run", spec, "--no-progress", "--out", "../s", cwd=tmp_path / "work")
    assert rerun.returncode == 0, rerun.stderr
    assert "ran 1" in rerun.stderr and "failed 0" in rerun.stderr
    assert (tuned / "train" / "train_summary.json").stat().st_mtime_ns == summary, "training was redone"


def test_a_mixture_spelled_another_way_is_the_same_run(tiny_model, tmp_path, run_cli):
    spec = tmp_path / "mix.yaml"
    spec.write_text(f"name: mix\nraw_dir: {RAW}\nsubtasks: [category_parent]\nexamples_per_subtask: 8\n")
    code, _, err = run_cli("data", "build", spec, "--out", tmp_path / "data" / "mix", "--no-progress")
    assert code == 0, err
    train = ["train", "--model", tiny_model, "--max-steps", "2", "--batch-size", "4", "--max-length", "128"]
    train += ["--set", "report_to=[]", "--no-progress", "--out", tmp_path / "run"]
    code, _, err = run_cli(*train, "--mixture", tmp_path / "data" / "mix")
    assert code == 0, err
    code, _, err = run_cli(*train, "--mixture", tmp_path / "data" / ".." / "data" / "mix")
    assert code == 0 and "finished earlier" in err, err
    os.symlink(tmp_path / "data", tmp_path / "linked")
    code, _, err = run_cli(*train, "--mixture", tmp_path / "linked" / "mix")
    assert code == 0 and "finished earlier" in err, err
    # The data build spelled otherwise is the same spec too: its folder is rebuilt, not refused.
    moved = tmp_path / "elsewhere" / "mix.yaml"
    moved.parent.mkdir()
    moved.write_text(spec.read_text().replace(str(RAW), os.path.relpath(RAW, moved.parent)))
    code, _, err = run_cli("data", "build", moved, "--out", tmp_path / "data" / "mix", "--no-progress")
    assert code == 0 and "held a build of this spec already" in err, err


# --- other long verbs, killed and run again ----------------------------------------------------------------------


@pytest.mark.slow
def test_a_data_build_killed_while_saving_ends_as_an_uninterrupted_one(tmp_path):
    spec = tmp_path / "mix.yaml"
    spec.write_text(f"name: mix\nraw_dir: {RAW}\nexamples_per_subtask: 300\n")
    whole = shoptune("data", "build", spec, "--no-progress", "--out", tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr
    killed_when(
        ["data", "build", spec, "--no-progress", "--out", tmp_path / "mix"], lambda: any(tmp_path.glob(".mix.*"))
    )
    assert not (tmp_path / "mix" / "manifest.json").exists()
    rerun = shoptune("data", "build", spec, "--no-progress", "--out", tmp_path / "mix")
    assert rerun.returncode == 0, rerun.stderr
    assert files_of(tmp_path / "mix") == files_of(tmp_path / "whole")
    assert not list(tmp_path.glob(".mix.*"))


class SlowTeacher(JsonHandler):
    """Answers every request validly after a pause, counting the requests it was asked."""

    calls: list[str] = []  # noqa: RUF012 - shared by the server's threads

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["messages"][-1]["content"]
        SlowTeacher.calls.append(prompt)
        if prompt == "ping":
            content = "pong"
        else:
            time.sleep(0.05)
            k = prompt.split("example number ")[1].split(":")[0]
            content = json.dumps({"input_field": f"Explain item {k}\nOutput:", "output_field": f"Item {k} is fine."})
        choice = {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}
        usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
        self._send(
            200,
            {"id": "c", "object": "chat.completion", "created": 0, "model": "t", "choices": [choice]}
            | {"usage": usage},
        )


@pytest.fixture
def slow_teacher():
    SlowTeacher.calls.clear()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), SlowTeacher)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()


@pytest.mark.slow
def test_a_generation_killed_midway_asks_only_what_it_had_not_asked(slow_teacher, tmp_path):
    spec = tmp_path / "gen.yaml"
    settings = {"name": "g", "model": "t", "base_url": slow_teacher, "subtasks": ["category_explanation"]}
    spec.write_text(yaml.safe_dump({**settings, "examples_per_subtask": 40, "concurrency": 2, "raw_dir": str(RAW)}))
    out = tmp_path / "gen"

    def asked() -> int:
        return sum(call != "ping" for call in SlowTeacher.calls)

    killed_when(["data", "generate", spec, "--no-progress", "--out", out], lambda: asked() >= 10)
    before = asked()
    rerun = shoptune("data", "generate", spec, "--no-progress", "--out", out)
    assert rerun.returncode == 0, rerun.stderr
    assert asked() - before <= 40 - before + 2  # what was answered is not asked again; two may have been in flight
    assert len((out / "generated.jsonl").read_text().splitlines()) == 40
    again = shoptune("data", "generate", spec, "--no-progress", "--out", out)
    assert again.returncode == 0 and "finished earlier" in again.stderr, again.stderr


def adapter_for(model: Path, out: Path, seed: int) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    lora = LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM", init_lora_weights=False)
    get_peft_model(AutoModelForCausalLM.from_pretrained(model), lora).save_pretrained(out)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("verb", ["merge", "combine"])
def test_a_merge_or_combination_killed_while_writing_ends_as_an_uninterrupted_one(verb, tiny_model, tmp_path):
    parts = [adapter_for(tiny_model, tmp_path / f"a{i}", seed=i) for i in range(2)]
    args = [verb, *(parts[:1] if verb == "merge" else parts), "--model", tiny_model, "--out"]
    whole = shoptune(*args, tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr
    killed_when([*args, tmp_path / "out"], lambda: any(tmp_path.glob(".out.*")))
    rerun = shoptune(*args, tmp_path / "out")
    assert rerun.returncode == 0, rerun.stderr
    assert files_of(tmp_path / "out").keys() == files_of(tmp_path / "whole").keys()
    weights = "model.safetensors" if verb == "merge" else "adapter_model.safetensors"
    one, two = load_file(str(tmp_path / "whole" / weights)), load_file(str(tmp_path / "out" / weights))
    assert all(torch.equal(one[k], two[k]) for k in one)
    again = shoptune(*args, tmp_path / "out")
    assert again.returncode == 0 and "finished earlier" in again.stderr, again.stderr


def test_a_finished_evaluation_says_so(tiny_model, tmp_path, run_cli):
    args = ["eval", "run", DEV, "--model", tiny_model, "--limit", "6", "--no-progress", "--out", tmp_path / "e"]
    code, _, err = run_cli(*args)
    assert code == 0 and "answered 6" in err
    code, _, err = run_cli(*args)
    assert code == 0 and "finished earlier: all 6" in err, err


# --- records that pair, products that stay on one side -----------------------------------------------------------


def sources_file(tmp_path: Path, entries: dict) -> Path:
    path = tmp_path / "sources.yaml"
    path.write_text(yaml.safe_dump(entries, sort_keys=False))
    return path


LICENCE = {"id": "acme", "commercial": True}


def test_a_chat_that_ends_on_a_user_turn_pairs_the_last_reply_with_its_question(tmp_path):
    from shoptune.sources.mapped import load_sources

    chat = [
        {"role": "system", "content": "You help with kettles."},
        {"role": "user", "content": "does it boil fast?"},
        {"role": "assistant", "content": "yes it boils in two minutes."},
        {"role": "user", "content": "and what is the warranty period?"},
    ]
    write_jsonl(tmp_path / "chats.jsonl", [{"chat": chat}])
    subtask = {"name": "support", "capability": "knowledge", "task_type": "generation", "metric": "rougel"}
    entry = {"kind": "instructions", "path": "chats.jsonl", "columns": {"messages": "chat"}, "subtask": subtask}
    path = sources_file(tmp_path, {"chats": {**entry, "licence": LICENCE}})
    (source,) = load_sources(path, part=None)
    assert [record for _, record in source.records] == [("does it boil fast?", "yes it boils in two minutes.")]


def test_no_product_of_an_offer_pair_table_is_on_both_sides_of_the_held_out_split(tmp_path):
    from shoptune.sources.mapped import load_sources

    rows = [(f"kettle {i}", f"kettle {i} 1.7 l", "Y") for i in range(200)]
    rows += [(f"kettle {i}", f"kettle {i + 1} 1.7 l", "N") for i in range(0, 200, 2)]  # a right title paired twice
    rows += [(f"KETTLE  {i}", f"teapot {i}", "N") for i in range(0, 200, 7)]  # the same product, spelled loosely
    with (tmp_path / "pairs.csv").open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("a", "b", "m"), *rows])
    entry = {"kind": "offer_pair", "path": "pairs.csv", "columns": {"left.title": "a", "right.title": "b", "same": "m"}}
    entry |= {"values": {"same": {"Y": True, "N": False}}, "heldout": {"share": 0.3}, "licence": LICENCE}
    path = sources_file(tmp_path, {"pairs": entry})

    def titles(part: str) -> set[str]:
        (source,) = load_sources(path, part=part)
        return {" ".join(t.lower().split()) for _, r in source.records for t in (r.left.title, r.right.title)}

    train, held = titles("train"), titles("heldout")
    assert train and held and not train & held


def test_an_offer_table_without_an_id_column_gets_a_stable_id_per_row_and_says_so_once(tmp_path, capsys):
    from shoptune import errors
    from shoptune.sources import mapped

    with (tmp_path / "catalog.csv").open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("name", "cat"), ("blue kettle", "Kitchen"), ("red kettle", "Kitchen")])
    entry = {"kind": "offer", "path": "catalog.csv", "columns": {"title": "name", "category": "cat"}}
    path = sources_file(tmp_path, {"catalog": {**entry, "licence": LICENCE}})
    errors._SAID.clear()
    (first,) = mapped.load_sources(path, part=None)
    (second,) = mapped.load_sources(path, part=None)
    ids = [ident for ident, _ in first.records]
    assert len(set(ids)) == 2 and all(ident.startswith("row-") for ident in ids)
    assert ids == [ident for ident, _ in second.records]  # the same rows, the same ids
    assert capsys.readouterr().err.count("each row's id is made from its content") == 1


# --- mistakes in what a user gives: one line each ----------------------------------------------------------------


def test_a_sources_file_names_every_mistake_with_its_line_even_behind_a_duplicate_id(tmp_path):
    from shoptune.sources.mapped import load_sources

    (tmp_path / "r.csv").write_text("stars,head,body\n5,ok,fine\n", encoding="utf-8")
    text = (
        "reviews:\n  kind: review\n  path: r.csv\n  columns: {rating: stars, text: body}\n"
        "  licence: {id: acme, commercial: true}\n"
        "reviews:\n  kind: review\n  path: r.csv\n  columns: {rating: stars, title: head, text: body}\n"
        "  licence: {id: acme, commercial: true}\n"
        "other:\n  kind: review\n  path: r.csv\n  path: s.csv\n  licence: {id: acme, commercial: true}\n"
    )
    (tmp_path / "sources.yaml").write_text(text)
    with pytest.raises(ShoptuneError) as caught:
        load_sources(tmp_path / "sources.yaml")
    message = str(caught.value)
    where = tmp_path / "sources.yaml"
    assert f"{where}:6: source 'reviews': the id is used twice (first at line 1)" in message
    assert f"{where}:1: source 'reviews': columns: field 'title' of review needs a column" in message
    assert f"{where}:11:" in message and "key 'path' given twice (lines 13 and 14)" in message


def test_a_csv_with_a_byte_order_mark_reads_like_one_without(tmp_path):
    from shoptune.sources.mapped import load_sources

    (tmp_path / "r.csv").write_bytes("\ufeffstars,head,body\n5,ok,fine\n".encode())
    columns = {"rating": "stars", "title": "head", "text": "body"}
    path = sources_file(tmp_path, {"r": {"kind": "review", "path": "r.csv", "columns": columns, "licence": LICENCE}})
    (source,) = load_sources(path, part=None)
    assert [(r.rating, r.title) for _, r in source.records] == [(5, "ok")]


def test_the_ranking_and_retrieval_baselines_answer_from_the_listed_items(tmp_path):
    from shoptune.evaluate.baselines import constant_answers
    from shoptune.schema import parse_example

    def ranking(n: int) -> dict:
        listed = "\n".join(f"{i}. item {i}" for i in range(1, n + 1))
        return {"input_field": f"Rank:\n{listed}\nOutput:", "output_field": list(range(n)), "task_name": "r"}

    common = {"task_type": "ranking", "metric": "ndcg", "is_multiple_choice": False, "track": "t"}
    examples = [parse_example({**ranking(n), **common}) for n in (3, 7)]
    retrieval = {**ranking(2), **common, "task_type": "retrieval", "metric": "hit rate@3", "output_field": [1]}
    answers, said = constant_answers([*examples, parse_example(retrieval)])
    assert answers == ["1,2,3", "1,2,3,4,5,6,7", "1,2"]
    assert said["ranking"] == "the listed order"


def test_train_into_a_folder_it_cannot_write_is_one_line(examples_file, tiny_model, tmp_path, run_cli):
    target = tmp_path / "locked"
    target.mkdir()
    target.chmod(0o500)
    try:
        with tempfile.TemporaryFile(dir=target):
            target = Path("/sys/kernel")  # this process may write anywhere (root): a read-only file system instead
    except OSError:
        pass
    if not target.is_dir():
        pytest.skip("no folder this process cannot write in")
    args = ["train", "--model", tiny_model, "--data", examples_file / "train.jsonl", "--max-steps", "1"]
    code, out, err = run_cli(*args, "--out", target)
    assert code == 2 and "cannot write there" in err and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in out + err


def numeric_options() -> list[tuple[str, str]]:
    """(command, option) for every option of every verb that takes a number."""
    import typing

    import typer.main

    from shoptune.cli import app

    def numeric(annotation: object) -> bool:
        kinds = [a for a in typing.get_args(annotation) or (annotation,) if a is not type(None)]
        return len(kinds) == 1 and kinds[0] in (int, float)

    found = []
    stack = [((), typer.main.get_command(app))]
    while stack:
        path, command = stack.pop()
        stack += [((*path, name), sub) for name, sub in getattr(command, "commands", {}).items()]
        for param in getattr(command, "params", []):
            described = getattr(param, "type_descriptor", None)
            if param.param_type_name == "option" and described is not None and numeric(described.annotation):
                found.append((" ".join(path), param.opts[0]))
    return sorted(found)


# A valid invocation of each verb, short of the option under test; the value is refused before anything runs.
INVOCATIONS = {
    "data build": ["data", "build", ROOT / "configs" / "mixtures" / "all.yaml", "--out", "{tmp}/o"],
    "data generate": ["data", "generate", ROOT / "configs" / "generate" / "example.yaml", "--out", "{tmp}/o"],
    "data heldout": ["data", "heldout", "--out", "{tmp}/o.jsonl"],
    "eval baseline": ["eval", "baseline", DEV, "--out", "{tmp}/o"],
    "eval run": ["eval", "run", DEV, "--out", "{tmp}/o"],
    "eval score": ["eval", "score", DEV, DEV, "--out", "{tmp}/o"],
    "eval compare": ["eval", "compare", DEV, DEV, DEV],
    "train": ["train", ROOT / "configs" / "train" / "demo.yaml", "--out", "{tmp}/o"],
    "merge": ["merge", "{tmp}", "--out", "{tmp}/o"],
    "combine": ["combine", "{tmp}", "{tmp}", "--out", "{tmp}/o"],
    "serve": ["serve", "--port", "0"],
    "study run": ["study", "run", ROOT / "configs" / "studies" / "demo.yaml", "--out", "{tmp}/o", "--dry-run"],
}
# A seed is any integer; -1 steps: the epochs decide; a negative weight subtracts an adapter (task negation).
MAY_BE_NEGATIVE = {"--seed", "--max-steps", "--weight"}


@pytest.mark.parametrize(("verb", "option"), numeric_options(), ids=lambda v: str(v))
def test_every_numeric_option_is_checked_for_its_range_in_one_line(verb, option, tmp_path, run_cli):
    assert verb in INVOCATIONS, f"a new verb takes numbers: add it to INVOCATIONS ({verb})"
    args = [str(a).replace("{tmp}", str(tmp_path)) for a in INVOCATIONS[verb]]
    for value in ("nan", "inf", "-inf", *(() if option in MAY_BE_NEGATIVE else ("-1",))):
        code, out, err = run_cli(*args, option, value)
        assert code == 2, (option, value, code, err[-500:])
        assert "Traceback" not in out + err and "error" in err.lower(), (option, value, err)
        name = option.removeprefix("--").replace("-", "_").split("_")[-1]
        assert name in err.replace("-", "_") or "not a valid" in err, (option, value, err)


# --- the same answer wherever it is asked; extensions that can be fixed ------------------------------------------


def test_serving_and_evaluation_end_a_constrained_answer_the_budget_cut_alike(tiny_model):
    from shoptune.evaluate.backends import HFBackend
    from shoptune.schema import TaskType, read_examples
    from shoptune.serve import ChatRequest, ModelServer, ServeLimits
    from shoptune.tasks.render import SHOPBENCH_SYSTEM_PROMPT

    question = next(ex.input_field for ex in read_examples(DEV) if ex.task_type is TaskType.NER)
    evaluating = HFBackend(str(tiny_model))
    server = ModelServer(HFBackend(str(tiny_model), system_prompt=None), "shop", ServeLimits(), constrained=True)
    cut = 0
    try:
        for budget in range(1, 9):
            answer = evaluating.generate([question], budget, TaskType.NER)[0]
            messages = [{"role": "system", "content": SHOPBENCH_SYSTEM_PROMPT}, {"role": "user", "content": question}]
            body = ChatRequest(model="shop", messages=messages, max_tokens=budget, task_type="named_entity_recognition")
            text = server.chat_text(body.messages)
            served = server.job(body, [text], questions=[question]).future.result(timeout=120)[0].text
            assert served == answer, budget
            from shoptune.evaluate.constraints import rule_for
            from shoptune.evaluate.engine import Request

            ids = evaluating.tokenize([evaluating.render(question)])[0]
            (raw,) = evaluating.engine.run(
                [Request(ids, budget, rule=rule_for(evaluating.tokenizer, TaskType.NER, question))]
            )
            cut += (
                evaluating.tokenizer.decode(raw.new, skip_special_tokens=True) != answer
            )  # the word was run to its end
    finally:
        server.scheduler.close()
    assert cut, "no budget cut a word: the rule was not exercised"


def test_a_constrained_ranking_without_a_numbered_list_is_said_not_silently_answered_freely(tiny_model, tmp_path):
    from shoptune.evaluate.config import EvalConfig
    from shoptune.evaluate.runner import run_eval
    from shoptune.serve import ApiError, CompletionRequest, ModelServer, ServeLimits

    common = {"task_name": "r", "task_type": "ranking", "metric": "ndcg", "is_multiple_choice": False, "track": "t"}
    listed = {"input_field": "Rank:\n1. kettle\n2. teapot\n3. mug\nOutput:", "output_field": [2, 1, 0]}
    loose = {"input_field": "Rank kettle, teapot and mug by relevance to 'tea'.\nOutput:", "output_field": [2, 1, 0]}
    write_jsonl(tmp_path / "set.jsonl", [{**listed, **common}, {**loose, **common}])
    config = EvalConfig(model=str(tiny_model), constrained=True, bootstrap=0)
    assert run_eval(tmp_path / "set.jsonl", tmp_path / "e", config, progress=False).unconstrained == 1
    assert json.loads((tmp_path / "e" / "run.json").read_text())["unconstrained_questions"] == 1

    from shoptune.evaluate.backends import HFBackend

    server = ModelServer(HFBackend(str(tiny_model), system_prompt=None), "shop", ServeLimits(), constrained=True)
    try:
        body = CompletionRequest(model="shop", prompt=loose["input_field"], max_tokens=8, task_type="ranking")
        with pytest.raises(ApiError, match="lists no numbered candidates"):
            server.job(body, [loose["input_field"]])
    finally:
        server.scheduler.close()


def test_a_plugin_that_failed_to_import_is_tried_again_and_shows_its_own_traceback(tmp_path, monkeypatch):
    from shoptune import plugins
    from shoptune.metrics import METRICS

    plugin = tmp_path / "acme_metric.py"
    plugin.write_text("import json\n\nvalue = json.loads('{not json')\n")
    monkeypatch.setenv("SHOPTUNE_INCLUDE", str(plugin))
    monkeypatch.setattr(plugins, "_loaded", set())
    with pytest.raises(ShoptuneError) as caught:
        plugins.load_plugins()
    message = str(caught.value)
    assert f'File "{plugin}", line 3' in message and "JSONDecodeError" in message
    assert "importlib" not in message  # the plugin's own frames, not the import machinery's
    plugin.write_text(
        "from shoptune.metrics import MetricDef, TaskType, register_metric\n"
        "register_metric('acme retried', MetricDef(TaskType.GENERATION, score=lambda p, t: float(p == t)))\n"
    )
    try:
        plugins.load_plugins()  # the fixed file is imported at the next miss, not skipped as loaded
        assert "acme retried" in METRICS
    finally:
        METRICS.pop("acme retried", None)
