"""A shop's own tables as records: a sources file maps each table's columns onto one record type.

    my-matches:                      # the source id, carried by every example built from it
      kind: offer_pair               # a record type of records.py, in snake_case (KINDS below)
      path: tables/matches.csv       # CSV, TSV, JSON Lines, JSON or Parquet; or a folder of such files
      columns: {left.title: title_a, right.title: title_b, same: is_match}   # record field -> your column
      values: {same: {"yes": true, "no": false}}                              # field -> {your value: value}
      constants: {source: acme}                                               # field -> one value for all rows
      language: en
      licence: {id: acme-internal, commercial: true}

A mapping is checked whole when the file loads: every unknown key, kind, field or column and every value that
does not convert is reported at once, with file, line and field, and "did you mean" for near names. Fields
left unmapped take the record's default (a record's `language` or `locale` the entry's language). A list field
takes a JSON array (in a CSV cell too).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, model_validator

from shoptune.config import StrictConfig
from shoptune.errors import ShoptuneError, near, note
from shoptune.files import read_utf8
from shoptune.metrics import METRICS, TaskType, known_metric, metrics_for
from shoptune.sources import records
from shoptune.sources.partition import Part
from shoptune.sources.records import RawCorpus
from shoptune.sources.registry import file_hash

SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".parquet")
MAX_SHOWN = 40  # problems listed in full; the rest are counted


@dataclass(frozen=True)
class Kind:
    record: type
    field: str  # the RawCorpus field the records fill


KINDS: dict[str, Kind] = {
    "category": Kind(records.Category, "categories"),
    "offer": Kind(records.Offer, "catalogue"),
    "offer_pair": Kind(records.OfferPair, "pairs"),
    "query_judgment": Kind(records.QueryJudgment, "judgments"),
    "session": Kind(records.Session, "sessions"),
    "review": Kind(records.Review, "reviews"),
    "attribute_mention": Kind(records.AttributeMention, "attributes"),
    "evidence": Kind(records.Evidence, "evidence"),
    "attribute_sentence": Kind(records.AttributeSentence, "attribute_sentences"),
    "review_sentence": Kind(records.ReviewSentence, "review_sentences"),
    "search_query": Kind(records.SearchQuery, "queries"),
}
# An offer of the catalogue (sessions name products by id) has an id beside the record's own fields.
OFFER_ID = "id"
# What keeps a group of records on one side of the held-out split, unless an entry names its own key.
DEFAULT_KEYS = {
    "category": "path[:2]",  # a second-level subtree, as the shipped taxonomy is held out
    "offer": "id",
    "offer_pair": "left.title|right.title",  # a product on either side: every pair that shares one, one group
    "query_judgment": "query",
    "session": "next_item",
    "review": "title",
    "attribute_mention": "text",
    "evidence": "question_id",  # a question with all its evidence
    "attribute_sentence": "attribute",
    "review_sentence": "text",
    "search_query": "product_class",  # a product class with all its queries, as WANDS is held out
    "instructions": "prompt",
}


def in_heldout(ident: str, group: Any, share: float) -> bool:
    """Stable across runs and machines: the group's hash, salted with the source id."""
    digest = hashlib.sha256(f"{ident}\x00{json.dumps(group, default=str, ensure_ascii=False)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def group_of(values: dict[str, Any], key: str) -> Any:
    """The value of `field` or `field[:N]` among a row's mapped values (for `a|b`, the values of each)."""
    if LINKED in key:
        return [group_of(values, part) for part in key.split(LINKED)]
    field, _, cut = key.partition("[:")
    value = values.get(field)
    if cut:
        value = list(value or ())[: int(cut.rstrip("]"))]
    return value


LINKED = "|"  # "a|b": rows that share a value of a or of b (a product on either side of a pair) are one group


def groups(rows: list[dict[str, Any]], key: str) -> list[Any]:
    """Each row's held-out group. `field` or `field[:N]`: its value. `a|b`: its connected component, rows joined by
    any value they share in any of the fields (compared without case or extra spaces), named by the component's
    smallest value, so a product paired with two others never lands on both sides."""
    if LINKED not in key:
        return [group_of(row, key) for row in rows]
    parent: dict[str, str] = {}

    def root(item: str) -> str:
        parent.setdefault(item, item)
        while parent[item] != item:
            parent[item] = parent[parent[item]]
            item = parent[item]
        return item

    linked = [[" ".join(str(v).lower().split()) for v in group_of(row, key) if v is not None] for row in rows]
    for items in linked:
        for item in items[1:]:
            a, b = root(items[0]), root(item)
            if a != b:
                parent[max(a, b)] = min(a, b)  # the smaller value names the component
    return [root(items[0]) if items else None for items in linked]


class EntryLicence(StrictConfig):
    id: str = Field(min_length=1, description="your licence id, carried by every example")
    commercial: bool = Field(description="whether the data may be used in a commercial product")


class DeclaredSubtask(StrictConfig):
    """The subtask that rows of instruction data become (kind: instructions)."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    capability: str = Field(description="concepts, knowledge, behavior or multilingual (or the long or track name)")
    task_type: TaskType
    metric: str = Field(description="a ShopBench metric or one you registered (register_metric)")
    description: str = "your own instruction data"

    @model_validator(mode="after")
    def _metric_scores_type(self) -> DeclaredSubtask:
        if not known_metric(self.metric):
            raise ValueError(f"unknown metric {self.metric!r}; expected one of: {', '.join(METRICS)}")
        if self.metric not in metrics_for(self.task_type):
            allowed = ", ".join(metrics_for(self.task_type))
            raise ValueError(f"metric {self.metric!r} does not score {self.task_type.value} (use {allowed})")
        return self


class HeldoutSplit(StrictConfig):
    """Which records form your held-out benchmark: those whose grouping key hashes into `share`. Every record of a
    group falls on one side, so no product (query, category subtree, ...) is both trained on and tested."""

    key: str | None = Field(None, description="a field, or field[:N] for the first N items of a list")
    share: float = Field(0.1, gt=0.0, lt=1.0)


class SourceEntry(StrictConfig):
    kind: str
    path: Path
    columns: dict[str, str] = Field(default_factory=dict)
    subtask: DeclaredSubtask | None = None  # kind: instructions
    heldout: HeldoutSplit = Field(default_factory=HeldoutSplit)
    values: dict[str, dict[str, Any]] = Field(default_factory=dict)
    constants: dict[str, Any] = Field(default_factory=dict)  # field -> the same value for every row
    language: str = "en"
    licence: EntryLicence


@dataclass
class MappedSource:
    """One entry, read: its records, and what the manifest and the examples say of it."""

    id: str
    kind: str
    records: list[tuple[str | None, Any]]  # (the offer's id for kind offer, else None; the record)
    licence: EntryLicence
    language: str
    files: list[Path]
    subtask: DeclaredSubtask | None = None  # kind: instructions
    heldout_key: str = ""  # what groups its records on one side of the held-out split
    heldout_share: float = 0.0
    notes: list[str] = dataclasses.field(default_factory=list)  # what the reader decided for the user, said once


def row_id(values: dict[str, Any]) -> str:
    """A stable id for a row whose table has none: the same content gives the same id on every run."""
    text = json.dumps(values, sort_keys=True, default=str, ensure_ascii=False)
    return "row-" + hashlib.sha256(text.encode()).hexdigest()[:16]


# --- the record types' fields -------------------------------------------------------------------------------


@functools.cache
def hints_of(record: type) -> dict[str, Any]:
    return typing.get_type_hints(record, vars(records))


def record_fields(record: type, prefix: str = "") -> dict[str, tuple[Any, bool]]:
    """Every mappable field of a record type, dotted into nested records: name -> (type, required)."""
    hints = hints_of(record)
    out: dict[str, tuple[Any, bool]] = {}
    for field in dataclasses.fields(record):
        if field.name.startswith("_"):
            continue
        kind = hints[field.name]
        required = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
        if dataclasses.is_dataclass(kind):
            out.update(record_fields(kind, f"{prefix}{field.name}."))
        else:
            out[prefix + field.name] = (kind, required)
    return out


def kind_fields(kind: str) -> dict[str, tuple[Any, bool]]:
    fields = record_fields(KINDS[kind].record)
    if kind == "offer":
        fields[OFFER_ID] = (str, True)
    return fields


def defaulted(kind: str, entry: SourceEntry, ident: str) -> dict[str, Any]:
    """Values of unmapped fields that the entry itself gives: its language, and its id as the record's source."""
    given = {"language": entry.language, "locale": entry.language, "source": ident, "dataset": ident}
    return {name: given[name] for name in kind_fields(kind) if name in given}


# --- reading ----------------------------------------------------------------------------------------------


def table_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix.lower() in SUFFIXES and p.is_file())
    return [path]


