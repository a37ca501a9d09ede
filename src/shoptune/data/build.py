"""`shoptune data build SPEC --out DIR`: raw sources → subtask examples → cleaned, split mixture on disk.

DIR is a `datasets` DatasetDict (train, validation) saved with save_to_disk, so
`datasets.load_from_disk(DIR)` reads it, with manifest.json and spec.yaml beside the splits. The same
spec and inputs give byte-identical files. The folder is assembled under a temporary name and renamed
into place, so an interrupted build leaves nothing half-written.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import random
import statistics
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tqdm import tqdm

from shoptune import __version__
from shoptune.config import SPEC_RECORD
from shoptune.data.clean import Contamination, Fingerprints, Tokens, dedupe, fingerprint
from shoptune.data.options import balance
from shoptune.data.spec import MixtureSpec
from shoptune.errors import ShoptuneError
from shoptune.files import atomic_write_text, folder_in_place
from shoptune.hub import tiny_model_path
from shoptune.locks import waiting
from shoptune.runs import Layout, RunFolder, settings
from shoptune.schema import Example, TaskType, arrow_schema, from_row, read_examples, to_table, write_jsonl
from shoptune.sources.mapped import MappedSource, lacks, load_sources, own_corpus, provenance
from shoptune.sources.records import RawCorpus
from shoptune.sources.registry import LICENCES, file_hash, load_raw, present_sources
from shoptune.tasks.registry import Subtask

MANIFEST = "manifest.json"
VALIDATION_JSONL = "validation.jsonl"  # the validation split as ShopBench JSON Lines, for `eval run` and studies
# What `save` writes: datasets' DatasetDict (its index and a folder per split), the manifest, the spec, the split.
BUILD = Layout(
    "data build",
    frozenset({"dataset_dict.json", "train", "validation", MANIFEST, SPEC_RECORD, VALIDATION_JSONL}),
    SPEC_RECORD,
    made="a mixture built",
)
SAMPLED_LENGTHS = 20_000  # prompts measured for the manifest's length statistics
PARALLEL_FROM = 50_000  # examples asked for, from which worker processes pay for their start by default


@dataclass(frozen=True)
class Part:
    """The examples of one subtask from one kind of data (`built`: split and sized by the spec) or of one
    extra-examples file (all to train), as a table, with what cleaning needs of them."""

    name: str
    built: bool
    table: pa.Table
    fingerprints: Fingerprints
    sources: dict[str, str]
    size: int = 0  # training examples wanted, for a built part


@dataclass(frozen=True)
class Unit:
    """What one part is made from: a subtask on the shipped raw data, a subtask on a sources file, or a file of
    extra examples."""

    task: str | None
    sources_file: str | None = None
    extra: str | None = None

    @property
    def name(self) -> str:
        if self.extra is not None:
            return self.extra
        return f"{self.task}@{self.sources_file}" if self.sources_file else str(self.task)


def contamination_of(spec: MixtureSpec) -> Contamination | None:
    """The n-grams of the evaluation sets no example may share (None when the spec names none)."""
    if not spec.decontaminate:
        return None
    return Contamination((ex for path in spec.decontaminate for ex in read_examples(path)), spec.ngram)


class PartMaker:
    """Builds parts, loading the raw corpus, the shop's own tables and the evaluation sets once per process."""

    def __init__(self, spec: MixtureSpec, own: dict[Path, RawCorpus] | None = None) -> None:
        self.spec = spec
        self._corpus: RawCorpus | None = None
        self._own: dict[str, RawCorpus] = {str(file): corpus for file, corpus in (own or {}).items()}
        self._contamination: Contamination | None = None

    def corpus(self) -> RawCorpus:
        if self._corpus is None:
            self._corpus = load_raw(self.spec.raw_dir)
        return self._corpus

    def own(self, sources_file: str) -> RawCorpus:
        if sources_file not in self._own:
            self._own[sources_file] = own_corpus(allowed_sources(self.spec, Path(sources_file)))
        return self._own[sources_file]

    def contamination(self) -> Contamination | None:
        if self._contamination is None:
            self._contamination = contamination_of(self.spec)
        return self._contamination

    def __call__(self, unit: Unit) -> Part:
        spec = self.spec
        if unit.extra is not None:
            examples = extra_examples(spec, Path(unit.extra))
            return Part(unit.name, False, to_table(examples), fingerprint(examples, self.contamination()), {})
        assert unit.task is not None
        task = spec.known_subtasks()[unit.task]
        size = spec.size_of(task.name)
        if unit.sources_file is None:
            corpus = self.corpus()
            examples = task.build(corpus, size + spec.validation_per_subtask, spec.seed)
        else:
            corpus = self.own(unit.sources_file)
            carried = provenance(corpus, task.reads)
            weight = min(spec.source_weights.get(ident, 1.0) for ident in carried["source"].split("+"))
            size = max(1, round(size * weight))
            built = task.build(corpus, size + spec.validation_per_subtask, spec.seed)
            examples = [ex.model_copy(update=carried) for ex in built]
        table = to_table(examples)
        return Part(unit.name, True, table, fingerprint(examples, self.contamination()), corpus.sources, size)


