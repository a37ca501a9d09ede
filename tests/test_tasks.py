"""The subtask registry: coverage, and per subtask that examples are well-formed and answerable."""

import re
from collections import Counter
from pathlib import Path

import pytest

from shoptune.data.clean import Contamination
from shoptune.evaluate.parsers import parse_response
from shoptune.schema import TaskType, parse_example, read_examples
from shoptune.sources.records import RawCorpus
from shoptune.sources.registry import SOURCES, load_raw
from shoptune.tasks.catalog import all_subtasks
from shoptune.tasks.registry import Capability
from shoptune.tasks.render import answer_text, option_labels
from tests.helpers.published import raw_with_published

ROOT = Path(__file__).resolve().parents[1]
OPTION_OR_CANDIDATE = re.compile(r"^\d+\. ", re.MULTILINE)
SUBTASKS = all_subtasks()
SHIPPED = {source.id for source in SOURCES if source.ships}


def shipped(task) -> bool:
    return set(task.sources) <= SHIPPED


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> RawCorpus:
    """The shipped raw data plus small fixtures in the published formats of ESCI, M2, Reviews and MAVE."""
    return load_raw(raw_with_published(tmp_path_factory.mktemp("raw"), ROOT / "data" / "raw"))


@pytest.fixture(scope="module")
def dev_leak(dev_set_path=ROOT / "data" / "shopbench" / "development.json") -> Contamination:
    return Contamination(read_examples(dev_set_path), n=13)


def test_registry_covers_every_capability_task_type_and_shopbench_language():
    assert len(SUBTASKS) >= 34
    per_capability = Counter(t.capability for t in SUBTASKS.values())
    assert set(per_capability) == set(Capability) and min(per_capability.values()) >= 6
    assert {t.task_type for t in SUBTASKS.values()} == set(TaskType)
    multilingual = {lang for t in SUBTASKS.values() if t.capability is Capability.MULTILINGUAL for lang in t.languages}
    assert {"de", "es", "fr", "it", "ja"} <= multilingual
    # ... and with the data that ships: every capability, task type and one of those languages has data.
    with_data = [t for t in SUBTASKS.values() if shipped(t)]
    assert len(with_data) >= 30 and {t.task_type for t in with_data} == set(TaskType)
    assert {"de", "es", "fr", "it", "ja"} <= {lang for t in with_data for lang in t.languages}


@pytest.mark.parametrize("name", sorted(SUBTASKS))
def test_subtask_examples(name, corpus, dev_leak):
    task = SUBTASKS[name]
    assert len(set(task.templates)) >= 3
    # The published-format fixtures are small: their subtasks cannot yield 60 distinct examples.
    n = 60 if shipped(task) else 4
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
    if n >= 20:  # Instructions vary: the prompts do not all start the same way.
        assert len({ex.input_field[:25] for ex in examples}) >= 2


@pytest.mark.parametrize("name", sorted(n for n, t in SUBTASKS.items() if shipped(t)))
def test_answers_have_the_shape_their_task_type_is_scored_on(name, corpus):
    """What a model is taught to answer is what ShopBench scores best: MC one listed option (positions
    balanced), retrieval three distinct listed indices, ranking a full permutation, NER spans of the input,
    generation varied text."""
    task = SUBTASKS[name]
    examples = task.build(corpus, 200, seed=2)
    answers = [answer_text(ex.output_field, ex.task_type) for ex in examples]
    if task.task_type is TaskType.MULTIPLE_CHOICE:
        assert all(a in option_labels(ex.input_field) for a, ex in zip(answers, examples, strict=True))
        positions = Counter(answers)
        options = len(option_labels(examples[0].input_field))
        assert len(positions) == options and max(positions.values()) < 2.0 * len(examples) / options
    elif task.task_type is TaskType.RETRIEVAL:
        for a, ex in zip(answers, examples, strict=True):
            picked = [int(x) for x in a.split(",")]
            listed = len(OPTION_OR_CANDIDATE.findall(ex.input_field))
            assert len(picked) == len(set(picked)) == 3 and all(1 <= i <= listed for i in picked)
    elif task.task_type is TaskType.RANKING:
        assert all(sorted(int(x) for x in a.split(",")) == [1, 2, 3, 4, 5] for a in answers)
    elif task.task_type is TaskType.NER:
        assert all(ex.output_field and all(e in ex.input_field for e in ex.output_field) for ex in examples)
    else:
        # Free text is not one template: answers do not all open with the same three words.
        openings = Counter(" ".join(a.split()[:3]) for a in answers)
        assert max(openings.values()) < 0.5 * len(answers) or task.metric.value in ("bleu", "rougel")


def test_held_out_draws_use_only_the_reserved_paraphrase(corpus):
    task = SUBTASKS["category_parent"]
    reserved = task.templates[-1].split("{")[0]
    assert all(ex.input_field.startswith(reserved) for ex in task.for_heldout().build(corpus, 20, seed=0))
    assert not any(ex.input_field.startswith(reserved) for ex in task.build(corpus, 50, seed=0))
