"""The ShopBench-format example: one record for training, generated and evaluation data alike.

Validation happens here, once, so every later layer can trust a record's shape; a bad line stops
with its file, line and field named. Records are written through `files` (a temporary name, then a
rename), so an interrupted run never leaves a half-written file behind.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator

from shoptune.errors import ShoptuneError, located
from shoptune.files import atomic_write_text
from shoptune.metrics import METRICS, TaskType, known_metric, metric_def, metrics_for
from shoptune.metrics import Metric as Metric  # re-exported: the layers above take the record's names from here

if TYPE_CHECKING:
    import pyarrow as pa


_TASK_TYPES = frozenset(t.value for t in TaskType)
OutputField = int | list[int] | list[float] | list[str] | str


def encodable(text: str) -> str:
    """Text that UTF-8 can hold: JSON's "\\ud800" decodes to a lone surrogate, which tokenizers and Arrow reject."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"holds a lone surrogate {text[exc.start]!r} at character {exc.start}, which is not text"
        ) from None
    return text


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_output(task_type: TaskType, metric: str | None, value: Any) -> Any:
    """The answer's shape is fixed by the task type; anything else would only fail later, in a metric."""
    if task_type is TaskType.MULTIPLE_CHOICE:
        if not _is_int(value):
            raise ValueError(f"multiple-choice needs an integer option index, got {value!r:.60}")
    elif task_type in (TaskType.RETRIEVAL, TaskType.RANKING):
        check, kind = (_is_int, "integers") if task_type is TaskType.RETRIEVAL else (_is_number, "numbers")
        if not isinstance(value, list) or not value or not all(check(v) for v in value):
            raise ValueError(f"{task_type.value} needs a non-empty list of {kind}, got {value!r:.60}")
        if task_type is TaskType.RETRIEVAL and len(set(value)) < len(value):
            raise ValueError(f"retrieval lists each right item once, got {value!r:.60}")
        if task_type is TaskType.RANKING and (min(value) < 0 or len(set(value)) < 2):
            raise ValueError(
                "ranking needs one non-negative relevance per candidate, not all equal (then every order scores "
                f"alike), got {value!r:.60}"
            )
    elif task_type is TaskType.NER:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"named_entity_recognition needs a list of strings, got {value!r:.60}")
    elif isinstance(value, list):
        if metric is None or metric_def(metric).embedding is None:
            raise ValueError("a list of reference texts is only allowed with a sentence-embedding metric")
        if not value or not all(isinstance(v, str) for v in value):
            raise ValueError(f"generation needs a string or a non-empty list of strings, got {value!r:.60}")
    elif not isinstance(value, str):
        raise ValueError(f"generation needs a string, got {value!r:.60}")
    return value


class Example(BaseModel):
    """One question (or training example) in ShopBench's format, plus shoptune's provenance fields."""

    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)

    input_field: str
    task_name: str
    task_type: TaskType
    metric: str  # a `Metric` name or a registered metric's
    is_multiple_choice: bool
    track: str
    output_field: OutputField
    capability: str | None = None
    source: str | None = None
    licence: str | None = None  # of the source data (ids of sources.registry.LICENCES, '+'-joined)
    id: str | None = None
    language: str | None = None

    @field_validator("task_type", mode="before")
    @classmethod
    def _known_task_type(cls, value: Any) -> Any:
        if isinstance(value, TaskType):
            return value
        if value not in _TASK_TYPES:
            raise ValueError(f"unknown task_type {value!r:.40}; expected one of: {', '.join(TaskType)}")
        return TaskType(value)

    @field_validator("metric", mode="before")
    @classmethod
    def _known_metric(cls, value: Any) -> Any:
        if not isinstance(value, str) or not known_metric(value):
            raise ValueError(f"unknown metric {value!r:.40}; expected one of: {', '.join(METRICS)}")
        return value

    @field_validator("input_field", "task_name", "track")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return encodable(value)

    @field_validator("metric")
    @classmethod
    def _metric_fits_type(cls, value: str, info: ValidationInfo) -> str:
        task_type = info.data.get("task_type")
        if task_type is not None and metric_def(value).task_type is not task_type:
            allowed = ", ".join(sorted(metrics_for(task_type)))
            raise ValueError(f"metric {value!r} does not apply to task_type {task_type.value!r} (use {allowed})")
        return value

    @field_validator("is_multiple_choice")
    @classmethod
    def _flag_fits_type(cls, value: bool, info: ValidationInfo) -> bool:
        task_type = info.data.get("task_type")
        if task_type is not None and value != (task_type is TaskType.MULTIPLE_CHOICE):
            raise ValueError(f"is {value} but task_type is {task_type.value!r}")
        return value

    @field_validator("output_field", mode="before")
    @classmethod
    def _output_fits_type(cls, value: Any, info: ValidationInfo) -> Any:
        task_type = info.data.get("task_type")
        if task_type is None:
            return value
        for text in value if isinstance(value, list) else [value]:
            if isinstance(text, str):
                encodable(text)
        return _check_output(task_type, info.data.get("metric"), value)

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


