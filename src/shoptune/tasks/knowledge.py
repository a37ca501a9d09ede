"""Shopping knowledge reasoning: identity of products, prices, and how categories relate."""

from __future__ import annotations

import random

from shoptune.schema import Example, Metric, TaskType
from shoptune.sources.records import Evidence, Offer, RawCorpus
from shoptune.tasks.prompts import (
    clip,
    distinct_sample,
    english,
    group_by,
    multiple_choice,
    numbered,
    offers_with,
)
from shoptune.tasks.registry import Capability, Subtask, subtask

K = Capability.KNOWLEDGE


def describe(offer: Offer) -> str:
    parts = [offer.title]
    if offer.brand:
        parts.append(f"brand: {offer.brand}")
    if offer.price:
        parts.append(f"price: ${offer.price:.2f}")
    return "; ".join(parts)


@subtask(
    name="same_product",
    capability=K,
    task_type=TaskType.MULTIPLE_CHOICE,
    metric=Metric.ACCURACY,
    sources=("product-matching",),
    description="decide whether two offers describe the same product",
    templates=[
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
    name="cheapest_offer",
    capability=K,
    task_type=TaskType.MULTIPLE_CHOICE,
    metric=Metric.ACCURACY,
    sources=("product-matching",),
    description="compare the prices of four offers",
    templates=[
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
    name="order_total",
    capability=K,
    task_type=TaskType.MULTIPLE_CHOICE,
    metric=Metric.ACCURACY,
    sources=("product-matching",),
    description="compute the total cost of an order from a unit price",
    templates=[
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
    name="category_outlier",
    capability=K,
    task_type=TaskType.MULTIPLE_CHOICE,
    metric=Metric.ACCURACY,
    sources=("google-taxonomy",),
    description="spot the category that does not belong under a top-level department",
    templates=[
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


def questions_of(corpus: RawCorpus, dataset: str) -> list[list[Evidence]]:
    """The evidence of one product-QA set, grouped by question, in first-seen order."""
    return corpus.derived(
        f"questions:{dataset}",
        lambda c: list(group_by((e for e in c.evidence if e.dataset == dataset), lambda e: e.question_id).values()),
    )


@subtask(
    name="attribute_answer_choice",
    capability=K,
    task_type=TaskType.MULTIPLE_CHOICE,
    metric=Metric.ACCURACY,
    sources=("contextual-product-qa",),
    reads=("evidence",),
    description="pick the product attribute that answers a shopper's question (semiPQA attribute ranking)",
    templates=[
        "A shopper asks about a product: '{question}'\nWhich of the product's attributes answers the question?",
        "Customer question: {question}\nSelect the attribute from the product page that answers it.",
        "Question: {question}\nOne of these product attributes holds the answer. Which one?",
    ],
)
def attribute_answer_choice(task: Subtask, corpus: RawCorpus, rng: random.Random) -> Example | None:
    groups = corpus.derived(
        "attribute_questions",
        lambda c: [
            g
            for g in questions_of(c, "semiPQA/attribute_ranking")
            if any(e.label for e in g) and sum(not e.label for e in g) >= 3
        ],
    )
    if not groups:
        return None
    group = rng.choice(groups)
    right = rng.choice([e for e in group if e.label])
    wrong = [e.evidence for e in rng.sample([e for e in group if not e.label], 3)]
    if right.evidence in wrong:
        return None
    prompt, answer = multiple_choice(rng, task.template(rng, question=right.question), right.evidence, wrong)
    return task.example(prompt, answer)


@subtask(
    name="evidence_relevance",
    capability=K,
    task_type=TaskType.MULTIPLE_CHOICE,
    metric=Metric.ACCURACY,
    sources=("contextual-product-qa",),
    reads=("evidence",),
    description="decide whether a piece of product-page evidence helps answer a question (hetPQA, labelled)",
    templates=[
        "Question about a product: {question}\nEvidence ({kind}): {evidence}\nDoes this evidence help answer the "
        "question?\n0. Yes, it helps answer the question.\n1. No, it does not help.\nAnswer: ",
        "A shopper asks: {question}\nFrom the product page ({kind}): {evidence}\nIs this relevant to the answer?\n"
        "0. Relevant\n1. Not relevant\nAnswer: ",
        "Product question: {question}\nCandidate evidence, from the {kind}: {evidence}\nCould a shop assistant "
        "answer the question with this?\n0. Yes\n1. No\nAnswer: ",
    ],
)
def evidence_relevance(task: Subtask, corpus: RawCorpus, rng: random.Random) -> Example | None:
    # Relevant evidence is the rarer label (about 1 in 4): draw both equally often so answers stay balanced.
    want = rng.random() < 0.5
    pool = corpus.derived(
        f"het_evidence_{want}",
        lambda c: [e for e in c.evidence if e.dataset == "hetPQA/evidence_ranking" and bool(e.label) == want],
    )
    if not pool:
        return None
    item = rng.choice(pool)
    prompt = task.template(rng, question=item.question, kind=item.kind, evidence=clip(item.evidence))
    return task.example(prompt, 0 if want else 1)


@subtask(
    name="evidence_ranking",
    capability=K,
    task_type=TaskType.RANKING,
    metric=Metric.NDCG,
    sources=("contextual-product-qa",),
    reads=("evidence",),
    description="rank five pieces of product-page evidence by how well they answer a question (ePQA, graded)",
    templates=[
        "Instructions: A shopper asks about '{title}': {question}\nRank the five pieces of evidence below by how "
        "well they answer the question, best first. You should output a permutation of 1 to 5, separated with "
        "comma.\n{candidates}\nOutput:",
        "Product: {title}\nQuestion: {question}\nOrder these snippets from the most to the least helpful answer "
        "(a permutation of 1 to 5, comma-separated).\n{candidates}\nOutput:",
        "Instructions: For the question '{question}' about the product '{title}', sort the evidence from best "
        "to worst answer. Output the numbers 1-5 separated by commas.\n{candidates}\nOutput:",
    ],
)
def evidence_ranking(task: Subtask, corpus: RawCorpus, rng: random.Random) -> Example | None:
    groups = corpus.derived(
        "graded_questions",
        lambda c: [g for g in questions_of(c, "ePQA") if len(g) >= 5 and len({e.label for e in g}) >= 2],
    )
    if not groups:
        return None
    group = rng.choice(groups)
    shown = rng.sample(group, 5)
    if len({e.label for e in shown}) < 2 or len({e.evidence for e in shown}) < 5:
        return None
    first = shown[0]
    candidates = numbered([clip(e.evidence) for e in shown])
    prompt = task.template(rng, title=first.title or "this product", question=first.question, candidates=candidates)
    return task.example(prompt, [(e.label or 0) / 2 for e in shown])


@subtask(
    name="answer_from_evidence",
    capability=K,
    task_type=TaskType.GENERATION,
    metric=Metric.SENT_TRANSFORMER,
    sources=("contextual-product-qa",),
    reads=("evidence",),
    description="answer a product question from one piece of evidence (hetPQA answer generation, hand-written)",
    templates=[
        "Instructions: Answer the shopper's question in one sentence, using only the evidence.\n"
        "Question: {question}\nEvidence ({kind}): {evidence}\nOutput:",
        "A customer asks: {question}\nThe product page says ({kind}): {evidence}\nWrite a short, natural "
        "answer.\nOutput:",
        "Instructions: Reply to the product question below as a shop assistant would, based on the {kind} "
        "given.\nQuestion: {question}\n{kind}: {evidence}\nOutput:",
    ],
)
def answer_from_evidence(task: Subtask, corpus: RawCorpus, rng: random.Random) -> Example | None:
    pool = corpus.derived(
        "answered_evidence", lambda c: [e for e in c.evidence if e.dataset == "hetPQA/answer_generation" and e.answer]
    )
    if not pool:
        return None
    item = rng.choice(pool)
    prompt = task.template(rng, question=item.question, kind=item.kind, evidence=clip(item.evidence))
    return task.example(prompt, item.answer)


@subtask(
    name="product_answer",
    capability=K,
    task_type=TaskType.GENERATION,
    metric=Metric.SENT_TRANSFORMER,
    sources=("contextual-product-qa",),
    reads=("evidence",),
    description="answer a question about a named product from the evidence that fully answers it (ePQA)",
    templates=[
        "Instructions: Answer the question about the product in one sentence, based on the information given.\n"
        "Product: {title}\nQuestion: {question}\nInformation: {evidence}\nOutput:",
        "Product: {title}\nA shopper asks: {question}\nWhat we know ({kind}): {evidence}\nWrite the answer a "
        "helpful shop assistant would give.\nOutput:",
        "Instructions: Use the product information to answer the customer's question briefly.\n"
        "Question: {question}\nAbout '{title}', from the {kind}: {evidence}\nOutput:",
    ],
)
def product_answer(task: Subtask, corpus: RawCorpus, rng: random.Random) -> Example | None:
    pool = corpus.derived(
        "epqa_full_answers", lambda c: [e for e in c.evidence if e.dataset == "ePQA" and e.label == 2 and e.answer]
    )
    if not pool:
        return None
    item = rng.choice(pool)
    title = item.title or "this product"
    prompt = task.template(rng, title=title, question=item.question, kind=item.kind, evidence=clip(item.evidence))
    return task.example(prompt, item.answer)
