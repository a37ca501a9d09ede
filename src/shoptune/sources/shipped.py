"""The raw data folder: what shoptune ships under data/raw (taxonomy, matching pairs; see SOURCES.md) and
the published datasets a user may add beside them (esci/, amazon-m2/, amazon-reviews-2023/, mave/)."""

from __future__ import annotations

import hashlib
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
    for language, name in TAXONOMY_FILES.items():
        path = raw_dir / "google-taxonomy" / name
        if path.is_file():
            corpus.categories[language] = read_taxonomy(path, language)
            corpus.sources[f"google-taxonomy/{name}"] = file_hash(path)
    matching = raw_dir / "product-matching"
    for folder in sorted(p for p in matching.iterdir() if p.is_dir()) if matching.is_dir() else []:
        for split in MATCHING_SPLITS[part]:
            path = folder / f"{split}.txt"
            if path.is_file():
                corpus.pairs.extend(read_pairs(path, folder.name))
                corpus.sources[f"product-matching/{folder.name}/{split}.txt"] = file_hash(path)
    corpus.categories = partition(corpus.categories, part)
    if part == "train":
        _add_published(raw_dir, corpus)
    if not corpus.sources:
        raise ShoptuneError(f"raw data folder {raw_dir}: found no data shoptune can read (see data/raw/SOURCES.md)")
    return corpus


def _add_published(raw_dir: Path, corpus: RawCorpus) -> None:
    folder = raw_dir / "esci"
    if (folder / "shopping_queries_dataset_examples.parquet").is_file():
        corpus.judgments = read_esci(folder)
        _hash_all(corpus, folder, "*.parquet")
    folder = raw_dir / "amazon-m2"
    if (folder / "sessions_train.csv").is_file():
        corpus.sessions, corpus.catalogue = read_m2(folder)
        _hash_all(corpus, folder, "*.csv")
    folder = raw_dir / "amazon-reviews-2023"
    if folder.is_dir() and any(folder.glob("*.jsonl")):
        corpus.reviews = read_reviews(folder)
        _hash_all(corpus, folder, "*.jsonl")
    folder = raw_dir / "mave"
    if folder.is_dir() and any(folder.glob("*.jsonl")):
        corpus.attributes = read_mave(folder)
        _hash_all(corpus, folder, "*.jsonl")


def _hash_all(corpus: RawCorpus, folder: Path, pattern: str) -> None:
    for path in sorted(folder.glob(pattern)):
        corpus.sources[f"{folder.name}/{path.name}"] = file_hash(path)
