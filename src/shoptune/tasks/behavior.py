"""User behavior alignment: what a shopper searching for something would click, rank and buy.

No query logs ship with shoptune, so queries are derived from real offer titles (their first words,
as a shopper would type them) and relevance from the product-matching labels: the matching offer is
exact (1), another offer of the same brand a substitute (0.1), others irrelevant (0). ESCI supplies
real queries and labels when a user brings it.
"""

from __future__ import annotations

import random

from shoptune.schema import Example, Metric, TaskType
from shoptune.tasks.concepts import category_question, offers_with
from shoptune.tasks.records import Offer, OfferPair, RawCorpus
from shoptune.tasks.registry import Capability, Subtask, distinct_sample, group_by, numbered, subtask

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
    "query_offer_ranking",
    B,
    TaskType.RANKING,
    Metric.NDCG,
    "product-matching (derived queries)",
    "rank five offers by relevance to a shopper's query",
    RANKING_TEMPLATES,
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
    "matching_offer_retrieval",
    B,
    TaskType.RETRIEVAL,
    Metric.HIT_RATE_3,
    "product-matching (offers grouped into products by their matching labels)",
    "find the three other shops' offers of the product a shopper viewed, among ten",
    [
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
    "query_category_intent",
    B,
    TaskType.MULTIPLE_CHOICE,
    Metric.ACCURACY,
    "walmart-amazon (derived queries)",
    "infer which department a shopper's query is aimed at",
    [
        "A user searched for '{query}'. Which category are they most likely shopping in?",
        "Given the search query '{query}', which product category best matches the shopper's intent?",
        "Search query: {query}\nWhich category should the search engine show first?",
    ],
)
def query_category_intent(task: Subtask, corpus: RawCorpus, rng: random.Random) -> Example | None:
    return category_question(task, corpus, rng, lambda offer: {"query": query_from(offer, rng)})


ESCI_GAIN = {"E": 1.0, "S": 0.1, "C": 0.01, "I": 0.0}


@subtask(
    "esci_query_ranking",
    B,
    TaskType.RANKING,
    Metric.NDCG,
    "amazon-esci",
    "rank five products for a real search query by their ESCI relevance",
    RANKING_TEMPLATES,
)
def esci_query_ranking(task: Subtask, corpus: RawCorpus, rng: random.Random) -> Example | None:
    def by_query(c: RawCorpus) -> list[list]:
        groups = group_by(c.judgments, lambda j: (j.query, j.locale))
        return [g for g in groups.values() if len(g) >= 5 and len({j.label for j in g}) > 1]

    groups = corpus.derived("esci_by_query", by_query)
    if not groups:
        return None
    shown = rng.sample(rng.choice(groups), 5)
    if len({j.product.title for j in shown}) < 5:
        return None
    prompt = task.template(rng, query=shown[0].query, candidates=numbered([j.product.title for j in shown]))
    return task.example(prompt, [ESCI_GAIN[j.label] for j in shown], language=shown[0].locale.lower())


@subtask(
    "session_next_product",
    B,
    TaskType.RETRIEVAL,
    Metric.HIT_RATE_3,
    "amazon-m2",
    "predict the product a shopper engages with next, from the session so far",
    [
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
    "review_rating",
    B,
    TaskType.MULTIPLE_CHOICE,
    Metric.ACCURACY,
    "amazon-reviews-2023",
    "predict the star rating a reviewer gave from the review text",
    [
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
