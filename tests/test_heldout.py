"""The held-out benchmark: large, covering, reproducible, and never trained on."""

import json
from collections import Counter
from pathlib import Path

import datasets
import pytest

from shoptune.config import load_config
from shoptune.data.build import build_mixture
from shoptune.data.clean import Contamination, fingerprint
from shoptune.data.heldout import DEFAULT_PATH, build_heldout
from shoptune.data.spec import MixtureSpec
from shoptune.schema import TaskType, from_row, read_examples
from shoptune.sources.registry import heldout_subtree, load_raw
from shoptune.tasks.catalog import all_subtasks
from shoptune.tasks.registry import Capability

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / DEFAULT_PATH


@pytest.fixture(scope="module")
def heldout():
    return read_examples(SHIPPED)


def test_the_shipped_file_is_what_the_command_builds(run_cli, tmp_path):
    code, _, err = run_cli("data", "heldout", "--out", tmp_path / "h.jsonl", "--raw-dir", ROOT / "data" / "raw")
    assert code == 0, err
    assert (tmp_path / "h.jsonl").read_bytes() == SHIPPED.read_bytes()
    manifest = json.loads((tmp_path / "h.manifest.json").read_text())
    assert manifest == json.loads(SHIPPED.with_name("heldout.manifest.json").read_text())


def test_it_is_large_and_covers_every_subtask_type_and_track(heldout):
    assert len(heldout) >= 1500
    per_subtask = Counter(ex.task_name for ex in heldout)
    train_corpus = load_raw(ROOT / "data" / "raw")
    with_data = {name for name, task in all_subtasks().items() if task.build(train_corpus, 1, 0)}
    assert set(per_subtask) == with_data and min(per_subtask.values()) >= 50
    assert {ex.task_type for ex in heldout} == set(TaskType)
    assert {ex.track for ex in heldout} == {c.track for c in Capability}


def test_it_uses_only_the_reserved_paraphrase(heldout):
    """No held-out prompt starts like a training paraphrase of its subtask (the text before the first field)."""
    subtasks = all_subtasks()
    for ex in heldout:
        training = subtasks[ex.task_name].templates[:-1]
        reserved = subtasks[ex.task_name].templates[-1]
        prefixes = [t.split("{")[0] for t in training if t.split("{")[0] != reserved.split("{")[0]]
        assert not any(prefix and ex.input_field.startswith(prefix) for prefix in prefixes)


def test_training_never_sees_a_held_out_item():
    train, held = load_raw(ROOT / "data" / "raw", "train"), load_raw(ROOT / "data" / "raw", "heldout")
    assert not any(heldout_subtree(c.path) for c in train.categories["en"])
    assert held.categories["en"] and all(heldout_subtree(c.path) for c in held.categories["en"])
    for language in ("en", "de", "es", "fr", "it", "ja"):  # the six-locale taxonomy, by id
        ids = [{c.id for c in corpus.parallel_categories[language]} for corpus in (train, held)]
        assert ids[0] and ids[1] and not ids[0] & ids[1]
    # Test splits go to the benchmark, the rest to training; single-split sets by question or class.
    assert not {s for s in train.sources if "product-matching" in s} & set(held.sources)
    questions = [{e.question_id for e in corpus.evidence if _hashed(e.dataset)} for corpus in (train, held)]
    assert questions[0] and questions[1] and not questions[0] & questions[1]
    classes = [{q.product_class for q in corpus.queries} for corpus in (train, held)]
    assert classes[0] and classes[1] and not classes[0] & classes[1]
    sentences = [{s.text for s in corpus.review_sentences} for corpus in (train, held)]
    assert sentences[0] and sentences[1] and not sentences[0] & sentences[1]  # EN and EN-ext share sentences


def _hashed(name: str) -> bool:
    """Product-QA sets with one split, divided by a hash of the question rather than by file."""
    return name in ("ePQA", "hetPQA/evidence_ranking")


@pytest.mark.slow
def test_all_yaml_has_zero_overlap_with_it(heldout, tmp_path):
    path = ROOT / "configs" / "mixtures" / "all.yaml"
    spec = load_config(MixtureSpec, path)  # as `shoptune data build` resolves it
    assert any(p.name == "heldout.jsonl" for p in spec.decontaminate)
    build_mixture(spec, tmp_path / "mix")
    mixture = datasets.load_from_disk(str(tmp_path / "mix"))
    prompts = {p for split in mixture.values() for p in split["input_field"]}
    assert not prompts & {ex.input_field for ex in heldout}
    built = [from_row(row) for split in mixture.values() for row in split]
    assert len({ex.task_name for ex in built}) >= 30
    for evaluation in (heldout, read_examples(ROOT / "data" / "shopbench" / "development.json")):
        assert not prompts & {ex.input_field for ex in evaluation}
        assert not fingerprint(built, Contamination(evaluation, spec.ngram)).contaminated.any()


def test_every_shipped_mixture_spec_decontaminates_against_it():
    for path in sorted((ROOT / "configs" / "mixtures").glob("*.yaml")):
        spec = load_config(MixtureSpec, path)
        assert (ROOT / DEFAULT_PATH).resolve() in [p.resolve() for p in spec.decontaminate], path.name


def test_building_is_deterministic_and_per_subtask_sized():
    a, info = build_heldout(ROOT / "data" / "raw", per_subtask=5, seed=3)
    b, _ = build_heldout(ROOT / "data" / "raw", per_subtask=5, seed=3)
    assert a == b and set(info["by_subtask"].values()) == {5}
