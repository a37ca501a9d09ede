"""Shopping concept understanding: what categories mean, how they nest, what a title names."""

from __future__ import annotations

import random
import re
from collections import defaultdict

from shoptune.schema import Example, Metric, TaskType
from shoptune.sources.records import Category, RawCorpus
from shoptune.tasks.prompts import (
    category_question,
    distinct_sample,
    english,
    multiple_choice,
    numbered,
    offers_with,
)
from shoptune.tasks.registry import Capability, Subtask, subtask

C = Capability.CONCEPTS


def children_of(corpus: RawCorpus) -> dict[tuple[str, ...], list[Category]]:
    def compute(c: RawCorpus) -> dict[tuple[str, ...], list[Category]]:
        out: dict[tuple[str, ...], list[Category]] = defaultdict(list)
        for cat in english(c):
            out[cat.parent].append(cat)
        return dict(out)

    return corpus.derived("children_en", compute)


@subtask(
    name="category_explanation",
    capability=C,
    task_type=TaskType.GENERATION,
    metric=Metric.SENT_TRANSFORMER,
    sources=("google-taxonomy",),
    description="explain a product category from its place in the taxonomy (answer derived from the tree)",
    templates=[
        "Instructions: Explain the product category name\nInput: {name}\nOutput:",
        "Input: Explain the product type {name}\nOutput:",
        "Instructions: Tell me what this product category is about\nInput: {name}\nOutput:",
        "Instructions: Describe in one or two sentences what kind of products belong to this category.\n"
        "Input: {name}\nOutput:",
    ],
)
def category_explanation(task: Subtask, corpus: RawCorpus, rng: random.Random) -> Example | None:
    cats = english(corpus)
    if not cats:
        return None
    cat = rng.choice(cats)
    if len(cat.path) < 2:
        return None
    kids = [k.name for k in children_of(corpus).get(cat.path, [])]
    siblings = [s.name for s in children_of(corpus).get(cat.parent, []) if s.name != cat.name]
    return task.example(task.template(rng, name=cat.name), explain(cat, kids, siblings, rng))


def explain(cat: Category, kids: list[str], siblings: list[str], rng: random.Random) -> str:
    """A short explanation in one of several phrasings, each read off the tree (so derived, not annotated);
    one fixed sentence pattern teaches a model to repeat the pattern instead of describing the category."""
    department, parent = cat.path[0], cat.parent[-1]
    opening = rng.choice(
        [
            f"{cat.name} is a product category within {parent}.",
            f"{cat.name} are products sold in the {department} department, as part of {parent}.",
            f"The category {cat.name} groups {parent.lower()} products of one kind.",
            f"Shops list {cat.name} under {' > '.join(cat.parent)}.",
            f"{cat.name} is a subcategory of {parent} in the {department} section of a shop.",
        ]
    )
    details = []
    if kids:
        picked = rng.sample(kids, min(len(kids), rng.randint(1, 3)))
        details.append(
            rng.choice(["It covers products such as {}.", "It includes {}.", "Typical items are {}."]).format(
                ", ".join(picked)
            )
        )
    if siblings and rng.random() < 0.6:
        picked = rng.sample(siblings, min(len(siblings), rng.randint(1, 2)))
        details.append(
            rng.choice(["Related categories are {}.", "It sits next to {}.", "Nearby you also find {}."]).format(
                " and ".join(picked)
            )
        )
    rng.shuffle(details)
    return " ".join([opening, *details])


@subtask(
    name="category_parent",
    capability=C,
    task_type=TaskType.MULTIPLE_CHOICE,
    metric=Metric.ACCURACY,
    sources=("google-taxonomy",),
    description="pick the direct parent of a category",
    templates=[
        "Which category is the direct parent of the product category '{name}'?",
        "In a product taxonomy, '{name}' is a subcategory of which of the following?",
        "A shop files '{name}' under a broader category. Which one is it?",
    ],
)
def category_parent(task: Subtask, corpus: RawCorpus, rng: random.Random) -> Example | None:
    cats = corpus.derived("with_parent_en", lambda c: [x for x in english(c) if len(x.path) >= 2])
    if len(cats) < 10:
        return None
    cat = rng.choice(cats)
    parents = corpus.derived("parent_names", lambda c: sorted({x.parent[-1] for x in english(c) if len(x.path) >= 2}))
    wrong = distinct_sample(rng, parents, 3, exclude=cat.parent[-1])
    if wrong is None or any(w in cat.path for w in wrong):
        return None
    prompt, answer = multiple_choice(rng, task.template(rng, name=cat.name), cat.parent[-1], wrong)
    return task.example(prompt, answer)


@subtask(
    name="offer_category",
    capability=C,
    task_type=TaskType.MULTIPLE_CHOICE,
    metric=Metric.ACCURACY,
    sources=("product-matching",),
    description="pick the shop category of a product offer from its title",
    templates=[
        "Which category does this product belong to?\nProduct: {title}",
        "A product is listed as '{title}'. In which category should it be listed?",
        "Classify the following product into one of the categories.\nProduct title: {title}",
    ],
)
def offer_category(task: Subtask, corpus: RawCorpus, rng: random.Random) -> Example | None:
    return category_question(task, corpus, rng, lambda offer: {"title": offer.title})