def read_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, row) for every row of one table file; `where` is the line (or row) a person would look at."""
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        import csv

        with path.open(encoding="utf-8-sig", newline="") as handle:  # "CSV UTF-8" exports begin with a BOM
            reader = csv.DictReader(handle, delimiter="\t" if suffix == ".tsv" else ",")
            for row in reader:
                yield f"{path}:{reader.line_num}", dict(row)
    elif suffix == ".jsonl":
        for number, line in enumerate(read_utf8(path).splitlines(), start=1):
            if line.strip():
                yield f"{path}:{number}", _object(json.loads(line), f"{path}:{number}")
    elif suffix == ".json":
        items = json.loads(read_utf8(path))
        if not isinstance(items, list):
            raise ShoptuneError(f"{path}: expected a JSON array of objects, one per row")
        for number, item in enumerate(items, start=1):
            yield f"{path}: item {number}", _object(item, f"{path}: item {number}")
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        for number, row in enumerate(pq.read_table(path).to_pylist(), start=1):
            yield f"{path}: row {number}", row
    else:
        raise ShoptuneError(f"{path}: not a table shoptune reads; expected one of {', '.join(SUFFIXES)}")


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ShoptuneError(f"{where}: expected a JSON object (one row), got {type(value).__name__}")
    return value


def convert(value: Any, kind: Any) -> Any:
    """A table's value as the record field's type; ValueError says why not."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if (value is None or value == "") and type(None) in args:
            return None
        return convert(value, next(a for a in args if a is not type(None)))
    if value is None or (isinstance(value, float) and value != value):
        raise ValueError("is empty")
    if origin is tuple:
        items = json.loads(value) if isinstance(value, str) else value
        if not isinstance(items, list | tuple):
            raise ValueError(f"expected a JSON array, got {value!r}")
        return tuple(convert(item, args[0]) for item in items)
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "1", "yes"):
            return True
        if text in ("false", "0", "no"):
            return False
        raise ValueError(f"expected true or false, got {value!r} (map your values with `values:`)")
    if kind is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError(f"expected a whole number, got {value!r}")
        try:
            return int(float(value)) if isinstance(value, str) and "." in value else int(value)
        except (TypeError, ValueError):
            raise ValueError(f"expected a whole number, got {value!r}") from None
    if kind is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"expected a number, got {value!r}") from None
    text = str(value).strip()
    if not text:
        raise ValueError("is empty")
    return text


