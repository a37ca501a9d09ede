"""Multilingual ability: the English and German taxonomies (aligned by id) and multilingual offers."""

from __future__ import annotations

import random

from shoptune.schema import Example, Metric, TaskType
from shoptune.tasks.records import Category, RawCorpus
from shoptune.tasks.registry import Capability, Subtask, distinct_sample, multiple_choice, subtask

M = Capability.MULTILINGUAL
LANGUAGE_NAMES = {"en": "English", "de": "German"}


def aligned(corpus: RawCorpus) -> list[tuple[Category, Category]]:
    """(English, German) nodes sharing an id."""

    def compute(c: RawCorpus) -> list[tuple[Category, Category]]:
        german = {cat.id: cat for cat in c.categories.get("de", [])}
        return [(en, german[en.id]) for en in c.categories.get("en", []) if en.id in german]

    return corpus.derived("aligned_en_de", compute)


TRANSLATE_TEMPLATES = [
    "Instructions: Translate the following product category path from {src} into {tgt}.\nInput: {text}\nOutput:",
    "Input: {text}\nTranslate this {src} e-commerce category into {tgt}, keeping the ' > ' separators.\nOutput:",
    "Instructions: Localise the category path below for a {tgt}-language shop.\nInput: {text}\nOutput:",
]


def translate(task: Subtask, corpus: RawCorpus, rng: random.Random, src: str, tgt: str) -> Example | None:
    pairs = aligned(corpus)
    if not pairs:
        return None
    by_lang = dict(zip(("en", "de"), rng.choice(pairs), strict=True))
    # BLEU gives 0 below four tokens, so only paths long enough to be scored are used.
    if len(by_lang[tgt].text().split()) < 4:
        return None
    prompt = task.template(rng, src=LANGUAGE_NAMES[src], tgt=LANGUAGE_NAMES[tgt], text=by_lang[src].text())
    return task.example(prompt, by_lang[tgt].text(), language=tgt)


@subtask(
    "category_translation_en_de",
    M,
    TaskType.GENERATION,
    Metric.BLEU,
    "google-taxonomy en+de",
    "translate an English category path into German",
    TRANSLATE_TEMPLATES,
)
def category_translation_en_de(task: Subtask, corpus: RawCorpus, rng: random.Random) -> Example | None:
    return translate(task, corpus, rng, "en", "de")


@subtask(
    "category_translation_de_en",
    M,
    TaskType.GENERATION,
    Metric.BLEU,
    "google-taxonomy en+de",
    "translate a German category path into English",
    TRANSLATE_TEMPLATES,
)
def category_translation_de_en(task: Subtask, corpus: RawCorpus, rng: random.Random) -> Example | None:
    return translate(task, corpus, rng, "de", "en")


@subtask(
    "cross_lingual_category",
    M,
    TaskType.MULTIPLE_CHOICE,
    Metric.ACCURACY,
    "google-taxonomy en+de",
    "match a German category name with its English counterpart",
    [
        "Which English category corresponds to the German category '{name}'?",
        "A German shop lists products under '{name}'. What is this category called in English?",
        "Kategorie: {name}\nWhich of the following is the English name of this product category?",
    ],
)
def cross_lingual_category(task: Subtask, corpus: RawCorpus, rng: random.Random) -> Example | None:
    pairs = aligned(corpus)
    if len(pairs) < 10:
        return None
    en, de = rng.choice(pairs)
    names = corpus.derived("aligned_en_names", lambda c: sorted({e.name for e, _ in aligned(c)}))
    wrong = distinct_sample(rng, names, 3, exclude=en.name)
    if wrong is None:
        return None
    prompt, answer = multiple_choice(rng, task.template(rng, name=de.name), en.name, wrong)
    return task.example(prompt, answer, language="de")


@subtask(
    "cross_lingual_offer_match",
    M,
    TaskType.MULTIPLE_CHOICE,
    Metric.ACCURACY,
    "wdc-products (multilingual titles)",
    "find the same product among offers titled in other languages",
    [
        "The product '{title}' is listed in another shop. Which of the following offers is the same product?",
        "Which listing describes the same product as: {title}",
        "Product title: {title}\nSelect the offer that sells exactly this product.",
    ],
)
def cross_lingual_offer_match(task: Subtask, corpus: RawCorpus, rng: random.Random) -> Example | None:
    def compute(c: RawCorpus) -> list:
        return [p for p in c.pairs if p.same and (p.left.language or "en") != (p.right.language or "en")]

    pairs = corpus.derived("cross_lingual_matches", compute)
    if not pairs:
        return None
    pair = rng.choice(pairs)
    pool = corpus.derived("wdc_titles", lambda c: sorted({o.title for o in c.offers() if o.language}))
    wrong = distinct_sample(rng, pool, 3, exclude=pair.right.title)
    if wrong is None or pair.left.title in wrong:
        return None
    prompt, answer = multiple_choice(rng, task.template(rng, title=pair.left.title), pair.right.title, wrong)
    return task.example(prompt, answer, language=pair.left.language or "en")
