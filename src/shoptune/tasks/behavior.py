"""User behavior alignment: what a shopper searching for something would click, rank and buy.

No query logs ship with shoptune, so queries are derived from real offer titles (their first words,
as a shopper would type them) and relevance from the product-matching labels: the matching offer is
exact (1), another offer of the same brand a substitute (0.1), others irrelevant (0). ESCI supplies
real queries and labels when a user brings it.
"""

from __future__ import annotations

import random

from shoptune.schema import Example, Metric, TaskType
from shoptune.sources.records import Offer, OfferPair, RawCorpus
from shoptune.tasks.prompts import (
    COUNTERFACTUAL_TEMPLATES,
    category_question,
    counterfactual,
    distinct_sample,
    group_by,
    multiple_choice,
    numbered,
    offers_with,
)
from shoptune.tasks.registry import Capability, Subtask, subtask

B = Capability.BEHAVIOR


def query_from(offer: Offer, rng: random.Random) -> str:
    words = offer.title.split()
    return " ".join(words[: rng.randint(3, 5)]).lower()


def matches(corpus: RawCorpus) -> list[OfferPair]:
    return corpus.derived("matching_pairs", lambda c: [p for p in c.pairs if p.same and p.left.title != p.right.title])


RANKING_TEMPLATES = [
    "Instructions: You are given a search query and five products. Rank the products by their relevance to "
    "the query, most relevant first. You should output a permutation of 1 to 5, separated with comma.\n"
    "Query: {query}\nProducts:\n{candidates}\nOutput:",
    "A customer searched for '{query}'. Order these results from most to least relevant (a permutation of 1 "
    "to 5, comma-separated).\n{candidates}\nOutput:",
    "Instructions: Rerank the search results for the query '{query}'. Output the product numbers 1-5 in "
    "order of relevance, separated by commas.\n{candidates}\nOutput:",
]


@subtask(
    name="query_offer_ranking",
    capability=B,
    task_type=TaskType.RANKING,
    metric=Metric.NDCG,
    sources=("product-matching",),
    description="rank five offers by relevance to a shopper's query",
    templates=RANKING_TEMPLATES,
)
def query_offer_ranking(task: Subtask, corpus: RawCorpus, rng: random.Random) -> Example | None:
    pairs = matches(corpus)
    if not pairs:
        return None
    pair = rng.choice(pairs)
    query = query_from(pair.left, rng)
    pool = offers_with(corpus, "brand")
    by_brand = corpus.derived("offers_by_brand", lambda c: group_by(offers_with(c, "brand"), lambda o: o.brand))
    mate = rng.choice(by_brand[pair.left.brand]) if pair.left.brand in by_brand else None
    same_brand = [mate] if mate is not None and mate.title not in (pair.left.title, pair.right.title) else []
    others = distinct_sample(rng, pool, 4, exclude=pair.right)
    if others is None:
        return None
    candidates = [pair.right, *same_brand, *others][:5]
    if len({o.title for o in candidates}) < 5:
        return None
    rng.shuffle(candidates)

    def relevance(o: Offer) -> float:
        if o is pair.right:
            return 1.0
        return 0.1 if pair.left.brand and o.brand == pair.left.brand else 0.0

    prompt = task.template(rng, query=query, candidates=numbered([o.title for o in candidates]))
    return task.example(prompt, [relevance(o) for o in candidates])


def products(corpus: RawCorpus) -> list[list[Offer]]:
    """Offers grouped into products: the connected components of the "same product" pairs of each source,
    largest first (a product that several shops list has several offers)."""

    def compute(c: RawCorpus) -> list[list[Offer]]:
        parent: dict[tuple[str, Offer], tuple[str, Offer]] = {}

        def root(node: tuple[str, Offer]) -> tuple[str, Offer]:
            while parent.setdefault(node, node) != node:
                parent[node] = parent[parent[node]]
                node = parent[node]
            return node

        for pair in c.pairs:
            if pair.same:
                parent[root((pair.source, pair.left))] = root((pair.source, pair.right))
        groups = group_by(parent, root)
        found = [
            sorted({offer.title: offer for _, offer in members}.values(), key=lambda o: o.title)
            for members in groups.values()
        ]
        return sorted(found, key=lambda offers: (-len(offers), offers[0].title))

    return corpus.derived("products", compute)