def build_record(kind: str, values: dict[str, Any]) -> Any:
    """The record (nested records built from dotted fields)."""
    record = KINDS[kind].record
    if kind == "offer":
        values = {k: v for k, v in values.items() if k != OFFER_ID}
    nested: dict[str, dict[str, Any]] = {}
    flat: dict[str, Any] = {}
    for name, value in values.items():
        head, _, rest = name.partition(".")
        if rest:
            nested.setdefault(head, {})[rest] = value
        else:
            flat[name] = value
    hints = hints_of(record)
    for head, inner in nested.items():
        flat[head] = hints[head](**inner)
    return record(**flat)


INSTRUCTIONS = "instructions"
# Instruction rows: a prompt and a response (in the answer format of the declared task type), chat messages (the
# last assistant reply and the user turn it answers), or ShopBench records themselves (input_field, output_field).
INSTRUCTION_COLUMNS = ("prompt", "response", "messages", "input_field", "output_field")


def instruction(row: dict[str, Any], columns: dict[str, str], task_type: TaskType) -> tuple[str, Any]:
    """(prompt, output_field) of one row; ValueError says why not."""
    if "messages" in columns:
        messages = row[columns["messages"]]
        messages = json.loads(messages) if isinstance(messages, str) else messages
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            raise ValueError("expected a JSON list of {role, content} messages")
        roles = [m.get("role") for m in messages]
        # The last reply and the user turn it answers; a conversation may end on a user turn nobody answered yet.
        reply = max((i for i, role in enumerate(roles) if role == "assistant"), default=None)
        asked = max((i for i, role in enumerate(roles[:reply]) if role == "user"), default=None) if reply else None
        if reply is None or asked is None:
            raise ValueError("expected a user message followed by an assistant reply")
        return str(messages[asked].get("content")), parse_answer(str(messages[reply].get("content")), task_type)
    if "output_field" in columns:
        output = row[columns["output_field"]]
        output = json.loads(output) if isinstance(output, str) and task_type is not TaskType.GENERATION else output
        return str(row[columns["input_field"]]), output
    return str(row[columns["prompt"]]), parse_answer(str(row[columns["response"]]), task_type)


