"""Each kind of extension is one entry in one table: the tables are whole and consistent, an entry added to a
table is all a backend or a raw source needs, and command-line options come from the config classes."""

import json
import os
from pathlib import Path

import pytest

from shoptune import metrics
from shoptune.cli import config_options
from shoptune.evaluate import backends
from shoptune.evaluate.config import EvalConfig
from shoptune.evaluate.scoring import Scores
from shoptune.hub import NAMED_MODELS, known_models, resolve_model_source
from shoptune.metrics import METRICS, Metric, TaskType
from shoptune.schema import Example, parse_example
from shoptune.sources import registry as sources
from shoptune.tasks.catalog import all_subtasks
from shoptune.tasks.registry import Capability, short_name, track_order
from shoptune.train.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


def test_every_metric_has_one_entry_that_scores_one_way():
    assert set(METRICS) == set(Metric)
    for metric, definition in METRICS.items():
        ways = [definition.score, definition.counts, definition.embedding]
        assert sum(way is not None for way in ways) == 1, metric
    assert {d.task_type for d in METRICS.values()} == set(TaskType)


def test_a_record_is_checked_against_the_metric_table():
    row = {"input_field": "q", "task_name": "t", "track": "x", "is_multiple_choice": False}
    ok = parse_example({**row, "task_type": "generation", "metric": "bleu", "output_field": "a b"})
    assert isinstance(ok, Example)
    with pytest.raises(Exception, match="does not apply to task_type 'generation'"):
        parse_example({**row, "task_type": "generation", "metric": "ndcg", "output_field": "a"})
    # Several references only where the table says the metric embeds them.
    assert parse_example({**row, "task_type": "generation", "metric": "sent-transformer", "output_field": ["a", "b"]})
    with pytest.raises(Exception, match="only allowed with a sentence-embedding metric"):
        parse_example({**row, "task_type": "generation", "metric": "rougel", "output_field": ["a", "b"]})


def test_every_track_registers_its_subtasks_and_orders_the_scores():
    subtasks = all_subtasks()
    for capability in Capability:
        assert any(t.capability is capability for t in subtasks.values()), capability
    assert len({c.track for c in Capability}) == len({c.short for c in Capability}) == len(Capability)
    tracks = [c.track for c in Capability]
    assert sorted(["zzz-unknown", *reversed(tracks)], key=track_order) == [*tracks, "zzz-unknown"]
    assert [short_name(t) for t in tracks] == [c.short for c in Capability]
    assert short_name("zzz-unknown") == "zzz-unknown"


class EchoBackend:
    """A backend that answers with the first option digit: enough to show a new table entry runs end to end."""

    def __init__(self, config: EvalConfig) -> None:
        self.config = config

    def generate(self, prompts, max_new_tokens, constrain=None):
        return ["echo"] * len(prompts)

    def choose(self, prompts):
        return ["0"] * len(prompts)

    def describe(self):
        return {"backend": "echo"}


def test_a_backend_is_one_entry(monkeypatch, run_cli, dev_set, tmp_path):
    code, _, err = run_cli("eval", "run", dev_set, "--backend", "echo", "--out", tmp_path / "a", "--no-progress")
    assert code == 2 and "unknown backend 'echo'; expected one of: hf, openai, vllm" in err
    monkeypatch.setitem(backends.BACKENDS, "echo", backends.BackendEntry(EchoBackend, "answers 0"))
    code, _, err = run_cli("eval", "run", dev_set, "--backend", "echo", "--out", tmp_path / "b", "--no-progress")
    assert code == 0, err
    answers = [json.loads(line)["response"] for line in (tmp_path / "b" / "predictions.jsonl").read_text().splitlines()]
    assert set(answers) == {"0", "echo"} and len(answers) == 96


