"""Every kind of bad input: one clear line on stderr, exit code 2, nothing written."""

import json

import pytest

from tests.helpers.files import write_lines

GOOD = {
    "input_field": "Which one?\n0. a\n1. b\nAnswer: ",
    "output_field": 1,
    "task_name": "t1",
    "task_type": "multiple-choice",
    "metric": "accuracy",
    "is_multiple_choice": True,
    "track": "x",
}
GEN = {**GOOD, "task_type": "generation", "metric": "rougel", "is_multiple_choice": False, "output_field": "text"}


def bad_data(tmp_path, rows):
    return write_lines(tmp_path / "data.jsonl", [GOOD, *rows])


DATA_CASES = {
    "missing file": (lambda p: p / "nope.jsonl", "nope.jsonl: no such file"),
    "directory": (lambda p: p, "is a directory"),
    "invalid json": (lambda p: bad_data(p, ['{"input_field": "q",']), "data.jsonl:2: invalid JSON"),
    "not an object": (lambda p: bad_data(p, ["[1, 2]"]), "data.jsonl:2: expected a JSON object, got list"),
    "missing field": (
        lambda p: bad_data(p, [{k: v for k, v in GOOD.items() if k != "task_type"}]),
        "data.jsonl:2: field 'task_type': is missing",
    ),
    "unknown task type": (
        lambda p: bad_data(p, [{**GOOD, "task_type": "mcq"}]),
        "field 'task_type': unknown task_type 'mcq'",
    ),
    "unknown metric": (lambda p: bad_data(p, [{**GOOD, "metric": "f1"}]), "field 'metric': unknown metric 'f1'"),
    "metric for wrong type": (lambda p: bad_data(p, [{**GOOD, "metric": "ndcg"}]), "does not apply to task_type"),
    "mc answer as text": (
        lambda p: bad_data(p, [{**GOOD, "output_field": "1"}]),
        "field 'output_field': multiple-choice",
    ),
    "retrieval empty": (
        lambda p: bad_data(
            p,
            [
                {
                    **GOOD,
                    "task_type": "retrieval",
                    "metric": "hit rate@3",
                    "is_multiple_choice": False,
                    "output_field": [],
                }
            ],
        ),
        "non-empty list of integers",
    ),
    "ranking strings": (
        lambda p: bad_data(
            p,
            [
                {
                    **GOOD,
                    "task_type": "ranking",
                    "metric": "ndcg",
                    "is_multiple_choice": False,
                    "output_field": ["1", "0"],
                }
            ],
        ),
        "list of numbers",
    ),
    "ner not a list": (
        lambda p: bad_data(
            p,
            [
                {
                    **GOOD,
                    "task_type": "named_entity_recognition",
                    "metric": "micro f1",
                    "is_multiple_choice": False,
                    "output_field": "nike",
                }
            ],
        ),
        "list of strings",
    ),
    "generation number": (lambda p: bad_data(p, [{**GEN, "output_field": 3}]), "generation needs a string"),
    "rouge with reference list": (
        lambda p: bad_data(p, [{**GEN, "output_field": ["a", "b"]}]),
        "only allowed with a sentence-embedding",
    ),
    "flag contradicts type": (
        lambda p: bad_data(p, [{**GOOD, "is_multiple_choice": False}]),
        "field 'is_multiple_choice'",
    ),
    "prompt not text": (
        lambda p: bad_data(p, [{**GOOD, "input_field": 7}]),
        "field 'input_field': Input should be a valid string",
    ),
    "blank task name": (lambda p: bad_data(p, [{**GOOD, "task_name": " "}]), "field 'task_name': must not be empty"),
    "empty file": (lambda p: write_lines(p / "data.jsonl", []), "holds no examples"),
    "not utf-8": (lambda p: (p / "data.jsonl").write_bytes(b'{"a": "\xff\xfe"}\n') and p / "data.jsonl", "not UTF-8"),
}


