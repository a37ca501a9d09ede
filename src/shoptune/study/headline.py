"""The report's headline: what the tuning adds over the strongest untuned baseline, and how much of it is form.

Per evaluation set: answers that need no model (`evaluate.baselines`), the base model and the tuned one (the most
diverse design at its largest rank), each answering plainly and under the settings chosen for it on a validation
split (`study.runner.choose_settings`). The headline difference is tuned-best minus base-best, with its paired
bootstrap interval; plain answering has columns of its own. The form/content split says, per task type, how many
answers the official parser reads in full and how the models score where both answers parse.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from shoptune.evaluate.baselines import constant_answers
from shoptune.evaluate.constraints import well_formed
from shoptune.evaluate.scoring import aggregate, label_shares, score_questions
from shoptune.files import read_state
from shoptune.schema import Example, read_examples
from shoptune.study.compare import answers_of, paired
from shoptune.study.spec import BUDGET, PLAIN, StudySpec, scored_name


def top_cell(overall: pd.DataFrame) -> pd.Series | None:
    """The tuned cell a headline is about: the most diverse trained design at its largest rank, first seed (a
    combination of adapters or an ensemble is compared in its own section)."""
    trained = overall[(overall.design != "base") & ~overall.design.str.startswith(("combined-", "ensemble"))]
    if trained.empty:
        return None
    top = trained[trained.n_subtasks == trained.n_subtasks.max()]
    return top[top["rank"] == top["rank"].max()].sort_values("seed").iloc[0]


def validation_used(out: Path, table: pd.DataFrame) -> Path | None:
    """The validation split answering settings were chosen on (the base model's, else a trained cell's), where the
    no-model baseline's label is chosen too; None when no cell chose on one."""
    cells = table.sort_values("design", key=lambda d: d != "base").cell.unique()
    for cell in cells:
        chosen = choice_of(out, cell).get("set")
        if chosen and Path(chosen).is_file():
            return Path(chosen)
    return None


def choice_of(out: Path, cell: str) -> dict[str, Any]:
    """The answering settings a cell chose and the validation scores it chose by (plain, unscored, when none)."""
    return read_state(out / "cells" / cell / "result.json").get("choice") or {"best": PLAIN, "scores": {}}


