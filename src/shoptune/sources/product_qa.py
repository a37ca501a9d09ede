"""Amazon contextual product QA (github.com/amazon-science/contextual-product-qa; CDLA-Sharing-1.0): product
questions with evidence from the product page (attributes, bullets, descriptions, reviews, community answers),
relevance labels and hand-written answers, in the published layout:

- semiPQA/attribute_ranking/{dev,testseen,testunseen}.csv: qid, qa_pair_id, question, candidate, label (0/1)
- semiPQA/data-to-text/{train,dev,test_seen,test_unseen}.csv: data (an attribute), text (a sentence stating it)
- hetPQA/answer_generation/{train,dev,test}.csv: ASIN, question, candidate, answer, source
- hetPQA/evidence_ranking/dev.csv: qid, ASIN, qa_pair_id, question, candidate, label (0/1), source, confidence
- ePQA/dev.csv (comma-separated): qid, question, ASIN, candidate, source, qa_pair_id, title, label (0-2), answer

All but ePQA are tab-separated. Where a set has its own test split, the held-out benchmark takes it; where it
has one split, questions (with all their evidence) are divided by a hash of their id.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from pathlib import Path

from shoptune.errors import located
from shoptune.sources.partition import Part, on_side
from shoptune.sources.records import AttributeSentence, Evidence, RawCorpus

# set -> the splits each part reads; None: one split, divided by question
SPLITS: dict[str, dict[Part, tuple[str, ...]] | None] = {
    "semiPQA/attribute_ranking": {"train": ("dev",), "heldout": ("testseen", "testunseen")},
    "hetPQA/answer_generation": {"train": ("train", "dev"), "heldout": ("test",)},
    "hetPQA/evidence_ranking": None,
    "ePQA": None,
}
DATA_TO_TEXT = "semiPQA/data-to-text"
DATA_TO_TEXT_SPLITS: dict[Part, tuple[str, ...]] = {"train": ("train", "dev"), "heldout": ("test_seen", "test_unseen")}
NAME = re.compile(r"^\s*([A-Za-z0-9_ ]+?)\s*:\s*\{")
VALUE = re.compile(r'\bvalue\s*:\s*(?:"([^"]*)"|([^,}\s\]]+))')


def detect(folder: Path) -> bool:
    return any(folder.glob("*/*.csv")) or any(folder.glob("*/*/*.csv"))


def read(folder: Path, part: Part, corpus: RawCorpus) -> list[Path]:
    read_files = []
    for name, splits in SPLITS.items():
        for split in splits[part] if splits is not None else ("dev",):
            path = folder / name / f"{split}.csv"
            if not path.is_file():
                continue
            read_files.append(path)
            for lineno, row in _rows(path, ("question", "candidate")):
                qid = row.get("qid") or row.get("ASIN") or ""
                if splits is None and not on_side(part, f"{name}:{qid}"):
                    continue
                corpus.evidence.append(_evidence(path, lineno, row, name))
    for split in DATA_TO_TEXT_SPLITS[part]:
        path = folder / DATA_TO_TEXT / f"{split}.csv"
        if path.is_file():
            read_files.append(path)
            for _, row in _rows(path, ("data", "text")):
                parts = attribute_parts(row["data"])
                if parts is not None:  # a few attributes state no value ("{ }")
                    corpus.attribute_sentences.append(AttributeSentence(*parts, row["text"].strip()))
    return read_files


def attribute_parts(text: str) -> tuple[str, str] | None:
    """`age_range_description:  { value:"little kid" }` -> ("age range description", "little kid"); a structured
    value gives all its values (`material:[ { value:"Metal" } ]` -> "Metal"); None where no value is stated."""
    name = NAME.match(text)
    values = [quoted or bare for quoted, bare in VALUE.findall(text)]
    if name is None or not values:
        return None
    return name.group(1).replace("_", " ").strip(), ", ".join(v.strip() for v in values)


def readable(evidence: str) -> str:
    """An attribute candidate as a shopper reads it ("age range description: little kid"); other evidence as is."""
    parts = attribute_parts(evidence)
    return f"{parts[0]}: {parts[1]}" if parts else evidence.strip()


def _evidence(path: Path, lineno: int, row: dict[str, str], name: str) -> Evidence:
    label = row.get("label")
    if label is not None and label.strip() not in ("0", "1", "2"):
        raise located(path, lineno, "label", f"expected 0, 1 or 2, got {label!r}")
    return Evidence(
        question_id=f"{name}:{row.get('qid') or row.get('ASIN') or lineno}",
        question=row["question"].strip(),
        evidence=readable(row["candidate"]),
        kind=(row.get("source") or "attribute").strip().lower(),
        label=int(label) if label is not None and label.strip() else None,
        answer=(row.get("answer") or "").strip() or None,
        title=(row.get("title") or "").strip() or None,
        dataset=name,
    )


def _rows(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row) of a CSV file as published (comma-separated for ePQA, tab-separated otherwise), rows
    with an empty required field skipped; a file without the published columns is an error."""
    delimiter = "," if path.parent.name == "ePQA" else "\t"
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise located(path, 1, missing[0], "missing column (is this the published file?)")
        for row in reader:
            if all((row.get(c) or "").strip() for c in required):  # the published files have a few empty ones
                yield reader.line_num, row
