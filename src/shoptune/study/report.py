"""`shoptune study report DIR`: the Markdown report and its PNG plots, every number read from the table.

Plots: score against number of capabilities and against number of subtasks (overall and per
track), a rank x diversity heatmap with the synergy estimate, per-track bars against the base model.
Paired bootstrap intervals (same resampled questions for both designs) qualify each step from one
design to the next; the text says only what those intervals and the table support.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shoptune.evaluate.scoring import paired_overall_samples, paired_samples
from shoptune.files import atomic_write_text, read_state
from shoptune.schema import read_examples
from shoptune.study import compare
from shoptune.study.compare import question_scores
from shoptune.study.headline import budget, budget_lines, headline, headline_lines, validation_used
from shoptune.study.results import cells_of, load_table
from shoptune.study.runner import VALIDATION, eval_sets
from shoptune.study.spec import BUDGET, StudySpec, scored_name
from shoptune.tasks.registry import short_name, track_order

AXES = {"capability": ("n_capabilities", "number of capabilities"), "task": ("n_subtasks", "number of subtasks")}


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def progression(table: pd.DataFrame, group: str, eval_set: str) -> pd.DataFrame:
    """Overall and track scores of a group's designs (plus the base model at 0), one row per design x rank."""
    column = AXES[group][0]
    rows = table[
        (table.eval_set == eval_set)
        & (table.level != "task")
        & (table.groups.str.contains(group) | (table.design == "base"))
    ]
    out = rows.pivot_table(index=["design", column, "rank"], columns="name", values="score", aggfunc="mean")
    return out.reset_index().sort_values([column, "rank"])


def plot_progression(table: pd.DataFrame, group: str, eval_set: str, path: Path) -> pd.DataFrame:
    plt = _plt()
    data = progression(table, group, eval_set)
    column, label = AXES[group]
    tracks = sorted((c for c in data.columns if c in set(table.name[table.level == "track"])), key=track_order)
    panels = ["overall", *tracks]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.2), sharey=True, squeeze=False)
    base = data[data.design == "base"]
    for ax, panel in zip(axes[0], panels, strict=True):
        for rank, rows in data[data.design != "base"].groupby("rank"):
            ax.plot(rows[column], rows[panel], marker="o", label=f"LoRA r={rank}")
        if not base.empty:
            ax.axhline(base[panel].mean(), color="grey", linestyle="--", label="base model")
        ax.set_title(short_name(panel))
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"score ({eval_set})")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return data


def heatmap(table: pd.DataFrame, eval_set: str, path: Path) -> tuple[pd.DataFrame, float | None]:
    """Overall score by design (rows, by diversity) and rank (columns); synergy = slope at the largest rank
    minus slope at the smallest, slopes of overall score per added subtask (least squares)."""
    plt = _plt()
    rows = table[(table.eval_set == eval_set) & (table.level == "overall") & (table.design != "base")]
    grid = rows.pivot_table(index=["n_subtasks", "design"], columns="rank", values="score", aggfunc="mean")
    synergy = None
    if grid.shape[1] >= 2 and grid.shape[0] >= 2:
        x = grid.index.get_level_values("n_subtasks").to_numpy(dtype=float)
        slopes = {rank: float(np.polyfit(x, grid[rank].to_numpy(), 1)[0]) for rank in grid.columns}
        synergy = slopes[max(slopes)] - slopes[min(slopes)]
    fig, ax = plt.subplots(figsize=(3.0 + 1.1 * grid.shape[1], 1.4 + 0.45 * grid.shape[0]))
    image = ax.imshow(grid.to_numpy(), cmap="viridis", aspect="auto")
    ax.set_xticks(range(grid.shape[1]), [f"r={r}" for r in grid.columns])
    ax.set_yticks(range(grid.shape[0]), [f"{d} ({n})" for n, d in grid.index])
    for (i, j), value in np.ndenumerate(grid.to_numpy()):
        ax.text(j, i, f"{value:.3f}", ha="center", va="center", color="white", fontsize=8)
    ax.set_xlabel("LoRA rank")
    ax.set_ylabel("design (number of subtasks)")
    fig.colorbar(image, ax=ax, label=f"overall ({eval_set})")
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return grid, synergy


