"""The raw data folder: what shoptune ships under data/raw (taxonomy, matching pairs; see SOURCES.md) and
the published datasets a user may add beside them (esci/, amazon-m2/, amazon-reviews-2023/, mave/).

Adding a source: a reader (raw files → records in the corpus; see tasks/records.py) and one entry in
SOURCES at the end of this file; subtasks then draw from the corpus field it fills.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from shoptune.errors import ShoptuneError
from shoptune.sources.matching import read_pairs
from shoptune.sources.published import read_esci, read_m2, read_mave, read_reviews
from shoptune.sources.taxonomy import read_taxonomy
from shoptune.tasks.records import Category, RawCorpus

TAXONOMY_FILES = {"en": "taxonomy-with-ids.en-US.txt", "de": "taxonomy-with-ids.de-DE.txt"}
# Which raw data each part may read. The held-out benchmark takes the matching sets' validation and test
# splits, which no mixture reads, and whole taxonomy subtrees (a second-level category with everything
# below it, chosen by a stable hash of its path) that no mixture sees.
Part = Literal["train", "heldout"]
MATCHING_SPLITS: dict[str, tuple[str, ...]] = {"train": ("train",), "heldout": ("valid", "test")}
HELDOUT_SUBTREES_PERCENT = 10


def file_hash(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def heldout_subtree(path: tuple[str, ...]) -> bool:
    """Whether a category lies in a held-out subtree; top-level departments always stay in training."""
    if len(path) < 2:
        return False
    digest = hashlib.sha256(" > ".join(path[:2]).encode()).digest()
    return int.from_bytes(digest[:4], "big") % 100 < HELDOUT_SUBTREES_PERCENT


def partition(categories: dict[str, list[Category]], part: Part) -> dict[str, list[Category]]:
    """The categories of one part, by their English path (the ids align the languages)."""
    held = {c.id for c in categories.get("en", []) if heldout_subtree(c.path)}
    want = part == "heldout"
    return {lang: [c for c in cats if (c.id in held) == want] for lang, cats in categories.items()}


def load_raw(raw_dir: Path, part: Part = "train") -> RawCorpus:
    """Everything under raw_dir that shoptune knows how to read for one part; each file's hash goes to the
    manifest. Training ("train") and the held-out benchmark ("heldout") never share an item."""
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise ShoptuneError(f"raw data folder {raw_dir}: no such directory")
    corpus = RawCorpus()
    for source in SOURCES:
        if part in source.parts:
            for path in source.read(raw_dir / source.folder, part, corpus):
                corpus.sources[path.relative_to(raw_dir).as_posix()] = file_hash(path)
    corpus.categories = partition(corpus.categories, part)
    if not corpus.sources:
        raise ShoptuneError(f"raw data folder {raw_dir}: found no data shoptune can read (see data/raw/SOURCES.md)")
    return corpus


# --- one reader per source: fills the corpus from the source's folder, returns the files it read ---------------


def _taxonomy(folder: Path, part: Part, corpus: RawCorpus) -> list[Path]:
    read = []
    for language, name in TAXONOMY_FILES.items():
        if (folder / name).is_file():
            corpus.categories[language] = read_taxonomy(folder / name, language)
            read.append(folder / name)
    return read


def _matching(folder: Path, part: Part, corpus: RawCorpus) -> list[Path]:
    read = []
    for benchmark in sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []:
        for split in MATCHING_SPLITS[part]:
            path = benchmark / f"{split}.txt"
            if path.is_file():
                corpus.pairs.extend(read_pairs(path, benchmark.name))
                read.append(path)
    return read


def _esci(folder: Path, part: Part, corpus: RawCorpus) -> list[Path]:
    if not (folder / "shopping_queries_dataset_examples.parquet").is_file():
        return []
    corpus.judgments = read_esci(folder)
    return sorted(folder.glob("*.parquet"))


def _m2(folder: Path, part: Part, corpus: RawCorpus) -> list[Path]:
    if not (folder / "sessions_train.csv").is_file():
        return []
    corpus.sessions, corpus.catalogue = read_m2(folder)
    return sorted(folder.glob("*.csv"))


def _reviews(folder: Path, part: Part, corpus: RawCorpus) -> list[Path]:
    if not (folder.is_dir() and any(folder.glob("*.jsonl"))):
        return []
    corpus.reviews = read_reviews(folder)
    return sorted(folder.glob("*.jsonl"))


def _mave(folder: Path, part: Part, corpus: RawCorpus) -> list[Path]:
    if not (folder.is_dir() and any(folder.glob("*.jsonl"))):
        return []
    corpus.attributes = read_mave(folder)
    return sorted(folder.glob("*.jsonl"))


# --- the table --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RawSource:
    folder: str  # under raw_dir
    read: Callable[[Path, Part, RawCorpus], list[Path]]
    parts: tuple[Part, ...]  # the held-out benchmark reads only sources whose reader keeps its items apart
    ships: bool  # shoptune ships it under data/raw; the others a user adds in their published format
    description: str


SOURCES: tuple[RawSource, ...] = (
    RawSource("google-taxonomy", _taxonomy, ("train", "heldout"), True, "Google product taxonomy, en-US and de-DE"),
    RawSource("product-matching", _matching, ("train", "heldout"), True, "offer pairs: Magellan and WDC benchmarks"),
    RawSource("esci", _esci, ("train",), False, "Amazon ESCI shopping queries (parquet)"),
    RawSource("amazon-m2", _m2, ("train",), False, "Amazon-M2 sessions, KDD Cup 2023 (csv)"),
    RawSource("amazon-reviews-2023", _reviews, ("train",), False, "Amazon Reviews 2023 (jsonl)"),
    RawSource("mave", _mave, ("train",), False, "MAVE attribute values (jsonl)"),
)