def headline(
    out: Path, table: pd.DataFrame, study: StudySpec, sets: dict[str, Path], validation: Path | None = None
) -> dict[str, Any]:
    """baselines.json: per set, {constant, constant_upper_bound, base, base_best, tuned, tuned_best, difference, ci,
    settings, plain}. The no-model baseline's multiple-choice label is chosen on `validation` (the split the base
    model's settings are chosen on), and, as an upper bound, on the set itself."""
    found: dict[str, Any] = {}
    overall = table[table.level == "overall"]
    score = overall.set_index(["cell", "eval_set"]).score
    reference = read_examples(validation) if validation is not None else None
    for eval_set, path in sets.items():
        examples = read_examples(path)
        entry: dict[str, Any] = {}
        for key, chosen_on in (("constant", reference), ("constant_upper_bound", None)):
            if key == "constant" and chosen_on is None:
                continue
            responses, said = constant_answers(examples, chosen_on)
            entry[key] = aggregate(score_questions(examples, responses), n_bootstrap=0).overall
            entry[f"{key}_answers"] = said
        here = overall[overall.eval_set == eval_set]
        base = here[here.design == "base"]
        top = top_cell(here)
        sides: dict[str, tuple[str, str]] = {}  # side -> (cell, chosen settings)
        choices = {}
        if not base.empty:
            choices["base"] = choice_of(out, base.cell.iloc[0])
            sides["base"] = (base.cell.iloc[0], choices["base"]["best"])
        if top is not None:
            choices["tuned"] = choice_of(out, top.cell)
            sides["tuned"] = (top.cell, choices["tuned"]["best"])
            entry["tuned_cell"] = f"{top.design} r{int(top['rank'])} s{int(top.seed)}"
        for side, (cell, settings) in sides.items():
            entry[side] = float(score[(cell, eval_set)])
            entry[f"{side}_best"] = float(score[(cell, scored_name(eval_set, settings))])
        if len(sides) == 2:
            (tuned, tuned_settings), (base_cell, base_settings) = sides["tuned"], sides["base"]
            labels = (scored_name(eval_set, tuned_settings), scored_name(eval_set, base_settings))
            best = paired(out, (tuned, base_cell), labels, examples)
            plain = paired(out, (tuned, base_cell), (eval_set, eval_set), examples)
            entry["difference"] = entry["tuned_best"] - entry["base_best"]
            entry["ci"] = [best["ci_low"], best["ci_high"]]
            entry["plain"] = {"difference": entry["tuned"] - entry["base"], "ci": [plain["ci_low"], plain["ci_high"]]}
            pairs = {"plain": (eval_set, eval_set)}
            if (base_settings, tuned_settings) != (PLAIN, PLAIN):
                pairs["best"] = (scored_name(eval_set, base_settings), scored_name(eval_set, tuned_settings))
            entry["mc_labels"] = {"truth": label_shares(examples)} | {
                name: label_shares(examples, answers_of(out, cell, label, examples))
                for name, (cell, label) in {
                    "base plain": (base_cell, eval_set),
                    "base best": (base_cell, labels[1]),
                    "tuned plain": (tuned, eval_set),
                    "tuned best": (tuned, labels[0]),
                }.items()
            }
            entry["form_content"] = {
                answering: form_content(
                    examples, answers_of(out, base_cell, base_label, examples), answers_of(out, tuned, label, examples)
                )
                for answering, (base_label, label) in pairs.items()
            }
        entry["settings"] = {
            side: {
                "name": settings,
                "turns_on": study.eval.best_of.get(settings, {}),
                "validation": choices[side]["scores"],  # what it was chosen by
            }
            for side, (_cell, settings) in sides.items()
        }
        found[eval_set] = entry
    return found


def form_content(examples: list[Example], base: list[str], tuned: list[str]) -> dict[str, dict[str, Any]]:
    """Per task type: the share of each model's answers the official parser reads in full, and each model's mean
    task score over the questions where both answers parse (its content, with form taken out)."""
    out: dict[str, dict[str, Any]] = {}
    for kind in dict.fromkeys(ex.task_type for ex in examples):
        idx = [i for i, ex in enumerate(examples) if ex.task_type is kind]
        ok = {
            side: [well_formed(kind, examples[i].input_field, answers[i]) for i in idx]
            for side, answers in (("base", base), ("tuned", tuned))
        }
        both = [i for i, a, b in zip(idx, ok["base"], ok["tuned"], strict=True) if a and b]
        entry: dict[str, Any] = {
            "n": len(idx),
            "base_parses": sum(ok["base"]) / len(idx),
            "tuned_parses": sum(ok["tuned"]) / len(idx),
            "both_parse": len(both),
        }
        if both:
            subset = [examples[i] for i in both]
            for side, answers in (("base", base), ("tuned", tuned)):
                tasks = aggregate(score_questions(subset, [answers[i] for i in both]), n_bootstrap=0).tasks
                entry[f"{side}_where_both_parse"] = sum(t.score for t in tasks.values()) / len(tasks)
        out[kind.value] = entry
    return out


