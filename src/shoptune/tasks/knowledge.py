"""Shopping knowledge reasoning: identity of products, prices, and how categories relate."""

from __future__ import annotations

import random

from shoptune.schema import Example, Metric, TaskType
from shoptune.tasks.concepts import english, offers_with
from shoptune.tasks.records import Offer, RawCorpus
from shoptune.tasks.registry import Capability, Subtask, distinct_sample, group_by, multiple_choice, subtask

K = Capability.KNOWLEDGE


def describe(offer: Offer) -> str:
    parts = [offer.title]
    if offer.brand:
        parts.append(f"brand: {offer.brand}")
    if offer.price:
        parts.append(f"price: ${offer.price:.2f}")
    return "; ".join(parts)


@subtask(
    "same_product",
    K,
    TaskType.MULTIPLE_CHOICE,
    Metric.ACCURACY,
    "product-matching",
    "decide whether two offers describe the same product",
    [
        "Do the following two product offers refer to the same product?\nOffer A: {a}\nOffer B: {b}\n"
        "0. Yes, they are the same product.\n1. No, they are different products.\nAnswer: ",
        "Two shops list these items. Are they the same product?\nFirst: {a}\nSecond: {b}\n"
        "0. Yes, both listings sell one product.\n1. No, the listings sell two different products.\nAnswer: ",
        "Product 1: {a}\nProduct 2: {b}\nCould a customer buy either listing and receive the same product?\n"
        "0. Yes\n1. No\nAnswer: ",
    ],
)
def same_product(task: Subtask, corpus: RawCorpus, rng: random.Random) -> Example | None:
    if not corpus.pairs:
        return None
    # Matching pairs are rare (about 1 in 6): draw both labels equally often so answers stay balanced.
    want = rng.random() < 0.5
    pool = corpus.derived(f"pairs_same_{want}", lambda c: [p for p in c.pairs if p.same == want])
    if not pool:
        return None
    pair = rng.choice(pool)
    # Each paraphrase words its own options, so no wording is shared with the held-out paraphrase.
    prompt = task.template(rng, a=describe(pair.left), b=describe(pair.right))
    return task.example(prompt, 0 if pair.same else 1)


@subtask(
    "cheapest_offer",
    K,
    TaskType.MULTIPLE_CHOICE,
    Metric.ACCURACY,
    "product-matching",
    "compare the prices of four offers",
    [
        "Which of the following products is the cheapest?",
        "A budget-conscious shopper wants the lowest price. Which offer should they choose?",
        "Compare the prices below. Which listing costs the least?",
    ],
)
def cheapest_offer(task: Subtask, corpus: RawCorpus, rng: random.Random) -> Example | None:
    offers = offers_with(corpus, "price")
    picks = distinct_sample(rng, offers, 4, exclude=None) if len(offers) >= 4 else None
    if picks is None or len({o.price for o in picks}) < 4:
        return None
    cheapest = min(picks, key=lambda o: o.price)
    question = task.template(rng)
    prompt, answer = multiple_choice(
        rng,
        question,
        f"{cheapest.title} (${cheapest.price:.2f})",
        [f"{o.title} (${o.price:.2f})" for o in picks if o is not cheapest],
    )
    return task.example(prompt, answer)


@subtask(
    "order_total",
    K,
    TaskType.MULTIPLE_CHOICE,
    Metric.ACCURACY,
    "product-matching",
    "compute the total cost of an order from a unit price",
    [
        "A customer orders {k} units of '{title}' at ${price:.2f} each. What is the total cost?",
        "The unit price of '{title}' is ${price:.2f}. How much do {k} of them cost in total?",
        "How much would a shopper pay for {k} x '{title}' if one costs ${price:.2f}?",
    ],
)
def order_total(task: Subtask, corpus: RawCorpus, rng: random.Random) -> Example | None:
    offers = offers_with(corpus, "price")
    if not offers:
        return None
    offer, k = rng.choice(offers), rng.randint(2, 12)
    total = round(offer.price * k, 2)
    wrong = {round(offer.price * (k + d), 2) for d in (-1, 1, 2)} | {round(total * 1.1, 2)}
    wrong.discard(total)
    distractors = sorted(wrong)[:3]
    question = task.template(rng, k=k, title=offer.title, price=offer.price)
    prompt, answer = multiple_choice(rng, question, f"${total:.2f}", [f"${w:.2f}" for w in distractors])
    return task.example(prompt, answer)


@subtask(
    "category_outlier",
    K,
    TaskType.MULTIPLE_CHOICE,
    Metric.ACCURACY,
    "google-taxonomy",
    "spot the category that does not belong under a top-level department",
    [
        "Which of the following categories does NOT belong to the department '{top}'?",
        "Three of these categories are found under '{top}'. Which one is not?",
        "A store's '{top}' department lists these categories, but one is misplaced. Which one?",
    ],
)
def category_outlier(task: Subtask, corpus: RawCorpus, rng: random.Random) -> Example | None:
    def by_top(c: RawCorpus) -> dict[str, list[str]]:
        out = group_by((cat for cat in english(c) if len(cat.path) >= 3), lambda cat: cat.path[0])
        names = {top: sorted({cat.name for cat in cats}) for top, cats in out.items()}
        return {top: n for top, n in names.items() if len(n) >= 3}

    groups = corpus.derived("deep_by_top", by_top)
    if len(groups) < 2:
        return None
    top, other = rng.sample(sorted(groups), 2)
    inside = rng.sample(groups[top], 3)
    outlier = rng.choice(groups[other])
    if outlier in groups[top]:
        return None
    prompt, answer = multiple_choice(rng, task.template(rng, top=top), outlier, inside)
    return task.example(prompt, answer)
