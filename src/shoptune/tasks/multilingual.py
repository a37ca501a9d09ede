"""Multilingual ability in ShopBench's five other languages: taxonomies aligned by id (English with German,
Spanish, French, Italian and Japanese), multilingual offers, and German and Japanese review sentences."""

from __future__ import annotations

import random

from shoptune.schema import Example, Metric, TaskType
from shoptune.sources.records import Category, RawCorpus
from shoptune.tasks.prompts import (
    COUNTERFACTUAL_TEMPLATES,
    counterfactual,
    distinct_sample,
    multiple_choice,
)
from shoptune.tasks.registry import Capability, Subtask, subtask

M = Capability.MULTILINGUAL
LANGUAGE_NAMES = {"en": "English", "de": "German", "es": "Spanish", "fr": "French", "it": "Italian", "ja": "Japanese"}


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
    name="category_translation_en_de",
    capability=M,
    task_type=TaskType.GENERATION,
    metric=Metric.BLEU,
    sources=("google-taxonomy",),
    languages=("en", "de"),
    description="translate an English category path into German",
    templates=TRANSLATE_TEMPLATES,
)
def category_translation_en_de(task: Subtask, corpus: RawCorpus, rng: random.Random) -> Example | None:
    return translate(task, corpus, rng, "en", "de")


@subtask(
    name="category_translation_de_en",
    capability=M,
    task_type=TaskType.GENERATION,
    metric=Metric.BLEU,
    sources=("google-taxonomy",),
    languages=("de", "en"),
    description="translate a German category path into English",
    templates=TRANSLATE_TEMPLATES,
)
def category_translation_de_en(task: Subtask, corpus: RawCorpus, rng: random.Random) -> Example | None:
    return translate(task, corpus, rng, "de", "en")


@subtask(
    name="cross_lingual_category",
    capability=M,
    task_type=TaskType.MULTIPLE_CHOICE,
    metric=Metric.ACCURACY,
    sources=("google-taxonomy",),
    languages=("de", "en"),
    description="match a German category name with its English counterpart",
    templates=[
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
    name="cross_lingual_offer_match",
    capability=M,
    task_type=TaskType.MULTIPLE_CHOICE,
    metric=Metric.ACCURACY,
    sources=("product-matching",),
    languages=("en", "es", "fr", "de", "it", "nl"),
    description="find the same product among offers titled in other languages",
    templates=[
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


def parallel(corpus: RawCorpus, language: str) -> list[tuple[Category, Category]]:
    """(English, other-language) nodes of the six-locale taxonomy sharing an id."""

    def compute(c: RawCorpus) -> list[tuple[Category, Category]]:
        other = {cat.id: cat for cat in c.parallel_categories.get(language, [])}
        return [(en, other[en.id]) for en in c.parallel_categories.get("en", []) if en.id in other]

    return corpus.derived(f"parallel_en_{language}", compute)


def translate_from_english(task: Subtask, corpus: RawCorpus, rng: random.Random, tgt: str) -> Example | None:
    pairs = parallel(corpus, tgt)
    if not pairs:
        return None
    en, other = rng.choice(pairs)
    # BLEU gives 0 below four tokens: long enough paths only (Japanese by levels, as it has no spaces).
    if (len(other.path) < 3) if tgt == "ja" else (len(other.text().split()) < 4):
        return None
    prompt = task.template(rng, src="English", tgt=LANGUAGE_NAMES[tgt], text=en.text())
    return task.example(prompt, other.text(), language=tgt)


def _register_translation(tgt: str) -> None:
    @subtask(
        name=f"category_translation_en_{tgt}",
        capability=M,
        task_type=TaskType.GENERATION,
        metric=Metric.JP_BLEU if tgt == "ja" else Metric.BLEU,
        sources=("google-taxonomy-2015",),
        languages=("en", tgt),
        description=f"translate an English category path into {LANGUAGE_NAMES[tgt]} (the 2015 taxonomy)",
        templates=TRANSLATE_TEMPLATES,
    )
    def draw(task: Subtask, corpus: RawCorpus, rng: random.Random) -> Example | None:
        return translate_from_english(task, corpus, rng, tgt)


for _language in ("es", "fr", "it", "ja"):
    _register_translation(_language)


@subtask(
    name="localised_category_parent",
    capability=M,
    task_type=TaskType.MULTIPLE_CHOICE,
    metric=Metric.ACCURACY,
    sources=("google-taxonomy-2015",),
    languages=("de", "es", "fr", "it", "ja"),
    description="pick a category's parent in a German, Spanish, French, Italian or Japanese shop taxonomy",
    templates=[
        "In a {language} online shop, the category '{name}' sits directly under which category?",
        "{language} shop taxonomy. Category: {name}\nWhich of the following is its parent category?",
        "A {language}-language marketplace lists '{name}'. Select the category it belongs to one level up.",
    ],
)
def localised_category_parent(task: Subtask, corpus: RawCorpus, rng: random.Random) -> Example | None:
    language = rng.choice(("de", "es", "fr", "it", "ja"))
    pairs = parallel(corpus, language)
    if not pairs:
        return None
    cat = rng.choice(pairs)[1]
    if len(cat.path) < 2:
        return None
    names = corpus.derived(
        f"parent_names_{language}", lambda c: sorted({x.path[-2] for _, x in parallel(c, language) if len(x.path) >= 2})
    )
    wrong = distinct_sample(rng, names, 3, exclude=cat.path[-2])
    if wrong is None or cat.name in wrong:
        return None
    question = task.template(rng, language=LANGUAGE_NAMES[language], name=cat.name)
    prompt, answer = multiple_choice(rng, question, cat.path[-2], wrong)
    return task.example(prompt, answer, language=language)


@subtask(
    name="review_counterfactual_multilingual",
    capability=M,
    task_type=TaskType.MULTIPLE_CHOICE,
    metric=Metric.ACCURACY,
    sources=("amazon-multilingual-counterfactual",),
    languages=("de", "ja"),
    description="tell whether a German or Japanese review sentence reports what happened or what did not (AMCD)",
    templates=COUNTERFACTUAL_TEMPLATES,
)
def review_counterfactual_multilingual(task: Subtask, corpus: RawCorpus, rng: random.Random) -> Example | None:
    return counterfactual(task, corpus, rng, ("de", "ja"))
