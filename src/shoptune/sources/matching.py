"""Product-matching pairs as shipped with ditto (Magellan, WDC): `left<TAB>right<TAB>label`, each
offer serialised as `COL attr VAL value COL attr VAL value ...`."""

from __future__ import annotations

import re
from pathlib import Path

from shoptune.errors import located
from shoptune.files import read_utf8
from shoptune.sources.records import Offer, OfferPair

FIELD = re.compile(r"COL (\w+) VAL (.*?)(?= COL \w+ VAL |$)")
# WDC titles are RDF literals: "text"@lang, sometimes several of them.
LITERAL = re.compile(r'"([^"]*)"(?:@(\w+))?')


def parse_offer(serialised: str) -> Offer:
    fields = {key: value.strip() for key, value in FIELD.findall(serialised.strip())}
    title, language = fields.get("title", ""), None
    literals = LITERAL.findall(title)
    if literals:
        title = literals[0][0].strip()
        language = (literals[0][1] or "").lower() or None
    return Offer(
        title=re.sub(r"\s+", " ", title).strip(),
        brand=fields.get("brand") or fields.get("manufacturer") or None,
        category=fields.get("category") or None,
        model_no=fields.get("modelno") or None,
        price=_price(fields.get("price")),
        language=language,
    )


def _price(value: str | None) -> float | None:
    try:
        price = float(value) if value else None
    except ValueError:
        return None
    return price if price and price > 0 else None


def read_pairs(path: Path, source: str) -> list[OfferPair]:
    pairs = []
    # Not splitlines(): some offer titles hold U+2028, which it would take for a line break.
    for lineno, line in enumerate(read_utf8(path).split("\n"), start=1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 3:
            raise located(path, lineno, None, f"expected 3 tab-separated fields, found {len(parts)}")
        if parts[2].strip() not in ("0", "1"):
            raise located(path, lineno, "label", f"expected 0 or 1, got {parts[2].strip()!r:.20}")
        left, right = parse_offer(parts[0]), parse_offer(parts[1])
        if left.title and right.title:
            pairs.append(OfferPair(left, right, parts[2].strip() == "1", source))
    return pairs
