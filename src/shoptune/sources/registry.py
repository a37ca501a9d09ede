"""The raw data folder: every source shoptune reads, one entry each in SOURCES, with its licence.

Shipped under data/raw (see data/raw/SOURCES.md for origin, licence and format): the Google product
taxonomy (2021 English, 2015 German; and the 2015 version in six locales with aligned ids), product-matching
offer pairs, Amazon's contextual product QA, Amazon's multilingual counterfactual review sentences and WANDS
search queries. Published datasets a user may add beside them in their own formats: esci/, amazon-m2/,
amazon-reviews-2023/, mave/.

Adding a source: a reader (raw files → records of `records.py`) and a `RawSource` entry, either at the end of
SOURCES (a reader module beside this one) or through `register_source` from a module of your own (found
through `shoptune.plugins`); a subtask names the source's id in its `sources`, and its examples carry the
source's licence.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from shoptune.errors import ShoptuneError
from shoptune.plugins import load_plugins
from shoptune.sources import counterfactual, product_qa, wands
from shoptune.sources.matching import read_pairs
from shoptune.sources.partition import Part, heldout_subtree
from shoptune.sources.published import read_esci, read_m2, read_mave, read_reviews
from shoptune.sources.records import Category, RawCorpus
from shoptune.sources.taxonomy import read_taxonomy

TAXONOMY_FILES = {"en": "taxonomy-with-ids.en-US.txt", "de": "taxonomy-with-ids.de-DE.txt"}
PARALLEL_TAXONOMY_FILES = {
    "en": "taxonomy-with-ids.en-US.txt",
    "de": "taxonomy-with-ids.de-DE.txt",
    "es": "taxonomy-with-ids.es-ES.txt",
    "fr": "taxonomy-with-ids.fr-FR.txt",
    "it": "taxonomy-with-ids.it-IT.txt",
    "ja": "taxonomy-with-ids.ja-JP.txt",
}
# The held-out benchmark takes the matching sets' validation and test splits, which no mixture reads.
MATCHING_SPLITS: dict[Part, tuple[str, ...]] = {"train": ("train",), "heldout": ("valid", "test")}


@dataclass(frozen=True)
class Licence:
    name: str
    commercial: bool  # grants use in a commercial product, as stated by the licence itself
    note: str


LICENCES: dict[str, Licence] = {
    "Apache-2.0": Licence("Apache License 2.0", True, "attribution and the licence text kept"),
    "MIT": Licence("MIT License", True, "attribution and the licence text kept"),
    "CDLA-Sharing-1.0": Licence(
        "Community Data License Agreement, Sharing 1.0", True, "data shared on must stay under the same licence"
    ),
    "CC-BY-NC-4.0": Licence("Creative Commons Attribution-NonCommercial 4.0", False, "non-commercial use only"),
    "research-only": Licence("published for research", False, "no licence beyond research use is stated"),
    "none-stated": Licence(
        "no licence stated", False, "published openly (the Google taxonomy: for merchants); check the terms yourself"
    ),
    "unverified": Licence("see the provider's terms", False, "a dataset you add: its terms are yours to check"),
}


def file_hash(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_raw(raw_dir: Path, part: Part = "train") -> RawCorpus:
    """Everything under raw_dir that shoptune knows how to read for one part; each file's hash goes to the
    manifest. Training ("train") and the held-out benchmark ("heldout") never share an item."""
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise ShoptuneError(f"raw data folder {raw_dir}: no such directory")
    corpus = RawCorpus()
    load_plugins()
    for source in SOURCES:
        folder = raw_dir / source.folder
        if part in source.parts and source.detect(folder):
            corpus.present.add(source.id)
            for path in source.read(folder, part, corpus):
                corpus.sources[path.relative_to(raw_dir).as_posix()] = file_hash(path)
    partition_taxonomies(corpus, part)
    if not corpus.sources:
        raise ShoptuneError(f"raw data folder {raw_dir}: found no data shoptune can read (see data/raw/SOURCES.md)")
    return corpus


def present_sources(raw_dir: Path) -> set[str]:
    """The ids of the sources found under raw_dir, without reading them."""
    load_plugins()
    return {s.id for s in SOURCES if s.detect(Path(raw_dir) / s.folder)}


def partition_taxonomies(corpus: RawCorpus, part: Part) -> None:
    """Keep the categories of one part, whole subtrees at a time, by the English path (the ids align the
    languages and the versions; the newer English path decides where both versions have the id)."""
    paths = {c.id: c.path for c in corpus.parallel_categories.get("en", [])}
    paths.update({c.id: c.path for c in corpus.categories.get("en", [])})
    held = {ident for ident, path in paths.items() if heldout_subtree(path)}
    want = part == "heldout"
    for tree in (corpus.categories, corpus.parallel_categories):
        for lang, cats in tree.items():
            tree[lang] = [c for c in cats if (c.id in held) == want]


# --- readers of the small sources; larger ones have a module each -----------------------------------------


def _read_taxonomy(files: dict[str, str], field: str) -> Callable[[Path, Part, RawCorpus], list[Path]]:
    def read(folder: Path, part: Part, corpus: RawCorpus) -> list[Path]:
        tree: dict[str, list[Category]] = getattr(corpus, field)
        paths = [folder / name for name in files.values() if (folder / name).is_file()]
        for language, name in files.items():
            if (folder / name).is_file():
                tree[language] = read_taxonomy(folder / name, language)
        return paths

    return read


def _read_matching(folder: Path, part: Part, corpus: RawCorpus) -> list[Path]:
    read = []
    for benchmark in sorted(p for p in folder.iterdir() if p.is_dir()):
        for split in MATCHING_SPLITS[part]:
            path = benchmark / f"{split}.txt"
            if path.is_file():
                corpus.pairs.extend(read_pairs(path, benchmark.name))
                read.append(path)
    return read


def _read_esci(folder: Path, part: Part, corpus: RawCorpus) -> list[Path]:
    corpus.judgments = read_esci(folder)
    return sorted(folder.glob("*.parquet"))


def _read_m2(folder: Path, part: Part, corpus: RawCorpus) -> list[Path]:
    corpus.sessions, corpus.catalogue = read_m2(folder)
    return sorted(folder.glob("*.csv"))


def _read_reviews(folder: Path, part: Part, corpus: RawCorpus) -> list[Path]:
    corpus.reviews = read_reviews(folder)
    return sorted(folder.glob("*.jsonl"))


def _read_mave(folder: Path, part: Part, corpus: RawCorpus) -> list[Path]:
    corpus.attributes = read_mave(folder)
    return sorted(folder.glob("*.jsonl"))


def _has(*names: str) -> Callable[[Path], bool]:
    return lambda folder: any((folder / name).is_file() for name in names)


def _has_any(pattern: str) -> Callable[[Path], bool]:
    return lambda folder: folder.is_dir() and any(folder.glob(pattern))


# --- the table --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RawSource:
    id: str  # what a subtask names in its `sources`
    folder: str  # under raw_dir
    detect: Callable[[Path], bool]  # whether the source is there (in its published layout)
    read: Callable[[Path, Part, RawCorpus], list[Path]]  # fills the corpus for one part, returns the files read
    licence: str  # a LICENCES id
    citation: str
    ships: bool  # under data/raw; the others a user adds in their published format
    fills: tuple[str, ...]  # the RawCorpus fields its reader fills (a shop's own tables fill the same ones)
    parts: tuple[Part, ...] = ("train", "heldout")  # a source whose reader keeps no items apart: ("train",)


SOURCES: list[RawSource] = [
    RawSource(
        "google-taxonomy",
        "google-taxonomy",
        _has(*TAXONOMY_FILES.values()),
        _read_taxonomy(TAXONOMY_FILES, "categories"),
        "none-stated",
        "Google product taxonomy, en-US 2021-09-21 and de-DE 2015-02-19",
        ships=True,
        fills=("categories",),
    ),
    RawSource(
        "google-taxonomy-2015",
        "google-taxonomy-2015",
        _has(*PARALLEL_TAXONOMY_FILES.values()),
        _read_taxonomy(PARALLEL_TAXONOMY_FILES, "parallel_categories"),
        "none-stated",
        "Google product taxonomy 2015-02-19 in en, de, es, fr, it, ja (via github.com/idy/google-taxonomy-go)",
        ships=True,
        fills=("parallel_categories",),
    ),
    RawSource(
        "product-matching",
        "product-matching",
        _has_any("*/train.txt"),
        _read_matching,
        "research-only",
        "Magellan (Walmart-Amazon, Amazon-Google) and WDC product matching, as shipped in megagonlabs/ditto",
        ships=True,
        fills=("pairs",),
    ),
    RawSource(
        "contextual-product-qa",
        "contextual-product-qa",
        product_qa.detect,
        product_qa.read,
        "CDLA-Sharing-1.0",
        "Shen et al., semiPQA / hetPQA / ePQA (ECNLP 2022, ACL 2023 industry), amazon-science/contextual-product-qa",
        ships=True,
        fills=("evidence", "attribute_sentences"),
    ),
    RawSource(
        "amazon-multilingual-counterfactual",
        "amazon-multilingual-counterfactual",
        counterfactual.detect,
        counterfactual.read,
        "CC-BY-NC-4.0",
        "O'Neill et al., EMNLP 2021, amazon-science/amazon-multilingual-counterfactual-dataset",
        ships=True,
        fills=("review_sentences",),
    ),
    RawSource(
        "wands",
        "wands",
        wands.detect,
        wands.read,
        "MIT",
        "Chen et al., WANDS: Wayfair ANnotation DataSet, ECIR 2022, wayfair/WANDS (queries)",
        ships=True,
        fills=("queries",),
    ),
    RawSource(
        "amazon-esci",
        "esci",
        _has("shopping_queries_dataset_examples.parquet"),
        _read_esci,
        "Apache-2.0",
        "Reddy et al., Shopping Queries Dataset (ESCI), amazon-science/esci-data",
        ships=False,
        fills=("judgments",),
        parts=("train",),
    ),
    RawSource(
        "amazon-m2",
        "amazon-m2",
        _has("sessions_train.csv"),
        _read_m2,
        "unverified",
        "Jin et al., Amazon-M2, KDD Cup 2023",
        ships=False,
        fills=("sessions", "catalogue"),
        parts=("train",),
    ),
    RawSource(
        "amazon-reviews-2023",
        "amazon-reviews-2023",
        _has_any("*.jsonl"),
        _read_reviews,
        "unverified",
        "Hou et al., Amazon Reviews 2023 (McAuley lab)",
        ships=False,
        fills=("reviews",),
        parts=("train",),
    ),
    RawSource(
        "mave",
        "mave",
        _has_any("*.jsonl"),
        _read_mave,
        "unverified",
        "Yang et al., MAVE, WSDM 2022, google-research-datasets/MAVE",
        ships=False,
        fills=("attributes",),
        parts=("train",),
    ),
]
SOURCE_BY_ID = {source.id: source for source in SOURCES}


def register_source(source: RawSource, licence: Licence | None = None) -> RawSource:
    """A source of your own, read from its folder under raw_dir beside the shipped ones; `licence` declares its
    licence id when that is not one of LICENCES. Register it before the subtasks that name it."""
    if source.id in SOURCE_BY_ID:
        raise ShoptuneError(f"register_source: source {source.id!r} exists already; give yours another id")
    if licence is not None:
        if source.licence in LICENCES and LICENCES[source.licence] != licence:
            raise ShoptuneError(f"register_source: licence id {source.licence!r} is shoptune's; name yours otherwise")
        LICENCES[source.licence] = licence
    if source.licence not in LICENCES:
        raise ShoptuneError(
            f"register_source: source {source.id!r} names licence {source.licence!r}; pass licence=Licence(...) or "
            f"use one of: {', '.join(LICENCES)}"
        )
    fields = set(RawCorpus.__dataclass_fields__)
    unknown = [f for f in source.fills if f not in fields]
    if unknown or not source.fills:
        raise ShoptuneError(
            f"register_source: source {source.id!r} fills {unknown or 'nothing'}; name fields of "
            f"RawCorpus: {', '.join(sorted(fields))}"
        )
    SOURCES.append(source)
    SOURCE_BY_ID[source.id] = source
    return source