def parse_answer(text: str, task_type: TaskType) -> Any:
    """The output field whose answer text is `text` (tasks.render.answer_text, inverted strictly)."""
    text = text.strip()
    if not text:
        raise ValueError("the response is empty")
    if task_type is TaskType.MULTIPLE_CHOICE:
        if not text.isdigit():
            raise ValueError(f"a multiple-choice response is one option number, got {text!r}")
        return int(text)
    if task_type in (TaskType.RETRIEVAL, TaskType.RANKING):
        parts = [p.strip() for p in text.split(",")]
        if not all(p.isdigit() for p in parts):
            raise ValueError(f"expected comma-separated item numbers, got {text!r}")
        numbers = [int(p) for p in parts]
        if task_type is TaskType.RETRIEVAL:
            return numbers
        if sorted(numbers) != list(range(1, len(numbers) + 1)):
            raise ValueError(f"a ranking response lists every item once, got {text!r}")
        relevance = [0] * len(numbers)
        for place, item in enumerate(numbers):
            relevance[item - 1] = len(numbers) - place  # best first, as answer_text orders them
        return relevance
    if task_type is TaskType.NER:
        return [p.strip() for p in text.split(",") if p.strip()]
    return text


def read_instructions(where: str, entry: SourceEntry, files: list[Path], problems: list[str]) -> list[Any]:
    if entry.subtask is None:
        problems.append(f"{where}: kind instructions needs `subtask: {{name, capability, task_type, metric}}`")
        return []
    unknown = [c for c in entry.columns if c not in INSTRUCTION_COLUMNS]
    problems += [f"{where}: columns: no field {c!r} in instructions{near(c, INSTRUCTION_COLUMNS)}" for c in unknown]
    shapes = [("prompt", "response"), ("messages",), ("input_field", "output_field")]
    if not any(all(c in entry.columns for c in shape) for shape in shapes):
        problems.append(f"{where}: columns: map prompt and response, or messages, or input_field and output_field")
        return []
    out = []
    for file in files:
        try:
            rows = list(read_rows(file))
        except (ValueError, UnicodeDecodeError, ShoptuneError) as exc:
            problems.append(f"{file}: cannot be read: {str(exc).splitlines()[0]}")
            continue
        for number, (line, row) in enumerate(rows):
            absent = [c for c in entry.columns.values() if c not in row]
            if absent:
                problems += [f"{file}: no column {c!r}{near(c, row)}" for c in absent] if number == 0 else []
                break
            try:
                out.append((None, instruction(row, entry.columns, entry.subtask.task_type)))
            except (ValueError, json.JSONDecodeError) as exc:
                problems.append(f"{line}: {exc}")
    return out


