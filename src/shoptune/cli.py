"""`shoptune <verb>`: parses arguments and calls the layers; nothing else lives here.

A verb that runs from a config takes its options from the config class (`config_options`), so a setting's
help text is written once, beside the code it configures.

A user error (ShoptuneError) is one line on stderr and exit code 2, never a traceback; Ctrl-C says
how to resume.
"""

from __future__ import annotations

import functools
import inspect
import re
import sys
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

import typer
import yaml
from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from shoptune.adapters import METHODS
from shoptune.data.generate import GenerateSpec
from shoptune.data.spec import MixtureSpec
from shoptune.errors import ShoptuneError
from shoptune.evaluate.config import EvalConfig
from shoptune.evaluate.scoring import Scores
from shoptune.serve import ServeLimits
from shoptune.study.spec import StudySpec
from shoptune.train.config import TrainConfig

F = TypeVar("F", bound=Callable[..., Any])

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Multi-task LoRA fine-tuning of LLMs for e-commerce, scored exactly like ShopBench (KDD Cup 2024).",
)
eval_app = typer.Typer(no_args_is_help=True, help="Score models and predictions on ShopBench-format data.")
tasks_app = typer.Typer(no_args_is_help=True, help="The capability and subtask registry.")
data_app = typer.Typer(no_args_is_help=True, help="Build multi-task training mixtures.")
app.add_typer(eval_app, name="eval")
app.add_typer(tasks_app, name="tasks")
study_app = typer.Typer(no_args_is_help=True, help="The diversity study: designs x LoRA ranks x seeds.")
app.add_typer(data_app, name="data")
app.add_typer(study_app, name="study")


def _print_version(wanted: bool) -> None:
    if wanted:
        from shoptune.provenance import versions

        print(", ".join(f"{name} {version}" for name, version in versions().items()))
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="print the versions of shoptune, python, torch, transformers, peft, accelerate and datasets, and exit",
        ),
    ] = False,
) -> None:
    """Multi-task LoRA fine-tuning of LLMs for e-commerce, scored exactly like ShopBench (KDD Cup 2024)."""


# Messages carry user paths and data ("[x]" is not markup): printed as they are.
console = Console(stderr=True, markup=False, highlight=False, soft_wrap=True)


# --- options from config models: a setting's help text lives once, in its config class -------------------------


@dataclass(frozen=True)
class _Option:
    param: str  # the command's parameter
    keys: tuple[str, ...]  # where the value goes in the config (a section's setting: ("lora", "rank"))
    parameter: inspect.Parameter
    convert: Callable[[Any], Any]


def config_options(cls: type[BaseModel], only: Collection[str] | None = None) -> Callable[[F], F]:
    """Give a command one option per setting of `cls` (a section's settings flattened: lora.rank is --lora-rank),
    each with the setting's description as its help, plus `--set KEY=VALUE` for any setting. The command
    receives what was given as `overrides`, a nested dict for load_config: an option not given leaves the
    config file's value (or the default) alone."""
    options = list(_options(cls, (), only))

    def decorate(command: F) -> F:
        own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.name != "overrides"]
        settings = inspect.Parameter(
            "set_",
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=Annotated[
                list[str] | None,
                typer.Option("--set", help="KEY=VALUE for any setting, the value read as YAML (a section's: a.b=1)"),
            ],
        )

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            overrides: dict[str, Any] = {}
            for item in kwargs.pop("set_") or []:
                key, value = _pair(item, "--set")
                try:
                    parsed = yaml.safe_load(value)
                except yaml.YAMLError:
                    raise ShoptuneError(f"--set {key}: {value!r} is not a YAML value") from None
                _put(overrides, tuple(key.split(".")), parsed)
            for option in options:
                value = kwargs.pop(option.param)
                if value is not None:
                    _put(overrides, option.keys, option.convert(value))
            return command(**kwargs, overrides=overrides)

        del wrapper.__wrapped__  # typer must see the signature below, not the command's
        wrapper.__signature__ = inspect.Signature([*own, *(o.parameter for o in options), settings])  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate


