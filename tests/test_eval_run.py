"""`shoptune eval run` end to end on a tiny Llama built in code, over all 96 development questions."""

import json
import signal
import subprocess
import sys
import time

import pytest

from shoptune.evaluate.config import EvalConfig
from shoptune.evaluate.parsers import parse_multiple_choice
from shoptune.evaluate.predictor import ShopBenchPredictor
from shoptune.evaluate.runner import run_eval
from shoptune.schema import TaskType, read_examples
from tests.helpers.tiny_model import build_tiny_model


def predictions(out):
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    return {r["index"]: r["response"] for r in rows}


@pytest.fixture(scope="module")
def first_run(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    from tests.helpers.tiny_model import DEV_SET

    result = run_eval(DEV_SET, out, EvalConfig(model=str(tiny_model), batch_size=8), progress=False)
    return out, result


def test_scores_every_track_and_task(first_run):
    out, result = first_run
    scores = json.loads((out / "scores.json").read_text())
    assert len(scores["tracks"]) == 4 and len(scores["tasks"]) == 18
    assert result.computed == 96 and result.reused == 0
    assert sum(t["n"] for t in scores["tasks"].values()) == 96
    assert scores["overall"] == pytest.approx(sum(scores["tracks"].values()) / 4)
    low, high = scores["ci95"]["overall"]
    assert low <= scores["overall"] <= high
    assert (out / "scores.md").read_text().startswith("# ShopBench scores")
    assert "batch_size: 8" in (out / "config.yaml").read_text()
    assert not (out / "predictions.partial.jsonl").exists()


def test_rerun_answers_only_the_missing_half(first_run, tmp_path, tiny_model, dev_set):
    out, _ = first_run
    before = predictions(out)
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    for name in ("run.json", "config.yaml"):
        (resumed / name).write_text((out / name).read_text())
    kept = [json.dumps({"index": i, "response": before[i]}) for i in sorted(before) if i % 2 == 0]
    (resumed / "predictions.jsonl").write_text("\n".join(kept) + "\n")

    result = run_eval(dev_set, resumed, EvalConfig(model=str(tiny_model), batch_size=8), progress=False)
    assert (result.computed, result.reused) == (48, 48)
    after = predictions(resumed)
    assert sorted(after) == list(range(96))
    # Other batch neighbours change only padding; greedy answers must not change (ties aside).
    same = sum(after[i] == before[i] for i in range(96))
    assert same >= 94, f"{96 - same} answers changed on resume"

    again = run_eval(dev_set, resumed, EvalConfig(model=str(tiny_model), batch_size=8), progress=False)
    assert (again.computed, again.reused) == (0, 96)


def test_resume_refuses_answers_from_other_settings(first_run, tiny_model, dev_set, run_cli):
    out, _ = first_run
    code, _, err = run_cli("eval", "run", dev_set, "--out", out, "--model", tiny_model, "--mc-mode", "generate")
    assert code == 2 and "answers given with other settings or data (mc_mode)" in err


def test_a_variant_reuses_the_answers_its_settings_cannot_change(first_run, tiny_model, dev_set, tmp_path):
    out, _ = first_run
    debias = EvalConfig(model=str(tiny_model), batch_size=8, mc_debias=True)
    reused = run_eval(dev_set, tmp_path / "reused", debias, progress=False, reuse=[out])
    kinds = [ex.task_type for ex in read_examples(dev_set)]
    choice = sum(t is TaskType.MULTIPLE_CHOICE for t in kinds)
    assert (reused.computed, reused.reused) == (choice, 96 - choice)
    assert json.loads((tmp_path / "reused" / "run.json").read_text())["reused_answers"] == 96 - choice
    alone = run_eval(dev_set, tmp_path / "alone", debias, progress=False)
    assert alone.computed == 96
    assert predictions(tmp_path / "reused") == predictions(tmp_path / "alone")
    # Another model's answers are never taken: its settings differ for every task type.
    other = EvalConfig(model=str(tiny_model) + "-other", batch_size=8)
    from shoptune.evaluate.runner import reusable

    assert reusable(read_examples(dev_set), dev_set, other, [out]) == {}


def test_runs_in_a_shared_scope_load_their_model_once(tiny_model):
    from shoptune.evaluate.runner import make_backend, shared_backends

    plain = EvalConfig(model=str(tiny_model))
    with shared_backends():
        first = make_backend(plain)
        assert make_backend(plain.model_copy(update={"mc_debias": True, "batch_size": 2})) is first
        other = make_backend(plain.model_copy(update={"system_prompt": None}))  # renders prompts otherwise
        assert other is not first and make_backend(plain) is not first  # one model held at a time
    assert make_backend(plain) is not make_backend(plain)  # outside the scope nothing is kept


@pytest.mark.slow
def test_killed_run_resumes_from_its_journal(tiny_model, dev_set, tmp_path):
    out = tmp_path / "killed"
    cmd = [
        sys.executable,
        "-m",
        "shoptune",
        "eval",
        "run",
        str(dev_set),
        "--out",
        str(out),
        "--model",
        str(tiny_model),
        "--batch-size",
        "2",
        "--no-progress",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = out / "predictions.partial.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if journal.is_file() and journal.read_text().count("\n") >= 10:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before_kill = journal.read_text().count("\n")
    assert 10 <= done_before_kill < 96, "the run was not interrupted mid-way"
    assert not (out / "predictions.jsonl").exists() and not (out / "scores.json").exists()

    # A kill mid-write leaves a torn last line: it must be dropped and re-answered, not crash the resume.
    with journal.open("a") as fh:
        fh.write('{"index": 95, "resp')
    result = run_eval(dev_set, out, EvalConfig(model=str(tiny_model), batch_size=2), progress=False)
    assert result.computed == 96 - done_before_kill
    assert sorted(predictions(out)) == list(range(96))
    assert not journal.exists()


@pytest.fixture(scope="module")
def digit_model(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("digit-llama"), digit_boost=25.0, seed=3)


def test_mc_logits_match_generate_where_generate_names_an_option(digit_model, dev_set, tmp_path):
    examples = read_examples(dev_set)
    mc = [i for i, ex in enumerate(examples) if ex.task_type is TaskType.MULTIPLE_CHOICE]
    runs = {}
    for mode in ("logits", "generate"):
        run_eval(dev_set, tmp_path / mode, EvalConfig(model=str(digit_model), mc_mode=mode), progress=False)
        runs[mode] = predictions(tmp_path / mode)
    from shoptune.tasks.render import option_labels

    comparable = [i for i in mc if runs["generate"][i].strip() in option_labels(examples[i].input_field)]
    assert len(comparable) >= 15, "the test model should often answer with an option digit"
    assert all(runs["logits"][i] == runs["generate"][i].strip() for i in comparable)
    # Logits mode always names an option; free generation sometimes does not.
    assert all(parse_multiple_choice(runs["logits"][i]) >= 0 for i in mc)


def test_kdd_predictor_gives_the_engine_answers(digit_model, dev_set, tmp_path):
    """Drive the predictor the way the starter kit does: by task type, in file order, in batches."""
    examples = read_examples(dev_set)
    predictor = ShopBenchPredictor(str(digit_model), batch_size=4, max_new_tokens=16)
    kit = {}
    for is_mc in (True, False):
        rows = [i for i, ex in enumerate(examples) if ex.is_multiple_choice == is_mc]
        size = predictor.get_batch_size()
        for start in range(0, len(rows), size):
            batch = rows[start : start + size]
            answers = predictor.batch_predict({"prompt": [examples[i].input_field for i in batch]}, is_mc)
            assert all(isinstance(a, str) for a in answers) and len(answers) == len(batch)
            kit.update(zip(batch, answers, strict=True))
    budget = dict.fromkeys(["retrieval", "ranking", "named_entity_recognition", "generation"], 16)
    run_eval(dev_set, tmp_path, EvalConfig(model=str(digit_model), max_new_tokens=budget), progress=False)
    engine = predictions(tmp_path)
    assert all(kit[i] == engine[i] for i in range(96) if examples[i].is_multiple_choice)
    assert sum(kit[i] == engine[i] for i in range(96)) >= 94


def test_predictor_rejects_batch_sizes_the_kit_forbids(digit_model):
    from shoptune.errors import ShoptuneError

    with pytest.raises(ShoptuneError, match="1 to 16"):
        ShopBenchPredictor(str(digit_model), batch_size=32)


def test_cut_batches_and_the_shared_prefix_give_the_answers_of_one_question_at_a_time(tiny_model, dev_set):
    from shoptune.evaluate.backends import HFBackend

    examples = read_examples(dev_set)
    backend = HFBackend(str(tiny_model))
    one_by_one = HFBackend(str(tiny_model))
    one_by_one._with_prefix = lambda rows: (one_by_one._pad(rows), None)  # no cached prefix, no padding
    one_by_one.prefill_runs = lambda rows, cost: [[i] for i in range(len(rows))]
    rows = backend.tokenize([backend.render(ex.input_field) for ex in examples])
    lengths = sorted((len(r) for r in rows), reverse=True)
    runs = backend.prefill_runs(rows, 16)
    assert sorted(i for run in runs for i in run) == list(range(len(rows))) and 1 < len(runs) < len(rows)
    assert backend.prefill_runs(rows, 10**9) == [sorted(range(len(rows)), key=lambda i: -len(rows[i]))]
    padded = sum(max(len(rows[i]) for i in run) * len(run) for run in runs)
    assert padded < lengths[0] * len(rows)  # the cut saves padding
    _, cache = backend._with_prefix(rows[:8])
    assert cache is not None and cache.get_seq_length() >= 8  # the system prompt is shared
    mc = [ex.input_field for ex in examples if ex.is_multiple_choice][:16]
    for a, b in zip(backend.option_scores(mc), one_by_one.option_scores(mc), strict=True):
        assert a.keys() == b.keys() and all(abs(a[k] - b[k]) < 1e-4 for k in a)
    other = [ex.input_field for ex in examples if not ex.is_multiple_choice][:12]
    assert backend.generate(other, 12) == one_by_one.generate(other, 12)