def read_entry(
    ident: str, entry: SourceEntry, base: Path, problems: list[str], part: Part | None = None, where: str = ""
) -> MappedSource:
    """The entry's records (of one part of the held-out split, or all); every problem is appended to `problems`
    (nothing raised for bad rows), entry-level ones after `where` (the sources file and the entry's line)."""
    where = where or f"source {ident!r}"
    key = entry.heldout.key or DEFAULT_KEYS[entry.kind] if entry.kind in DEFAULT_KEYS else ""
    held = part == "heldout"
    if entry.kind == INSTRUCTIONS:
        path = entry.path if entry.path.is_absolute() else base / entry.path
        if not path.exists():
            problems.append(f"{where}: path {path}: no such file or folder")
            return MappedSource(ident, entry.kind, [], entry.licence, entry.language, [], entry.subtask)
        files = table_files(path)
        out = read_instructions(where, entry, files, problems)
        if part is not None:  # an instruction row's group is its prompt
            out = [r for r in out if in_heldout(ident, r[1][0], entry.heldout.share) == held]
        return MappedSource(
            ident, entry.kind, out, entry.licence, entry.language, files, entry.subtask, key, entry.heldout.share
        )
    fields = kind_fields(entry.kind)
    unknown = [f for f in entry.columns if f not in fields]
    problems += [f"{where}: columns: no field {f!r} in {entry.kind}{near(f, fields)}" for f in unknown]
    problems += [
        f"{where}: values: no field {f!r} in {entry.kind}{near(f, fields)}" for f in entry.values if f not in fields
    ]
    for part_key in (entry.heldout.key or "").split(LINKED) if entry.heldout.key is not None else ():
        name = part_key.partition("[:")[0]
        if name not in fields:
            problems.append(f"{where}: heldout.key: no field {name!r} in {entry.kind}{near(name, fields)}")
    problems += [
        f"{where}: constants: no field {f!r} in {entry.kind}{near(f, fields)}"
        for f in entry.constants
        if f not in fields
    ]
    defaults = defaulted(entry.kind, entry, ident)
    for field, value in entry.constants.items():
        if field in fields:
            try:
                defaults[field] = convert(value, fields[field][0])
            except (ValueError, json.JSONDecodeError) as exc:
                problems.append(f"{where}: constants: field {field!r}: {exc}")
    given = {**defaults, **entry.columns}
    derived = entry.kind == "offer" and OFFER_ID not in given  # an id that only names a row: made from its content
    needed = [f for f, (_, required) in fields.items() if required and not (derived and f == OFFER_ID)]
    missing = [f for f in needed if f not in given]
    problems += [f"{where}: columns: field {f!r} of {entry.kind} needs a column" for f in missing]
    path = entry.path if entry.path.is_absolute() else base / entry.path
    if not path.exists():
        problems.append(f"{where}: path {path}: no such file or folder")
        return MappedSource(ident, entry.kind, [], entry.licence, entry.language, [])
    files = table_files(path)
    if not files:
        problems.append(f"{where}: path {path}: no {', '.join(SUFFIXES)} files in this folder")
    mapped = {f: c for f, c in entry.columns.items() if f in fields}
    good: list[tuple[str, dict[str, Any]]] = []  # (where, values) of the rows that convert
    for file in files:
        checked_columns = False
        try:
            rows = list(read_rows(file))
        except (ValueError, UnicodeDecodeError) as exc:  # malformed JSON, bad encoding
            problems.append(f"{file}: cannot be read: {str(exc).splitlines()[0]}")
            continue
        except ShoptuneError as exc:
            problems.append(str(exc))
            continue
        for line, row in rows:
            if not checked_columns:
                checked_columns = True
                absent = [(f, c) for f, c in mapped.items() if c not in row]
                problems += [f"{file}: field {f!r}: no column {c!r}{near(c, row)}" for f, c in absent]
                if absent:
                    break
            values: dict[str, Any] = {f: v for f, v in defaults.items() if f not in mapped}
            bad = False
            for field, column in mapped.items():
                raw = row[column]
                table = entry.values.get(field)
                if table is not None:
                    if str(raw) not in table:
                        problems.append(f"{line}: field {field!r}: value {raw!r} is not in values.{field}")
                        bad = True
                        continue
                    raw = table[str(raw)]
                try:
                    values[field] = convert(raw, fields[field][0])
                except (ValueError, json.JSONDecodeError) as exc:
                    problems.append(f"{line}: field {field!r} (column {column!r}): {exc}")
                    bad = True
            if not bad:
                good.append((line, {**values, OFFER_ID: row_id(values)} if derived else values))
    grouped = groups([values for _, values in good], key) if part is not None else [None] * len(good)
    out: list[Any] = []
    for (line, values), group in zip(good, grouped, strict=True):
        if part is None or in_heldout(ident, group, entry.heldout.share) == held:
            try:
                out.append((values.get(OFFER_ID), build_record(entry.kind, values)))
            except (TypeError, ValueError) as exc:
                problems.append(f"{line}: {exc}")
    notes = (
        [f"{where}: no column for id: each row's id is made from its content (sessions cannot name it)"]
        if (derived)
        else []
    )
    return MappedSource(
        ident, entry.kind, out, entry.licence, entry.language, files, None, key, entry.heldout.share, notes
    )