def allowed_sources(spec: MixtureSpec, sources_file: Path) -> list[MappedSource]:
    """A sources file's entries whose licence the spec allows."""
    return [s for s in load_sources(sources_file) if spec.allows(s.licence.id)]


def extra_examples(spec: MixtureSpec, path: Path) -> list[Example]:
    """The examples of a file that belong to the spec's subtasks and licences; an example of a subtask that does
    not exist is an error, never dropped in silence."""
    known = spec.known_subtasks()
    examples = read_examples(path)
    unknown = sorted({ex.task_name for ex in examples if ex.task_name not in known})
    if unknown:
        raise ShoptuneError(
            f"{path}: examples of unknown subtask(s) {', '.join(unknown)}; `shoptune tasks list` shows them "
            "(your own data becomes a subtask through a sources file, see the README's 'Your own data')"
        )
    wanted = {task.name for task in spec.candidates()}
    kept = [ex for ex in examples if ex.task_name in wanted and spec.allows(ex.licence)]
    # ShopBench-format rows from elsewhere carry no capability: their subtask's, so the manifest counts them.
    return [
        ex if ex.capability else ex.model_copy(update={"capability": known[ex.task_name].capability.value})
        for ex in kept
    ]


_maker: PartMaker | None = None  # in a worker process


def _start_worker(spec: MixtureSpec) -> None:
    global _maker
    _maker = PartMaker(spec)


def _make_in_worker(unit: Unit) -> Part:
    assert _maker is not None
    return _maker(unit)


def make_parts(
    spec: MixtureSpec, workers: int | None, progress: bool, own: dict[Path, RawCorpus] | None = None
) -> list[Part]:
    """Every subtask's part, then every extra file's, in that order whatever the number of workers (so
    the output does not depend on it); parts are made in parallel worker processes when there are many
    examples to make. `own`: the sources files' corpora, when the caller has read them already."""
    own = own_corpora(spec) if own is None else own
    units = [Unit(task.name) for task in with_data(spec)]
    units += [Unit(task.name, str(file)) for file, tasks in own_data(spec, own).items() for task in tasks]
    units += [Unit(None, extra=str(p)) for p in spec.extra_examples]
    if workers is None:
        wanted = sum(spec.size_of(unit.task) for unit in units if unit.task is not None)
        workers = min(available_cpus(), len(units)) if wanted >= PARALLEL_FROM else 1
    bar = tqdm(total=len(units), desc="building", unit="part", disable=not progress, file=sys.stderr)
    with bar:
        if workers <= 1:
            maker, parts = PartMaker(spec, own), []
            for unit in units:
                parts.append(maker(unit))
                bar.update(1)
            return parts
        context = multiprocessing.get_context("spawn")  # forking a process that may hold threads is unsafe
        try:
            with ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker, initargs=(spec,)) as pool:
                futures = [pool.submit(_make_in_worker, unit) for unit in units]
                for _ in as_completed(futures):
                    bar.update(1)
                return [f.result() for f in futures]
        except BrokenProcessPool as exc:
            raise ShoptuneError(
                "a worker process building the mixture died (out of memory, or a script that calls build_mixture "
                "without an `if __name__ == '__main__':` guard); build in one process: workers=1 (--workers 1)"
            ) from exc


