"""The predictions file: JSON Lines of {"index": i, "response": s}, i the 0-based line of the question.

This is the exchange format with every other system, so it is validated as strictly as the data. A
run appends to a journal as it goes (one fsync'd line per answer) and only renames a complete,
sorted file into place, so an interrupted run loses at most the line being written.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from shoptune.errors import located
from shoptune.schema import encodable, iter_jsonl, write_jsonl


def read_predictions(path: Path | str, n_questions: int) -> dict[int, str]:
    """index → raw response; every index must name a question, at most once."""
    path = Path(path)
    out: dict[int, str] = {}
    for lineno, obj in iter_jsonl(path):
        index, response = obj.get("index"), obj.get("response")
        if "index" not in obj:
            raise located(path, lineno, "index", "is missing")
        if not isinstance(index, int) or isinstance(index, bool):
            raise located(path, lineno, "index", f"must be an integer, got {index!r:.40}")
        if not 0 <= index < n_questions:
            raise located(path, lineno, "index", f"{index} is out of range: the data has {n_questions} questions")
        if index in out:
            raise located(path, lineno, "index", f"{index} appears twice")
        if "response" not in obj:
            raise located(path, lineno, "response", "is missing")
        if not isinstance(response, str):
            raise located(path, lineno, "response", f"must be a string, got {type(response).__name__}")
        try:
            encodable(response)
        except ValueError as exc:
            raise located(path, lineno, "response", str(exc)) from None
        out[index] = response
    return out


def read_journal(path: Path) -> dict[int, str]:
    """Answers a killed run left behind; a torn last line (the kill landed mid-write) is dropped."""
    out: dict[int, str] = {}
    if not path.is_file():
        return out
    # errors="replace": a kill inside a multi-byte character tears the last line, which then fails to parse.
    for line in path.read_text(encoding="utf-8", errors="replace").split("\n"):  # not splitlines: U+2028
        try:
            obj = json.loads(line)
            out[int(obj["index"])] = str(obj["response"])
        except (ValueError, KeyError, TypeError):
            continue
    return out


class Journal:
    """Append-only record of answers as they are produced; durable line by line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        # A torn last line would glue onto the next record; start on a fresh line.
        needs_newline = path.is_file() and path.stat().st_size > 0 and not path.read_bytes().endswith(b"\n")
        self._fh = path.open("a", encoding="utf-8")
        if needs_newline:
            self._fh.write("\n")

    def write(self, answers: Iterable[tuple[int, str]]) -> None:
        for index, response in answers:
            self._fh.write(json.dumps({"index": index, "response": response}, ensure_ascii=False) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()


def write_predictions(path: Path, answers: dict[int, str]) -> None:
    write_jsonl(path, ({"index": i, "response": answers[i]} for i in sorted(answers)))