def raw_entries(files: typing.Iterable[Path]) -> Iterator[dict[str, Any]]:
    """The entries of sources files as written, without reading their tables: for what a spec needs to know up
    front (declared subtasks, licence ids). A file that does not parse yields nothing here; loading it says why."""
    for file in files:
        try:
            entries = yaml.safe_load(Path(file).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError):
            continue
        yield from (entry for entry in entries.values() if isinstance(entry, dict)) if isinstance(entries, dict) else ()


def load_sources(path: Path, part: Part | None = "train") -> list[MappedSource]:
    """Every entry of a sources file, read and checked whole (one error lists every problem, each with the file, the
    entry's line and the field), keeping the records of one part of the held-out split: "train" for mixtures,
    "heldout" for your benchmark, None for all. What a reader decided for the user (an id made from a row's content)
    is said once."""
    problems: list[str] = []
    sources: list[MappedSource] = []
    for ident, body, line in _entries(path, problems):
        where = f"{path}:{line}: source {ident!r}"
        if not isinstance(body, dict):
            problems.append(f"{where}: expected a mapping with kind, path, columns, licence")
            continue
        try:
            entry = SourceEntry.model_validate(body)
        except ValidationError as err:
            for e in err.errors(include_url=False):
                field = ".".join(str(p) for p in e["loc"])
                if e["type"] == "extra_forbidden":
                    problem = f"unknown key{near(field, SourceEntry.model_fields)}"
                else:
                    problem = e["msg"]
                problems.append(f"{where}: {field}: {problem}")
            continue
        if entry.kind not in KINDS and entry.kind != INSTRUCTIONS:
            problems.append(
                f"{where}: kind {entry.kind!r} is not a record type" + near(entry.kind, [*KINDS, INSTRUCTIONS])
            )
            continue
        sources.append(read_entry(str(ident), entry, path.parent, problems, part, where))
    if problems:
        shown = problems[:MAX_SHOWN] + (
            [f"... and {len(problems) - MAX_SHOWN} more"] if len(problems) > MAX_SHOWN else []
        )
        raise ShoptuneError(f"{path}: {len(problems)} problem(s):\n  " + "\n  ".join(shown))
    for said in (said for source in sources for said in source.notes):
        note(said)
    return sources


def _entries(path: Path, problems: list[str]) -> list[tuple[Any, Any, int]]:
    """(id, body, line) of each entry of a sources file. An id given twice is a problem naming both lines (YAML would
    keep the last silently, hiding the first's mistakes); a key given twice inside an entry too."""
    try:
        root = yaml.compose(read_utf8(path), Loader=_UniqueKeys)
    except FileNotFoundError:
        raise ShoptuneError(f"{path}: no such sources file") from None
    except IsADirectoryError:
        raise ShoptuneError(f"{path}: is a folder, not a sources file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ShoptuneError(f"{path}{line}: invalid YAML ({getattr(exc, 'problem', exc)})") from None
    if root is None:
        return []
    if not isinstance(root, yaml.MappingNode):
        raise ShoptuneError(f"{path}: expected a mapping of source ids to entries")
    constructor = _UniqueKeys("")
    first: dict[Any, int] = {}
    out = []
    for key_node, value_node in root.value:
        line = key_node.start_mark.line + 1
        try:
            ident, body = (
                constructor.construct_object(key_node, deep=True),
                constructor.construct_object(value_node, deep=True),
            )
        except yaml.YAMLError as exc:
            problems.append(f"{path}:{line}: {exc}")
            continue
        if ident in first:  # both entries are still checked: every problem at once
            problems.append(f"{path}:{line}: source {ident!r}: the id is used twice (first at line {first[ident]})")
        first.setdefault(ident, line)
        out.append((ident, body, line))
    return out


class _UniqueKeys(yaml.SafeLoader):
    """YAML that refuses a key given twice in one mapping (YAML itself keeps the last silently)."""

    def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} given twice (lines {seen[key]} and {line})", key_node.start_mark
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