def with_data(spec: MixtureSpec) -> list[Subtask]:
    """The selected subtasks whose sources are all under the spec's raw folder (as each subtask declares)."""
    selected = spec.selected()
    if not selected:  # own data only: the raw folder is not looked at
        return []
    present = present_sources(spec.raw_dir)
    return [task for task in selected if set(task.sources) <= present]


def own_corpora(spec: MixtureSpec) -> dict[Path, RawCorpus]:
    """Per sources file, the records of its entries whose licence the spec allows, read once per build."""
    return {file: own_corpus(allowed_sources(spec, file)) for file in spec.sources}


def own_data(spec: MixtureSpec, own: dict[Path, RawCorpus]) -> dict[Path, list[Subtask]]:
    """Per sources file, the spec's subtasks that its records feed."""
    candidates = spec.candidates()
    return {
        file: [task for task in candidates if not lacks(corpus, task.reads, task.languages)]
        for file, corpus in own.items()
    }


def available_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def split(spec: MixtureSpec, parts: Sequence[Part]) -> tuple[dict[str, pa.Table], dict[str, int]]:
    """Clean all parts together, then per subtask: shuffle, hold out validation, take the training size
    (sampled again with replacement where `repeat` asks for more than is there); extra examples all go
    to train; train is shuffled as a whole. Returns the splits and how many were removed, by reason."""
    near = (spec.near_duplicates.threshold, spec.near_duplicates.num_perm) if spec.near_duplicates else None
    keep, removed = dedupe([p.fingerprints for p in parts], near=near, seed=spec.seed)
    train: list[int] = []
    validation: list[int] = []
    extras: list[int] = []
    start = 0
    for part in parts:
        kept = (start + np.flatnonzero(keep[start : start + len(part.fingerprints)])).tolist()
        start += len(part.fingerprints)
        if not part.built:
            extras.extend(kept)
            continue
        random.Random(f"{spec.seed}:split:{part.name}").shuffle(kept)
        n_val = min(spec.validation_per_subtask, len(kept) // 5)
        validation.extend(kept[:n_val])
        size = part.size
        rows = kept[n_val : n_val + size]
        if spec.repeat and rows and len(rows) < size:
            rows = rows + random.Random(f"{spec.seed}:repeat:{part.name}").choices(rows, k=size - len(rows))
        train.extend(rows)
    train.extend(extras)
    random.Random(f"{spec.seed}:order").shuffle(train)
    table = pa.concat_tables([p.table for p in parts]) if parts else arrow_schema().empty_table()
    splits = {
        name: table.take(np.asarray(rows, dtype=np.int64))
        for name, rows in (("train", train), ("validation", validation))
    }
    if spec.balance_answers:  # training only: validation measures the task as its sources pose it
        splits["train"] = balanced(splits["train"], spec.seed, contamination_of(spec))
    reasons = ("exact_duplicate", "near_duplicate", "contaminated")
    return splits, {reason: removed.get(reason, 0) for reason in reasons}


def balanced(table: pa.Table, seed: int, contamination: Contamination | None = None) -> pa.Table:
    """The table with its multiple-choice answers spread evenly over option positions (`data.options`). Options in
    a new order can spell an evaluation question's n-grams that the order they were cleaned in did not: such an
    example keeps its order (the balance is then off by those few)."""
    kinds = table["task_type"].to_pylist()
    chosen = [i for i, kind in enumerate(kinds) if kind == TaskType.MULTIPLE_CHOICE.value]
    if not chosen:
        return table
    prompts, answers = table["input_field"].to_pylist(), table["output_field"].to_pylist()
    names = table["task_name"].to_pylist()
    rows = [
        {
            "task_type": kinds[i],
            "task_name": names[i],
            "input_field": prompts[i],
            "output_field": json.loads(answers[i]),
        }
        for i in chosen
    ]
    moved = balance(rows, seed)
    if contamination is not None:
        hit = contamination.hits(Tokens.of(row["input_field"] for row in moved))
        moved = [before if spoilt else after for before, after, spoilt in zip(rows, moved, hit, strict=True)]
    for i, row in zip(chosen, moved, strict=True):
        prompts[i], answers[i] = row["input_field"], json.dumps(row["output_field"])
    table = table.set_column(table.schema.get_field_index("input_field"), "input_field", pa.array(prompts, pa.string()))
    return table.set_column(
        table.schema.get_field_index("output_field"), "output_field", pa.array(answers, pa.string())
    )


def token_lengths(texts: list[str]) -> tuple[str, list[int]]:
    """Lengths under the embedded tiny model's tokenizer (words if it is absent): no model conversion for a build."""
    path = tiny_model_path() / "tokenizer.json"
    if path.is_file():
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(path))
        return "embedded tiny model tokenizer", [len(e.ids) for e in tok.encode_batch(texts)]
    return "whitespace words", [len(t.split()) for t in texts]


