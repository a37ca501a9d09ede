"""Side-by-side comparisons for the report, each on the same questions with paired bootstrap intervals:
evaluation variants against plain answering (constrained answers, debiased multiple choice, wise-ft), and
capability adapters (alone, combined, as an ensemble) against the single all-capability LoRA."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shoptune.evaluate.constraints import well_formed
from shoptune.evaluate.predictions import read_predictions
from shoptune.evaluate.scoring import QuestionScore, paired_interval, paired_overall_samples, score_questions
from shoptune.schema import Example, read_examples
from shoptune.study.spec import VARIANT


def answers_of(out: Path, cell: str, eval_set: str, examples: list[Example]) -> list[str]:
    answers = read_predictions(out / "cells" / cell / "eval" / eval_set / "predictions.jsonl", len(examples))
    return [answers.get(i, "") for i in range(len(examples))]


def question_scores(out: Path, cell: str, eval_set: str, examples: list[Example]) -> list[QuestionScore]:
    return score_questions(examples, answers_of(out, cell, eval_set, examples))


def paired(out: Path, cells: tuple[str, str], sets: tuple[str, str], examples: list[Example]) -> dict[str, float]:
    """First minus second, overall, with its paired bootstrap 95% interval."""
    samples = paired_overall_samples([question_scores(out, c, s, examples) for c, s in zip(cells, sets, strict=True)])
    differences = samples[0] - samples[1]
    mean = float(np.mean(differences))
    low, high = paired_interval(differences, mean)
    return {"difference": mean, "ci_low": low, "ci_high": high}


def parse_share(out: Path, cell: str, eval_set: str, examples: list[Example]) -> float:
    """The share of answers the official parser reads in full (`constraints.well_formed`)."""
    answers = answers_of(out, cell, eval_set, examples)
    ok = [well_formed(ex.task_type, ex.input_field, a) for ex, a in zip(examples, answers, strict=True)]
    return sum(ok) / len(ok)


def by_task_type(table: pd.DataFrame, cell: str, eval_set: str) -> dict[str, float]:
    """Mean task score per task type (ShopBench averages tasks within tracks; this reads across them)."""
    rows = table[(table.cell == cell) & (table.eval_set == eval_set) & (table.level == "task")]
    return rows.groupby("task_type").score.mean().to_dict()


def _overall(table: pd.DataFrame, cell: str, eval_set: str) -> float:
    rows = table[(table.cell == cell) & (table.eval_set == eval_set) & (table.level == "overall")]
    return float(rows.score.iloc[0])


def _label(table: pd.DataFrame, cell: str) -> str:
    row = table[table.cell == cell].iloc[0]
    return "base" if row.design == "base" else f"{row.design} r{row['rank']} s{row.seed}"


def variants(out: Path, table: pd.DataFrame, sets: dict[str, Path]) -> list[dict[str, Any]]:
    """Every cell under every variant against the same cell answering plainly, per set."""
    rows = []
    present = set(table.eval_set)
    for eval_set, path in sets.items():
        examples = read_examples(path)
        labels = sorted(s for s in present if s.startswith(eval_set + VARIANT))
        for cell in table.cell.unique():
            for label in labels:
                if not ((table.cell == cell) & (table.eval_set == label)).any():
                    continue
                rows.append(
                    {
                        "eval_set": eval_set,
                        "variant": label.removeprefix(eval_set + VARIANT),
                        "cell": cell,
                        "who": _label(table, cell),
                        "plain": _overall(table, cell, eval_set),
                        "with": _overall(table, cell, label),
                        **paired(out, (cell, cell), (label, eval_set), examples),
                        "parse_plain": parse_share(out, cell, eval_set, examples),
                        "parse_with": parse_share(out, cell, label, examples),
                        "types_plain": by_task_type(table, cell, eval_set),
                        "types_with": by_task_type(table, cell, label),
                    }
                )
    return rows


def _section(title: str, intro: str, header: str, align: str, rows: list[str]) -> list[str]:
    return [f"## {title}", "", intro, "", header, align, *rows]


def variant_lines(rows: list[dict[str, Any]]) -> list[str]:
    lines = _section(
        "Evaluation variants against plain answering: paired bootstrap, 95%",
        "The same cell and questions, answered plainly and under each variant; parse: the share of answers the "
        "official parser reads in full.",
        "| set | variant | model | plain | with | difference | 95% CI | parse plain | parse with |",
        "| --- | --- | --- | ---: | ---: | ---: | --- | ---: | ---: |",
        [
            f"| {r['eval_set']} | {r['variant']} | {r['who']} | {r['plain']:.4f} | {r['with']:.4f} | "
            f"{r['difference']:+.4f} | [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}] | {r['parse_plain']:.2f} | "
            f"{r['parse_with']:.2f} |"
            for r in rows
        ],
    )
    types = sorted({t for r in rows for t in r["types_plain"]})
    lines += [
        "",
        "Per task type (mean task score), plain -> with the variant:",
        "",
        "| set | variant | model | " + " | ".join(types) + " |",
        "| --- | --- | --- | " + " | ".join("---" for _ in types) + " |",
    ]
    for r in rows:
        cells = [
            f"{r['types_plain'][t]:.3f} -> {r['types_with'][t]:.3f}" if t in r["types_plain"] else "-" for t in types
        ]
        lines.append(f"| {r['eval_set']} | {r['variant']} | {r['who']} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def adapters(out: Path, table: pd.DataFrame, sets: dict[str, Path]) -> list[dict[str, Any]]:
    """Each cell of the adapters design against the single LoRA on every capability (the capability design's most
    diverse cell of the same model, rank and seed), per set."""
    overall = table[table.level == "overall"].drop_duplicates("cell")
    single = overall[overall.groups.str.contains("capability")]
    rows = []
    for r in overall[overall.groups.str.contains("adapters")].itertuples():
        same = single[(single.model == r.model) & (single["rank"] == r.rank) & (single.seed == r.seed)]
        if same.empty:
            continue
        reference = same.sort_values("n_capabilities").cell.iloc[-1]
        for eval_set, path in sets.items():
            examples = read_examples(path)
            rows.append(
                {
                    "eval_set": eval_set,
                    "design": r.design,
                    "reference": _label(table, reference),
                    "score": _overall(table, r.cell, eval_set),
                    "reference_score": _overall(table, reference, eval_set),
                    **paired(out, (r.cell, reference), (eval_set, eval_set), examples),
                }
            )
    return rows


def adapter_lines(rows: list[dict[str, Any]]) -> list[str]:
    lines = _section(
        "Capability adapters against one LoRA on every capability: paired bootstrap, 95%",
        "One adapter per capability, alone; combined into one (`shoptune combine`); and answering together "
        "(ensemble: mean option scores for multiple choice, the exact linear combination elsewhere).",
        "| set | design | overall | single LoRA | difference | 95% CI |",
        "| --- | --- | ---: | ---: | ---: | --- |",
        [
            f"| {r['eval_set']} | {r['design']} | {r['score']:.4f} | {r['reference_score']:.4f} | "
            f"{r['difference']:+.4f} | [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}] |"
            for r in rows
        ],
    )
    return [*lines, ""]