# --- into a corpus ----------------------------------------------------------------------------------------


def own_corpus(sources: list[MappedSource]) -> RawCorpus:
    """The records of a shop's own tables, in the fields the public sources' readers fill, so the same builders
    draw from them. `origins` says which entries filled each field (their licences travel with the examples)."""
    corpus = RawCorpus()
    for source in sources:
        if source.kind == INSTRUCTIONS:
            assert source.subtask is not None
            corpus.instructions.setdefault(source.subtask.name, []).extend(r for _, r in source.records)
            corpus.origins.setdefault(f"{INSTRUCTIONS}:{source.subtask.name}", []).append(source)
            corpus.present.add(source.id)
            for file in source.files:
                corpus.sources[input_name(source, file)] = file_hash(file)
            continue
        field = KINDS[source.kind].field
        if source.kind == "category":
            for _, record in source.records:
                corpus.categories.setdefault(record.language, []).append(record)
                corpus.parallel_categories.setdefault(record.language, []).append(record)
            fields = ("categories", "parallel_categories")
        elif source.kind == "offer":
            corpus.catalogue.update(dict(source.records))
            fields = (field,)
        else:
            getattr(corpus, field).extend(record for _, record in source.records)
            fields = (field,)
        for name in fields:
            corpus.origins.setdefault(name, []).append(source)
        corpus.present.add(source.id)
        for file in source.files:
            corpus.sources[input_name(source, file)] = file_hash(file)
    return corpus


def input_name(source: MappedSource, file: Path) -> str:
    """How a manifest names a table file: by its entry and name, the same wherever the sources file is read from
    (an entry's files are one file or the files of one folder, so their names differ)."""
    return f"{source.id}:{file.name}"


def filled(corpus: RawCorpus) -> set[str]:
    """The corpus fields that hold records (a declared subtask's instructions: `instructions:NAME`)."""
    have = {f.name for f in dataclasses.fields(corpus) if f.name in FIELDS and getattr(corpus, f.name)}
    return have | {f"{INSTRUCTIONS}:{name}" for name, rows in corpus.instructions.items() if rows}


def lacks(corpus: RawCorpus, reads: typing.Iterable[str], languages: typing.Iterable[str]) -> list[str]:
    """What a subtask reading these fields in these languages would still need from a shop's own tables: record
    kinds, and for category trees the languages (a translation subtask needs a tree in each of its languages)."""
    have = filled(corpus)
    missing = [field_kind(f) for f in reads if f not in have]
    for field in ("categories", "parallel_categories"):
        if field in reads and field in have:
            missing += [f"category ({lang})" for lang in languages if lang not in getattr(corpus, field)]
    return sorted(set(missing))


FIELDS = {"parallel_categories", *(kind.field for kind in KINDS.values())}


def field_kind(field: str) -> str:
    """The record kind that fills a corpus field (what a sources file entry would declare)."""
    if field.startswith(f"{INSTRUCTIONS}:"):
        return field
    if field == "parallel_categories":
        return "category"
    return next(name for name, kind in KINDS.items() if kind.field == field)


def provenance(corpus: RawCorpus, reads: typing.Iterable[str]) -> dict[str, str]:
    """What an example built from a shop's own tables carries: the ids and licences of the entries it read."""
    feeding = [source for field in reads for source in corpus.origins.get(field, [])]
    return {
        "source": "+".join(dict.fromkeys(s.id for s in feeding)),
        "licence": "+".join(sorted({s.licence.id for s in feeding})),
    }