# --- the record as an Arrow row: how mixtures are stored on disk -----------------------------------------

ARROW_COLUMNS = (
    "input_field",
    "output_field",
    "task_name",
    "task_type",
    "metric",
    "is_multiple_choice",
    "track",
    "capability",
    "source",
    "licence",
    "language",
    "id",
)


def arrow_schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema([(c, pa.bool_() if c == "is_multiple_choice" else pa.string()) for c in ARROW_COLUMNS])


def to_table(examples: Sequence[Example]) -> pa.Table:
    """Examples as rows; a non-string output_field is stored as JSON text so every row has one schema."""
    import pyarrow as pa

    data: dict[str, list[Any]] = {c: [getattr(ex, c) for ex in examples] for c in ARROW_COLUMNS}
    data["output_field"] = [o if isinstance(o, str) else json.dumps(o) for o in data["output_field"]]
    data["task_type"] = [v.value for v in data["task_type"]]
    return pa.table(data, schema=arrow_schema())


def from_row(row: dict[str, Any]) -> Example:
    """One row of to_table back as a record. Strings are stored raw, so a generation answer is read as a list only
    where a list is allowed (sentence-embedding metrics, several references) and the text is a JSON list."""
    out = row["output_field"]
    if row["task_type"] != TaskType.GENERATION.value:
        out = json.loads(out)
    elif known_metric(row["metric"]) and metric_def(row["metric"]).embedding and out.startswith("["):
        try:
            value = json.loads(out)
            out = value if isinstance(value, list) else out
        except json.JSONDecodeError:
            pass
    return parse_example({**row, "output_field": out})


def _first_error(err: ValidationError) -> tuple[str | None, str]:
    first = err.errors(include_url=False)[0]
    field = ".".join(str(p) for p in first["loc"][:1]) or None
    if first["type"] == "missing":
        return field, "is missing"
    message = first["msg"].removeprefix("Value error, ")
    if "input" in first and first["type"].endswith("_type"):
        message += f" (got {first['input']!r:.60})"
    return field, message


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """JSON lets a key repeat and keeps the last value; in data or predictions that hides a mistake."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; bad JSON names its line."""
    path = Path(path)
    if path.is_dir():
        raise ShoptuneError(f"{path}: is a directory, expected a JSON Lines file")
    if not path.is_file():
        raise ShoptuneError(f"{path}: no such file")
    with path.open("rb") as fh:  # bytes, so a line that is not UTF-8 is named by its number
        for lineno, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise located(path, lineno, None, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line, object_pairs_hook=_unique_keys)
            except json.JSONDecodeError as exc:
                raise located(path, lineno, None, f"invalid JSON ({exc.msg} at column {exc.colno})") from None
            except _DuplicateKey as exc:
                raise located(path, lineno, exc.key, "appears twice in one object; which one is meant?") from None
            if not isinstance(obj, dict):
                raise located(path, lineno, None, f"expected a JSON object, got {type(obj).__name__}")
            yield lineno, obj


def parse_example(obj: dict[str, Any], path: Path | str = "<input>", lineno: int | None = None) -> Example:
    try:
        return Example.model_validate(obj)
    except ValidationError as err:
        field, message = _first_error(err)
        raise located(path, lineno, field, message) from None


def read_examples(path: Path | str) -> list[Example]:
    """All examples of a JSON Lines file, validated; an empty file is an error, not zero questions."""
    path = Path(path)
    examples = [parse_example(obj, path, lineno) for lineno, obj in iter_jsonl(path)]
    if not examples:
        raise ShoptuneError(f"{path}: holds no examples")
    return examples


def write_jsonl(path: Path | str, rows: Iterable[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
