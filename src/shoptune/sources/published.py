"""Readers for public datasets in their published formats, which users download themselves.

- Amazon ESCI (Shopping Queries Dataset): shopping_queries_dataset_examples.parquet and
  shopping_queries_dataset_products.parquet.
- Amazon-M2 (KDD Cup 2023): sessions_train.csv (prev_items, next_item, locale) and products_train.csv
  (id, locale, title, price, brand, ...).
- Amazon Reviews 2023: <Category>.jsonl reviews (rating, title, text, parent_asin, ...) and
  meta_<Category>.jsonl (parent_asin, title, ...).
- MAVE: JSON Lines with id, category, paragraphs [{text, source}], attributes [{key, evidences
  [{value, pid, begin, end}]}].
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from shoptune.errors import ShoptuneError, located
from shoptune.schema import iter_jsonl
from shoptune.sources.records import AttributeMention, Offer, QueryJudgment, Review, Session

ESCI_LABELS = {"E", "S", "C", "I"}
M2_ITEM = re.compile(r"'([^']+)'")


def _require(path: Path, columns: set[str], present: set[str]) -> None:
    missing = columns - present
    if missing:
        raise ShoptuneError(f"{path}: missing column(s) {sorted(missing)}")


def read_esci(folder: Path) -> list[QueryJudgment]:
    import pyarrow.parquet as pq

    examples_path = folder / "shopping_queries_dataset_examples.parquet"
    products_path = folder / "shopping_queries_dataset_products.parquet"
    examples = pq.read_table(examples_path).to_pylist()
    products = pq.read_table(products_path).to_pylist()
    _require(
        examples_path, {"query", "product_id", "product_locale", "esci_label"}, set(examples[0]) if examples else set()
    )
    _require(products_path, {"product_id", "product_title", "product_locale"}, set(products[0]) if products else set())
    catalogue = {
        (p["product_id"], p["product_locale"]): Offer(
            title=p["product_title"] or "", brand=p.get("product_brand") or None, language=p["product_locale"]
        )
        for p in products
    }
    out = []
    for row_number, row in enumerate(examples, start=1):
        if row["esci_label"] not in ESCI_LABELS:
            raise located(
                examples_path, row_number, "esci_label", f"expected one of E, S, C, I, got {row['esci_label']!r}"
            )
        offer = catalogue.get((row["product_id"], row["product_locale"]))
        if offer is not None and offer.title:
            out.append(QueryJudgment(row["query"], offer, row["esci_label"], row["product_locale"]))
    return out


def read_m2(folder: Path) -> tuple[list[Session], dict[str, Offer]]:
    products_path, sessions_path = folder / "products_train.csv", folder / "sessions_train.csv"
    catalogue: dict[str, Offer] = {}
    with products_path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        _require(products_path, {"id", "locale", "title"}, set(reader.fieldnames or []))
        for row in reader:
            price = _float(row.get("price"))
            catalogue[row["id"]] = Offer(
                title=row["title"], brand=row.get("brand") or None, price=price, language=row["locale"]
            )
    sessions = []
    with sessions_path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        _require(sessions_path, {"prev_items", "next_item", "locale"}, set(reader.fieldnames or []))
        for line, row in enumerate(reader, start=2):
            previous = tuple(M2_ITEM.findall(row["prev_items"]))
            if not previous:
                raise located(sessions_path, line, "prev_items", "expected a list of product ids like ['B0..' 'B0..']")
            sessions.append(Session(previous, row["next_item"], row["locale"]))
    return sessions, catalogue


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


def read_reviews(folder: Path) -> list[Review]:
    titles: dict[str, str] = {}
    for meta in sorted(folder.glob("meta_*.jsonl")):
        for _, obj in iter_jsonl(meta):
            if obj.get("parent_asin") and obj.get("title"):
                titles[obj["parent_asin"]] = obj["title"]
    out = []
    for path in sorted(p for p in folder.glob("*.jsonl") if not p.name.startswith("meta_")):
        for lineno, obj in iter_jsonl(path):
            rating = obj.get("rating")
            if not isinstance(rating, (int, float)) or not 1 <= rating <= 5:
                raise located(path, lineno, "rating", f"expected a number from 1 to 5, got {rating!r:.20}")
            if obj.get("text"):
                out.append(
                    Review(round(rating), obj.get("title") or "", obj["text"], titles.get(obj.get("parent_asin", "")))
                )
    return out


def read_mave(folder: Path) -> list[AttributeMention]:
    out = []
    for path in sorted(folder.glob("*.jsonl")):
        for lineno, obj in iter_jsonl(path):
            paragraphs = obj.get("paragraphs")
            if not isinstance(paragraphs, list):
                raise located(path, lineno, "paragraphs", "missing: MAVE's full version (with paragraphs) is needed")
            for attribute in obj.get("attributes", []):
                for pid in sorted({e["pid"] for e in attribute.get("evidences", [])}):
                    values = tuple(dict.fromkeys(e["value"] for e in attribute["evidences"] if e["pid"] == pid))
                    if 0 <= pid < len(paragraphs):
                        out.append(
                            AttributeMention(obj.get("category", ""), paragraphs[pid]["text"], attribute["key"], values)
                        )
    return out