@subtask(
    name="matching_offer_retrieval",
    capability=B,
    task_type=TaskType.RETRIEVAL,
    metric=Metric.HIT_RATE_3,
    sources=("product-matching",),
    description="find the three other shops' offers of the product a shopper viewed, among ten",
    templates=[
        "Instructions: A shopper viewed the product below and wants it from another shop. Which three of the "
        "following offers are the same product? Answer with three candidate numbers, separated with comma.\n"
        "Viewed: {title}\n{candidates}\nOutput:",
        "Product: {title}\nSelect the three listings that sell exactly this product. Give the 3 numbers, "
        "comma-separated.\n{candidates}\nOutput:",
        "Instructions: Three of the items below are the same item as the one given. Find them and output "
        "their three numbers, separated with comma.\nItem: {title}\n{candidates}\nOutput:",
    ],
)
def matching_offer_retrieval(task: Subtask, corpus: RawCorpus, rng: random.Random) -> Example | None:
    listed = corpus.derived("products_4", lambda c: [p for p in products(c) if len(p) >= 4])
    if not listed:
        return None
    offers = rng.choice(listed)
    viewed, *same = rng.sample(offers, 4)
    titles = {o.title for o in offers}
    negatives = distinct_sample(rng, corpus.derived("all_offers", RawCorpus.offers), 7, exclude=None)
    if negatives is None or titles & {o.title for o in negatives}:
        return None
    candidates = [*same, *negatives]
    rng.shuffle(candidates)
    prompt = task.template(rng, title=viewed.title, candidates=numbered([o.title for o in candidates]))
    return task.example(prompt, sorted(candidates.index(o) + 1 for o in same))


@subtask(
    name="query_category_intent",
    capability=B,
    task_type=TaskType.MULTIPLE_CHOICE,
    metric=Metric.ACCURACY,
    sources=("product-matching",),
    description="infer which department a shopper's query is aimed at",
    templates=[
        "A user searched for '{query}'. Which category are they most likely shopping in?",
        "Given the search query '{query}', which product category best matches the shopper's intent?",
        "Search query: {query}\nWhich category should the search engine show first?",
    ],
)
def query_category_intent(task: Subtask, corpus: RawCorpus, rng: random.Random) -> Example | None:
    return category_question(task, corpus, rng, lambda offer: {"query": query_from(offer, rng)})


ESCI_GAIN = {"E": 1.0, "S": 0.1, "C": 0.01, "I": 0.0}


@subtask(
    name="esci_query_ranking",
    capability=B,
    task_type=TaskType.RANKING,
    metric=Metric.NDCG,
    sources=("amazon-esci",),
    description="rank five products for a real search query by their ESCI relevance",
    templates=RANKING_TEMPLATES,
)
def esci_query_ranking(task: Subtask, corpus: RawCorpus, rng: random.Random) -> Example | None:
    def by_query(c: RawCorpus) -> list[list]:
        groups = group_by(c.judgments, lambda j: (j.query, j.locale))
        return [g for g in groups.values() if len(g) >= 5 and len({j.label for j in g}) > 1]

    groups = corpus.derived("esci_by_query", by_query)
    if not groups:
        return None
    shown = rng.sample(rng.choice(groups), 5)
    if len({j.product.title for j in shown}) < 5 or len({j.label for j in shown}) < 2:
        return None  # five alike would rank nothing: every order scores the same
    prompt = task.template(rng, query=shown[0].query, candidates=numbered([j.product.title for j in shown]))
    return task.example(prompt, [ESCI_GAIN[j.label] for j in shown], language=shown[0].locale.lower())


@subtask(
    name="session_next_product",
    capability=B,
    task_type=TaskType.RETRIEVAL,
    metric=Metric.HIT_RATE_3,
    sources=("amazon-m2",),
    description="predict the product a shopper engages with next, from the session so far",
    templates=[
        "Instructions: A user on an online shopping website has viewed the following products in order:\n"
        "{history}\nWhich of the candidates below is the user most likely to view next? Output three numbers, "
        "most likely first, separated with comma.\n{candidates}\nOutput:",
        "Session so far:\n{history}\nPredict the next product. Answer with 3 candidate numbers, comma-separated.\n"
        "{candidates}\nOutput:",
        "Instructions: Given the browsing history below, rank the likely next item; output three numbers.\n"
        "History:\n{history}\nCandidates:\n{candidates}\nOutput:",
    ],
)
def session_next_product(task: Subtask, corpus: RawCorpus, rng: random.Random) -> Example | None:
    if not corpus.sessions:
        return None
    session = rng.choice(corpus.sessions)
    items = [corpus.catalogue.get(i) for i in (*session.previous[-5:], session.next_item)]
    if any(o is None for o in items):
        return None
    *history, target = items
    pool = corpus.derived("catalogue_offers", lambda c: list(c.catalogue.values()))
    negatives = distinct_sample(rng, pool, 9, exclude=target)
    if negatives is None:
        return None
    candidates = [target, *negatives]
    rng.shuffle(candidates)
    prompt = task.template(
        rng, history=numbered([o.title for o in history]), candidates=numbered([o.title for o in candidates])
    )
    return task.example(prompt, [candidates.index(target) + 1], language=session.locale.lower())


