"""A shop's own tables through a sources file: the same records as the dedicated readers, every mapping problem at
once, licence and source on every example, subtasks that switch on by themselves, no silent drops."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from shoptune.data.build import build_mixture
from shoptune.data.spec import MixtureSpec
from shoptune.errors import ShoptuneError
from shoptune.schema import read_examples, write_jsonl
from shoptune.sources.mapped import KINDS, kind_fields, load_sources, own_corpus
from shoptune.sources.published import read_esci, read_m2, read_mave, read_reviews
from shoptune.sources.registry import load_raw
from tests.helpers.published import write_published

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "own-data"


@pytest.fixture(scope="module")
def shipped():
    return load_raw(ROOT / "data" / "raw")


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    folder = write_published(tmp_path_factory.mktemp("published"))
    sessions, catalogue = read_m2(folder / "amazon-m2")
    return {
        "query_judgment": read_esci(folder / "esci"),
        "session": sessions,
        "offer": list(catalogue.items()),
        "review": read_reviews(folder / "amazon-reviews-2023"),
        "attribute_mention": read_mave(folder / "mave"),
    }


def records_of(kind: str, shipped, published) -> list:
    """Up to 40 records of a kind as the dedicated reader of public data gives them."""
    if kind in published:
        return published[kind][:40]
    if kind == "category":
        return shipped.categories["en"][:40]
    return getattr(shipped, KINDS[kind].field)[:40]


def flat(record, prefix: str = "") -> dict:
    out = {}
    for field in dataclasses.fields(record):
        value = getattr(record, field.name)
        if dataclasses.is_dataclass(value):
            out.update(flat(value, f"{prefix}{field.name}."))
        else:
            out[prefix + field.name] = list(value) if isinstance(value, tuple) else value
    return out


def write_table(rows: list[dict], path: Path) -> None:
    """The rows under other column names ("shop_" + field), in the format the suffix says."""
    renamed = [{f"shop_{k.replace('.', '_')}": v for k, v in row.items()} for row in rows]
    if path.suffix == ".csv":
        with path.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(renamed[0]))
            writer.writeheader()
            for row in renamed:
                cells = {k: json.dumps(v) if isinstance(v, list) else ("" if v is None else v) for k, v in row.items()}
                writer.writerow(cells)
    elif path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(renamed), path)
    else:
        write_jsonl(path, renamed)


FORMATS = [".jsonl", ".csv", ".parquet"]


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_record_type_from_other_column_names_equals_the_dedicated_reader(kind, shipped, published, tmp_path):
    records = records_of(kind, shipped, published)
    assert records, f"no public records of {kind} to compare with"
    ids = [None] * len(records)
    if kind == "offer":
        ids, records = [i for i, _ in records], [r for _, r in records]
    rows = [flat(r) for r in records]
    if kind == "offer":
        rows = [{**row, "id": ident} for row, ident in zip(rows, ids, strict=True)]
    suffix = FORMATS[sorted(KINDS).index(kind) % len(FORMATS)]
    write_table(rows, tmp_path / f"table{suffix}")
    fields = kind_fields(kind)
    # Columns whose every value is None stay unmapped (they take the record's default, None).
    columns = {f: f"shop_{f.replace('.', '_')}" for f in fields if any(row.get(f) is not None for row in rows)}
    language = next((r.get("language") or r.get("locale") for r in rows if r.get("language") or r.get("locale")), "en")
    entry = {"kind": kind, "path": f"table{suffix}", "columns": columns, "language": language}
    entry["licence"] = {"id": "test-licence", "commercial": True}
    (tmp_path / "sources.yaml").write_text(yaml.safe_dump({"mine": entry}))
    (source,) = load_sources(tmp_path / "sources.yaml", part=None)
    assert [r for _, r in source.records] == records
    if kind == "offer":
        assert [i for i, _ in source.records] == ids


def test_every_mapping_problem_is_reported_at_once_with_file_line_and_field(tmp_path):
    with (tmp_path / "pairs.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["title_a", "title_b", "match", "price_a"])
        writer.writerow(["kettle 1.7 l", "kettle 1.7 litre", "yes", "12.5"])
        writer.writerow(["kettle", "teapot", "maybe", "cheap"])
    (tmp_path / "reviews.jsonl").write_text('{"stars": 5, "head": "ok", "body": "fine"}\n{"stars": "five"}\n')
    sources = {
        "pairs": {
            "kind": "offer_pair",
            "path": "pairs.csv",
            "columns": {"left.title": "title_a", "right.titel": "title_b", "same": "match", "left.price": "price_a"},
            "values": {"same": {"yes": True, "no": False}},
            "licence": {"id": "acme", "commercial": True},
        },
        "reviews": {
            "kind": "review",
            "path": "reviews.jsonl",
            "columns": {"rating": "stars", "title": "headline", "text": "body"},
            "licence": {"id": "acme", "commercial": True},
        },
        "typo": {"kind": "offer_pairs", "path": "pairs.csv", "columns": {}, "licence": {"id": "a", "commercial": True}},
        "extra": {"kind": "review", "path": "x.csv", "column": {}, "licence": {"id": "a", "commercial": True}},
    }
    (tmp_path / "sources.yaml").write_text(yaml.safe_dump(sources))
    with pytest.raises(ShoptuneError) as caught:
        load_sources(tmp_path / "sources.yaml")
    text = str(caught.value)
    pairs, reviews = tmp_path / "pairs.csv", tmp_path / "reviews.jsonl"
    expected = [
        "source 'pairs': columns: no field 'right.titel' in offer_pair (did you mean 'right.title'?)",
        "source 'pairs': columns: field 'right.title' of offer_pair needs a column",
        f"{pairs}:3: field 'same': value 'maybe' is not in values.same",
        f"{pairs}:3: field 'left.price' (column 'price_a'): expected a number, got 'cheap'",
        f"{reviews}: field 'title': no column 'headline'",
        "kind 'offer_pairs' is not a record type (did you mean 'offer_pair'?)",
        "source 'extra': column: unknown key (did you mean 'columns'?)",
    ]
    for line in expected:
        assert line in text, f"missing: {line}\n{text}"
    assert "problem(s)" in text.splitlines()[0]


def test_a_bad_value_in_a_json_lines_table_names_its_line(tmp_path):
    (tmp_path / "reviews.jsonl").write_text(
        '{"stars": 5, "t": "ok", "b": "fine"}\n\n{"stars": "five", "t": "a", "b": "b"}\n'
    )
    entry = {"kind": "review", "path": "reviews.jsonl", "columns": {"rating": "stars", "title": "t", "text": "b"}}
    entry["licence"] = {"id": "acme", "commercial": True}
    (tmp_path / "sources.yaml").write_text(yaml.safe_dump({"reviews": entry}))
    with pytest.raises(ShoptuneError, match=r"reviews\.jsonl:3: field 'rating' \(column 'stars'\): expected a whole"):
        load_sources(tmp_path / "sources.yaml")


def test_tasks_list_shows_which_subtasks_your_tables_feed(run_cli):
    code, out, _ = run_cli(
        "tasks", "list", "--json", "--sources", EXAMPLE / "sources.yaml", "--raw-dir", "/nonexistent"
    )
    assert code == 0
    rows = {row["name"]: row for row in json.loads(out)}
    assert rows["same_product"]["own_sources"] == ["catalogue-matches"] and rows["same_product"]["has_data"]
    assert rows["query_product_class"]["own_sources"] == ["search-log"]
    assert rows["review_rating"]["needs"] == ["review"] and not rows["review_rating"]["has_data"]
    assert rows["category_translation_en_de"]["needs"] == ["category (de)"]


@pytest.fixture(scope="module")
def own_mixture(tmp_path_factory):
    out = tmp_path_factory.mktemp("own") / "mixture"
    spec = MixtureSpec(
        name="own",
        sources=[EXAMPLE / "sources.yaml"],
        own_data_only=True,
        examples_per_subtask=12,
        validation_per_subtask=2,
        near_duplicates=None,
    )
    return build_mixture(spec, out), out


def test_your_records_build_your_subtasks_with_their_licence_and_source_on_every_example(own_mixture):
    import datasets

    info, out = own_mixture
    entries = {s.id: s for s in load_sources(EXAMPLE / "sources.yaml")}
    rows = [row for split in datasets.load_from_disk(str(out)).values() for row in split]
    assert rows and {row["source"] for row in rows} == set(entries)
    for row in rows:
        assert row["licence"] == entries[row["source"]].licence.id
    assert set(info["by_source"]) == set(entries)
    assert info["licences"]["MIT"]["commercial_use"] is True
    assert all(f"extra:{p}" not in info["inputs_sha256"] for p in entries)
    corpus = own_corpus(list(entries.values()))
    assert set(corpus.sources) <= set(info["inputs_sha256"])  # every table's hash is in the manifest


def test_a_licence_allow_list_keeps_out_your_tables_under_other_licences(tmp_path):
    spec = MixtureSpec(
        name="commercial-own",
        sources=[EXAMPLE / "sources.yaml"],
        own_data_only=True,
        licences=["MIT"],
        examples_per_subtask=8,
        validation_per_subtask=0,
    )
    info = build_mixture(spec, tmp_path / "m")
    assert set(info["by_source"]) == {"search-log"} and set(info["by_licence"]) == {"MIT"}


def test_extra_examples_of_an_unknown_subtask_are_refused_not_dropped(tmp_path, dev_set):
    rows = [ex.to_json() for ex in read_examples(dev_set)[:2]]
    rows[1]["task_name"] = "my_own_subtask"
    write_jsonl(tmp_path / "extra.jsonl", rows)
    spec = MixtureSpec(
        name="x", extra_examples=[tmp_path / "extra.jsonl"], examples_per_subtask=2, subtasks=None, near_duplicates=None
    )
    with pytest.raises(ShoptuneError, match=r"extra\.jsonl: examples of unknown subtask\(s\) my_own_subtask"):
        build_mixture(spec, tmp_path / "m")
    for row in rows:  # a subtask shoptune has: kept, and counted under its capability
        row["task_name"] = "category_parent"
        row.pop("capability", None)
    write_jsonl(tmp_path / "extra.jsonl", rows)
    info = build_mixture(spec, tmp_path / "m")
    assert info["by_capability"].get("None") is None and info["examples"]["train"] >= 1


def test_instruction_rows_become_a_declared_subtask_in_mixtures_and_the_benchmark(tmp_path):
    rows = [{"q": f"Which size fits a {n} cm foot? 1. S 2. M 3. L", "a": str(1 + n % 3)} for n in range(20, 60)]
    write_jsonl(tmp_path / "faq.jsonl", rows)
    entry = {
        "kind": "instructions",
        "path": "faq.jsonl",
        "columns": {"prompt": "q", "response": "a"},
        "subtask": {
            "name": "size_advice",
            "capability": "behavior",
            "task_type": "multiple-choice",
            "metric": "accuracy",
        },
        "heldout": {"share": 0.25},
        "licence": {"id": "acme", "commercial": True},
    }
    (tmp_path / "sources.yaml").write_text(yaml.safe_dump({"faq": entry}))
    spec = MixtureSpec(
        name="faq",
        sources=[tmp_path / "sources.yaml"],
        own_data_only=True,
        subtasks=["size_advice"],
        capabilities=["user_behavior_alignment"],
        examples_per_subtask=100,
        validation_per_subtask=0,
        near_duplicates=None,
    )
    info = build_mixture(spec, tmp_path / "m")
    import datasets

    train = list(datasets.load_from_disk(str(tmp_path / "m"))["train"])
    assert info["by_subtask"] == {"size_advice": len(train)} and 20 <= len(train) < 40
    assert {(r["task_type"], r["metric"], r["licence"], r["source"]) for r in train} == {
        ("multiple-choice", "accuracy", "acme", "faq")
    }
    assert all(json.loads(r["output_field"]) == 1 + int(r["input_field"].split()[4]) % 3 for r in train)

    from shoptune.data.heldout import build_own_heldout

    held, manifest = build_own_heldout([tmp_path / "sources.yaml"], per_subtask=100)
    assert held and manifest["by_subtask"] == {"size_advice": len(held)}
    assert not {ex.input_field for ex in held} & {r["input_field"] for r in train}  # the two parts never meet
    assert len(held) + len(train) == 40


def test_an_instruction_response_in_the_wrong_answer_form_names_its_line(tmp_path):
    write_jsonl(tmp_path / "faq.jsonl", [{"q": "Pick 1. a 2. b", "a": "2"}, {"q": "Pick 1. a 2. b", "a": "the second"}])
    entry = {
        "kind": "instructions",
        "path": "faq.jsonl",
        "columns": {"prompt": "q", "response": "a"},
        "subtask": {"name": "pick", "capability": "concepts", "task_type": "multiple-choice", "metric": "accuracy"},
        "licence": {"id": "acme", "commercial": True},
    }
    (tmp_path / "sources.yaml").write_text(yaml.safe_dump({"faq": entry}))
    with pytest.raises(ShoptuneError, match=r"faq\.jsonl:2: a multiple-choice response is one option number"):
        load_sources(tmp_path / "sources.yaml")


@pytest.mark.parametrize("kind", ["offer_pair", "category", "evidence", "search_query"])
def test_your_held_out_part_never_reaches_a_mixture(kind):
    from shoptune.sources.mapped import DEFAULT_KEYS, group_of

    entries = {s.kind: s for s in load_sources(EXAMPLE / "sources.yaml", part=None)}
    train = {s.kind: s for s in load_sources(EXAMPLE / "sources.yaml", part="train")}[kind].records
    held = {s.kind: s for s in load_sources(EXAMPLE / "sources.yaml", part="heldout")}[kind].records
    assert held and train and len(held) + len(train) == len(entries[kind].records)
    key = DEFAULT_KEYS[kind]

    def groups(records) -> set:
        return {json.dumps(group_of(flat(r), key), default=str) for _, r in records}

    assert not groups(held) & groups(train)  # a whole group (product, subtree, question, class) on one side


def test_the_shipped_example_benchmark_is_what_its_command_writes(tmp_path):
    from shoptune.data.heldout import build_own_heldout, write_heldout

    examples, info = build_own_heldout([EXAMPLE / "sources.yaml"], per_subtask=12)
    write_heldout(examples, info, tmp_path / "heldout.jsonl")
    assert (tmp_path / "heldout.jsonl").read_bytes() == (EXAMPLE / "heldout.jsonl").read_bytes()


PLUGIN = """
from shoptune.metrics import Metric, MetricDef, register_metric
from shoptune.schema import TaskType
from shoptune.sources.records import SearchQuery
from shoptune.sources.registry import Licence, RawSource, register_source
from shoptune.tasks.registry import Capability, subtask