def test_a_raw_source_is_one_entry(monkeypatch, tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("red shoes\n")

    def read_notes(folder, part, corpus):
        return sorted(folder.glob("*.txt"))  # a real reader fills a corpus field; here the hash is what is checked

    with pytest.raises(Exception, match="found no data shoptune can read"):
        sources.load_raw(tmp_path)
    notes = sources.RawSource(
        "notes", "notes", lambda f: (f / "a.txt").is_file(), read_notes, "MIT", "test notes", False, (), ("train",)
    )
    monkeypatch.setattr(sources, "SOURCES", (*sources.SOURCES, notes))
    corpus = sources.load_raw(tmp_path)
    assert list(corpus.sources) == ["notes/a.txt"] and len(corpus.sources["notes/a.txt"]) == 64
    assert corpus.present == {"notes"} and sources.present_sources(tmp_path) == {"notes"}
    with pytest.raises(Exception, match="found no data"):  # the entry says the held-out benchmark may not read it
        sources.load_raw(tmp_path, "heldout")


def test_every_source_names_a_known_licence_and_every_subtask_known_sources():
    assert all(source.licence in sources.LICENCES for source in sources.SOURCES)
    assert len(sources.SOURCE_BY_ID) == len(sources.SOURCES)
    for task in all_subtasks().values():
        assert set(task.sources) <= set(sources.SOURCE_BY_ID), task.name
        assert task.licence == "+".join(sorted({sources.SOURCE_BY_ID[s].licence for s in task.sources}))


def test_named_models_are_one_table():
    assert known_models() == list(NAMED_MODELS)
    tiny = resolve_model_source("shoptune-tiny-5m", allow_download=False)
    assert (Path(tiny) / "config.json").is_file()


def test_scores_read_back_from_their_json(tmp_path, run_cli, dev_set):
    preds = tmp_path / "p.jsonl"
    preds.write_text("".join(json.dumps({"index": i, "response": str(i % 4)}) + "\n" for i in range(96)))
    code, _, err = run_cli("eval", "score", dev_set, preds, "--out", tmp_path / "s", "--bootstrap", "50")
    assert code == 0, err
    raw = json.loads((tmp_path / "s" / "scores.json").read_text())
    scores = Scores.model_validate(raw)
    assert scores.to_json() == raw
    assert sum(len(scores.tasks_of(track)) for track in scores.tracks) == len(scores.tasks) == 18
    assert scores.ci95 is not None and scores.ci95.overall[0] <= scores.overall <= scores.ci95.overall[1]


def _options_of(cls) -> set[str]:
    import inspect

    @config_options(cls)
    def command(overrides):
        return overrides

    return {p.name for p in inspect.signature(command).parameters.values()}


def test_every_setting_is_an_option_and_its_help_is_the_setting_description(run_cli):
    assert {f"opt_{name}" for name in EvalConfig.model_fields} <= _options_of(EvalConfig)
    nested = {f"opt_lora_{name}" for name in TrainConfig.model_fields["lora"].annotation.model_fields}
    assert nested <= _options_of(TrainConfig)
    code, out, _ = run_cli("eval", "run", "--help")
    assert code == 0
    text = " ".join(out.split())
    for name, field in EvalConfig.model_fields.items():
        assert field.description, f"EvalConfig.{name} has no description, so its option has no help"
    assert "shoptune[vllm]" in text  # help text is shown as written, not read as markup


def test_options_and_set_reach_the_config_as_overrides(tmp_path, run_cli, tiny_model):
    data = tmp_path / "q.jsonl"
    data.write_text((ROOT / "data" / "shopbench" / "development.json").read_text().splitlines()[0] + "\n")
    args = ("eval", "run", data, "--model", tiny_model, "--no-progress", "--bootstrap", "0")
    code, _, err = run_cli(
        *args, "--out", tmp_path / "a", "--set", "mc_mode=generate", "--max-new-tokens", "generation=7",
        "--no-system-prompt", "--set", "max_new_tokens={retrieval: 3}",
    )  # fmt: skip
    assert code == 0, err
    written = (tmp_path / "a" / "config.yaml").read_text()
    assert "mc_mode: generate" in written and "system_prompt: null" in written
    assert "generation: 7" in written and "retrieval: 3" in written
    code, _, err = run_cli(*args, "--out", tmp_path / "b", "--set", "mc_mode")
    assert code == 2 and "--set expects KEY=VALUE, got 'mc_mode'" in err
    code, _, err = run_cli(*args, "--out", tmp_path / "c", "--set", "nope=1")
    assert code == 2 and "setting 'nope': unknown setting" in err
    code, _, err = run_cli(*args, "--out", tmp_path / "d", "--set", "max_new_tokens={generation: [")
    assert code == 2 and "--set max_new_tokens: '{generation: [' is not a YAML value" in err


def test_metric_functions_are_the_tables():
    assert METRICS[Metric.JP_BLEU].score is metrics.jp_bleu
    assert METRICS[Metric.MICRO_F1].counts is metrics.ner_counts


@pytest.mark.parametrize("group", ["shoptune.plugins", "shoptune.subtasks"])
def test_extensions_are_found_through_either_entry_point_group(group, tmp_path, monkeypatch):
    from shoptune import plugins

    site = tmp_path / "site"
    (site / "acme_ext-0.1.dist-info").mkdir(parents=True)
    (site / "acme_ext-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-ext\nVersion: 0.1\n")
    (site / "acme_ext-0.1.dist-info" / "entry_points.txt").write_text(f"[{group}]\nacme = acme_ext\n")
    (site / "acme_ext.py").write_text("import os\nos.environ['ACME_EXT_LOADED'] = __name__\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(plugins, "_loaded", set())
    monkeypatch.delenv("ACME_EXT_LOADED", raising=False)
    monkeypatch.delitem(__import__("sys").modules, "acme_ext", raising=False)
    plugins.load_plugins()
    assert os.environ["ACME_EXT_LOADED"] == "acme_ext"
    plugins.load_plugins()  # once only: a second call imports nothing again
