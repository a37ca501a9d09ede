"""The raw data folder: what shoptune ships under data/raw (taxonomy, matching pairs; see SOURCES.md) and
the published datasets a user may add beside them (esci/, amazon-m2/, amazon-reviews-2023/, mave/)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from shoptune.errors import ShoptuneError
from shoptune.sources.matching import read_pairs
from shoptune.sources.published import read_esci, read_m2, read_mave, read_reviews
from shoptune.sources.taxonomy import read_taxonomy
from shoptune.tasks.records import RawCorpus

TAXONOMY_FILES = {"en": "taxonomy-with-ids.en-US.txt", "de": "taxonomy-with-ids.de-DE.txt"}


def file_hash(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_raw(raw_dir: Path, splits: tuple[str, ...] = ("train",)) -> RawCorpus:
    """Everything under raw_dir that shoptune knows how to read; each file's hash goes to the manifest.

    Only the training splits of the matching sets are read by default, so their validation and test
    splits stay unseen for anyone who evaluates on them.
    """
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
        for split in splits:
            path = folder / f"{split}.txt"
            if path.is_file():
                corpus.pairs.extend(read_pairs(path, folder.name))
                corpus.sources[f"product-matching/{folder.name}/{split}.txt"] = file_hash(path)
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