def headline_lines(found: dict[str, Any]) -> list[str]:
    lines = [
        "## What the tuning adds over the strongest untuned baseline",
        "",
        "Each model answers plainly and under the answering settings chosen for it on a validation split (never on "
        "a benchmark): plain, constrained answers, debiased multiple choice, or both. The headline is tuned minus "
        "base with each under its best settings (paired bootstrap 95%); both answering plainly, the last two columns. "
        "The no-model baseline answers every multiple-choice question with one option label, retrieval with the "
        "first three listed, ranking in the listed order, NER with no entities and generation with the prompt's own "
        "input text. Its label is chosen on the validation split (what a user could have had), and, in the column "
        "after it, on the scored set itself: an upper bound, not a baseline anyone could have had.",
        "",
        "| set | no model | no model, upper bound | base plain | base best | tuned plain | tuned best "
        "| best minus best | 95% CI | plain minus plain | 95% CI |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | --- |",
    ]
    for eval_set, e in found.items():

        def side(name: str, e: dict[str, Any] = e) -> tuple[str, str]:
            if name not in e:
                return "not run", "not run"
            return f"{e[name]:.4f}", f"{e[name + '_best']:.4f} ({e['settings'][name]['name']})"

        (base, base_best), (tuned, tuned_best) = side("base"), side("tuned")
        diff = f"{e['difference']:+.4f} | [{e['ci'][0]:+.4f}, {e['ci'][1]:+.4f}]" if "ci" in e else " | "
        plain = e.get("plain")
        plain_diff = f"{plain['difference']:+.4f} | [{plain['ci'][0]:+.4f}, {plain['ci'][1]:+.4f}]" if plain else " | "
        constant = f"{e['constant']:.4f}" if "constant" in e else "-"
        lines.append(
            f"| {eval_set} | {constant} | {e['constant_upper_bound']:.4f} | {base} | {base_best} | {tuned} | "
            f"{tuned_best} | {diff} | {plain_diff} |"
        )
    tuned = sorted({e["tuned_cell"] for e in found.values() if "tuned_cell" in e})
    lines += ["", f"Tuned model: {', '.join(tuned)}.", ""] if tuned else [""]
    settings = next(iter(found.values()), {}).get("settings", {})
    for side, chosen in settings.items():
        if chosen["validation"]:
            scores = ", ".join(f"{name} {value:.4f}" for name, value in chosen["validation"].items())
            lines.append(f"- {side}: {chosen['name']}, chosen on its validation split ({scores}).")
    lines.append("")
    if any("ci" in e for e in found.values()):
        lines += ["![best minus best and plain minus plain](headline.png)", ""]
    lines += label_lines({s: e["mc_labels"] for s, e in found.items() if e.get("mc_labels", {}).get("truth")})
    split = {s: e["form_content"] for s, e in found.items() if "form_content" in e}
    if split:
        lines += [
            "## Form and content",
            "",
            "Per task type: the share of answers the official parser reads in full, and each model's mean task score "
            "over the questions where both models' answers parse, so a difference made by answer form alone shows "
            "as a difference in the parse columns and none in the score columns.",
            "",
            "| set | answering | task type | questions | base parses | tuned parses | both parse | base there | "
            "tuned there |",
            "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for eval_set, pairs in split.items():
            for answering, kinds in pairs.items():
                for kind, r in kinds.items():
                    there = [
                        f"{r[k]:.3f}" if k in r else "none parse"
                        for k in ("base_where_both_parse", "tuned_where_both_parse")
                    ]
                    lines.append(
                        f"| {eval_set} | {answering} | {kind} | {r['n']} | {r['base_parses']:.2f} | "
                        f"{r['tuned_parses']:.2f} | {r['both_parse']} | {there[0]} | {there[1]} |"
                    )
        lines.append("")
    return lines


def label_lines(found: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    if not found:
        return []
    labels = sorted({k for shares in found.values() for row in shares.values() for k in row if k != "other"})
    lines = [
        "## Multiple-choice answers by label",
        "",
        "The share of multiple-choice questions each model answered with each option label, beside the reference "
        "answers' shares: a model that learnt its training data's label prior instead of the questions answers one "
        "label far more often than the truth has it. The last column is the largest gap from the truth's share.",
        "",
        f"| set | answers | {' | '.join(labels)} | other | largest gap |",
        f"| --- | --- | {'---: | ' * len(labels)}---: | ---: |",
    ]
    for eval_set, shares in found.items():
        truth = shares["truth"]
        for name, row in shares.items():
            gap = max(abs(row.get(k, 0.0) - truth.get(k, 0.0)) for k in [*labels, "other"])
            cells = " | ".join(f"{row.get(k, 0.0):.2f}" for k in [*labels, "other"])
            lines.append(f"| {eval_set} | {name} | {cells} | {'-' if name == 'truth' else f'{gap:.2f}'} |")
    lines.append("")
    return lines


def budget(out: Path, table: pd.DataFrame, sets: dict[str, Path], found: dict[str, Any]) -> list[dict[str, Any]]:
    """The budget curve: each kept step of a training run (the `checkpoints` cells), tuned-best minus base-best
    with its paired interval and plain minus plain, on every set, beside the no-model baselines."""
    overall = table[table.level == "overall"]
    kept = overall[overall.groups == BUDGET]
    base = overall[overall.design == "base"]
    if kept.empty or base.empty:
        return []
    step_of = {cell: int(design.rsplit("@", 1)[1]) for cell, design in zip(kept.cell, kept.design, strict=True)}
    for cell in kept.cell.unique():  # the run's own end is a point of its curve too
        parent = read_state(out / "cells" / cell / "result.json")["cell"]["parts"][0]
        step_of[parent] = int((read_state(out / "cells" / parent / "result.json").get("train") or {})["steps"])
    steps = overall[overall.cell.isin(step_of)]
    score = overall.set_index(["cell", "eval_set"]).score
    base_cell = base.cell.iloc[0]
    base_choice = choice_of(out, base_cell)["best"]
    rows = []
    for eval_set, path in sets.items():
        examples = read_examples(path)
        base_label = scored_name(eval_set, base_choice)
        for r in steps[steps.eval_set == eval_set].itertuples():
            chosen = choice_of(out, r.cell)["best"]
            label = scored_name(eval_set, chosen)
            best = paired(out, (r.cell, base_cell), (label, base_label), examples)
            plain = paired(out, (r.cell, base_cell), (eval_set, eval_set), examples)
            entry = found.get(eval_set, {})
            rows.append(
                {
                    "set": eval_set,
                    "step": step_of[r.cell],
                    "cell": r.cell,
                    "settings": chosen,
                    "tuned": float(score[(r.cell, eval_set)]),
                    "tuned_best": float(score[(r.cell, label)]),
                    "base": float(score[(base_cell, eval_set)]),
                    "base_best": float(score[(base_cell, base_label)]),
                    "difference": best["difference"],
                    "ci": [best["ci_low"], best["ci_high"]],
                    "plain_difference": plain["difference"],
                    "plain_ci": [plain["ci_low"], plain["ci_high"]],
                    "constant": entry.get("constant"),
                    "constant_upper_bound": entry.get("constant_upper_bound"),
                }
            )
    return sorted(rows, key=lambda row: (row["set"], row["step"]))


def budget_lines(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "## The training budget: what each kept step of one run adds",
        "",
        "Each step's adapter is scored like a trained cell (its answering settings chosen on the validation split), "
        "against the base model under its own best settings; paired bootstrap 95%. The no-model baselines are "
        "shown as differences from the base model's best, as in the plot's dashed lines.",
        "",
        "![budget](budget.png)",
        "",
        "| set | step | tuned best (settings) | base best | best minus best | 95% CI | plain minus plain | 95% CI | "
        "no model | no model, upper bound |",
        "| --- | ---: | ---: | ---: | ---: | --- | ---: | --- | ---: | ---: |",
    ]
    for r in rows:
        constant = f"{r['constant']:.4f}" if r["constant"] is not None else "-"
        upper = f"{r['constant_upper_bound']:.4f}" if r["constant_upper_bound"] is not None else "-"
        lines.append(
            f"| {r['set']} | {r['step']} | {r['tuned_best']:.4f} ({r['settings']}) | {r['base_best']:.4f} | "
            f"{r['difference']:+.4f} | [{r['ci'][0]:+.4f}, {r['ci'][1]:+.4f}] | {r['plain_difference']:+.4f} | "
            f"[{r['plain_ci'][0]:+.4f}, {r['plain_ci'][1]:+.4f}] | {constant} | {upper} |"
        )
    lines.append("")
    return lines