@subtask(
    name="brand_ner",
    capability=C,
    task_type=TaskType.NER,
    metric=Metric.MICRO_F1,
    sources=("product-matching",),
    description="extract the brand named in an offer title",
    templates=[
        "Instructions: Extract the brand name mentioned in the product title. If there are several, separate "
        "them with comma.\nInput: {title}\nOutput:",
        "Instructions: Find the entities of type 'brand' in the following product title.\nInput: {title}\nOutput:",
        "Input: {title}\nWhich brand does this product title mention? Answer with the brand as written.\nOutput:",
    ],
)
def brand_ner(task: Subtask, corpus: RawCorpus, rng: random.Random) -> Example | None:
    def mentions(c: RawCorpus) -> list[tuple[str, str]]:
        """Titles that name their brand, and the brand as the title writes it."""
        found = (
            (o.title, re.search(rf"\b{re.escape(o.brand)}\b", o.title, re.IGNORECASE)) for o in offers_with(c, "brand")
        )
        return [(title, match.group(0)) for title, match in found if match]

    titled = corpus.derived("brand_mentions", mentions)
    if not titled:
        return None
    title, brand = rng.choice(titled)
    return task.example(task.template(rng, title=title), [brand])


@subtask(
    name="model_number_extraction",
    capability=C,
    task_type=TaskType.GENERATION,
    metric=Metric.ROUGE_L,
    sources=("product-matching",),
    description="extract the model number from an offer title",
    templates=[
        "Instructions: Extract the model number of the product from its title.\nInput: {title}\nOutput:",
        "Input: {title}\nWhat is the model number in this product title?\nOutput:",
        "Instructions: Copy the manufacturer's model number that appears in the title below.\nInput: {title}\nOutput:",
    ],
)
def model_number_extraction(task: Subtask, corpus: RawCorpus, rng: random.Random) -> Example | None:
    offers = corpus.derived(
        "model_in_title", lambda c: [o for o in offers_with(c, "model_no") if o.model_no.lower() in o.title.lower()]
    )
    if not offers:
        return None
    offer = rng.choice(offers)
    return task.example(task.template(rng, title=offer.title), offer.model_no)


@subtask(
    name="subcategory_retrieval",
    capability=C,
    task_type=TaskType.RETRIEVAL,
    metric=Metric.HIT_RATE_3,
    sources=("google-taxonomy",),
    description="find the three subcategories of a category among ten candidates",
    templates=[
        "Instructions: Which three of the following categories are subcategories of '{name}'? You should output "
        "three numbers, separated with comma.\n{candidates}\nOutput:",
        "Given the product category '{name}', select the 3 categories below that belong directly under it.\n"
        "{candidates}\nOutput (answer in three comma-separated numbers):",
        "Instructions: A shopper browses '{name}'. Pick the three candidate categories found inside it.\n"
        "{candidates}\nOutput:",
    ],
)
def subcategory_retrieval(task: Subtask, corpus: RawCorpus, rng: random.Random) -> Example | None:
    kids = children_of(corpus)
    parents = corpus.derived(
        "parents_with_3", lambda c: sorted(p for p, k in children_of(c).items() if p and len(k) >= 3)
    )
    if not parents:
        return None
    parent = rng.choice(parents)
    right = [k.name for k in rng.sample(kids[parent], 3)]
    names = corpus.derived("names_en", lambda c: [x.name for x in english(c)])
    wrong = distinct_sample(rng, names, 7, exclude=None)
    if wrong is None or set(wrong) & {k.name for k in kids[parent]}:
        return None
    candidates = right + wrong
    rng.shuffle(candidates)
    answer = sorted(candidates.index(r) + 1 for r in right)
    return task.example(task.template(rng, name=parent[-1], candidates=numbered(candidates)), answer)


@subtask(
    name="attribute_value_extraction",
    capability=C,
    task_type=TaskType.GENERATION,
    metric=Metric.ROUGE_L,
    sources=("mave",),
    description="extract the value of a product attribute from product text",
    templates=[
        "Instructions: Extract the value of the attribute '{attribute}' from the product text.\n"
        "Category: {category}\nInput: {text}\nOutput:",
        "Input: {text}\nWhat is the {attribute} of this {category} product? Copy it from the text.\nOutput:",
        "Instructions: Read the {category} listing and return its '{attribute}'.\nInput: {text}\nOutput:",
    ],
)
def attribute_value_extraction(task: Subtask, corpus: RawCorpus, rng: random.Random) -> Example | None:
    if not corpus.attributes:
        return None
    mention = rng.choice(corpus.attributes)
    prompt = task.template(rng, attribute=mention.attribute, category=mention.category, text=mention.text[:1200])
    return task.example(prompt, mention.values[0])


@subtask(
    name="attribute_to_sentence",
    capability=C,
    task_type=TaskType.GENERATION,
    metric=Metric.ROUGE_L,
    sources=("contextual-product-qa",),
    reads=("attribute_sentences",),
    description="state a product attribute as the sentence a shopper reads (semiPQA data-to-text, hand-written)",
    templates=[
        "Instructions: Write one sentence that states this product attribute for a shopper.\n"
        "Attribute: {attribute}\nValue: {value}\nOutput:",
        "Input: {attribute} = {value}\nTurn this product specification into a short, natural sentence.\nOutput:",
        "Instructions: A product page lists the attribute below. Say it in one plain English sentence.\n"
        "Input: {attribute}: {value}\nOutput:",
    ],
)
def attribute_to_sentence(task: Subtask, corpus: RawCorpus, rng: random.Random) -> Example | None:
    if not corpus.attribute_sentences:
        return None
    item = rng.choice(corpus.attribute_sentences)
    return task.example(task.template(rng, attribute=item.attribute, value=item.value), item.text)
