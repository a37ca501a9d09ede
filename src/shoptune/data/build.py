"""`shoptune data build SPEC --out DIR`: raw sources → subtask examples → cleaned, split mixture on disk.

DIR is a `datasets` DatasetDict (train, validation) saved with save_to_disk, so
`datasets.load_from_disk(DIR)` reads it, with manifest.json and spec.yaml beside the splits. The same
spec and inputs give byte-identical files. The folder is assembled under a temporary name and renamed
into place, so an interrupted build leaves nothing half-written.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import statistics
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from shoptune import default_model_path
from shoptune.config import dump_config
from shoptune.data.clean import Contamination, clean
from shoptune.data.spec import MixtureSpec
from shoptune.errors import ShoptuneError
from shoptune.schema import Example, atomic_write_text, parse_example, read_examples
from shoptune.sources.shipped import file_hash, load_raw

EMBEDDING_METRICS = ("sent-transformer", "multilingual-sent-transformer")
COLUMNS = (
    "input_field",
    "output_field",
    "task_name",
    "task_type",
    "metric",
    "is_multiple_choice",
    "track",
    "capability",
    "source",
    "language",
    "id",
)


def to_row(ex: Example) -> dict[str, Any]:
    """One dataset row; a non-string output_field is stored as JSON text so every row has one schema."""
    row = ex.to_json()
    out = row["output_field"]
    row["output_field"] = out if isinstance(out, str) else json.dumps(out)
    return {c: row.get(c) for c in COLUMNS}


def from_row(row: dict[str, Any]) -> Example:
    """The inverse of to_row. Strings are stored raw, so a generation answer is read as a list only where
    a list is allowed (sentence-embedding metrics, several references) and the text is a JSON list."""
    out = row["output_field"]
    if row["task_type"] != "generation":
        out = json.loads(out)
    elif row["metric"] in EMBEDDING_METRICS and out.startswith("["):
        try:
            value = json.loads(out)
            out = value if isinstance(value, list) else out
        except json.JSONDecodeError:
            pass
    return parse_example({**row, "output_field": out})


def build_examples(spec: MixtureSpec) -> tuple[dict[str, list[Example]], dict[str, int], dict[str, str]]:
    """Per split, the kept examples; how many were removed, by reason; the raw files' hashes."""
    corpus = load_raw(spec.raw_dir)
    drawn: list[Example] = []
    for task in spec.selected():
        drawn.extend(task.build(corpus, spec.size_of(task.name) + spec.validation_per_subtask, spec.seed))
    n_built = len(drawn)
    names = {task.name for task in spec.selected()}
    for path in spec.extra_examples:
        drawn.extend(ex for ex in read_examples(path) if ex.task_name in names)
    contamination = None
    if spec.decontaminate:
        contamination = Contamination((ex for path in spec.decontaminate for ex in read_examples(path)), spec.ngram)
    near = (spec.near_duplicates.threshold, spec.near_duplicates.num_perm) if spec.near_duplicates else None
    keep, removed = clean(drawn, near=near, contamination=contamination, seed=spec.seed)
    by_task: dict[str, list[Example]] = {}
    extras: dict[str, list[Example]] = {}
    for i, (ex, k) in enumerate(zip(drawn, keep, strict=True)):
        if k:
            (by_task if i < n_built else extras).setdefault(ex.task_name, []).append(ex)
    splits: dict[str, list[Example]] = {"train": [], "validation": []}
    for name, examples in by_task.items():
        random.Random(f"{spec.seed}:split:{name}").shuffle(examples)
        n_val = min(spec.validation_per_subtask, len(examples) // 5)
        splits["validation"].extend(examples[:n_val])
        train = examples[n_val : n_val + spec.size_of(name)]
        if spec.repeat and train and len(train) < spec.size_of(name):
            rng = random.Random(f"{spec.seed}:repeat:{name}")
            train = train + rng.choices(train, k=spec.size_of(name) - len(train))
        splits["train"].extend(train)
    for examples in extras.values():  # extra examples come on top of the per-subtask budget, all of them
        splits["train"].extend(examples)
    random.Random(f"{spec.seed}:order").shuffle(splits["train"])
    reasons = ("exact_duplicate", "near_duplicate", "contaminated")
    return splits, {reason: removed.get(reason, 0) for reason in reasons}, corpus.sources


def token_lengths(texts: list[str]) -> tuple[str, list[int]]:
    """Lengths under the embedded model's tokenizer (words if it is absent)."""
    path = default_model_path() / "tokenizer.json"
    if path.is_file():
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(path))
        return "embedded default tokenizer", [len(e.ids) for e in tok.encode_batch(texts)]
    return "whitespace words", [len(t.split()) for t in texts]


