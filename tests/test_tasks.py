"""The subtask registry: coverage, and per subtask that examples are well-formed and answerable."""

from collections import Counter
from pathlib import Path

import pytest
from published_fixtures import raw_with_published

from shoptune.data.clean import Contamination
from shoptune.evaluate.parsers import parse_response
from shoptune.schema import TaskType, parse_example, read_examples
from shoptune.sources.shipped import load_raw
from shoptune.tasks.records import RawCorpus
from shoptune.tasks.registry import Capability, all_subtasks
from shoptune.tasks.render import answer_text

ROOT = Path(__file__).resolve().parents[1]
SUBTASKS = all_subtasks()
PUBLISHED_SOURCES = {"amazon-esci", "amazon-m2", "amazon-reviews-2023", "mave"}
SHIPPED_SOURCES = {t.source for t in SUBTASKS.values()} - PUBLISHED_SOURCES


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> RawCorpus:
    """The shipped raw data plus small fixtures in the published formats of ESCI, M2, Reviews and MAVE."""
    return load_raw(raw_with_published(tmp_path_factory.mktemp("raw"), ROOT / "data" / "raw"))


@pytest.fixture(scope="module")
def dev_leak(dev_set_path=ROOT / "data" / "shopbench" / "development.json") -> Contamination:
    return Contamination(read_examples(dev_set_path), n=13)


def test_registry_covers_every_capability_and_task_type():
    assert len(SUBTASKS) >= 16
    per_capability = Counter(t.capability for t in SUBTASKS.values())
    assert set(per_capability) == set(Capability) and min(per_capability.values()) >= 3
    assert {t.task_type for t in SUBTASKS.values()} == set(TaskType)


@pytest.mark.parametrize("name", sorted(SUBTASKS))
def test_subtask_examples(name, corpus, dev_leak):
    task = SUBTASKS[name]
    assert len(set(task.templates)) >= 3
    # The published-format fixtures are small: their subtasks cannot yield 60 distinct examples.
    n = 60 if task.source in SHIPPED_SOURCES else 4
    examples = task.build(corpus, n, seed=1)
    assert len(examples) == n
    assert task.build(corpus, n, seed=1) == examples, "same seed, same examples"
    for ex in examples:
        assert parse_example(ex.to_json()) == ex  # validates as a record, round-trips through JSON
        assert (ex.task_type, ex.metric, ex.capability) == (task.task_type, task.metric, task.capability.value)
        parsed = parse_response(answer_text(ex.output_field, ex.task_type), ex.task_type)
        if ex.task_type is TaskType.RANKING:
            relevances = [ex.output_field[i - 1] for i in parsed]
            assert relevances == sorted(ex.output_field, reverse=True)
        elif ex.task_type is TaskType.NER:
            assert [p.lower() for p in parsed] == [t.lower() for t in ex.output_field]
        else:
            assert parsed == ex.output_field
        assert not dev_leak(ex), f"{name} leaks a development-set question: {ex.input_field[:80]}"
    # Instructions vary: the prompts do not all start the same way.
    assert len({ex.input_field[:25] for ex in examples}) >= 2
