"""Amazon multilingual counterfactual review sentences (AMCD, github.com/amazon-science/
amazon-multilingual-counterfactual-dataset; CC BY-NC 4.0): single review sentences in English, German and
Japanese, labelled by linguists as counterfactual or not. Published layout: data/<LANG>_{train,valid,test}.tsv
with columns sentence, is_counterfactual (1/0); LANG is EN, EN-ext, DE or JP. The held-out benchmark takes
the test files, training the others, less every sentence that a test file also holds: EN-ext re-splits EN, so
about 600 English test sentences of one are training sentences of the other."""

from __future__ import annotations

import csv
from pathlib import Path

from shoptune.errors import located
from shoptune.sources.partition import Part
from shoptune.sources.records import RawCorpus, ReviewSentence

LANGUAGES = {"EN": "en", "EN-ext": "en", "DE": "de", "JP": "ja"}
SPLITS: dict[Part, tuple[str, ...]] = {"train": ("train", "valid"), "heldout": ("test",)}


def detect(folder: Path) -> bool:
    return any((folder / "data").glob("*_train.tsv"))


def read(folder: Path, part: Part, corpus: RawCorpus) -> list[Path]:
    files = [folder / "data" / f"{prefix}_{split}.tsv" for prefix in LANGUAGES for split in SPLITS[part]]
    tests = [folder / "data" / f"{prefix}_test.tsv" for prefix in LANGUAGES]
    held = {s.text for path in tests if path.is_file() for s in _sentences(path)} if part == "train" else set()
    for path in files:
        if path.is_file():
            corpus.review_sentences.extend(s for s in _sentences(path) if s.text not in held)
    return [path for path in (*files, *(tests if part == "train" else ())) if path.is_file()]


def _sentences(path: Path) -> list[ReviewSentence]:
    language = LANGUAGES[path.stem.rsplit("_", 1)[0]]
    out = []
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        for row in reader:
            label = (row.get("is_counterfactual") or "").strip()
            if label not in ("0", "1"):
                raise located(path, reader.line_num, "is_counterfactual", f"expected 0 or 1, got {label!r}")
            text = (row.get("sentence") or "").strip()
            if not text:
                raise located(path, reader.line_num, "sentence", "is empty")
            out.append(ReviewSentence(text, label == "1", language))
    return out