def track_bars(out: Path, table: pd.DataFrame, eval_set: str, path: Path) -> pd.DataFrame:
    """Per-track scores of the base model (when the study scored it) and of the most diverse design at each rank
    (first seed), with each cell's bootstrap 95% interval where its scores have one."""
    plt = _plt()
    rows = table[(table.eval_set == eval_set) & (table.level == "track")]
    trained = rows[rows.design != "base"]
    if trained.empty:
        return pd.DataFrame()
    widest = trained[trained.n_subtasks == trained.n_subtasks.max()]
    cells = {"base": rows[rows.design == "base"].cell.unique()[:1]}
    for rank, part in widest.groupby("rank"):
        first = part.sort_values("seed")
        cells[f"{first.design.iloc[0]} r={rank}"] = first.cell.unique()[:1]
    cells = {label: found[0] for label, found in cells.items() if len(found)}
    tracks = sorted(rows.name.unique(), key=track_order)
    bars = pd.DataFrame(
        {label: rows[rows.cell == cell].set_index("name").score for label, cell in cells.items()}
    ).reindex(tracks)
    fig, ax = plt.subplots(figsize=(7, 3.4))
    width = 0.8 / max(len(bars.columns), 1)
    for i, (label, cell) in enumerate(cells.items()):
        values = bars[label].to_numpy(dtype=float)
        ci = read_state(out / "cells" / cell / "result.json")["scores"][eval_set].get("ci95") or {}
        spans = ci.get("tracks", {})
        err = None
        if all(t in spans for t in tracks):
            err = np.array([[values[j] - spans[t][0], spans[t][1] - values[j]] for j, t in enumerate(tracks)]).T
        x = np.arange(len(tracks)) + i * width
        ax.bar(x, np.nan_to_num(values), width, yerr=err, capsize=3, label=label)
    ax.set_xticks(np.arange(len(tracks)) + width * (len(bars.columns) - 1) / 2, [short_name(t) for t in tracks])
    ax.set_ylabel(f"score ({eval_set}, 95% CI)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return bars


def against_base(out: Path, table: pd.DataFrame, sets: dict[str, Path]) -> list[dict[str, Any]]:
    """Every trained cell minus its base model, overall and per track, on every set both answered, with paired
    bootstrap 95% intervals (the same resampled questions for both)."""
    rows = []
    scores = table[table.level != "task"].set_index(["cell", "eval_set", "name"]).score
    for eval_set, path in sets.items():
        here = table[(table.level == "overall") & (table.eval_set == eval_set)]
        examples = read_examples(path)  # a set cut by per_task or limit is its cut file
        for _model, cells in here.groupby("model"):
            base = cells[cells.design == "base"]
            if base.empty:
                continue
            base_cell = base.cell.iloc[0]
            base_scores = question_scores(out, base_cell, eval_set, examples)
            for r in cells[cells.design != "base"].itertuples():
                samples = paired_samples([question_scores(out, r.cell, eval_set, examples), base_scores], seed=0)
                for name, values in samples.items():
                    low, high = np.percentile(values[0] - values[1], [2.5, 97.5])
                    tuned, untuned = scores[(r.cell, eval_set, name)], scores[(base_cell, eval_set, name)]
                    rows.append(
                        {
                            "eval_set": eval_set,
                            "design": r.design,
                            "rank": int(r.rank),
                            "seed": int(r.seed),
                            "name": name,
                            "base": float(untuned),
                            "tuned": float(tuned),
                            "difference": float(tuned - untuned),
                            "ci_low": float(low),
                            "ci_high": float(high),
                        }
                    )
    return rows


def plot_against_base(rows: list[dict[str, Any]], path: Path) -> None:
    """Tuned minus base, overall and per track, with the paired 95% interval: one panel per evaluation set."""
    plt = _plt()
    sets = list(dict.fromkeys(r["eval_set"] for r in rows))
    fig, axes = plt.subplots(1, len(sets), figsize=(5.6 * len(sets), 3.4), sharey=True, squeeze=False)
    for ax, eval_set in zip(axes[0], sets, strict=True):
        mine = [r for r in rows if r["eval_set"] == eval_set]
        cells = list(dict.fromkeys((r["design"], r["rank"], r["seed"]) for r in mine))
        names = list(dict.fromkeys(r["name"] for r in mine))
        width = 0.8 / len(cells)
        for i, cell in enumerate(cells):
            part = {r["name"]: r for r in mine if (r["design"], r["rank"], r["seed"]) == cell}
            x = np.arange(len(names)) + i * width
            diff = np.array([part[n]["difference"] for n in names])
            err = np.array([[diff[j] - part[n]["ci_low"], part[n]["ci_high"] - diff[j]] for j, n in enumerate(names)]).T
            ax.bar(x, diff, width, yerr=err, capsize=3, label=f"{cell[0]} r={cell[1]} s={cell[2]}")
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xticks(np.arange(len(names)) + width * (len(cells) - 1) / 2, [short_name(n) for n in names])
        ax.set_title(eval_set)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("tuned minus base (95% CI)")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def plot_headline(found: dict[str, Any], path: Path) -> bool:
    """Tuned minus base per set, each under its best settings and both plainly, with the paired 95% intervals."""
    sets = [name for name, e in found.items() if "ci" in e]
    if not sets:
        path.unlink(missing_ok=True)
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(1.6 + 2.0 * len(sets), 3.2))
    for i, (label, pick) in enumerate(
        (
            ("each under its best settings", lambda e: (e["difference"], e["ci"])),
            ("both plain", lambda e: (e["plain"]["difference"], e["plain"]["ci"])),
        )
    ):
        values = [pick(found[name]) for name in sets]
        diff = np.array([v[0] for v in values])
        err = np.array([[d - v[1][0], v[1][1] - d] for d, v in zip(diff, values, strict=True)]).T
        ax.bar(np.arange(len(sets)) + i * 0.38, diff, 0.38, yerr=err, capsize=3, label=label)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(np.arange(len(sets)) + 0.19, sets)
    ax.set_ylabel("tuned minus base (95% CI)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return True


def plot_budget(rows: list[dict[str, Any]], path: Path) -> None:
    """Tuned-best minus base-best against training steps (paired 95% intervals), plain minus plain beside it, and
    the no-model baselines as differences from the base model's best."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.6, 3.4))
    steps = np.array([r["step"] for r in rows])
    for key, ci, label, marker in (
        ("difference", "ci", "each under its best settings", "o"),
        ("plain_difference", "plain_ci", "both plain", "s"),
    ):
        values = np.array([r[key] for r in rows])
        err = np.array([[v - r[ci][0], r[ci][1] - v] for v, r in zip(values, rows, strict=True)]).T
        ax.errorbar(steps, values, yerr=err, marker=marker, capsize=3, label=f"tuned minus base, {label}")
    base_best = rows[0]["base_best"]
    for key, label, style in (("constant", "no model", "--"), ("constant_upper_bound", "no model, upper bound", ":")):
        if rows[0][key] is not None:
            ax.axhline(rows[0][key] - base_best, color="grey", linestyle=style, label=f"{label} minus base best")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xticks(steps, [str(s) for s in steps])
    ax.set_xlabel("training steps")
    ax.set_ylabel(f"difference ({rows[0]['set']}, 95% CI)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def against_base_lines(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "## Tuned against the base model, per track: paired bootstrap, 95%",
        "",
        "Both answering the same way (plainly; under a variant where its name says so), on the same questions; an "
        "interval above 0 means the tuning helped beyond question-sampling noise.",
        "",
        "![tuned minus base](against_base.png)",
        "",
        "| set | design | rank | seed | score | base | tuned | difference | 95% CI |",
        "| --- | --- | ---: | ---: | --- | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        name = short_name(r["name"])
        lines.append(
            f"| {r['eval_set']} | {r['design']} | {r['rank']} | {r['seed']} | {name} | {r['base']:.4f} | "
            f"{r['tuned']:.4f} | {r['difference']:+.4f} | [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}] |"
        )
    for r in rows:
        if r["name"] == "overall":
            verdict = (
                "above 0: a reliable gain"
                if r["ci_low"] > 0
                else "below 0: a reliable loss"
                if r["ci_high"] < 0
                else "includes 0: no reliable difference"
            )
            lines.append(
                f"\n{r['design']} r={r['rank']} s={r['seed']} on `{r['eval_set']}`: overall {r['difference']:+.4f}, "
                f"95% interval [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}] ({verdict})."
            )
    return [*lines, ""]


def paired_steps(out: Path, table: pd.DataFrame, eval_set: str, data_path: Path) -> list[dict[str, Any]]:
    """For each group, rank and seed: the difference between consecutive designs, with a paired 95% CI."""
    examples = read_examples(data_path)
    overall = table[(table.eval_set == eval_set) & (table.level == "overall") & (table.design != "base")]

    steps = []
    for group, (column, _) in AXES.items():
        part = overall[overall.groups.str.contains(group)]
        for (rank, seed), rows in part.groupby(["rank", "seed"]):
            rows = rows.sort_values(column)
            cells = list(zip(rows.design, rows.cell, rows.score, strict=True))
            for (d1, c1, s1), (d2, c2, s2) in itertools.pairwise(cells):
                pair = [question_scores(out, c2, eval_set, examples), question_scores(out, c1, eval_set, examples)]
                samples = paired_overall_samples(pair, seed=0)
                low, high = np.percentile(samples[0] - samples[1], [2.5, 97.5])
                steps.append(
                    {
                        "group": group,
                        "rank": int(rank),
                        "seed": int(seed),
                        "from": d1,
                        "to": d2,
                        "difference": s2 - s1,
                        "ci_low": float(low),
                        "ci_high": float(high),
                    }
                )
    return steps


def _verdict(steps: list[dict[str, Any]], group: str) -> str:
    mine = [s for s in steps if s["group"] == group]
    if not mine:
        return f"No {group}-level steps were run."
    up = sum(s["difference"] > 0 for s in mine)
    sure_up = sum(s["ci_low"] > 0 for s in mine)
    sure_down = sum(s["ci_high"] < 0 for s in mine)
    return (
        f"Of {len(mine)} {group}-level steps (each adding diversity), {up} raised the overall score and "
        f"{len(mine) - up} did not; {sure_up} rise(s) and {sure_down} fall(s) have a 95% interval excluding 0. "
        + (
            "The data support a rise with diversity."
            if sure_up > 0 and sure_down == 0 and up == len(mine)
            else "This miniature does not show a reliable rise with diversity."
        )
    )


def training_curves(out: Path, table: pd.DataFrame) -> dict[str, list[dict[str, Any]]]:
    """Per trained cell (by its label), the ShopBench scores of its answers to validation questions while it
    trained, as its train summary recorded them; cells trained without them are left out."""
    curves = {}
    for cell in table[table.design != "base"].cell.unique():
        result = read_state(out / "cells" / cell / "result.json")
        curve = (result.get("train") or {}).get("shopbench_validation") or []
        if curve:
            info = result["cell"]
            kept = (result.get("train") or {}).get("kept_checkpoint") or "the last step"
            curves[f"{info['design']} r{info['rank']} s{info['seed']} (kept: {Path(kept).name})"] = curve
    return curves


def plot_curves(curves: dict[str, list[dict[str, Any]]], tracks: list[str], path: Path) -> None:
    """Overall and per-track validation ShopBench score against the training step, one line per cell."""
    plt = _plt()
    panels = ["overall", *tracks]
    fig, axes = plt.subplots(1, len(panels), figsize=(2.8 * len(panels), 3.0), sharey=True, squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        for label, curve in curves.items():
            ax.plot([p["step"] for p in curve], [p.get(panel, np.nan) for p in curve], marker="o", label=label)
        ax.set_title(panel)
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("validation ShopBench score")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def curve_lines(curves: dict[str, list[dict[str, Any]]], out: Path) -> list[str]:
    keys = list(dict.fromkeys(k for c in curves.values() for p in c for k in p if k not in ("step", "overall")))
    lines = [
        "## Validation ShopBench score while training",
        "",
        "At each evaluation the model as it was answered the same validation questions (the mixture's own split, "
        "taken in turn from every subtask), scored with ShopBench's metrics; step 0 is the untuned model. The "
        "adapter kept is the one the training settings name (`keep`).",
        "",
        "![validation during training](training_curve.png)",
        "",
        "| cell | step | overall | " + " | ".join(keys) + " |",
        "| --- | ---: | ---: | " + " | ".join("---:" for _ in keys) + " |",
    ]
    for label, curve in curves.items():
        for p in curve:
            values = " | ".join(f"{p[k]:.4f}" if k in p else "-" for k in keys)
            lines.append(f"| {label} | {p['step']} | {p['overall']:.4f} | {values} |")
    plot_curves(curves, keys, out / "training_curve.png")
    return [*lines, ""]


def cell_lines(out: Path) -> list[str]:
    """Every cell, and where its adapter is (`shoptune study show` prints the same)."""
    cells = cells_of(out)
    lines = [
        "## Cells",
        "",
        "Each cell's folder is `cells/<cell>/`; its tuned adapter (or model) is where the adapter column says.",
        "",
        "| cell | design | rank | seed | status | adapter |",
        "| --- | --- | ---: | ---: | --- | --- |",
    ]
    for cell in cells:
        adapter = f"`{Path(cell['adapter']).relative_to(out)}`" if cell["adapter"] else "-"
        lines.append(
            f"| {cell['cell']} | {cell['design']} | {cell['rank'] or '-'} | {cell['seed']} | {cell['status']} | "
            f"{adapter} |"
        )
    return [*lines, ""]


def write_report(out: Path) -> Path:
    import yaml

    everything = load_table(out)
    table = everything[everything.groups != BUDGET]  # the budget curve's cells have a section of their own
    if everything.empty:
        from shoptune.errors import ShoptuneError

        raise ShoptuneError(f"{out}: no finished cells to report on (run `shoptune study run` first)")
    study = StudySpec.model_validate(yaml.safe_load((out / "study.yaml").read_text(encoding="utf-8")))
    sets = {name: path for name, path in eval_sets(study, out).items() if name != VALIDATION}
    # The plots and steps use the set with the most questions: the one whose intervals are narrowest.
    eval_set, data_path = max(sets.items(), key=lambda item: len(read_examples(item[1])))
    lines = [
        f"# Study report: {study.name}",
        "",
        f"{table.cell.nunique()} cells; scores on `{eval_set}` (ShopBench scoring) unless stated. "
        "Every number below is read from results.parquet / results.csv.",
        "",
    ]
    failed = sorted(p.parent.name for p in (out / "cells").glob("*/error.json"))
    if failed:
        lines += [f"Failed cells (see their error.json): {', '.join(failed)}", ""]
    base = table[(table.design == "base") & (table.level == "overall") & (table.eval_set == eval_set)]
    if not base.empty:
        lines += [f"Base model overall: {base.score.mean():.4f}", ""]
    with_variants = {scored_name(name, v): p for name, p in sets.items() for v in ["", *study.eval.variants]}
    tuned_vs_base = against_base(out, table, with_variants)
    found = headline(out, table, study, sets, validation_used(out, table))
    plot_headline(found, out / "headline.png")
    lines += headline_lines(found)
    atomic_write_text(out / "baselines.json", json.dumps(found, indent=2) + "\n")
    spent = budget(out, everything, sets, found)
    if spent:
        plot_budget([r for r in spent if r["set"] == eval_set], out / "budget.png")
        lines += budget_lines(spent)
        atomic_write_text(out / "budget.json", json.dumps(spent, indent=2) + "\n")
    if tuned_vs_base:
        plot_against_base(tuned_vs_base, out / "against_base.png")
        lines += against_base_lines(tuned_vs_base)
        atomic_write_text(out / "against_base.json", json.dumps(tuned_vs_base, indent=2) + "\n")
    variant_rows = compare.variants(out, table, sets)
    if variant_rows:
        lines += compare.variant_lines(variant_rows)
        atomic_write_text(out / "variants.json", json.dumps(variant_rows, indent=2) + "\n")
    curves = training_curves(out, table)
    if curves:
        lines += curve_lines(curves, out)
    else:
        (out / "training_curve.png").unlink(missing_ok=True)
    adapter_rows = compare.adapters(out, table, sets)
    if adapter_rows:
        lines += compare.adapter_lines(adapter_rows)
        atomic_write_text(out / "adapters.json", json.dumps(adapter_rows, indent=2) + "\n")
    trained = table[table.design != "base"]
    for group in AXES:
        designs = trained[trained.groups.str.contains(group)].design.nunique()
        if designs < 2:  # a progression needs two designs at least; one point says nothing
            (out / f"{group}_progression.png").unlink(missing_ok=True)
            continue
        data = plot_progression(table, group, eval_set, out / f"{group}_progression.png")
        column = AXES[group][0]
        lines += [
            f"## Score against {AXES[group][1]}",
            "",
            f"![{group}]({group}_progression.png)",
            "",
            "| design | " + column + " | rank | overall |",
            "| --- | ---: | ---: | ---: |",
        ]
        lines += [f"| {r.design} | {getattr(r, column)} | {r.rank} | {r.overall:.4f} |" for r in data.itertuples()]
        lines.append("")
    synergy = None
    if trained.design.nunique() >= 2 or trained["rank"].nunique() >= 2:  # a grid of one cell says nothing
        _grid, synergy = heatmap(table, eval_set, out / "rank_diversity_heatmap.png")
        lines += ["## Rank x diversity", "", "![heatmap](rank_diversity_heatmap.png)", ""]
    else:
        (out / "rank_diversity_heatmap.png").unlink(missing_ok=True)
    if synergy is not None:
        lines += [
            f"Synergy estimate (slope of overall score per added subtask at the largest rank minus at the "
            f"smallest): {synergy:+.5f}. Positive means a larger rank gains more from diversity.",
            "",
        ]
    bars = track_bars(out, table, eval_set, out / "track_bars.png")
    if not bars.empty:
        lines += [
            "## Tracks: " + ("base model against " if "base" in bars else "") + "the most diverse design",
            "",
            "![tracks](track_bars.png)",
            "",
            bars.rename(index=short_name).round(4).astype(object).where(bars.notna().to_numpy(), "-").to_markdown(),
            "",
        ]
    lines += cell_lines(out)
    steps = paired_steps(out, table, eval_set, data_path)
    if steps:  # the section needs two designs in a progression
        lines += [
            "## Does adding diversity help? Paired bootstrap, 95%",
            "",
            "| group | rank | seed | from | to | difference | 95% CI |",
            "| --- | ---: | ---: | --- | --- | ---: | --- |",
        ]
        lines += [
            f"| {s['group']} | {s['rank']} | {s['seed']} | {s['from']} | {s['to']} | {s['difference']:+.4f} | "
            f"[{s['ci_low']:+.4f}, {s['ci_high']:+.4f}] |"
            for s in steps
        ]
        lines += ["", _verdict(steps, "capability"), "", _verdict(steps, "task"), ""]
    atomic_write_text(out / "steps.json", json.dumps(steps, indent=2) + "\n")
    report = out / "report.md"
    atomic_write_text(report, "\n".join(lines))
    return report
