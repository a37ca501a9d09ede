"""Tiny synthetic data sets written in exactly the published formats of ESCI, Amazon-M2, Amazon Reviews
2023 and MAVE (none of them ships with shoptune). The contents are made up for tests; only the file
layouts, names and columns follow the real releases."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

PRODUCTS = [
    (f"B0{i:08d}", title, brand)
    for i, (title, brand) in enumerate(
        [
            ("Acme stainless steel electric kettle 1.7 L", "Acme"),
            ("Acme glass kettle with blue LED", "Acme"),
            ("Borda cordless kettle 1 L travel size", "Borda"),
            ("Kettle descaler tablets, pack of 12", "Cleano"),
            ("Ceramic teapot with infuser 900 ml", "Teahaus"),
            ("USB desk fan, quiet, 3 speeds", "Breezy"),
            ("Running shoes for men, breathable mesh", "Sprint"),
            ("Trail running shoes, waterproof", "Sprint"),
            ("Cotton running socks, 6 pairs", "Sockit"),
            ("Insoles for running shoes, gel", "Sprint"),
            ("Yoga mat 6 mm non slip", "Flexo"),
            ("Water bottle 750 ml steel", "Hydra"),
            ("Bluetooth headphones over ear", "Sonic"),
            ("Phone case for model X, black", "Casey"),
            ("Wireless mouse, ergonomic", "Clicky"),
            ("Mechanical keyboard, brown switches", "Clicky"),
        ]
    )
]
ESCI = {
    "electric kettle": ["E", "E", "S", "C", "C", "I"],
    "running shoes": ["I", "I", "I", "I", "I", "I", "E", "E", "C", "S"],
}


def write_published(raw: Path) -> Path:
    esci = raw / "esci"
    esci.mkdir(parents=True)
    pq.write_table(
        pa.Table.from_pylist(
            [
                {
                    "product_id": pid,
                    "product_title": title,
                    "product_description": None,
                    "product_bullet_point": None,
                    "product_brand": brand,
                    "product_color": None,
                    "product_locale": "us",
                }
                for pid, title, brand in PRODUCTS
            ]
        ),
        esci / "shopping_queries_dataset_products.parquet",
    )
    rows = []
    for q, (query, labels) in enumerate(ESCI.items()):
        for i, label in enumerate(labels):
            rows.append(
                {
                    "example_id": len(rows),
                    "query": query,
                    "query_id": q,
                    "product_id": PRODUCTS[i][0],
                    "product_locale": "us",
                    "esci_label": label,
                    "small_version": 1,
                    "large_version": 1,
                    "split": "train",
                }
            )
    pq.write_table(pa.Table.from_pylist(rows), esci / "shopping_queries_dataset_examples.parquet")

    m2 = raw / "amazon-m2"
    m2.mkdir()
    with (m2 / "products_train.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(
            ["id", "locale", "title", "price", "brand", "color", "size", "model", "material", "author", "desc"]
        )
        for pid, title, brand in PRODUCTS:
            writer.writerow([pid, "UK", title, "19.99", brand, "", "", "", "", "", f"{title}. Great value."])
    with (m2 / "sessions_train.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["prev_items", "next_item", "locale"])
        for start in range(6):
            ids = [PRODUCTS[(start + j) % len(PRODUCTS)][0] for j in range(4)]
            writer.writerow(["[" + " ".join(f"'{i}'" for i in ids[:3]) + "]", ids[3], "UK"])

    reviews = raw / "amazon-reviews-2023"
    reviews.mkdir()
    texts = [
        (5, "Love it", "Boils fast and looks great on the counter."),
        (1, "Broke", "Stopped working after a week."),
        (3, "Okay", "Does the job but the lid is flimsy."),
        (4, "Good", "Quiet and quick, a bit small."),
        (2, "Meh", "Leaks a little when full."),
    ]
    with (reviews / "Home_and_Kitchen.jsonl").open("w", encoding="utf-8") as fh:
        for rating, title, text in texts:
            fh.write(
                json.dumps(
                    {
                        "rating": float(rating),
                        "title": title,
                        "text": text,
                        "images": [],
                        "asin": PRODUCTS[0][0],
                        "parent_asin": PRODUCTS[0][0],
                        "user_id": "U1",
                        "timestamp": 1600000000000,
                        "helpful_vote": 0,
                        "verified_purchase": True,
                    }
                )
                + "\n"
            )
    with (reviews / "meta_Home_and_Kitchen.jsonl").open("w", encoding="utf-8") as fh:
        fh.write(
            json.dumps(
                {
                    "main_category": "Home",
                    "title": PRODUCTS[0][1],
                    "parent_asin": PRODUCTS[0][0],
                    "average_rating": 3.0,
                    "rating_number": 5,
                    "features": [],
                    "description": [],
                    "price": 19.99,
                    "images": [],
                    "videos": [],
                    "store": "Acme",
                    "categories": [],
                    "details": {},
                    "bought_together": None,
                }
            )
            + "\n"
        )

    mave = raw / "mave"
    mave.mkdir()
    with (mave / "mave_positives.jsonl").open("w", encoding="utf-8") as fh:
        for pid, title, brand in PRODUCTS[:6]:
            text = f"{title}. Colour: silver. Brand {brand}."
            begin = text.index("silver")
            fh.write(
                json.dumps(
                    {
                        "id": pid,
                        "category": "Kettles",
                        "paragraphs": [{"text": text, "source": "title"}],
                        "attributes": [
                            {
                                "key": "Color",
                                "evidences": [{"value": "silver", "pid": 0, "begin": begin, "end": begin + 6}],
                            }
                        ],
                    }
                )
                + "\n"
            )
    return raw


def raw_with_published(tmp: Path, shipped: Path) -> Path:
    """The shipped raw data (linked) plus every published format."""
    raw = tmp / "raw"
    raw.mkdir()
    for folder in sorted(p for p in shipped.iterdir() if p.is_dir()):
        (raw / folder.name).symlink_to(folder)
    return write_published(raw)