@pytest.mark.parametrize("case", DATA_CASES)
def test_bad_data(case, tmp_path, run_cli):
    make, expected = DATA_CASES[case]
    data = make(tmp_path)
    preds = write_lines(tmp_path / "preds.jsonl", [{"index": 0, "response": "1"}])
    code, _, err = run_cli("eval", "score", data, preds, "--out", tmp_path / "out")
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert expected in err
    assert not (tmp_path / "out").exists()


PRED_CASES = {
    "invalid json": (["{index: 0}"], "preds.jsonl:1: invalid JSON"),
    "index missing": ([{"response": "1"}], "preds.jsonl:1: field 'index': is missing"),
    "index not an integer": ([{"index": "0", "response": "1"}], "field 'index': must be an integer"),
    "index out of range": (
        [{"index": 2, "response": "1"}],
        "field 'index': 2 is out of range: the data has 2 questions",
    ),
    "index twice": (
        [{"index": 0, "response": "1"}, {"index": 0, "response": "0"}],
        "preds.jsonl:2: field 'index': 0 appears twice",
    ),
    "response not text": ([{"index": 0, "response": 1}], "field 'response': must be a string, got int"),
    "response missing": ([{"index": 1}], "field 'response': is missing"),
}


@pytest.mark.parametrize("case", PRED_CASES)
def test_bad_predictions(case, tmp_path, run_cli):
    rows, expected = PRED_CASES[case]
    data = write_lines(tmp_path / "data.jsonl", [GOOD, GEN])
    preds = write_lines(tmp_path / "preds.jsonl", rows)
    code, _, err = run_cli("eval", "score", data, preds, "--out", tmp_path / "out")
    assert (code, err.count("\n")) == (2, 1)
    assert expected in err
    assert not (tmp_path / "out").exists()


RUN_CASES = {
    "model folder missing": (lambda p: ["--model", p / "no-model"], "no such folder"),
    "hub id not cached": (
        lambda p: ["--model", "someone/not-cached-model"],
        "nor in the Hugging Face cache",
    ),
    "unknown config key": (lambda p: ["--config", _yaml(p, "batchsize: 4\n")], "setting 'batchsize': unknown setting"),
    "invalid yaml": (lambda p: ["--config", _yaml(p, "batch_size: [4\n")], "invalid YAML"),
    "bad mc mode": (lambda p: ["--mc-mode", "vote"], "setting 'mc_mode'"),
    "bad token budget": (lambda p: ["--max-new-tokens", "generation"], "--max-new-tokens expects KEY=VALUE"),
    "unknown token budget type": (lambda p: ["--max-new-tokens", "essay=5"], "unknown task type(s) ['essay']"),
    "adapter without config": (lambda p: ["--model", "TINY", "--adapter", p], "no adapter_config.json"),
    "openai without url": (lambda p: ["--backend", "openai"], "needs base_url"),
}


def _yaml(tmp_path, text):
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("case", RUN_CASES)
def test_bad_run_settings(case, tmp_path, run_cli, dev_set, tiny_model):
    make, expected = RUN_CASES[case]
    args = [tiny_model if a == "TINY" else a for a in make(tmp_path)]
    code, _, err = run_cli("eval", "run", dev_set, "--out", tmp_path / "out", *args)
    assert (code, err.count("\n")) == (2, 1), err
    assert expected in err
    assert not (tmp_path / "out").exists()


def test_out_is_a_file(tmp_path, run_cli, dev_set):
    (tmp_path / "out").write_text("keep me")
    preds = write_lines(tmp_path / "preds.jsonl", [{"index": 0, "response": "1"}])
    code, _, err = run_cli("eval", "score", dev_set, preds, "--out", tmp_path / "out")
    assert code == 2 and "exists and is not a directory" in err
    assert (tmp_path / "out").read_text() == "keep me"
    assert json.loads(preds.read_text()) == {"index": 0, "response": "1"}


def test_an_output_file_under_a_file_is_one_clear_error(tmp_path, run_cli):
    (tmp_path / "plain").write_text("keep me")
    code, _, err = run_cli("data", "heldout", "--out", tmp_path / "plain" / "h.jsonl", "--per-subtask", "1")
    assert code == 2 and "cannot write there" in err and "Traceback" not in err
    assert (tmp_path / "plain").read_text() == "keep me"
