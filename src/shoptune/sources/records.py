"""Source-neutral raw records that subtask builders consume.

Source readers (the modules beside this one) turn each public dataset's own format into these; builders
never see a file format, so a new dataset needs a reader, not new builders.
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


@dataclass(frozen=True)
class Evidence:
    """A product question, one piece of evidence from the product page, and how well it answers it (contextual
    product QA): `label` graded 0-2 (ePQA) or 0/1 (semiPQA, hetPQA), `answer` a written answer where one exists."""

    question_id: str
    question: str
    evidence: str
    kind: str  # attribute, review, cqa (community answer), description, bullet, ...
    label: int | None
    answer: str | None = None
    title: str | None = None
    dataset: str = ""


@dataclass(frozen=True)
class AttributeSentence:
    """A product attribute and a hand-written sentence that states it (semiPQA data-to-text)."""

    attribute: str
    value: str
    text: str


@dataclass(frozen=True)
class ReviewSentence:
    """One sentence of a product review and whether it is counterfactual (describes what did not happen)."""

    text: str
    counterfactual: bool
    language: str


@dataclass(frozen=True)
class SearchQuery:
    """A real shop search query and the product class it targets (WANDS)."""

    id: str
    query: str
    product_class: str


@dataclass
class RawCorpus:
    """Everything the builders may draw on; a source that is absent is simply empty."""

    categories: dict[str, list[Category]] = field(default_factory=dict)  # language -> nodes
    # One taxonomy version in six locales, ids aligned: a parallel corpus of category paths.
    parallel_categories: dict[str, list[Category]] = field(default_factory=dict)
    pairs: list[OfferPair] = field(default_factory=list)
    judgments: list[QueryJudgment] = field(default_factory=list)
    sessions: list[Session] = field(default_factory=list)
    catalogue: dict[str, Offer] = field(default_factory=dict)  # product id -> offer, for sessions
    reviews: list[Review] = field(default_factory=list)
    attributes: list[AttributeMention] = field(default_factory=list)
    evidence: list[Evidence] = field(default_factory=list)
    attribute_sentences: list[AttributeSentence] = field(default_factory=list)
    review_sentences: list[ReviewSentence] = field(default_factory=list)
    queries: list[SearchQuery] = field(default_factory=list)
    instructions: dict[str, list[tuple[str, Any]]] = field(default_factory=dict)  # declared subtask -> (prompt, output)
    sources: dict[str, str] = field(default_factory=dict)  # file, relative to the raw folder -> content hash
    present: set[str] = field(default_factory=set)  # ids of the sources found (see sources.registry)
    origins: dict[str, list[Any]] = field(default_factory=dict)  # a shop's own data: field -> its sources (mapped)
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
