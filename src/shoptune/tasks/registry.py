"""Capabilities (one per ShopBench track) and subtasks as first-class objects.

A subtask knows its capability, ShopBench task type and metric, the raw sources it needs (ids of
`sources.registry.SOURCES`, whose licences its examples carry), the languages it asks in, its instruction
paraphrases, and a builder that turns raw records into examples. Capability modules register their subtasks
here with `@subtask`; `tasks.catalog.all_subtasks()` imports them, so this module imports none of them.

The last paraphrase of every subtask is reserved for the held-out benchmark (`shoptune data heldout`):
training prompts never use it, so the benchmark also measures whether a skill survives a new wording.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property
from typing import Any

from shoptune.errors import ShoptuneError
from shoptune.metrics import known_metric, metric_def
from shoptune.schema import Example, TaskType
from shoptune.sources.records import RawCorpus
from shoptune.sources.registry import SOURCE_BY_ID


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

    @classmethod
    def _missing_(cls, value: object) -> Capability | None:
        """`Capability("concepts")` and a config's `capabilities: [concepts]` take any of the three names."""
        return next((c for c in cls if value in (c.short, c.track)), None)

    @classmethod
    def named(cls, name: str) -> Capability:
        """A capability by its name, short name or ShopBench track id."""
        for capability in cls:
            if name in (capability.value, capability.short, capability.track):
                return capability
        known = ", ".join(c.short for c in cls)
        raise ShoptuneError(f"unknown capability {name!r}; expected one of {known} (or the long or track name)")


def short_name(track: str) -> str:
    """A ShopBench track id as tables show it ("concepts"); a track shoptune does not know keeps its id."""
    return next((c.short for c in Capability if c.track == track), track)


def track_order(track: str) -> tuple[int, str]:
    """The competition's order (concepts, knowledge, behavior, multilingual), then any other track by name."""
    known = [c.track for c in Capability]
    return (known.index(track) if track in known else len(known), track)


Builder = Callable[["Subtask", RawCorpus, random.Random], "Example | None"]


@dataclass(frozen=True)
class Subtask:
    name: str
    capability: Capability
    task_type: TaskType
    metric: str  # a `Metric` or a registered metric's name
    sources: tuple[str, ...]  # ids of the raw sources it needs, all of them
    languages: tuple[str, ...]  # of its prompts and answers
    description: str
    templates: tuple[str, ...]  # the last one is reserved for the held-out benchmark
    draw: Builder  # one example from a random draw, or None when the draw does not fit
    heldout: bool = False  # draws use the reserved paraphrase instead of the training ones
    # The RawCorpus fields its draws read (default: all those its sources fill): a shop's own tables that fill
    # them feed it too.
    reads: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.reads:
            fills = [field for s in self.sources for field in SOURCE_BY_ID[s].fills]
            object.__setattr__(self, "reads", tuple(dict.fromkeys(fills)))

    @cached_property
    def source(self) -> str:
        return "+".join(self.sources)

    @cached_property
    def licences(self) -> tuple[str, ...]:
        return tuple(sorted({SOURCE_BY_ID[s].licence for s in self.sources}))

    @cached_property
    def licence(self) -> str:
        """What its examples carry: the licence of its source (several joined with '+')."""
        return "+".join(self.licences)

    def for_heldout(self) -> Subtask:
        return dataclasses.replace(self, heldout=True)

    def example(self, prompt: str, answer: Any, language: str = "en") -> Example:
        """A record of this subtask, not yet validated: `build` validates the draws it keeps, so a draw that repeats
        an earlier prompt (most of them, once a small source is used up) costs no validation. The id is a content
        hash, so the same example is the same id everywhere."""
        ident = hashlib.sha1(f"{self.name}\x00{prompt}".encode()).hexdigest()[:16]
        return Example.model_construct(
            input_field=prompt,
            output_field=answer,
            task_name=self.name,
            task_type=self.task_type,
            metric=self.metric,
            is_multiple_choice=self.task_type is TaskType.MULTIPLE_CHOICE,
            track=self.capability.track,
            capability=self.capability.value,
            source=self.source,
            licence=self.licence,
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
            seen[ex.input_field] = Example.model_validate(ex.__dict__)
            misses = 0
        return list(seen.values())


_REGISTRY: dict[str, Subtask] = {}


def subtask(
    *,
    name: str,
    capability: Capability,
    task_type: TaskType,
    metric: str,
    sources: Sequence[str],
    description: str,
    templates: Sequence[str],
    languages: Sequence[str] = ("en",),
    reads: Sequence[str] = (),
) -> Callable[[Builder], Builder]:
    """Register a builder as a subtask; at least three paraphrased instructions keep prompts varied (two for
    training, the last for the held-out benchmark)."""
    if len(templates) < 3:
        raise ValueError(f"subtask {name}: give at least 3 instruction templates")
    unknown = [s for s in sources if s not in SOURCE_BY_ID]
    if unknown or not sources:
        raise ValueError(f"subtask {name}: name its sources among {sorted(SOURCE_BY_ID)} (got {list(sources)})")
    if not known_metric(metric):
        raise ValueError(f"subtask {name}: unknown metric {metric!r} (register_metric it first)")
    if metric_def(metric).task_type is not task_type:
        raise ValueError(f"subtask {name}: metric {metric} does not score {task_type}")

    def register(draw: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"subtask {name} registered twice")
        _REGISTRY[name] = Subtask(
            name,
            capability,
            task_type,
            metric,
            tuple(sources),
            tuple(languages),
            description,
            tuple(templates),
            draw,
            reads=tuple(reads),
        )
        return draw

    return register


def registered() -> dict[str, Subtask]:
    """What has registered so far; `tasks.catalog.all_subtasks()` is every subtask."""
    return dict(_REGISTRY)


def licence_allows(licence: str, allowed: Sequence[str]) -> bool:
    """Whether every licence of an example ('+'-joined) is in the allow-list."""
    return all(part in allowed for part in licence.split("+"))
