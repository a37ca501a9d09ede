"""WANDS, the Wayfair ANnotation DataSet (github.com/wayfair/WANDS; MIT): real furniture and home-goods
search queries with the product class each targets. Published layout: query.csv, tab-separated, columns
query_id, query, query_class. Product classes (with all their queries) are divided between training and the
held-out benchmark by a hash of the class."""

from __future__ import annotations

import csv
from pathlib import Path

from shoptune.errors import located
from shoptune.sources.partition import Part, on_side
from shoptune.sources.records import RawCorpus, SearchQuery


def detect(folder: Path) -> bool:
    return (folder / "query.csv").is_file()


def read(folder: Path, part: Part, corpus: RawCorpus) -> list[Path]:
    path = folder / "query.csv"
    if not path.is_file():
        return []
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        for row in reader:
            query, product_class = (row.get("query") or "").strip(), (row.get("query_class") or "").strip()
            if not query:
                raise located(path, reader.line_num, "query", "is empty")
            if product_class and on_side(part, f"wands:{product_class}"):
                corpus.queries.append(SearchQuery(row.get("query_id") or str(reader.line_num), query, product_class))
    return [path]
