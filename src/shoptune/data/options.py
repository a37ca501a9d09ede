"""Multiple choice that teaches the question, not the label.

A model tuned on multiple-choice examples whose right answers sit more often at some positions learns those
positions: the untuned default model answers `1` to 269 of 270 held-out questions, the one tuned on the main job's
mixture `1` to 184 (that mixture held 153, 142, 86 and 82 right answers at positions 0 to 3: the draws fall
unevenly, and two-option subtasks answer only 0 or 1). So in a built mixture's training split each multiple-choice
example's options are reordered: the right option is moved to a position
chosen so that, within each subtask and number of options, every position is the answer equally often (counts
differ by one at most). The options' texts are kept, only their places change (the right one swaps places with
the one at its new position), and the answer label follows its option. The validation split is left as its sources
pose it: answering settings and the no-model label are chosen there, on the questions as a user meets them.

Only a question whose options are one block of consecutive lines labelled 0, 1, 2, ... in order (ShopBench's
layout, and every shipped subtask's) is reordered; any other is left as it is. A mixture's manifest counts its
right answers by position (`multiple_choice_answers`).
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

OPTION = re.compile(r"^(\s*)(\d)\.(\s.*)$")


def option_lines(prompt: str) -> list[int] | None:
    """The indices of the prompt's lines that hold its options, labelled 0..k-1 in order, or None."""
    lines = prompt.split("\n")
    found = [(i, OPTION.match(line)) for i, line in enumerate(lines)]
    numbered = [(i, int(m.group(2))) for i, m in found if m is not None]
    if len(numbered) < 2:
        return None
    positions = [i for i, _ in numbered]
    labels = [label for _, label in numbered]
    if labels != list(range(len(labels))) or positions != list(range(positions[0], positions[0] + len(labels))):
        return None
    return positions


def moved(prompt: str, answer: int, target: int) -> tuple[str, int]:
    """The prompt with the right option (at `answer`) and the option at `target` swapping texts; the new answer."""
    positions = option_lines(prompt)
    assert positions is not None and 0 <= answer < len(positions) and 0 <= target < len(positions)
    lines = prompt.split("\n")
    first, second = OPTION.match(lines[positions[answer]]), OPTION.match(lines[positions[target]])
    assert first is not None and second is not None
    lines[positions[answer]] = f"{first.group(1)}{answer}.{second.group(3)}"
    lines[positions[target]] = f"{second.group(1)}{target}.{first.group(3)}"
    return "\n".join(lines), target


def balance(rows: Sequence[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """Rows (ShopBench records as dicts, multiple choice among them) with each subtask's right answers spread evenly
    over positions, per number of options; the others unchanged."""
    out = [dict(row) for row in rows]
    groups: dict[tuple[str, int], list[int]] = {}
    for i, row in enumerate(out):
        if row["task_type"] != "multiple-choice":
            continue
        positions = option_lines(row["input_field"])
        answer = row["output_field"]
        if positions is not None and isinstance(answer, int) and 0 <= answer < len(positions):
            groups.setdefault((row["task_name"], len(positions)), []).append(i)
    for (task, count), members in sorted(groups.items()):
        rng = random.Random(f"{seed}:options:{task}:{count}")
        rng.shuffle(members)
        placed: Counter[int] = Counter({position: 0 for position in range(count)})
        for i in members:
            fewest = min(placed.values())
            target = rng.choice([p for p, n in sorted(placed.items()) if n == fewest])
            placed[target] += 1
            out[i]["input_field"], out[i]["output_field"] = moved(out[i]["input_field"], out[i]["output_field"], target)
    return out