@subtask(
    name="plugin_offer_title_length",
    capability=Capability.CONCEPTS,
    task_type=TaskType.MULTIPLE_CHOICE,
    metric=Metric.ACCURACY,
    sources=("product-matching",),
    description="from a user's own package",
    templates=["Which title is longer? {options}", "Longer title? {options}", "Pick the longer title. {options}"],
)
def draw(task, corpus, rng):
    a, b = rng.sample(corpus.pairs, 2)
    options = f"1. {a.left.title} 2. {b.left.title}"
    return task.example(task.template(rng, options=options), 1 if len(a.left.title) >= len(b.left.title) else 2)


def exact_match(pred, truth):
    return float(pred.strip().lower() == truth.strip().lower())


register_metric("acme exact match", MetricDef(TaskType.GENERATION, score=exact_match))


def read_synonyms(folder, part, corpus):
    path = folder / "synonyms.txt"
    for n, line in enumerate(path.read_text().splitlines()):
        query, product_class = line.split("=>")
        corpus.queries.append(SearchQuery(f"acme-{n}", query.strip(), product_class.strip()))
    return [path]


register_source(
    RawSource(
        "acme-synonyms", "acme", lambda folder: (folder / "synonyms.txt").is_file(), read_synonyms,
        "acme-internal", "Acme's synonym list", ships=False, fills=("queries",), parts=("train",),
    ),
    licence=Licence("Acme internal", False, "ours"),
)


