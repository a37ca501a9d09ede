"""Which questions of a set an evaluation answers, as lm-evaluation-harness users choose them: `tasks` (task names,
tracks by any of their names, task types, glob patterns), `limit_per_task` (the first N of every task) and `limit`
(N in all, spread across the tasks in turn, so a small limit still samples every task it can)."""

from __future__ import annotations

import fnmatch
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from shoptune.errors import ShoptuneError
from shoptune.schema import Example
from shoptune.tasks.registry import Capability, short_name


@dataclass(frozen=True)
class Selection:
    indices: list[int]  # into the set, in file order: predictions keep the set's own numbering
    total: int
    tasks: list[str]  # the tasks kept, in file order
    all_tasks: list[str]
    tracks: list[str]  # short names of the tracks kept
    all_tracks: list[str]

    @property
    def partial(self) -> bool:
        return len(self.indices) < self.total

    def describe(self) -> str:
        """One line for the console: what was kept, and which tracks an overall score then stands for."""
        line = f"scored {len(self.indices)} of {self.total} questions, {len(self.tasks)} of {len(self.all_tasks)} tasks"
        left_out = [t for t in self.all_tracks if t not in self.tracks]
        if left_out:
            line += f"; the overall score is over {', '.join(self.tracks)} only, without {', '.join(left_out)}"
        return line


def _matches(pattern: str, ex: Example) -> bool:
    track = next((c.track for c in Capability if pattern in (c.value, c.short, c.track)), None)
    if track is not None:
        return ex.track == track
    return any(fnmatch.fnmatchcase(name, pattern) for name in (ex.task_name, ex.track, ex.task_type.value))


def select(
    examples: Sequence[Example],
    tasks: Sequence[str] | None = None,
    limit_per_task: int | None = None,
    limit: int | None = None,
) -> Selection:
    by_task: dict[str, list[int]] = defaultdict(list)
    for i, ex in enumerate(examples):
        by_task[ex.task_name].append(i)
    if tasks:
        unmatched = [p for p in tasks if not any(_matches(p, ex) for ex in examples)]
        if unmatched:
            shown = ", ".join(list(by_task)[:12]) + (", ..." if len(by_task) > 12 else "")
            raise ShoptuneError(
                f"--tasks {', '.join(unmatched)}: matches no question (tasks here: {shown}; or a track, a task type "
                "such as multiple-choice, or a glob such as 'category_*')"
            )
        keep = {i for i, ex in enumerate(examples) if any(_matches(p, ex) for p in tasks)}
        by_task = {name: [i for i in idx if i in keep] for name, idx in by_task.items()}
        by_task = {name: idx for name, idx in by_task.items() if idx}
    if limit_per_task:
        by_task = {name: idx[:limit_per_task] for name, idx in by_task.items()}
    chosen: list[int] = []
    if limit:
        queues = [list(idx) for idx in by_task.values()]
        while len(chosen) < limit and any(queues):
            for queue in queues:
                if queue and len(chosen) < limit:
                    chosen.append(queue.pop(0))
    else:
        chosen = [i for idx in by_task.values() for i in idx]
    chosen.sort()
    return Selection(
        indices=chosen,
        total=len(examples),
        tasks=list(dict.fromkeys(examples[i].task_name for i in chosen)),
        all_tasks=list(dict.fromkeys(ex.task_name for ex in examples)),
        tracks=list(dict.fromkeys(short_name(examples[i].track) for i in chosen)),
        all_tracks=list(dict.fromkeys(short_name(ex.track) for ex in examples)),
    )
