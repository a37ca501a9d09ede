"""Source-neutral raw records that subtask builders consume.

Source adapters (shoptune.sources) turn each public dataset's own format into these; builders never
see a file format, so a new dataset needs an adapter, not new builders.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Category:
    """One node of a product taxonomy; `id` aligns the same node across languages."""

    id: int
    path: tuple[str, ...]
    language: str

    @property
    def name(self) -> str:
        return self.path[-1]

    @property
    def parent(self) -> tuple[str, ...]:
        return self.path[:-1]

    def text(self, sep: str = " > ") -> str:
        return sep.join(self.path)


@dataclass(frozen=True)
class Offer:
    """A product offer as a shop lists it; only the title is always present."""

    title: str
    brand: str | None = None
    category: str | None = None
    model_no: str | None = None
    price: float | None = None
    language: str | None = None


@dataclass(frozen=True)
class OfferPair:
    """Two offers and whether they describe the same product (product-matching benchmarks)."""

    left: Offer
    right: Offer
    same: bool
    source: str


@dataclass(frozen=True)
class QueryJudgment:
    """A search query, a product shown for it, and its ESCI label (Exact, Substitute, Complement, Irrelevant)."""

    query: str
    product: Offer
    label: str
    locale: str


@dataclass(frozen=True)
class Session:
    """Products a shopper viewed in order, and the one they engaged with next (ids into the catalogue)."""

    previous: tuple[str, ...]
    next_item: str
    locale: str


@dataclass(frozen=True)
class Review:
    rating: int
    title: str
    text: str
    product: str | None = None


@dataclass(frozen=True)
class AttributeMention:
    """An attribute value stated in a product's text, as annotated by MAVE."""

    category: str
    text: str
    attribute: str
    values: tuple[str, ...]


@dataclass
class RawCorpus:
    """Everything the builders may draw on; a source that is absent is simply empty."""

    categories: dict[str, list[Category]] = field(default_factory=dict)  # language -> nodes
    pairs: list[OfferPair] = field(default_factory=list)
    judgments: list[QueryJudgment] = field(default_factory=list)
    sessions: list[Session] = field(default_factory=list)
    catalogue: dict[str, Offer] = field(default_factory=dict)  # product id -> offer, for sessions
    reviews: list[Review] = field(default_factory=list)
    attributes: list[AttributeMention] = field(default_factory=list)
    sources: dict[str, str] = field(default_factory=dict)  # source name -> content hash
    _memo: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def derived(self, name: str, compute: Callable[[RawCorpus], T]) -> T:
        """An index over the corpus, computed once: builders draw many times from the same lookups."""
        if name not in self._memo:
            self._memo[name] = compute(self)
        return self._memo[name]

    def offers(self) -> list[Offer]:
        """Distinct offers, in first-seen order."""
        seen: dict[Offer, None] = {}
        for pair in self.pairs:
            seen.setdefault(pair.left)
            seen.setdefault(pair.right)
        return list(seen)