def _options(cls: type[BaseModel], prefix: tuple[str, ...], only: Collection[str] | None) -> Iterator[_Option]:
    for name, field in cls.model_fields.items():
        if only is not None and name not in only:
            continue
        keys = (*prefix, name)
        inner, optional = _unwrap_optional(field.annotation)
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            yield from _options(inner, keys, None)
            continue
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        flag = "--" + str(extra.get("option") or "-".join(keys).replace("_", "-"))
        names = [flag, *extra.get("aliases", [])]  # type: ignore[misc]
        help_text, dynamic = _default_of(escape(field.description or ""))  # "shoptune[vllm]" is text, not markup
        default = None if field.default_factory is not None or field.is_required() else field.default
        # One style of default, typer's "[default: X]": a setting's own, or the one its description names.
        shown: bool | str = dynamic or (False if default is None else str(default))
        param = "opt_" + "_".join(keys)
        convert: Callable[[Any], Any] = _same
        if inner is bool:
            kind: Any = bool | None
            names = [f"{flag}/--no-{flag[2:]}", *names[1:]]
        elif get_origin(inner) is dict:
            kind, shown = list[str] | None, False
            convert = functools.partial(_pairs, option=flag)
        elif get_origin(inner) is list:
            kind, help_text = list[str] | None, help_text + " (repeat the option for several)"
        elif get_origin(inner) is Literal:
            kind, help_text = str | None, f"{help_text} ({' | '.join(map(str, get_args(inner)))})"
        elif inner in (int, float, str, Path):
            kind = inner | None
        else:  # a union of shapes (a list or "all-linear"): read as YAML
            kind, convert = str | None, yaml.safe_load
        option = typer.Option(*names, help=help_text, show_default=shown)
        yield _Option(param, keys, _keyword(param, Annotated[kind, option]), convert)
        if optional and default is not None and inner is not bool:  # a setting that may be switched off
            off = f"no_{param}"
            flag_off = typer.Option(f"--no-{flag[2:]}", help=f"no {flag[2:].replace('-', ' ')} ({help_text})")
            yield _Option(off, keys, _keyword(off, Annotated[bool, flag_off], False), _none_if_set)


def _default_of(description: str) -> tuple[str, str | None]:
    """A description without the "(default: ...)" it ends with, and that default, shown as typer shows others."""
    found = re.search(r"\s*\(default: ([^()]*)\)$", description)
    if found is None:
        return description, None
    return description[: found.start()], found.group(1)


def _keyword(name: str, annotation: Any, default: Any = None) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    if get_origin(annotation) in (Union, UnionType) and type(None) in get_args(annotation):
        rest = [a for a in get_args(annotation) if a is not type(None)]
        return (rest[0] if len(rest) == 1 else annotation), True
    return annotation, False


def _same(value: Any) -> Any:
    return value


def _none_if_set(value: bool) -> Any:
    return None if value else _UNSET


_UNSET = object()


def _put(tree: dict[str, Any], keys: tuple[str, ...], value: Any) -> None:
    """Set one setting in a nested dict; mappings given twice (--set and an option) are merged."""
    if value is _UNSET:
        return
    for key in keys[:-1]:
        tree = tree.setdefault(key, {})
    old = tree.get(keys[-1])
    tree[keys[-1]] = {**old, **value} if isinstance(old, dict) and isinstance(value, dict) else value