@subtask(
    name="acme_query_class",
    capability=Capability.BEHAVIOR,
    task_type=TaskType.GENERATION,
    metric="acme exact match",
    sources=("acme-synonyms",),
    description="a reader and a metric of one's own",
    templates=["Class of {query}?", "What class is {query}?", "Name the class of {query}."],
)
def draw_class(task, corpus, rng):
    item = rng.choice(corpus.queries)
    return task.example(task.template(rng, query=item.query), item.product_class)
"""


@pytest.mark.slow
@pytest.mark.parametrize("how", ["shoptune.plugins", "include path"])  # the older group: test_registries
def test_a_subtask_metric_and_reader_from_outside_shoptune_are_listed_built_and_scored(how, tmp_path):
    import os
    import subprocess
    import sys

    site = tmp_path / "site"
    (site / "acme_tasks-0.1.dist-info").mkdir(parents=True)
    (site / "acme_tasks.py").write_text(PLUGIN)
    env = {**os.environ}
    if how == "include path":
        env["SHOPTUNE_INCLUDE"] = str(site / "acme_tasks.py")
    else:
        (site / "acme_tasks-0.1.dist-info" / "METADATA").write_text(
            "Metadata-Version: 2.1\nName: acme-tasks\nVersion: 0.1\n"
        )
        (site / "acme_tasks-0.1.dist-info" / "entry_points.txt").write_text(f"[{how}]\nacme = acme_tasks\n")
        env["PYTHONPATH"] = str(site)
    raw = tmp_path / "raw"
    (raw / "acme").mkdir(parents=True)
    (raw / "product-matching").symlink_to(ROOT / "data" / "raw" / "product-matching")
    lines = [f"blue sofa {i} => sofas" if i % 2 else f"oak desk {i} => desks" for i in range(40)]
    (raw / "acme" / "synonyms.txt").write_text("\n".join(lines) + "\n")

    def shoptune(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "shoptune", *args]
        return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)

    listed = shoptune("tasks", "list", "--json", "--raw-dir", str(raw))
    assert listed.returncode == 0, listed.stderr
    rows = {r["name"]: r for r in json.loads(listed.stdout)}
    assert rows["plugin_offer_title_length"]["has_data"] and rows["acme_query_class"]["has_data"]
    assert rows["acme_query_class"]["metric"] == "acme exact match"
    spec = tmp_path / "mix.yaml"
    spec.write_text(
        f"name: plugin\nraw_dir: {raw}\nsubtasks: [plugin_offer_title_length, acme_query_class]\n"
        "capabilities: [concepts, behavior]\nexamples_per_subtask: 10\nvalidation_per_subtask: 0\n"
    )
    built = shoptune("data", "build", str(spec), "--out", str(tmp_path / "m"), "--no-progress")
    assert built.returncode == 0, built.stderr
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    assert manifest["by_subtask"] == {"plugin_offer_title_length": 10, "acme_query_class": 10}
    assert manifest["by_licence"]["acme-internal"] == 10

    questions = [
        {
            "input_field": f"Class of {q}?",
            "output_field": c,
            "task_name": "acme_query_class",
            "task_type": "generation",
            "metric": "acme exact match",
            "is_multiple_choice": False,
            "track": "behavior",
        }
        for q, c in [("blue sofa", "sofas"), ("oak desk", "desks"), ("red lamp", "lamps"), ("oak bed", "beds")]
    ]
    write_jsonl(tmp_path / "q.jsonl", questions)
    answers = ["Sofas", "chairs", " lamps ", "desks"]  # 2 of 4 match after the metric's own normalising
    write_jsonl(tmp_path / "p.jsonl", [{"index": i, "response": r} for i, r in enumerate(answers)])
    scored = shoptune(
        "eval", "score", str(tmp_path / "q.jsonl"), str(tmp_path / "p.jsonl"), "--out", str(tmp_path / "s")
    )
    assert scored.returncode == 0, scored.stderr
    scores = json.loads((tmp_path / "s" / "scores.json").read_text())
    assert scores["tasks"]["acme_query_class"]["score"] == pytest.approx(0.5)
    assert scores["tasks"]["acme_query_class"]["metric"] == "acme exact match"


def test_a_metric_or_source_of_an_existing_name_is_refused():
    from shoptune.metrics import MetricDef, TaskType, accuracy, register_metric
    from shoptune.sources.registry import SOURCE_BY_ID, register_source

    with pytest.raises(ShoptuneError, match="exists already"):
        register_metric("accuracy", MetricDef(TaskType.MULTIPLE_CHOICE, score=accuracy))
    with pytest.raises(ShoptuneError, match="exactly one of"):
        register_metric("twice", MetricDef(TaskType.MULTIPLE_CHOICE))
    with pytest.raises(ShoptuneError, match="exists already"):
        register_source(SOURCE_BY_ID["wands"])
    with pytest.raises(ShoptuneError, match="licence"):
        register_source(dataclasses.replace(SOURCE_BY_ID["wands"], id="wands-copy", licence="mine"))


def test_an_unknown_metric_in_a_record_names_line_field_and_the_known_ones(tmp_path):
    row = {
        "input_field": "q",
        "output_field": "a",
        "task_name": "t",
        "task_type": "generation",
        "metric": "exact-match",
        "is_multiple_choice": False,
        "track": "x",
    }
    write_jsonl(tmp_path / "q.jsonl", [row])
    with pytest.raises(ShoptuneError, match=r"q.jsonl:1: field 'metric': unknown metric 'exact-match'.*rougel"):
        read_examples(tmp_path / "q.jsonl")