def manifest(
    spec: MixtureSpec, splits: dict[str, list[Example]], removed: dict[str, int], sources: dict[str, str]
) -> dict[str, Any]:
    train = splits["train"]
    unit, lengths = token_lengths([ex.input_field for ex in train])
    lengths.sort()

    def count(key: str) -> dict[str, int]:
        return dict(sorted(Counter(str(getattr(ex, key)) for ex in train).items()))

    inputs = dict(sorted(sources.items()))
    inputs.update({f"decontaminate:{p.name}": file_hash(p) for p in spec.decontaminate})
    inputs.update({f"extra:{p.name}": file_hash(p) for p in spec.extra_examples})
    return {
        "name": spec.name,
        "examples": {split: len(rows) for split, rows in splits.items()},
        "by_capability": count("capability"),
        "by_subtask": count("task_name"),
        "by_task_type": count("task_type"),
        "by_language": count("language"),
        "by_source": count("source"),
        "prompt_length": {
            "unit": unit,
            "mean": round(statistics.fmean(lengths), 1) if lengths else 0,
            "p50": lengths[len(lengths) // 2] if lengths else 0,
            "p95": lengths[int(len(lengths) * 0.95)] if lengths else 0,
            "max": lengths[-1] if lengths else 0,
        },
        "removed": removed,
        "subtasks_without_data": sorted({t.name for t in spec.selected()} - {ex.task_name for ex in train}),
        "inputs_sha256": inputs,
        "spec": json.loads(json.dumps(spec.model_dump(mode="json"))),
    }


def save(splits: dict[str, list[Example]], info: dict[str, Any], spec: MixtureSpec, out: Path) -> None:
    import datasets
    import pyarrow as pa

    if out.exists() and not (out / "manifest.json").is_file():
        raise ShoptuneError(f"--out {out}: exists and is not a mixture folder; refusing to replace it")
    datasets.disable_progress_bars()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        parts = {}
        for split, examples in splits.items():
            rows = [to_row(ex) for ex in examples]
            table = pa.Table.from_pylist(rows) if rows else pa.table({c: pa.array([], pa.string()) for c in COLUMNS})
            # A content fingerprint (not datasets' random one) keeps the saved files byte-identical across runs.
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, table.schema) as writer:
                writer.write_table(table)
            digest = hashlib.sha256(sink.getvalue()).hexdigest()[:16]
            parts[split] = datasets.Dataset(table, fingerprint=digest)
        datasets.DatasetDict(parts).save_to_disk(str(tmp))
        atomic_write_text(tmp / "manifest.json", json.dumps(info, indent=2, ensure_ascii=False) + "\n")
        atomic_write_text(tmp / "spec.yaml", dump_config(spec))
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def build_mixture(spec: MixtureSpec, out: Path) -> dict[str, Any]:
    splits, removed, sources = build_examples(spec)
    if not splits["train"]:
        raise ShoptuneError(f"mixture {spec.name!r} is empty: the raw data yields no examples for its subtasks")
    info = manifest(spec, splits, removed, sources)
    save(splits, info, spec, out)
    return info
