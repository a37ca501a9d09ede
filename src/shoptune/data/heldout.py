"""`shoptune data heldout --out FILE`: the held-out benchmark, ShopBench-format questions no mixture trains on.

The 96 ShopBench development questions cannot resolve a gain under about 0.1; this benchmark is large
enough to. Its items come from raw data that training never reads (the matching sets' validation and
test splits, held-out taxonomy subtrees: `sources.partition`), worded with each subtask's
reserved paraphrase, and every shipped mixture spec decontaminates against it as well. The same raw
data and seed give the same file.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from shoptune import __version__
from shoptune.errors import ShoptuneError
from shoptune.files import atomic_write_text
from shoptune.schema import Example, write_jsonl
from shoptune.sources.mapped import lacks, load_sources, own_corpus, provenance
from shoptune.sources.partition import HELDOUT_PERCENT, HELDOUT_SUBTREES_PERCENT
from shoptune.sources.registry import MATCHING_SPLITS, load_raw
from shoptune.tasks.catalog import all_subtasks, declared_subtasks

DEFAULT_PATH = Path("data/heldout/heldout.jsonl")
PER_SUBTASK = 100


def build_heldout(raw_dir: Path, per_subtask: int = PER_SUBTASK, seed: int = 0) -> tuple[list[Example], dict[str, Any]]:
    """Up to per_subtask questions of every subtask the held-out part of the raw data supports, subtask by subtask."""
    corpus = load_raw(raw_dir, "heldout")
    examples: list[Example] = []
    for task in all_subtasks().values():
        if set(task.sources) <= corpus.present:
            examples.extend(task.for_heldout().build(corpus, per_subtask, seed))
    if not examples:
        raise ShoptuneError(f"{raw_dir}: the held-out part of the raw data yields no questions")

    def count(field: str) -> dict[str, int]:
        return dict(sorted(Counter(str(getattr(ex, field)) for ex in examples).items()))

    info = {
        "shoptune": __version__,
        "questions": len(examples),
        "per_subtask": per_subtask,
        "seed": seed,
        "by_subtask": count("task_name"),
        "by_task_type": count("task_type"),
        "by_track": count("track"),
        "by_language": count("language"),
        "held_out_from": {
            "product-matching": f"the {' and '.join(MATCHING_SPLITS['heldout'])} splits",
            "google-taxonomy, google-taxonomy-2015": (
                f"second-level subtrees whose path hash falls in {HELDOUT_SUBTREES_PERCENT}% (ids aligned across "
                "languages and versions)"
            ),
            "contextual-product-qa": (
                "semiPQA testseen/testunseen and test_seen/test_unseen, hetPQA answer_generation test; hetPQA "
                f"evidence_ranking and ePQA (dev only): questions whose id hash falls in {HELDOUT_PERCENT}%"
            ),
            "amazon-multilingual-counterfactual": "the *_test files",
            "wands": f"product classes whose hash falls in {HELDOUT_PERCENT}%, with all their queries",
            "wording": "each subtask's last (reserved) instruction paraphrase",
        },
        "inputs_sha256": dict(sorted(corpus.sources.items())),
    }
    return examples, info


def build_own_heldout(
    files: list[Path], per_subtask: int = PER_SUBTASK, seed: int = 0
) -> tuple[list[Example], dict[str, Any]]:
    """Your held-out benchmark: the held-out part of your tables (by each entry's grouping key), every subtask it
    feeds, worded with the reserved paraphrases; no mixture reads these records."""
    examples: list[Example] = []
    hashes: dict[str, str] = {}
    keys: dict[str, str] = {}
    for file in files:
        sources = load_sources(file, "heldout")
        corpus = own_corpus(sources)
        hashes.update(corpus.sources)
        keys.update({s.id: f"{s.kind}: {s.heldout_key} ({s.heldout_share:.0%} of groups)" for s in sources})
        for task in {**all_subtasks(), **declared_subtasks([file])}.values():
            if not lacks(corpus, task.reads, task.languages):
                built = task.for_heldout().build(corpus, per_subtask, seed)
                carried = provenance(corpus, task.reads)
                examples.extend(ex.model_copy(update=carried) for ex in built)
    if not examples:
        raise ShoptuneError(f"{', '.join(map(str, files))}: the held-out part of your tables yields no questions")
    info = {
        "shoptune": __version__,
        "questions": len(examples),
        "per_subtask": per_subtask,
        "seed": seed,
        **{key: dict(sorted(Counter(str(getattr(ex, f)) for ex in examples).items())) for key, f in COUNTED.items()},
        "held_out_by": keys,
        "inputs_sha256": dict(sorted(hashes.items())),
    }
    return examples, info


COUNTED = {
    "by_subtask": "task_name",
    "by_task_type": "task_type",
    "by_track": "track",
    "by_language": "language",
    "by_source": "source",
    "by_licence": "licence",
}


def write_heldout(examples: list[Example], info: dict[str, Any], out: Path) -> Path:
    """FILE and FILE's manifest (`<stem>.manifest.json`), each written under a temporary name and renamed."""
    if out.is_dir():
        raise ShoptuneError(f"--out {out}: is a directory, expected a file name such as {DEFAULT_PATH}")
    write_jsonl(out, (ex.to_json() for ex in examples))
    manifest = out.with_name(f"{out.stem}.manifest.json")
    atomic_write_text(manifest, json.dumps(info, indent=2, ensure_ascii=False) + "\n")
    return manifest
