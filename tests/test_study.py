"""`shoptune study`: grid expansion, resumable execution, failure isolation, the table and the report."""

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from shoptune.study.spec import EvalSettings, expand, load_study

ROOT = Path(__file__).resolve().parents[1]
BEST_OF = EvalSettings().best_of  # plain, constrained, debiased, both


def test_paper_grid_shares_the_design_both_axes_end_in():
    cells = expand(load_study(ROOT / "configs" / "studies" / "paper.yaml"))
    # base; capability designs x ranks x seeds; task designs (all shared) x ranks x seeds
    assert len(cells) == 1 + 4 * 5 * 3 + 3 * 5 * 3
    shared = [c for c in cells if c.design == "all"]
    assert len(shared) == 15 and all(c.groups == ("capability", "task") for c in shared)
    assert {c.n_capabilities for c in cells if "capability" in c.groups} == {1, 2, 3, 4}
    assert len({c.key for c in cells}) == len(cells)


@pytest.mark.parametrize("name", ["demo", "cpu", "paper"])
def test_every_shipped_study_loads_and_scores_both_benchmarks(name):
    study = load_study(ROOT / "configs" / "studies" / f"{name}.yaml")
    assert [p.name for p in study.eval.sets] == ["development.json", "heldout.jsonl"]
    assert all(p.is_file() for p in study.eval.sets)
    cells = expand(study)
    assert [c.design for c in cells if c.mixture is None] == ["base"]
    assert all(c.n_capabilities == 4 for c in cells if c.design == "all")


def write_spec(tmp_path: Path, model: Path, designs: dict, **extra) -> Path:
    mixtures = {}
    for name, body in {
        "one": "capabilities: [shopping_concept_understanding]\nsubtasks: [category_parent]",
        "two": "subtasks: [category_parent, same_product, query_offer_ranking]",
        "empty": "subtasks: [esci_query_ranking]",
    }.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(f"name: {name}\nraw_dir: {ROOT / 'data' / 'raw'}\n{body}\n")
        mixtures[name] = str(path)
    spec = {
        "name": "t",
        "models": [str(model)],
        "ranks": [4],
        "seeds": [0],
        "designs": {group: [mixtures[d] for d in names] for group, names in designs.items()},
        "mixture": {"examples_per_subtask": 24, "validation_per_subtask": 4},
        "train": {
            "max_steps": 3,
            "batch_size": 4,
            "save_steps": 1,
            "report_to": [],
            "max_eval_examples": 4,
            "max_length": 256,
        },
        # Choosing answering settings on validation costs runs: only the tests of the headline ask for it.
        "eval": {"sets": [str(ROOT / "data" / "shopbench" / "development.json")], "limit": 12, "best_of": {}},
    }
    for key, value in extra.items():
        spec[key] = {**spec[key], **value} if isinstance(value, dict) else value
    path = tmp_path / "study.yaml"
    path.write_text(json.dumps(spec))
    return path


