"""The raw data layout shoptune ships under data/raw (see its SOURCES.md): taxonomy and matching pairs."""

from __future__ import annotations

import hashlib
from pathlib import Path

from shoptune.errors import ShoptuneError
from shoptune.sources.matching import read_pairs
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
    if not corpus.sources:
        raise ShoptuneError(f"raw data folder {raw_dir}: found neither google-taxonomy/ nor product-matching/ files")
    return corpus
