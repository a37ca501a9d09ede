import json

import pytest

from shoptune.errors import ShoptuneError
from shoptune.files import atomic_write_text
from shoptune.schema import Example, TaskType, parse_example, read_examples, write_jsonl
from shoptune.tasks.render import answer_text


def test_development_set_reads_and_round_trips(dev_set, tmp_path):
    examples = read_examples(dev_set)
    assert len(examples) == 96
    assert {ex.task_type for ex in examples} == set(TaskType)
    write_jsonl(tmp_path / "copy.jsonl", (ex.to_json() for ex in examples))
    assert read_examples(tmp_path / "copy.jsonl") == examples


def test_provenance_fields_are_kept_and_unknown_fields_ignored():
    ex = parse_example(
        {
            "input_field": "q",
            "output_field": "a",
            "task_name": "t",
            "task_type": "generation",
            "metric": "rougel",
            "is_multiple_choice": False,
            "track": "x",
            "language": "de",
            "source": "taxonomy",
            "comment": "ignored",
        }
    )
    assert ex.language == "de" and ex.source == "taxonomy"
    assert "comment" not in ex.to_json()


def test_answer_text_is_what_the_parsers_read_back(dev_set):
    from shoptune.evaluate.parsers import parse_response

    for ex in read_examples(dev_set):
        parsed = parse_response(answer_text(ex.output_field, ex.task_type), ex.task_type)
        if ex.task_type is TaskType.RANKING:
            # The answer lists candidates best first, so relevances read in that order never increase.
            relevances = [ex.output_field[i - 1] for i in parsed]
            assert sorted(parsed) == list(range(1, len(ex.output_field) + 1))
            assert relevances == sorted(relevances, reverse=True)
        else:
            assert parsed == ex.output_field


def test_error_names_file_line_and_field(tmp_path):
    path = tmp_path / "d.jsonl"
    good = {
        "input_field": "q",
        "output_field": 1,
        "task_name": "t",
        "task_type": "multiple-choice",
        "metric": "accuracy",
        "is_multiple_choice": True,
        "track": "x",
    }
    path.write_text(json.dumps(good) + "\n\n" + json.dumps({**good, "output_field": [1]}) + "\n")
    with pytest.raises(ShoptuneError) as err:
        read_examples(path)
    assert str(err.value).startswith(f"{path}:3: field 'output_field':")


def test_atomic_write_leaves_no_temporary_files(tmp_path):
    atomic_write_text(tmp_path / "a" / "f.txt", "one")
    atomic_write_text(tmp_path / "a" / "f.txt", "two")
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["f.txt"]
    assert (tmp_path / "a" / "f.txt").read_text() == "two"


def test_example_is_immutable():
    ex = Example(
        input_field="q",
        output_field=1,
        task_name="t",
        task_type=TaskType.MULTIPLE_CHOICE,
        metric="accuracy",
        is_multiple_choice=True,
        track="x",
    )
    with pytest.raises(ValueError):
        ex.input_field = "other"
