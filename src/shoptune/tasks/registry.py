"""Capabilities and subtasks as first-class objects.

A subtask knows its capability, ShopBench task type and metric, the source it is built from, its
instruction paraphrases, and a builder that turns raw records into examples. The capability modules
register their subtasks here on import; `all_subtasks()` imports them all.

The last paraphrase of every subtask is reserved for the held-out benchmark (`shoptune data heldout`):
training prompts never use it, so the benchmark also measures whether a skill survives a new wording.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

from shoptune.schema import Example, Metric, TaskType
from shoptune.tasks.records import RawCorpus


class Capability(StrEnum):
    """The four capabilities, one per ShopBench track, in the competition's order.

    Adding a track: one member here (the capability's name, the track id its questions carry, a short name for
    tables, the module whose subtasks it holds), and that module, which registers its subtasks with `@subtask`.
    """

    track: str
    short: str
    module: str

    def __new__(cls, value: str, track: str, short: str, module: str) -> Capability:
        member = str.__new__(cls, value)
        member._value_ = value
        member.track, member.short, member.module = track, short, module
        return member

    CONCEPTS = (
        "shopping_concept_understanding",
        "amazon-kdd-cup-24-understanding-shopping-concepts",
        "concepts",
        "shoptune.tasks.concepts",
    )
    KNOWLEDGE = (
        "shopping_knowledge_reasoning",
        "amazon-kdd-cup-24-shopping-knowledge-reasoning",
        "knowledge",
        "shoptune.tasks.knowledge",
    )
    BEHAVIOR = (
        "user_behavior_alignment",
        "amazon-kdd-cup-24-user-behavior-alignment",
        "behavior",
        "shoptune.tasks.behavior",
    )
    MULTILINGUAL = (
        "multilingual_ability",
        "amazon-kdd-cup-24-multi-lingual-abilities",
        "multilingual",
        "shoptune.tasks.multilingual",
    )


def short_name(track: str) -> str:
    """A ShopBench track id as tables show it ("concepts"); a track shoptune does not know keeps its id."""
    return next((c.short for c in Capability if c.track == track), track)


def track_order(track: str) -> tuple[int, str]:
    """The competition's order (concepts, knowledge, behavior, multilingual), then any other track by name."""
    known = [c.track for c in Capability]
    return (known.index(track) if track in known else len(known), track)


T = TypeVar("T")
K = TypeVar("K")
Builder = Callable[["Subtask", RawCorpus, random.Random], "Example | None"]


@dataclass(frozen=True)
class Subtask:
    name: str
    capability: Capability
    task_type: TaskType
    metric: Metric
    source: str
    description: str
    templates: tuple[str, ...]  # the last one is reserved for the held-out benchmark
    draw: Builder  # one example from a random draw, or None when the draw does not fit
    heldout: bool = False  # draws use the reserved paraphrase instead of the training ones

    def for_heldout(self) -> Subtask:
        return dataclasses.replace(self, heldout=True)

    def example(self, prompt: str, answer: Any, language: str = "en") -> Example:
        """A validated record; the id is a content hash so the same example is the same id everywhere."""
        ident = hashlib.sha1(f"{self.name}\x00{prompt}".encode()).hexdigest()[:16]
        return Example(
            input_field=prompt,
            output_field=answer,
            task_name=self.name,
            task_type=self.task_type,
            metric=self.metric,
            is_multiple_choice=self.task_type is TaskType.MULTIPLE_CHOICE,
            track=self.capability.track,
            capability=self.capability.value,
            source=self.source,
            id=ident,
            language=language,
        )

    def template(self, rng: random.Random, **fields: Any) -> str:
        choices = self.templates[-1:] if self.heldout else self.templates[:-1]
        return rng.choice(choices).format(**fields)

    def build(self, corpus: RawCorpus, n: int, seed: int, patience: int = 2000) -> list[Example]:
        """Up to n distinct examples, the same ones for the same corpus and seed; stops early once
        `patience` draws in a row bring nothing new (the source has no more to give)."""
        rng = random.Random(f"{seed}:{self.name}")
        seen: dict[str, Example] = {}
        misses = 0
        while len(seen) < n and misses < patience:
            ex = self.draw(self, corpus, rng)
            if ex is None or ex.input_field in seen:
                misses += 1
                continue
            seen[ex.input_field] = ex
            misses = 0
        return list(seen.values())


_REGISTRY: dict[str, Subtask] = {}


def subtask(
    name: str,
    capability: Capability,
    task_type: TaskType,
    metric: Metric,
    source: str,
    description: str,
    templates: Sequence[str],
) -> Callable[[Builder], Builder]:
    """Register a builder as a subtask; at least three paraphrased instructions keep prompts varied (two for
    training, the last for the held-out benchmark)."""
    if len(templates) < 3:
        raise ValueError(f"subtask {name}: give at least 3 instruction templates")

    def register(draw: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"subtask {name} registered twice")
        _REGISTRY[name] = Subtask(name, capability, task_type, metric, source, description, tuple(templates), draw)
        return draw

    return register


def all_subtasks() -> dict[str, Subtask]:
    """Every registered subtask by name, in registration order. The capabilities' modules are imported by module
    name, as they always were, so that order (and with it every mixture's bytes) stays what it was."""
    for module in sorted(c.module for c in Capability):
        importlib.import_module(module)
    return dict(_REGISTRY)


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
