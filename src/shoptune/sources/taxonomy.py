"""The Google product taxonomy: one `ID - Level1 > Level2 > ...` line per category."""

from __future__ import annotations

from pathlib import Path

from shoptune.errors import located
from shoptune.files import read_utf8
from shoptune.sources.records import Category


def read_taxonomy(path: Path, language: str) -> list[Category]:
    categories = []
    for lineno, line in enumerate(read_utf8(path).splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        ident, sep, text = line.partition(" - ")
        if not sep or not ident.strip().isdigit():
            raise located(path, lineno, "id", "expected 'ID - Level1 > Level2 > ...'")
        path_parts = tuple(part.strip() for part in text.split(">"))
        if not all(path_parts):
            raise located(path, lineno, "path", "has an empty level")
        categories.append(Category(int(ident), path_parts, language))
    return categories