@subtask(
    name="review_rating",
    capability=B,
    task_type=TaskType.MULTIPLE_CHOICE,
    metric=Metric.ACCURACY,
    sources=("amazon-reviews-2023",),
    description="predict the star rating a reviewer gave from the review text",
    templates=[
        "Instructions: Given the review below, predict the rating the user gave, on a scale of 1 to 5.\n"
        "Review title: {title}\nReview: {text}\nOutput:\nAnswer: ",
        "What star rating (1 to 5) goes with this product review?\n{title}\n{text}\nAnswer: ",
        'A customer wrote: "{text}" (title: {title}). On a scale of 1 to 5, how many stars did they give?\nAnswer: ',
    ],
)
def review_rating(task: Subtask, corpus: RawCorpus, rng: random.Random) -> Example | None:
    if not corpus.reviews:
        return None
    review = rng.choice(corpus.reviews)
    return task.example(task.template(rng, title=review.title, text=review.text[:1000]), review.rating)


@subtask(
    name="query_product_class",
    capability=B,
    task_type=TaskType.MULTIPLE_CHOICE,
    metric=Metric.ACCURACY,
    sources=("wands",),
    description="tell which product class a real shop search query is after (WANDS)",
    templates=[
        "A shopper searched a home-goods shop for '{query}'. Which kind of product are they looking for?",
        "Search query: {query}\nWhich product class should the shop show first?",
        "What is the intent of the search '{query}'? Pick the product class it targets.",
    ],
)
def query_product_class(task: Subtask, corpus: RawCorpus, rng: random.Random) -> Example | None:
    if not corpus.queries:
        return None
    item = rng.choice(corpus.queries)
    classes = corpus.derived("query_classes", lambda c: sorted({q.product_class for q in c.queries}))
    wrong = distinct_sample(rng, classes, 3, exclude=item.product_class)
    if wrong is None:
        return None
    prompt, answer = multiple_choice(rng, task.template(rng, query=item.query), item.product_class, wrong)
    return task.example(prompt, answer)


@subtask(
    name="class_query_retrieval",
    capability=B,
    task_type=TaskType.RETRIEVAL,
    metric=Metric.HIT_RATE_3,
    sources=("wands",),
    description="find the three searches, of ten, that shoppers typed looking for a product class (WANDS)",
    templates=[
        "Instructions: Which three of the following search queries were typed by shoppers looking for "
        "'{product_class}'? You should output three numbers, separated with comma.\n{candidates}\nOutput:",
        "A shop sells '{product_class}'. Select the 3 searches below that should lead to it.\n{candidates}\n"
        "Output (answer in three comma-separated numbers):",
        "Instructions: Pick the three queries whose shoppers want '{product_class}'.\n{candidates}\nOutput:",
    ],
)
def class_query_retrieval(task: Subtask, corpus: RawCorpus, rng: random.Random) -> Example | None:
    by_class = corpus.derived("queries_by_class", lambda c: group_by(c.queries, lambda q: q.product_class))
    classes = corpus.derived("classes_with_3", lambda c: sorted(k for k, v in by_class.items() if len(v) >= 3))
    if not classes:
        return None
    product_class = rng.choice(classes)
    right = [q.query for q in rng.sample(by_class[product_class], 3)]
    others = [q.query for q in corpus.queries if q.product_class != product_class]
    if len(set(right)) < 3 or len(others) < 7:
        return None
    candidates = right + rng.sample(others, 7)
    if len(set(candidates)) < 10:
        return None
    rng.shuffle(candidates)
    answer = sorted(candidates.index(r) + 1 for r in right)
    return task.example(task.template(rng, product_class=product_class, candidates=numbered(candidates)), answer)


@subtask(
    name="review_counterfactual",
    capability=B,
    task_type=TaskType.MULTIPLE_CHOICE,
    metric=Metric.ACCURACY,
    sources=("amazon-multilingual-counterfactual",),
    description="tell whether a review sentence reports what happened or what did not (AMCD, English)",
    templates=COUNTERFACTUAL_TEMPLATES,
)
def review_counterfactual(task: Subtask, corpus: RawCorpus, rng: random.Random) -> Example | None:
    return counterfactual(task, corpus, rng, ("en",))