def manifest(
    spec: MixtureSpec,
    splits: dict[str, pa.Table],
    removed: dict[str, int],
    sources: dict[str, str],
    own: dict[Path, RawCorpus] | None = None,
) -> dict[str, Any]:
    own = {} if own is None else own
    # The licences the sources files declare (an id shoptune knows keeps its own description).
    declared = {s.licence.id: s.licence.commercial for c in own.values() for fed in c.origins.values() for s in fed}
    train = splits["train"]
    # Lengths of a fixed sample: exact enough for a summary, and a million prompts would take minutes.
    sample = sorted(random.Random(f"{spec.seed}:lengths").sample(range(len(train)), min(len(train), SAMPLED_LENGTHS)))
    unit, lengths = token_lengths(train["input_field"].take(sample).to_pylist())
    lengths.sort()

    def count(column: str, where: str | None = None) -> dict[str, int]:
        """Rows by their value of `column` (of the task type `where` only, when given)."""
        values = train[column] if where is None else pc.filter(train[column], pc.equal(train["task_type"], where))
        counts = pc.value_counts(values).to_pylist()
        return dict(sorted((str(c["values"]), c["counts"]) for c in counts))

    inputs = dict(sorted(sources.items()))
    inputs.update({f"decontaminate:{p.name}": file_hash(p) for p in spec.decontaminate})
    inputs.update({f"extra:{p.name}": file_hash(p) for p in spec.extra_examples})
    return {
        "name": spec.name,
        "shoptune": __version__,
        "examples": {name: len(table) for name, table in splits.items()},
        "by_capability": count("capability"),
        "by_subtask": count("task_name"),
        "by_task_type": count("task_type"),
        "by_language": count("language"),
        "by_source": count("source"),
        "by_licence": count("licence"),
        "multiple_choice_answers": count("output_field", where=TaskType.MULTIPLE_CHOICE.value),
        "licences": {
            ident: licence_record(ident, declared)
            for ident in sorted({part for licence in count("licence") for part in licence.split("+")})
            if ident in LICENCES or ident in declared
        },
        "prompt_length": {
            "unit": unit,
            "measured": len(lengths),
            "mean": round(statistics.fmean(lengths), 1) if lengths else 0,
            "p50": lengths[len(lengths) // 2] if lengths else 0,
            "p95": lengths[int(len(lengths) * 0.95)] if lengths else 0,
            "max": lengths[-1] if lengths else 0,
        },
        "removed": removed,
        "subtasks_without_data": without_data(spec, own),
        "inputs_sha256": inputs,
        "spec": json.loads(json.dumps(spec.model_dump(mode="json"))),
    }


def without_data(spec: MixtureSpec, own: dict[Path, RawCorpus]) -> list[str]:
    """The subtasks asked for that neither the raw folder nor a sources file feeds."""
    wanted = {t.name for t in spec.selected()} | ({t.name for t in spec.candidates()} if spec.sources else set())
    fed = {t.name for t in with_data(spec)} | {t.name for tasks in own_data(spec, own).values() for t in tasks}
    return sorted(wanted - fed)


def licence_record(ident: str, own: dict[str, bool]) -> dict[str, Any]:
    if ident in LICENCES:
        return {"name": LICENCES[ident].name, "commercial_use": LICENCES[ident].commercial}
    return {"name": f"{ident} (declared in a sources file)", "commercial_use": own[ident]}


def save(splits: dict[str, pa.Table], info: dict[str, Any], spec: MixtureSpec, out: Path) -> None:
    import datasets

    datasets.disable_progress_bars()
    with folder_in_place(out) as tmp:  # the caller (build_mixture) holds the folder's lock
        # The build is a pure function of the manifest (spec, input hashes, version), so a fingerprint
        # drawn from it, unlike datasets' random one, keeps the saved files byte-identical across runs.
        identity = json.dumps(info, sort_keys=True)
        parts = {  # an empty split is left out: datasets cannot load one back
            name: datasets.Dataset(table, fingerprint=hashlib.sha256(f"{identity}:{name}".encode()).hexdigest()[:16])
            for name, table in splits.items()
            if len(table)
        }
        datasets.DatasetDict(parts).save_to_disk(str(tmp))
        validation = splits.get("validation")
        rows = validation.to_pylist() if validation is not None else []
        write_jsonl(tmp / VALIDATION_JSONL, (from_row(row).to_json() for row in rows))
        atomic_write_text(tmp / MANIFEST, json.dumps(info, indent=2, ensure_ascii=False) + "\n")
        RunFolder(tmp, BUILD).write_record(settings(spec))


def build_mixture(
    spec: MixtureSpec, out: Path, *, workers: int | None = None, progress: bool = False
) -> dict[str, Any]:
    """Build, clean, split and save; `workers` processes (None: as many as there are CPUs, for large
    mixtures) make the subtasks' examples, with the same output whatever their number. Returns the manifest, and
    `rebuilt`: the folder held a build of this spec already (the same files again, unless the inputs changed)."""
    with RunFolder.open(out, BUILD, settings(spec)):  # a rebuild replaces the folder whole: nothing else may be in it
        rebuilt = (out / MANIFEST).is_file()
        own = own_corpora(spec)  # each sources file read once, for the parts and the manifest
        parts = make_parts(spec, workers, progress, own)
        splits, removed = split(spec, parts)
        if not len(splits["train"]):
            raise ShoptuneError(f"mixture {spec.name!r} is empty: the raw data yields no examples for its subtasks")
        sources = {name: digest for p in parts if p.built for name, digest in p.sources.items()}
        info = manifest(spec, splits, removed, sources, own)
        save(splits, info, spec, out)
    return {**info, "rebuilt": rebuilt}


def cached_mixture(spec: MixtureSpec, folder: Path) -> Path:
    """`folder` holding the mixture of `spec`, built now unless it holds exactly that build already: the one
    mixture cache, for a training run's mixture and a study's. Callers that may run at once (study cells under
    Ray) wait for each other: one builds, the others reuse."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with waiting(folder.parent / f".{folder.name}.build-lock"):
        if RunFolder(folder, BUILD).recorded() != settings(spec):
            build_mixture(spec, folder)
    return folder
