"""What builders of several capabilities share: ShopBench's prompt layouts, draws, and the corpus lookups
more than one capability asks."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from shoptune.schema import Example
from shoptune.sources.records import Category, Offer, RawCorpus

if TYPE_CHECKING:
    from shoptune.tasks.registry import Subtask

T = TypeVar("T")
K = TypeVar("K")


def multiple_choice(rng: random.Random, question: str, correct: str, distractors: Sequence[str]) -> tuple[str, int]:
    """ShopBench's MC layout: the question, one "i. option" line each, then "Answer: "."""
    options = [correct, *distractors]
    rng.shuffle(options)
    lines = "\n".join(f"{i}. {option}" for i, option in enumerate(options))
    return f"{question}\n{lines}\nAnswer: ", options.index(correct)


def numbered(items: Sequence[str]) -> str:
    """Candidates as ShopBench lists them for retrieval and ranking, numbered from 1."""
    return "\n".join(f"{i}. {item}" for i, item in enumerate(items, start=1))


def group_by(items: Iterable[T], key: Callable[[T], K]) -> dict[K, list[T]]:
    groups: dict[K, list[T]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return groups


def distinct_sample(rng: random.Random, pool: Sequence[Any], k: int, exclude: Any) -> list[Any] | None:
    """k distinct items of pool, none equal to exclude; None if the pool is too small."""
    picks: list[Any] = []
    for _ in range(k * 10):
        item = rng.choice(pool)
        if item != exclude and item not in picks:
            picks.append(item)
            if len(picks) == k:
                return picks
    return None


def clip(text: str, limit: int = 300) -> str:
    """Evidence cut at a word boundary: a page's long review or description would crowd out the question."""
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0] + " ..."


def english(corpus: RawCorpus) -> list[Category]:
    return corpus.categories.get("en", [])


def offers_with(corpus: RawCorpus, attribute: str) -> list[Offer]:
    return corpus.derived(f"offers_with_{attribute}", lambda c: [o for o in c.offers() if getattr(o, attribute)])


def category_question(
    task: Subtask, corpus: RawCorpus, rng: random.Random, fields: Callable[[Offer], dict[str, str]]
) -> Example | None:
    """Which shop category an offer (or a query made from it) belongs to, against three other categories."""
    offers = offers_with(corpus, "category")
    if not offers:
        return None
    offer = rng.choice(offers)
    pool = corpus.derived("offer_categories", lambda c: sorted({o.category for o in offers_with(c, "category")}))
    wrong = distinct_sample(rng, pool, 3, exclude=offer.category)
    if wrong is None:
        return None
    prompt, answer = multiple_choice(rng, task.template(rng, **fields(offer)), offer.category, wrong)
    return task.example(prompt, answer)


COUNTERFACTUAL_TEMPLATES = [
    "Review sentence: {text}\nDoes the reviewer describe something that did not actually happen (a wish, a "
    "condition or a regret, such as 'I would have liked it if...')?\n0. Yes, it is counterfactual.\n"
    "1. No, it states what happened.\nAnswer: ",
    'A customer wrote: "{text}"\nIs this statement counterfactual, i.e. about an imagined rather than a real '
    "experience?\n0. Counterfactual\n1. Factual\nAnswer: ",
    "Sentence from a product review: {text}\nShould a review summary treat it as a fact about the product?\n"
    "0. No, it is hypothetical or wished for.\n1. Yes, it reports an actual experience.\nAnswer: ",
]


def counterfactual(task: Subtask, corpus: RawCorpus, rng: random.Random, languages: tuple[str, ...]) -> Example | None:
    """Counterfactual sentences are the rarer label in English and Japanese: both are drawn equally often."""
    want = rng.random() < 0.5
    pool = corpus.derived(
        f"counterfactual_{'+'.join(languages)}_{want}",
        lambda c: [s for s in c.review_sentences if s.language in languages and s.counterfactual == want],
    )
    if not pool:
        return None
    item = rng.choice(pool)
    return task.example(task.template(rng, text=item.text), 0 if want else 1, language=item.language)
