"""Raw response → value, with the KDD Cup starter kit's semantics (parsers.py v0.1.1), quirks included.

Exactness matters more than elegance here: a "fixed" parser would make our scores incomparable with
the leaderboard. Sources: the starter kit's `parsers.py` (AIcrowd's amazon-kdd-cup-2024-starter-kit; a public
mirror is github.com/Keita18/amazon-kdd-cup-2024-starter-kit) and Shopping MMLU (github.com/KL4805/ShoppingMMLU).
"""

from __future__ import annotations

import ast
from typing import Any

from shoptune.errors import ShoptuneError
from shoptune.schema import TaskType

MAX_RESPONSE_CHARS = 5000


def parse_multiple_choice(response: str) -> int:
    """First non-blank character as an int, else -1 (which never matches an answer)."""
    try:
        return int(response.strip()[0])
    except (IndexError, ValueError):
        return -1


def _comma_ints(response: str) -> list[int]:
    kept = "".join(ch for ch in response if ch.isnumeric() or ch in ", ")
    out = []
    for piece in kept.split(","):
        try:
            out.append(int(piece))
        except ValueError:
            continue
    return out


def parse_retrieval(response: str) -> list[int]:
    """First three comma-separated integers; duplicates are kept and waste a slot."""
    return _comma_ints(response)[:3]


def parse_ranking(response: str) -> list[int]:
    """First five integers ≤ 5; a duplicate among them voids the whole answer."""
    ranked = [i for i in _comma_ints(response) if i <= 5][:5]
    return ranked if len(set(ranked)) == len(ranked) else []


def parse_ner(response: str) -> list[str]:
    """A Python list literal of strings if the response is one, else the comma-separated pieces."""
    try:
        value = ast.literal_eval(response)
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        pass
    return [piece.strip() for piece in response.split(",") if piece.strip()]


def parse_generation(response: str) -> str:
    return response.strip()


PARSERS = {
    TaskType.MULTIPLE_CHOICE: parse_multiple_choice,
    TaskType.RETRIEVAL: parse_retrieval,
    TaskType.RANKING: parse_ranking,
    TaskType.NER: parse_ner,
    TaskType.GENERATION: parse_generation,
}


def parse_response(response: Any, task_type: TaskType) -> Any:
    """The official evaluator refuses non-string responses outright; so do we, with a clear message."""
    if not isinstance(response, str):
        raise ShoptuneError(f"a response must be a string, got {type(response).__name__}")
    return PARSERS[task_type](response[:MAX_RESPONSE_CHARS])