def _pair(item: str, option: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key.strip() or not value.strip():
        raise ShoptuneError(f"{option} expects KEY=VALUE, got {item!r}")
    return key.strip(), value.strip()


def _pairs(values: list[str], option: str) -> dict[str, str]:
    """Repeated KEY=VALUE options as a dict."""
    return dict(_pair(item, option) for item in values)


def _show_scores(scores: Scores, out: Path) -> None:
    from shoptune.tasks.registry import short_name

    ci = scores.ci95
    table = Table(title=f"ShopBench scores ({out})")
    table.add_column("track")
    table.add_column("score", justify="right")
    table.add_column("95% CI", justify="right")
    for track, value in scores.tracks.items():
        low_high = ci.tracks.get(track) if ci else None
        table.add_row(short_name(track), f"{value:.4f}", f"{low_high[0]:.3f}-{low_high[1]:.3f}" if low_high else "")
    overall = f"{ci.overall[0]:.3f}-{ci.overall[1]:.3f}" if ci else ""
    table.add_row("[bold]overall[/bold]", f"[bold]{scores.overall:.4f}[/bold]", overall)
    Console().print(table)
    if scores.missing:
        console.print(f"{scores.missing} question(s) had no prediction and were scored as empty responses")
    console.print(f"wrote {out / 'scores.json'} and {out / 'scores.md'}")


@eval_app.command("score")
@config_options(EvalConfig, only=("embedding_models", "bootstrap", "seed"))
def eval_score(
    data: Annotated[Path, typer.Argument(help="ShopBench-format JSON Lines with the truth")],
    predictions: Annotated[Path, typer.Argument(help='JSON Lines of {"index": i, "response": s}')],
    out: Annotated[Path, typer.Option(help="folder for scores.json and scores.md")],
    overrides: dict[str, Any],
) -> None:
    """Score any system's raw responses exactly as the KDD Cup 2024 evaluator does."""
    from shoptune.config import load_config
    from shoptune.evaluate.runner import score_file

    _show_scores(score_file(data, predictions, out, load_config(EvalConfig, None, overrides)), out)


@eval_app.command("compare")
@config_options(EvalConfig, only=("embedding_models", "bootstrap", "seed", "tasks", "limit_per_task", "limit"))
def eval_compare(
    data: Annotated[Path, typer.Argument(help="ShopBench-format JSON Lines with the truth")],
    first: Annotated[Path, typer.Argument(help='the first system\'s {"index": i, "response": s} JSON Lines')],
    second: Annotated[Path, typer.Argument(help="the second system's, compared with the first")],
    overrides: dict[str, Any],
    json_file: Annotated[Path | None, typer.Option("--json", help="also write the comparison to this file")] = None,
) -> None:
    """Two systems' answers to the same questions: the second minus the first, overall and per track, with paired
    bootstrap 95% intervals, and how each spreads its multiple-choice answers over the option labels."""
    from shoptune.config import load_config
    from shoptune.evaluate.runner import compare_files
    from shoptune.tasks.registry import short_name

    found = compare_files(data, first, second, load_config(EvalConfig, None, overrides), json_file)
    console.print(found["selection"])
    for side, count in found["missing"].items():
        if count:
            console.print(f"the {side} file has no answer to {count} question(s): scored as empty responses")
    table = Table(title=f"second minus first ({found['questions']} questions, paired bootstrap 95%)")
    for column in ("level", "first", "second", "difference", "95% CI"):
        table.add_column(column, justify="left" if column == "level" else "right")
    for level, r in found["levels"].items():
        name = level if level == "overall" else short_name(level)
        low, high = r["ci"]
        shown = (f"{r['first']:.4f}", f"{r['second']:.4f}", f"{r['difference']:+.4f}", f"[{low:+.4f}, {high:+.4f}]")
        table.add_row(name, *shown)
    Console().print(table)
    shares = found["mc_labels"]
    if shares["truth"]:
        labels = sorted({k for row in shares.values() for k in row}, key=lambda k: (k == "other", k))
        table = Table(title="multiple-choice answers by label (share of questions)")
        table.add_column("answers")
        for label in labels:
            table.add_column(label, justify="right")
        for name, row in shares.items():
            table.add_row(name, *(f"{row.get(label, 0.0):.2f}" for label in labels))
        Console().print(table)
    if json_file is not None:
        console.print(f"wrote {json_file}")


@eval_app.command("baseline")
@config_options(EvalConfig, only=("embedding_models", "bootstrap", "seed"))
def eval_baseline(
    data: Annotated[Path, typer.Argument(help="ShopBench-format JSON Lines with the truth")],
    out: Annotated[Path, typer.Option(help="folder for predictions.jsonl, scores and baseline.json")],
    overrides: dict[str, Any],
    choose_on: Annotated[
        Path | None,
        typer.Option(
            help="questions to choose the multiple-choice label on (a mixture's validation.jsonl); not given: "
            "the scored set itself, an upper bound of answering without reading"
        ),
    ] = None,
) -> None:
    """Score answers that need no model (one option label for all, the listed order, no entities, the prompt's
    own text): what a model's score must beat before it says anything."""
    from shoptune.config import load_config
    from shoptune.evaluate.runner import baseline_file

    scores, said = baseline_file(data, out, load_config(EvalConfig, None, overrides), choose_on)
    for task_type, what in said.items():
        console.print(f"{task_type}: {what}")
    _show_scores(scores, out)


@eval_app.command("run")
@config_options(EvalConfig)
def eval_run(
    data: Annotated[Path, typer.Argument(help="ShopBench-format JSON Lines")],
    out: Annotated[Path, typer.Option(help="folder for predictions, scores and the resolved config")],
    overrides: dict[str, Any],
    config: Annotated[
        Path | None, typer.Option(help="YAML with any of the settings below; the options given override it")
    ] = None,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """Answer every question with a model, then score; an interrupted run resumes where it stopped."""
    from shoptune.config import load_config
    from shoptune.evaluate.runner import run_eval

    result = run_eval(data, out, load_config(EvalConfig, config, overrides), progress=progress)
    if result.finished_earlier:
        console.print(f"finished earlier: all {result.reused} question(s) were answered in {out}; scored again")
    else:
        console.print(f"answered {result.computed} question(s), reused {result.reused} from earlier runs")
    if result.truncated_prompts:
        console.print(
            f"warning: {result.truncated_prompts} prompt(s) were longer than the model's context and lost their "
            "beginning (counted in run.json)"
        )
    if result.unconstrained:
        console.print(
            f"warning: {result.unconstrained} retrieval or ranking question(s) list no numbered candidates, so their "
            "answers could not be constrained and were generated freely (counted in run.json)"
        )
    if result.selection is not None and result.selection.partial:
        console.print(result.selection.describe())
    _show_scores(result.scores, out)


# Task types as narrow tables show them.
TYPE_SHORT = {"multiple-choice": "mc", "named_entity_recognition": "ner", "generation": "gen"}


@tasks_app.command("list")
def tasks_list(
    as_json: Annotated[bool, typer.Option("--json", help="print a JSON list, one object per subtask")] = False,
    sources: Annotated[
        list[Path] | None,
        typer.Option(help="a sources file mapping your own tables (see the README's 'Your own data')"),
    ] = None,
    raw_dir: Annotated[Path, typer.Option(help="raw data folder, to say which subtasks have data")] = Path("data/raw"),
) -> None:
    """Every subtask: capability, ShopBench task type and metric, languages, sources and their licences."""
    import json

    from shoptune.sources.mapped import lacks, load_sources, own_corpus
    from shoptune.sources.registry import present_sources
    from shoptune.tasks.catalog import all_subtasks, declared_subtasks
    from shoptune.tasks.registry import Capability

    present = present_sources(raw_dir) if raw_dir.is_dir() else set()
    own = own_corpus([s for file in sources or [] for s in load_sources(file)]) if sources else None
    rows = []
    for task in {**all_subtasks(), **declared_subtasks(list(sources or []))}.values():
        shipped = set(task.sources) <= present
        feeding = sorted({s.id for f in task.reads for s in own.origins.get(f, [])}) if own else []
        missing = lacks(own, task.reads, task.languages) if own is not None else []
        if own is not None and not missing and not task.build(own, 1, 0, patience=200):
            missing = ["records it can draw from: the fields it uses are empty or of another annotation scheme"]
        rows.append(
            {
                "name": task.name,
                "capability": task.capability.value,
                "track": task.capability.track,
                "task_type": task.task_type.value,
                "metric": str(task.metric),
                "languages": list(task.languages),
                "sources": list(task.sources),
                "licences": list(task.licences),
                "has_data": shipped or (own is not None and not missing),
                "has_shipped_data": shipped,
                "own_sources": feeding if own is not None and not missing else [],
                "needs": missing,  # what your sources files would have to give
                "description": task.description,
            }
        )
    if not present:
        console.print(
            f"warning: no raw data found in {raw_dir.resolve()}: run from the repository's folder, or pass --raw-dir"
        )
    if as_json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    out = Console()
    wide = out.width >= 140  # narrower: capabilities as headings, languages, sources and licences left to --json
    columns = ["capability", "subtask", "type", "metric", "languages", "sources", "licence", "data"]
    if not wide:
        columns = ["subtask", "type", "metric", "data"]
    title = f"shoptune subtasks ({sum(r['has_data'] for r in rows)} of {len(rows)} with data in {raw_dir})"
    table = Table(title=title, caption=None if wide else "languages, sources, licences: --json or a wider terminal")
    for column in columns:
        table.add_column(column, no_wrap=column in ("capability", "subtask", "type"))
    heading = None
    for row in rows:
        capability = Capability(row["capability"]).short
        if not wide and capability != heading:
            if heading is not None:
                table.add_section()
            table.add_row(capability.upper(), *[""] * (len(columns) - 1))
            heading = capability
        cells = {
            "capability": capability,
            "subtask": row["name"],
            "type": TYPE_SHORT.get(row["task_type"], row["task_type"]) if not wide else row["task_type"],
            "metric": row["metric"],
            "languages": ",".join(row["languages"]),
            "sources": ", ".join(row["sources"])
            + (f" + yours: {', '.join(row['own_sources'])}" if row["own_sources"] else ""),
            "licence": "+".join(row["licences"]),
            "data": "yes" if row["has_data"] else "no",
        }
        table.add_row(*(cells[c] for c in columns))
    out.print(table)


@data_app.command("build")
@config_options(MixtureSpec)
def data_build(
    spec: Annotated[Path, typer.Argument(help="mixture spec YAML (see configs/mixtures/); the options override it")],
    out: Annotated[Path, typer.Option(help="folder for the dataset (save_to_disk) and manifest.json")],
    overrides: dict[str, Any],
    workers: Annotated[
        int | None,
        typer.Option(min=1, help="processes that build subtasks", show_default="all CPUs for large mixtures"),
    ] = None,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """Build a mixture: examples per subtask, de-duplicated, decontaminated, split, saved."""
    from shoptune.config import load_config
    from shoptune.data.build import build_mixture

    settings = load_config(MixtureSpec, spec, overrides)
    info = build_mixture(settings, out, workers=workers, progress=progress)
    table = Table(
        title=f"mixture {info['name']}: {info['examples']['train']} train, {info['examples']['validation']} validation"
    )
    for column in ("capability", "subtask", "task type", "metric"):
        table.add_column(column)
    table.add_column("train", justify="right")
    subtasks = settings.known_subtasks()
    for name, n in info["by_subtask"].items():
        task = subtasks[name]  # extra examples are kept only for selected, known subtasks
        table.add_row(task.capability.short, name, task.task_type.value, str(task.metric), str(n))
    Console().print(table)
    for key in ("by_capability", "by_task_type", "by_language", "removed", "prompt_length"):
        console.print(f"{key}: " + ", ".join(f"{k} {v}" for k, v in info[key].items()))
    if info["subtasks_without_data"]:
        where = "add their source under raw_dir, or a sources-file entry that feeds them"
        console.print(f"without data ({where}): {', '.join(info['subtasks_without_data'])}")
    if info["rebuilt"]:
        console.print(f"{out} held a build of this spec already: built again from the inputs as they are now")
    console.print(f"wrote {out} (load with datasets.load_from_disk) and {out / 'manifest.json'}")


@data_app.command("heldout")
def data_heldout(
    out: Annotated[Path, typer.Option(help="JSON Lines file to write (the shipped one: data/heldout/heldout.jsonl)")],
    raw_dir: Annotated[Path, typer.Option(help="raw data folder")] = Path("data/raw"),
    per_subtask: Annotated[int, typer.Option(min=1, help="questions per subtask")] = 100,
    seed: Annotated[int, typer.Option(help="draws the questions")] = 0,
    sources: Annotated[
        list[Path] | None,
        typer.Option(help="build it from the held-out part of your own tables (a sources file) instead of raw_dir"),
    ] = None,
) -> None:
    """Build the held-out benchmark from raw data no mixture trains on, worded with the reserved paraphrases."""
    from shoptune.data.heldout import build_heldout, build_own_heldout, write_heldout

    if sources:
        examples, info = build_own_heldout(list(sources), per_subtask, seed)
    else:
        examples, info = build_heldout(raw_dir, per_subtask, seed)
    manifest = write_heldout(examples, info, out)
    for key in ("by_track", "by_task_type", "by_subtask"):
        console.print(f"{key}: " + ", ".join(f"{k} {v}" for k, v in info[key].items()))
    console.print(f"wrote {len(examples)} questions to {out} and {manifest}")


@data_app.command("generate")
@config_options(GenerateSpec)
def data_generate(
    spec: Annotated[Path, typer.Argument(help="generation spec YAML (see configs/generate/); options override it")],
    out: Annotated[Path, typer.Option(help="folder for generated.jsonl, stats.json and the request cache")],
    overrides: dict[str, Any],
    dry_run: Annotated[
        bool, typer.Option(help="say how many requests, tokens and (at the spec's prices) what cost; ask nothing")
    ] = False,
    allow_partial: Annotated[
        bool, typer.Option(help="exit 0 when some examples could not be made (they are counted in stats.json)")
    ] = False,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """Have a teacher LLM (any OpenAI-compatible endpoint) write validated examples per subtask. A run that makes
    fewer examples than asked keeps them and exits 1 (rerun to retry the failed ones) unless --allow-partial."""
    from shoptune.config import load_config
    from shoptune.data.generate import generate, plan

    settings = load_config(GenerateSpec, spec, overrides)
    if dry_run:
        need = plan(settings, out)
        priced = f", about {need['estimated_cost']:g} at the spec's prices" if need["priced"] else " (no prices set)"
        console.print(
            f"{need['requests']} examples of {need['subtasks']} subtask(s): {need['cached']} answered in the cache, "
            f"{need['new_requests']} new request(s) (up to {need['max_requests_with_retries_of_invalid_replies']} "
            f"with retries of invalid replies); about {need['estimated_prompt_tokens']:,} prompt and "
            f"{need['estimated_completion_tokens']:,} completion tokens{priced}"
        )
        return
    stats = generate(settings, out, progress=progress)
    console.print(", ".join(f"{k} {v}" for k, v in stats.items()))
    if stats["http_calls"] == 0 and stats["produced"] == stats["requested"]:
        console.print(f"finished earlier: every example came from {out}'s cache; the teacher was asked nothing")
    console.print(
        f"wrote {out / 'generated.jsonl'}; add it to a mixture with extra_examples: [{out / 'generated.jsonl'}]"
    )
    if stats["produced"] < stats["requested"]:
        first = f"; first failed request: {stats['first_failure']}" if stats["first_failure"] else ""
        console.print(f"partial: {stats['produced']} of {stats['requested']} examples{first}")
        if not allow_partial:
            console.print("rerun the same command to retry what failed, or pass --allow-partial to accept this")
            raise typer.Exit(1)


@app.command("train")
@config_options(TrainConfig)
def train_command(
    out: Annotated[Path, typer.Option(help="run folder: adapter/, checkpoints/, logs/, config.yaml, summary")],
    overrides: dict[str, Any],
    config: Annotated[
        Path | None,
        typer.Argument(
            help="training config YAML (see configs/train/); the options override it; none: --data/--mixture"
        ),
    ] = None,
    resume: Annotated[bool, typer.Option(help="continue from the newest checkpoint in --out")] = True,
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
) -> None:
    """LoRA-tune a model on a mixture; rerun the same command to resume after an interruption."""
    import os

    from shoptune.config import load_config
    from shoptune.train.distributed import cuda_devices, plan_devices, relaunch, world_size
    from shoptune.train.trainer import train

    settings = load_config(TrainConfig, config, overrides)
    plan = plan_devices(cuda_devices(), world_size(), settings.distributed)
    if plan.message:
        console.print(plan.message)
    if plan.kind == "relaunch":
        raise typer.Exit(relaunch(sys.argv[1:], plan.processes))
    from shoptune.evaluate.during_training import validator_for

    summary = train(settings, out, resume=resume, progress=progress, validator=validator_for(settings))
    if summary and os.environ.get("RANK", "0") == "0":  # under a launcher, the main process speaks for all
        if summary.get("finished_earlier"):
            console.print(f"finished earlier: {out} holds this run, trained to the end; nothing was redone")
        params = summary["parameters"]
        console.print(
            f"trainable parameters {params['trainable']:,} of {params['total']:,}; steps {summary['steps']}; "
            f"validation loss {summary['initial_eval_loss']} -> {summary['final_eval_loss']}"
        )
        curve = summary.get("shopbench_validation") or []
        if curve:
            console.print(
                "validation ShopBench overall by step: "
                + ", ".join(f"{point['step']}: {point['overall']:.4f}" for point in curve)
            )
        kind = "the tuned model" if settings.method == "full" else "PEFT adapter"
        console.print(f"wrote {out / 'adapter'} ({kind}) and {out / 'train_summary.json'}")


@app.command("download")
def download_command(
    model: Annotated[str, typer.Argument(help="a Hugging Face hub id, e.g. Qwen/Qwen2-7B-Instruct")],
    revision: Annotated[str | None, typer.Option(help="a branch, tag or commit", show_default="main")] = None,
) -> None:
    """Put a hub model into the local Hugging Face cache, so every later command runs offline with it."""
    from shoptune.hub import download

    folder = download(model, revision)
    console.print(f"{model} is in the local cache ({folder}); every shoptune command now finds it offline")


@app.command("merge")
def merge_command(
    adapter: Annotated[Path, typer.Argument(help="a PEFT adapter folder (e.g. RUN/adapter)")],
    out: Annotated[Path, typer.Option(help="folder for the merged model")],
    model: Annotated[
        str | None,
        typer.Option(help="base model", show_default="the adapter's own base, as its adapter_config.json names it"),
    ] = None,
    alpha: Annotated[
        float, typer.Option(help="0: the base weights, 1: the tuned ones; between: interpolated (wise-ft)")
    ] = 1.0,
    allow_download: Annotated[
        bool, typer.Option(help="let a hub id be fetched when it is not in the local cache")
    ] = False,
) -> None:
    """Fold a LoRA adapter into its base model, or blend the two (--alpha)."""
    from shoptune.hub import base_for
    from shoptune.train.trainer import merge

    if merge(base_for(model, adapter), adapter, out, allow_download=allow_download, alpha=alpha):
        console.print(f"finished earlier: {out} holds this merge; nothing was redone")
        return
    console.print(f"wrote merged model to {out}" + (f" (alpha {alpha:g})" if alpha != 1.0 else ""))


@app.command("combine")
def combine_command(
    adapters: Annotated[list[Path], typer.Argument(help="two or more PEFT adapter folders of one base model")],
    out: Annotated[Path, typer.Option(help="folder for the combined adapter")],
    method: Annotated[str, typer.Option(help="; ".join(f"{k}: {v.help}" for k, v in METHODS.items()))] = "linear",
    weight: Annotated[
        list[float] | None, typer.Option(help="one per adapter, in order", show_default="1/n each")
    ] = None,
    density: Annotated[float, typer.Option(help="ties and dare: the fraction of each update kept")] = 0.5,
    model: Annotated[
        str | None, typer.Option(help="base model", show_default="the first adapter's own base, as its config names it")
    ] = None,
    allow_download: Annotated[
        bool, typer.Option(help="let a hub id be fetched when it is not in the local cache")
    ] = False,
) -> None:
    """Make one adapter of several (PEFT adapter arithmetic): capability adapters into one model."""
    from shoptune.hub import base_for
    from shoptune.train.combine import combine_adapters

    finished = combine_adapters(
        base_for(model, adapters[0] if adapters else None),
        adapters,
        out,
        method=method,
        weights=weight,
        density=density,
        allow_download=allow_download,
    )
    if finished:
        console.print(f"finished earlier: {out} holds this combination; nothing was redone")
        return
    console.print(f"wrote {method} combination of {len(adapters)} adapters to {out}")


@study_app.command("run")
@config_options(StudySpec, only=("models", "ranks", "seeds", "include_base"))
def study_run(
    spec: Annotated[Path, typer.Argument(help="study spec YAML (see configs/studies/); the options override it")],
    out: Annotated[Path, typer.Option(help="study folder: cells/, mixtures/, results.*, report.md, plots")],
    overrides: dict[str, Any],
    executor: Annotated[str, typer.Option(help="local (one cell after another) or ray (one cell per GPU)")] = "local",
    ray_address: Annotated[
        str | None, typer.Option(help="ray executor: the cluster's address", show_default="local")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option(help="list the cells, what each trains and scores, and a rough time; run nothing")
    ] = False,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """Run every cell (build, train, score), then write the table and the report; reruns redo only what changed."""
    if executor not in ("local", "ray"):
        raise ShoptuneError(f"--executor {executor!r}: expected local or ray")
    from shoptune.study.report import write_report
    from shoptune.study.runner import plan_study, run_study
    from shoptune.study.spec import load_study

    study = load_study(spec, overrides)
    if dry_run:
        _show_plan(plan_study(study, out))
        return
    counts = run_study(study, out, progress=progress, executor=executor, address=ray_address)
    console.print(", ".join(f"{k} {v}" for k, v in counts.items()))
    if counts["cells"] == counts["reused"]:
        console.print(f"finished earlier: every cell of this study had run in {out}; the report is written again")
    report = write_report(out)
    console.print(f"report: {report}")
    if counts["failed"]:
        console.print(f"{counts['failed']} cell(s) failed; each says why in {out / 'cells'}/<cell>/error.json")
        raise typer.Exit(1)


def _show_plan(cells: list[dict[str, Any]]) -> None:
    table = Table(title="study cells (nothing run)")
    for column in ("cell", "model", "trains", "scores", "rough time"):
        table.add_column(column, justify="right" if column == "rough time" else "left")
    total = 0.0
    for cell in cells:
        seconds = cell["seconds"]
        total += 0.0 if cell["done"] else seconds or 0.0
        shown = "done" if cell["done"] else (f"{seconds / 60:.0f} min" if seconds is not None else "?")
        table.add_row(cell["key"], cell["model"], cell["trains"], cell["scores"], shown)
    Console().print(table)
    todo = sum(not c["done"] for c in cells)
    unknown = sum(not c["done"] and c["seconds"] is None for c in cells)
    if unknown == todo and todo:
        rough = "no estimate: no cell to run has a model whose weights are here to count ('?')"
    elif unknown:
        rough = f"roughly {total / 60:.0f} min for the cells it can estimate, and {unknown} it cannot ('?')"
    else:
        rough = f"roughly {total / 60:.0f} min"
    console.print(
        f"{len(cells)} cell(s), {todo} to run, {rough} (rates measured with SmolLM2-135M on 2 CPU cores, scaled by "
        "size for other models; other machines differ; '?': a model whose weights are not here to count, or a "
        "budget in epochs)"
    )


@study_app.command("show")
def study_show(
    out: Annotated[Path, typer.Argument(help="a study folder")],
    as_json: Annotated[bool, typer.Option("--json", help="print a JSON list, one object per cell")] = False,
) -> None:
    """Every cell of a study: its design, rank and seed, whether it finished, where its adapter is, its scores."""
    import json

    from shoptune.study.results import cells_of

    if not (out / "cells").is_dir():
        raise ShoptuneError(f"{out}: not a study folder (no cells/); run `shoptune study run SPEC --out {out}`")
    cells = cells_of(out)
    if as_json:
        print(json.dumps(cells, indent=2))
        return
    sets = sorted({name for cell in cells for name in cell["overall"] if "+" not in name})  # answered plainly
    table = Table(title=f"study cells ({out})")
    for column in ("cell", "design", "rank", "seed", "status", "adapter", *sets):
        table.add_column(column, justify="right" if column in sets else "left")
    for cell in cells:
        adapter = str(Path(cell["adapter"]).relative_to(out)) if cell["adapter"] else "-"
        scores = [f"{cell['overall'][name]:.4f}" if name in cell["overall"] else "-" for name in sets]
        table.add_row(
            cell["cell"], cell["design"], str(cell["rank"] or "-"), str(cell["seed"]), cell["status"], adapter, *scores
        )
    Console().print(table)


@study_app.command("report")
def study_report(out: Annotated[Path, typer.Argument(help="a study folder")]) -> None:
    """Rewrite the Markdown report and PNG plots from the study's results."""
    from shoptune.study.report import write_report

    console.print(f"report: {write_report(out)}")


@app.command("serve")
@config_options(ServeLimits, only=("max_tokens", "max_prompts", "max_queue", "batch"))
def serve_command(
    overrides: dict[str, Any],
    model: Annotated[
        str | None,
        typer.Argument(
            help="model name, .gguf file, folder or hub id",
            show_default="the adapter's base, else smollm2-135m-instruct",
        ),
    ] = None,
    adapter: Annotated[str | None, typer.Option(help="PEFT LoRA adapter folder to apply")] = None,
    name: Annotated[
        str | None, typer.Option(help="the model name clients send", show_default="the folder's name")
    ] = None,
    host: Annotated[str, typer.Option(help="address to listen on (beyond loopback, an API key is required)")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(min=0, max=65535, help="port to listen on (0: any free port)")] = 8000,
    constrained: Annotated[
        bool,
        typer.Option(
            help="keep answers to what ShopBench's parsers read in full, for the task type a request names "
            "(task_type, an extra body field) or its prompt shows (a numbered list to rank or to pick three from)"
        ),
    ] = False,
    allow_download: Annotated[
        bool, typer.Option(help="let a hub id be fetched when it is not in the local cache")
    ] = False,
) -> None:
    """Serve a model (plus adapter) over an OpenAI-compatible API, streaming included. Set SHOPTUNE_API_KEY to
    require that key from clients (required with a --host beyond loopback)."""
    import asyncio
    import os

    from shoptune.config import load_config
    from shoptune.evaluate.backends import HFBackend
    from shoptune.hub import base_for
    from shoptune.serve import API_KEY_ENV, ModelServer, is_loopback, listen, make_app, run

    api_key = os.environ.get(API_KEY_ENV) or None
    if api_key is None and not is_loopback(host):
        raise ShoptuneError(
            f"--host {host} lets other machines reach the model: set {API_KEY_ENV} to the key clients must send"
        )
    limits = load_config(ServeLimits, None, overrides)
    sock = listen(host, port)
    path = base_for(model, adapter)
    backend = HFBackend(path, adapter=adapter, system_prompt=None, allow_download=allow_download)
    server = ModelServer(backend, name or Path(path.rstrip("/")).name, limits, constrained=constrained)
    bound = sock.getsockname()[1]
    key = "API key required" if api_key else f"no API key ({API_KEY_ENV} unset)"
    console.print(f"serving '{server.name}' at http://{host}:{bound}/v1, {key} (Ctrl-C stops)")
    asyncio.run(run(make_app(server, api_key), sock, limits))  # until Ctrl-C or SIGTERM: a graceful stop
    console.print("stopped serving")


def main() -> None:
    from shoptune.train.distributed import record_status

    try:
        code = _main()
    except BaseException:  # a bug: its traceback is printed as Python prints it
        record_status(1)
        raise
    record_status(code)  # for the process that launched this one, if any
    sys.exit(code)


def _main() -> int:
    try:
        # Not standalone: typer would turn Ctrl-C into a silent exit 130 before it reached this function.
        code = app(standalone_mode=False)
    except ShoptuneError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        if getattr(exc, "together", False):  # every process of a launch raised it: they leave together
            from shoptune.train.distributed import leave

            leave()
        return 2
    except typer.TyperException as exc:  # a usage error: an unknown option, a missing argument
        show = getattr(exc, "show", None)
        show() if show is not None else print(f"error: {exc.format_message()}", file=sys.stderr)
        return exc.exit_code
    except (KeyboardInterrupt, typer.Abort):
        code = 130
    if code == 130:
        console.print("interrupted: what was finished is kept; run the same command again to resume")
    return code if isinstance(code, int) else 0