@pytest.mark.slow
def test_killed_study_resumes_without_redoing_finished_cells(tiny_model, tmp_path):
    spec = write_spec(tmp_path, tiny_model, {"capability": ["one", "two"]})
    cmd = [sys.executable, "-m", "shoptune", "study", "run", str(spec), "--no-progress", "--out"]
    subprocess.run([*cmd, str(tmp_path / "whole")], check=True, capture_output=True)

    proc = subprocess.Popen([*cmd, str(tmp_path / "killed")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        if len(list((tmp_path / "killed" / "cells").glob("*/result.json"))) >= 1:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = {p: p.stat().st_mtime_ns for p in (tmp_path / "killed" / "cells").glob("*/result.json")}
    assert 1 <= len(finished) < 3, "killed mid-study"

    rerun = subprocess.run([*cmd, str(tmp_path / "killed")], check=True, capture_output=True, text=True)
    assert f"reused {len(finished)}" in rerun.stderr
    assert all(p.stat().st_mtime_ns == t for p, t in finished.items()), "a finished cell was redone"
    columns = ["cell", "design", "eval_set", "level", "name", "score"]
    whole = pd.read_csv(tmp_path / "whole" / "results.csv")[columns].sort_values(columns[:5]).reset_index(drop=True)
    resumed = pd.read_csv(tmp_path / "killed" / "results.csv")[columns].sort_values(columns[:5]).reset_index(drop=True)
    pd.testing.assert_frame_equal(whole, resumed)
    assert "report:" in rerun.stderr


@pytest.mark.slow
def test_full_fine_tuning_cells_are_scored_as_models_of_their_own(tiny_model, tmp_path, run_cli):
    spec = write_spec(tmp_path, tiny_model, {"capability": ["one"]}, train={"method": "full"})
    code, _, err = run_cli("study", "run", spec, "--out", tmp_path / "s", "--no-progress")
    assert code == 0, err
    trained = [p for p in (tmp_path / "s" / "cells").glob("*/train") if p.is_dir()]
    assert len(trained) == 1 and (trained[0] / "adapter" / "model.safetensors").is_file()
    runs = json.loads((trained[0].parent / "eval" / "development" / "run.json").read_text())
    assert runs["answer_settings"]["model"] == str(trained[0] / "adapter")
    assert runs["answer_settings"]["adapter"] is None


@pytest.mark.slow
def test_failed_cell_is_recorded_the_rest_goes_on_and_the_exit_code_says_so(tiny_model, tmp_path, run_cli):
    spec = write_spec(tmp_path, tiny_model, {"task": ["empty", "one"]})
    code, _, err = run_cli("study", "run", spec, "--out", tmp_path / "s", "--no-progress")
    assert code == 1, err
    assert "failed 1" in err and "1 cell(s) failed; each says why in" in err
    errors = list((tmp_path / "s" / "cells").glob("*/error.json"))
    assert len(errors) == 1 and "is empty" in json.loads(errors[0].read_text())["error"]
    table = pd.read_parquet(tmp_path / "s" / "results.parquet")
    assert set(table.design) == {"base", "one"}
    report = (tmp_path / "s" / "report.md").read_text()
    assert "Failed cells" in report


@pytest.mark.slow
def test_report_numbers_come_from_the_table(tiny_model, tmp_path, run_cli):
    spec = write_spec(
        tmp_path, tiny_model, {"capability": ["one", "two"], "task": ["one", "two"]}, eval={"best_of": BEST_OF}
    )
    code, _, err = run_cli("study", "run", spec, "--out", tmp_path / "s", "--no-progress")
    assert code == 0, err
    out = tmp_path / "s"
    for png in ("capability_progression.png", "task_progression.png", "rank_diversity_heatmap.png", "track_bars.png"):
        assert (out / png).stat().st_size > 1000
    table = pd.read_csv(out / "results.csv")
    overall = table[(table.level == "overall") & (table.eval_set == "development")]
    report = (out / "report.md").read_text()
    for row in overall.itertuples():
        if row.design != "base":
            assert f"| {row.design} |" in report and f"{row.score:.4f}" in report
    steps = json.loads((out / "steps.json").read_text())
    assert {s["group"] for s in steps} == {"capability", "task"}
    for s in steps:
        assert s["ci_low"] <= s["difference"] <= s["ci_high"]
    # The no-model baseline beside base and tuned: the same score `eval baseline` gives on the questions the cells
    # answered (the set cut to its limit, spread across tasks).
    found = json.loads((out / "baselines.json").read_text())
    assert len((out / "sets" / "development.jsonl").read_text().splitlines()) == 12
    code, _, err = run_cli(
        "eval", "baseline", out / "sets" / "development.jsonl", "--out", tmp_path / "b", "--bootstrap", "0"
    )
    assert code == 0, err
    assert found["development"]["constant_upper_bound"] == pytest.approx(
        json.loads((tmp_path / "b" / "scores.json").read_text())["overall"]
    )  # the label chosen on the set itself
    base_cell = overall[overall.design == "base"].cell.iloc[0]
    validation = json.loads((out / "cells" / base_cell / "result.json").read_text())["choice"]["set"]
    code, _, err = run_cli(
        "eval", "baseline", out / "sets" / "development.jsonl", "--choose-on", validation,
        "--out", tmp_path / "v", "--bootstrap", "0",
    )  # fmt: skip
    assert code == 0, err
    assert found["development"]["constant"] == pytest.approx(
        json.loads((tmp_path / "v" / "scores.json").read_text())["overall"]
    )  # the label a user could have chosen: on the validation split
    assert found["development"]["base"] == pytest.approx(overall[overall.design == "base"].score.iloc[0])
    entry = found["development"]
    assert f"| development | {entry['constant']:.4f} | {entry['constant_upper_bound']:.4f} |" in report
    # Best against best: each side's settings are the ones that scored best on its validation split, and the
    # headline is tuned-best minus base-best on the benchmark, under those settings.
    entry = found["development"]
    for side in ("base", "tuned"):
        cell = overall[overall.design == "base"].cell.iloc[0] if side == "base" else None
        if side == "tuned":
            top = overall[overall.design != "base"].sort_values("n_subtasks").iloc[-1]
            cell = top.cell
        choice = json.loads((out / "cells" / cell / "result.json").read_text())["choice"]
        assert choice["set"].endswith("validation.jsonl")
        assert set(choice["scores"]) == {"plain", "constrained", "debiased", "both"}
        assert choice["scores"][choice["best"]] == max(choice["scores"].values())
        assert entry["settings"][side]["name"] == choice["best"]
        label = "development" if choice["best"] == "plain" else f"development+{choice['best']}"
        assert entry[f"{side}_best"] == pytest.approx(
            table[(table.cell == cell) & (table.eval_set == label) & (table.level == "overall")].score.iloc[0]
        )
    assert entry["difference"] == pytest.approx(entry["tuned_best"] - entry["base_best"])
    assert entry["plain"]["difference"] == pytest.approx(entry["tuned"] - entry["base"])
    assert entry["ci"][0] <= entry["ci"][1] and "## Form and content" in report
    kinds = entry["form_content"]["plain"]
    assert sum(k["n"] for k in kinds.values()) == 12 and all(0 <= k["both_parse"] <= k["n"] for k in kinds.values())
    code, _, err = run_cli("study", "report", tmp_path / "nothing")
    assert code == 2 and "no finished cells" in err


@pytest.mark.slow
def test_a_one_cell_study_reports_no_empty_section(tiny_model, tmp_path, run_cli):
    validated = {"shopbench_eval_examples": 4, "eval_steps": 3, "save_steps": 3, "keep": "shopbench"}
    spec = write_spec(tmp_path, tiny_model, {"capability": ["one"]}, train=validated, eval={"best_of": BEST_OF})
    code, _, err = run_cli("study", "run", spec, "--out", tmp_path / "s", "--no-progress")
    assert code == 0, err
    report = (tmp_path / "s" / "report.md").read_text()
    # The training-time validation curve: before the first step and at the last, as the cell's summary has it.
    results = [json.loads(p.read_text()) for p in (tmp_path / "s" / "cells").glob("*/result.json")]
    (result,) = [r for r in results if r["cell"]["design"] != "base"]
    assert [p["step"] for p in result["train"]["shopbench_validation"]] == [0, 3]
    assert "## Validation ShopBench score while training" in report and "(kept: checkpoint-3)" in report
    sections = report.split("\n## ")[1:]
    assert sections and all(len([line for line in part.splitlines()[1:] if line.strip()]) >= 1 for part in sections)
    # One design at one rank: no progression, no heatmap, no steps, and no pictures of them left behind.
    assert "Score against" not in report and "Rank x diversity" not in report and "Does adding" not in report
    assert (
        not list((tmp_path / "s").glob("*progression.png"))
        and not (tmp_path / "s" / "rank_diversity_heatmap.png").exists()
    )
    for link in re.findall(r"\]\(([^)]+)\)", report):
        assert (tmp_path / "s" / link).is_file(), link
    assert "## What the tuning adds over the strongest untuned baseline" in report
    assert "## Tuned against the base model" in report


@pytest.mark.slow
def test_capability_adapters_are_combined_and_every_variant_is_compared(tiny_model, tmp_path, run_cli):
    spec = write_spec(
        tmp_path,
        tiny_model,
        {"capability": ["two"], "adapters": ["one", "two"]},
        combine=["linear", "ties"],
        eval={"variants": {"constrained": {"constrained": True}, "half": {"alpha": 0.5}}},
    )
    cells = expand(load_study(spec))
    combined = [c for c in cells if c.parts]
    assert sorted(c.design for c in combined) == ["combined-linear", "combined-ties", "ensemble"]
    parts = {c.key for c in cells if "adapters" in c.groups and not c.parts}
    assert len(parts) == 2 and all(set(c.parts) == parts for c in combined)
    code, _, err = run_cli("study", "run", spec, "--out", tmp_path / "s", "--no-progress")
    assert code == 0, err
    out = tmp_path / "s"
    for cell in combined[:2]:
        assert json.loads((out / "cells" / cell.key / "adapter" / "combined.json").read_text())["method"] in (
            "linear",
            "ties",
        )
    table = pd.read_csv(out / "results.csv")
    sets = table.groupby("design").eval_set.agg(set)
    assert sets["base"] == {"development", "development+constrained"}  # alpha needs an adapter
    assert sets["ensemble"] == {"development", "development+constrained"}
    assert sets["combined-ties"] == {"development", "development+constrained", "development+half"}
    variants = json.loads((out / "variants.json").read_text())
    assert {(v["variant"], v["who"].split()[0]) for v in variants} >= {("constrained", "base"), ("half", "two")}
    for v in variants:
        assert v["ci_low"] <= v["difference"] <= v["ci_high"] and 0 <= v["parse_with"] <= 1
    adapters = json.loads((out / "adapters.json").read_text())
    assert {a["design"] for a in adapters} == {"one", "two", "combined-linear", "combined-ties", "ensemble"}
    assert all(a["reference"] == "two r4 s0" for a in adapters)
    two = [a for a in adapters if a["design"] == "two"]  # the same training as the reference: no difference
    assert two and all(a["difference"] == 0 for a in two)
    report = (out / "report.md").read_text()
    assert "## Evaluation variants" in report and "## Capability adapters" in report


@pytest.mark.parametrize(
    "bad",
    [
        "designs: {ablation: []}",
        "ranks: [0]\ndesigns: {}",
        "designs: {}\ncombine: [svd]",
        "designs: {}\neval: {variants: {x: {adapter: y}}}",
        "designs: {}\neval: {variants: {x: {constrainde: true}}}",
        "designs: {}\neval: {variants: {'a b': {}}}",
        "designs: {}\neval: {best_of: {plain: {constrained: true}}}",
        "designs: {}\neval: {best_of: {half: {alpha: 0.5}}}",
        "designs: {}\neval: {variants: {c: {constrained: true}}, best_of: {c: {mc_debias: true}}}",
    ],
)
def test_bad_study_specs(bad, tmp_path, run_cli):
    spec = tmp_path / "s.yaml"
    spec.write_text(f"name: x\n{bad}\n")
    code, _, err = run_cli("study", "run", spec, "--out", tmp_path / "o")
    assert code == 2 and err.startswith("error:")


@pytest.mark.slow
def test_ray_executor_gives_the_local_results(tiny_model, tmp_path, run_cli):
    pytest.importorskip("ray")
    spec = write_spec(tmp_path, tiny_model, {"capability": ["one", "two"]})
    threads = torch.get_num_threads()
    for executor in ("local", "ray"):
        # A CPU cell on Ray has one CPU, so one thread (Ray sets OMP_NUM_THREADS): the local run is given one too,
        # since another thread count sums in another order and can tip a greedy answer of a tiny random model.
        torch.set_num_threads(1)
        try:
            code, _, err = run_cli(
                "study", "run", spec, "--out", tmp_path / executor, "--executor", executor, "--no-progress"
            )
        finally:
            torch.set_num_threads(threads)
        assert code == 0, err
        assert "ran 3" in err
    columns = ["cell", "design", "eval_set", "level", "name", "score"]
    local = pd.read_csv(tmp_path / "local" / "results.csv")[columns].sort_values(columns[:5]).reset_index(drop=True)
    ray_ = pd.read_csv(tmp_path / "ray" / "results.csv")[columns].sort_values(columns[:5]).reset_index(drop=True)
    pd.testing.assert_frame_equal(local, ray_)


@pytest.mark.slow
def test_a_budget_curve_scores_kept_steps_of_one_run_beside_the_base_model(tiny_model, tmp_path, run_cli):
    spec = write_spec(tmp_path, tiny_model, {"capability": ["one"]}, checkpoints=[2])
    spec_text = json.loads(spec.read_text())
    spec_text["train"].update({"max_steps": 4, "save_steps": 3, "save_total_limit": 1})
    spec_text["eval"]["best_of"] = {"constrained": {"constrained": True}}
    spec.write_text(json.dumps(spec_text))
    code, _, err = run_cli("study", "run", spec, "--no-progress", "--out", tmp_path / "s")
    assert code == 0, err
    out = tmp_path / "s"
    trained = next(out.glob("cells/*/train/train_summary.json")).parent
    # The kept steps outlive checkpoint rotation (save_total_limit 1, saves at 3): one adapter per listed step.
    assert sorted(p.name for p in (trained / "steps").iterdir()) == ["step-2"]
    rows = json.loads((out / "budget.json").read_text())
    assert [(r["set"], r["step"]) for r in rows] == [("development", 2), ("development", 4)]  # kept step, run's end
    results = pd.read_csv(out / "results.csv")
    for r, design in zip(rows, ("one@2", "one"), strict=True):
        cell = results[(results.design == design) & (results.level == "overall")]
        assert r["tuned"] == pytest.approx(cell[cell.eval_set == "development"].score.iloc[0])
        assert r["ci"][0] <= r["difference"] <= r["ci"][1] and r["settings"] in ("plain", "constrained")
        assert r["constant_upper_bound"] is not None
    report = (out / "report.md").read_text()
    assert "## The training budget" in report and (out / "budget.png").is_file()
    assert "## Multiple-choice answers by label" in report  # the development set asks multiple choice
    assert "one@2" not in report.split("## The training budget")[0]  # kept out of the other sections


def test_the_dry_run_estimates_a_model_it_has_no_rate_for_from_its_size(tiny_model, tmp_path):
    from transformers import AutoModelForCausalLM

    from shoptune.hub import parameter_count
    from shoptune.study.runner import DEFAULT_PARAMETERS, plan_study

    assert parameter_count(str(tiny_model)) == AutoModelForCausalLM.from_pretrained(tiny_model).num_parameters()
    spec = write_spec(tmp_path, tiny_model, {"capability": ["one"]})
    study = load_study(spec)
    small = plan_study(study, tmp_path / "s")
    default = plan_study(study.model_copy(update={"models": ["default"]}), tmp_path / "s")
    ratio = parameter_count(str(tiny_model)) / DEFAULT_PARAMETERS
    for mine, theirs in zip(small, default, strict=True):
        assert mine["seconds"] == pytest.approx(theirs["seconds"] * ratio)
    unknown = plan_study(study.model_copy(update={"models": ["Some/Model-7B"]}), tmp_path / "s")
    assert all(row["seconds"] is None for row in unknown)  # no weights here to count: no estimate
