"""The mixture spec: a declarative, reproducible choice of capabilities, subtasks and sizes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from shoptune.config import StrictConfig
from shoptune.errors import ShoptuneError
from shoptune.sources.mapped import raw_entries
from shoptune.sources.registry import LICENCES
from shoptune.tasks.catalog import all_subtasks, declared_subtasks
from shoptune.tasks.registry import Capability, Subtask, licence_allows


class NearDuplicates(StrictConfig):
    """A prompt goes when the Jaccard similarity of its word 3-gram shingles with an earlier kept prompt, as
    estimated by MinHash with num_perm permutations (more: a closer estimate, a slower build), reaches the
    threshold."""

    threshold: float = Field(
        0.9, gt=0.0, le=1.0, description="the word 3-gram Jaccard similarity that removes a prompt"
    )
    num_perm: int = Field(64, ge=16, le=512, description="MinHash permutations (more: a closer estimate, slower)")


# A name becomes a folder name (in studies): letters, digits, dot, dash, underscore; no path, no hidden file.
SAFE_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"


class MixtureSpec(StrictConfig):
    name: str = Field(pattern=SAFE_NAME, description="the mixture's name (letters, digits, . - _)")
    seed: int = Field(0, description="draws every example, the splits and the order")
    raw_dir: Path = Field(
        Path("data/raw"), description="the raw data folder (in a spec file, like every path: from the file's folder)"
    )
    capabilities: list[Capability] = Field(
        default_factory=lambda: list(Capability), description="capabilities whose subtasks join (default: all four)"
    )
    subtasks: list[str] | None = Field(
        None, description="only these subtasks, within the capabilities (default: all of theirs)"
    )
    examples_per_subtask: int = Field(1500, ge=1, description="training examples drawn per subtask")
    weights: dict[str, float] = Field(
        default_factory=dict, description="SUBTASK=W: a subtask's multiplier of examples_per_subtask"
    )
    validation_per_subtask: int = Field(50, ge=0, description="examples per subtask held for the validation split")
    repeat: bool = Field(
        False,
        description="where a source has fewer distinct examples than asked, draw them again to reach the size (off: "
        "a subtask gives what its source supports)",
    )
    extra_examples: list[Path] = Field(
        default_factory=list,
        description="JSON Lines of examples (a teacher's, say) that join the training split, after the same cleaning",
    )
    balance_answers: bool = Field(
        True,
        description="multiple choice in the training split: move each right option so that, per subtask and number "
        "of options, every position is the answer equally often (so no favourite label can be learnt); the "
        "validation split keeps its sources' order",
    )
    decontaminate: list[Path] = Field(default_factory=list, description="evaluation sets no example may overlap")
    ngram: int = Field(13, ge=3, le=50, description="word n-grams shared with an evaluation set that contaminate")
    near_duplicates: NearDuplicates | None = Field(default_factory=NearDuplicates)
    licences: list[str] | None = Field(
        None,
        description="an allow-list of licence ids (`shoptune tasks list` shows each subtask's); data under others are "
        "left out (default: any licence)",
    )
    sources: list[Path] = Field(
        default_factory=list, description="sources files mapping a shop's own tables (see the README's 'Your own data')"
    )
    source_weights: dict[str, float] = Field(
        default_factory=dict, description="SOURCE=W: a source's multiplier of the size of the parts it feeds"
    )
    own_data_only: bool = Field(False, description="build from the sources files alone, not from raw_dir")

    @field_validator("capabilities", mode="before")
    @classmethod
    def _capability_names(cls, value: Any) -> Any:
        """Any of a capability's three names (concepts, shopping_concept_understanding, its track id)."""
        if not isinstance(value, list):
            return value
        try:
            return [Capability.named(v) if isinstance(v, str) else v for v in value]
        except ShoptuneError as exc:
            raise ValueError(str(exc)) from None

    @model_validator(mode="after")
    def _known_subtasks(self) -> MixtureSpec:
        known = self.known_subtasks()
        for name in [*(self.subtasks or []), *self.weights]:
            if name not in known:
                raise ValueError(f"unknown subtask {name!r}; `shoptune tasks list` shows them")
        negative = sorted(n for n, w in self.weights.items() if w < 0)
        if negative:
            raise ValueError(f"weights of {negative} are negative; a weight multiplies examples_per_subtask")
        negative = sorted(n for n, w in self.source_weights.items() if w < 0)
        if negative:
            raise ValueError(f"source_weights of {negative} are negative; a weight multiplies its parts' size")
        outside = [n for n in self.subtasks or [] if known[n].capability not in self.capabilities]
        if outside:
            raise ValueError(f"subtasks {outside} belong to capabilities not selected")
        unknown = sorted(set(self.licences or []) - set(LICENCES) - own_licence_ids(self.sources))
        if unknown:
            raise ValueError(f"unknown licence(s) {unknown}; expected ids among {sorted(LICENCES)}")
        return self

    def selected(self) -> list[Subtask]:
        """The subtasks the spec asks for, within its licences, built from the shipped raw data."""
        if self.own_data_only:
            return []
        return [t for t in self.candidates() if t.sources and self.allows(t.licence)]

    def allows(self, licence: str | None) -> bool:
        """Whether data under this licence may join the mixture (data without one only when any licence may)."""
        return self.licences is None or (licence is not None and licence_allows(licence, self.licences))

    def known_subtasks(self) -> dict[str, Subtask]:
        """shoptune's subtasks and those the spec's sources files declare for instruction data."""
        return {**all_subtasks(), **declared_subtasks(self.sources)}

    def candidates(self) -> list[Subtask]:
        """The subtasks the spec asks for, whatever their data's licence (own data carries its own)."""
        chosen = [t for t in self.known_subtasks().values() if t.capability in self.capabilities]
        return [t for t in chosen if t.name in self.subtasks] if self.subtasks is not None else chosen

    def size_of(self, subtask: str) -> int:
        return max(1, round(self.examples_per_subtask * self.weights.get(subtask, 1.0)))


def own_licence_ids(files: list[Path]) -> set[str]:
    """The licence ids that sources files declare (read without reading their tables)."""
    licences = (entry.get("licence") for entry in raw_entries(files))
    return {lic["id"] for lic in licences if isinstance(lic, dict) and isinstance(lic.get("id"), str)}
