"""Which raw items the held-out benchmark keeps to itself, so that no mixture ever trains on them.

A source with its own test split gives that split to the held-out benchmark and the rest to training. A
source with one split is divided by a stable hash of a key that groups related items (a question with all
its evidence, a product class with all its queries, a taxonomy subtree), so an item and its near relatives
land on the same side.
"""

from __future__ import annotations

import hashlib
from typing import Literal

Part = Literal["train", "heldout"]

HELDOUT_SUBTREES_PERCENT = 10  # of second-level taxonomy subtrees
HELDOUT_PERCENT = 25  # of questions (with all their evidence) or product classes (with all their queries)


def hashed_out(key: str, percent: int = HELDOUT_PERCENT) -> bool:
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:4], "big") % 100 < percent


def on_side(part: Part, key: str, percent: int = HELDOUT_PERCENT) -> bool:
    """Whether the item of this key belongs to `part`."""
    return hashed_out(key, percent) == (part == "heldout")


def heldout_subtree(path: tuple[str, ...]) -> bool:
    """Whether a category lies in a held-out subtree; top-level departments always stay in training."""
    return len(path) >= 2 and hashed_out(" > ".join(path[:2]), HELDOUT_SUBTREES_PERCENT)
