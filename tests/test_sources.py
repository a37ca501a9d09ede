"""Source adapters: shipped formats, published formats, and their errors."""

import csv
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shoptune.errors import ShoptuneError
from shoptune.sources.matching import parse_offer, read_pairs
from shoptune.sources.published import read_esci, read_m2, read_mave, read_reviews
from shoptune.sources.registry import load_raw
from shoptune.sources.taxonomy import read_taxonomy
from tests.helpers.published import ESCI, PRODUCTS, write_published

ROOT = Path(__file__).resolve().parents[1]


def test_shipped_raw_data_loads_with_hashes():
    corpus = load_raw(ROOT / "data" / "raw")
    heldout = load_raw(ROOT / "data" / "raw", "heldout")
    # Training and the held-out benchmark split the taxonomy between them, every category to exactly one.
    for language, total in (("en", 5595), ("de", 5427)):
        ids = [c.id for c in corpus.categories[language]], [c.id for c in heldout.categories[language]]
        assert len(ids[0]) + len(ids[1]) == total and not set(ids[0]) & set(ids[1])
    assert len(corpus.pairs) > 30_000 and any(p.same for p in corpus.pairs)
    assert all(len(h) == 64 for h in corpus.sources.values())
    assert not corpus.judgments and not corpus.sessions


def test_offer_parsing_handles_both_serialisations():
    walmart = parse_offer("COL title VAL elite screens 85 COL brand VAL elite COL modelno VAL r85 COL price VAL 409.0 ")
    assert (walmart.title, walmart.brand, walmart.model_no, walmart.price) == (
        "elite screens 85",
        "elite",
        "r85",
        409.0,
    )
    wdc = parse_offer('COL title VAL  "Nike Tiempo Genio II Pelle FG"@it " Nike Scarpe "@it')
    assert (wdc.title, wdc.language) == ("Nike Tiempo Genio II Pelle FG", "it")


def test_published_formats_read(tmp_path):
    raw = write_published(tmp_path / "raw")
    judgments = read_esci(raw / "esci")
    assert len(judgments) == sum(len(v) for v in ESCI.values())
    assert {j.label for j in judgments} == {"E", "S", "C", "I"}
    sessions, catalogue = read_m2(raw / "amazon-m2")
    assert len(catalogue) == len(PRODUCTS) and sessions[0].previous == tuple(p[0] for p in PRODUCTS[:3])
    reviews = read_reviews(raw / "amazon-reviews-2023")
    assert [r.rating for r in reviews] == [5, 1, 3, 4, 2] and reviews[0].product == PRODUCTS[0][1]
    mentions = read_mave(raw / "mave")
    assert mentions[0].values == ("silver",) and "silver" in mentions[0].text


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


BAD = {
    "taxonomy line": (lambda p: read_taxonomy(_write(p / "t.txt", "1 - A\nB > C\n"), "en"), "t.txt:2: field 'id'"),
    "matching fields": (
        lambda p: read_pairs(_write(p / "m.txt", "COL title VAL a\tCOL title VAL b\n"), "x"),
        "m.txt:1: expected 3 tab-separated fields",
    ),
    "matching label": (
        lambda p: read_pairs(_write(p / "m.txt", "COL title VAL a\tCOL title VAL b\tyes\n"), "x"),
        "field 'label'",
    ),
    "review rating": (
        lambda p: read_reviews(_write(p / "r" / "C.jsonl", json.dumps({"rating": 9, "text": "x"}) + "\n").parent),
        "C.jsonl:1: field 'rating'",
    ),
    "mave without paragraphs": (
        lambda p: read_mave(_write(p / "v" / "m.jsonl", json.dumps({"id": "a", "attributes": []}) + "\n").parent),
        "MAVE's full version",
    ),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_source_files(case, tmp_path):
    make, expected = BAD[case]
    with pytest.raises(ShoptuneError) as err:
        make(tmp_path)
    assert expected in str(err.value)


def test_bad_esci_and_m2(tmp_path):
    raw = write_published(tmp_path / "raw")
    table = pq.read_table(raw / "esci" / "shopping_queries_dataset_examples.parquet").to_pylist()
    table[3]["esci_label"] = "X"
    pq.write_table(pa.Table.from_pylist(table), raw / "esci" / "shopping_queries_dataset_examples.parquet")
    with pytest.raises(ShoptuneError, match=r"examples\.parquet:4: field 'esci_label'"):
        read_esci(raw / "esci")
    with (raw / "amazon-m2" / "sessions_train.csv").open("a", newline="") as fh:
        csv.writer(fh).writerow(["[]", "B0", "UK"])
    with pytest.raises(ShoptuneError, match=r"sessions_train\.csv:8: field 'prev_items'"):
        read_m2(raw / "amazon-m2")
