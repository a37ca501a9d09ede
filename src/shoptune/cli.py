"""`shoptune <verb>`: parses arguments and calls the layers; nothing else lives here.

A user error (ShoptuneError) is one line on stderr and exit code 2, never a traceback; Ctrl-C says
how to resume.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from shoptune.errors import ShoptuneError

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
# Messages carry user paths and data ("[x]" is not markup): printed as they are.
console = Console(stderr=True, markup=False, highlight=False, soft_wrap=True)


def _pairs(values: list[str] | None, option: str) -> dict[str, Any] | None:
    """Repeated KEY=VALUE options as a dict."""
    if not values:
        return None
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise ShoptuneError(f"{option} expects KEY=VALUE, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def _show_scores(scores: dict[str, Any], out: Path) -> None:
    from shoptune.evaluate.scoring import TRACK_SHORT_NAMES

    ci = scores.get("ci95", {})
    table = Table(title=f"ShopBench scores ({out})")
    table.add_column("track")
    table.add_column("score", justify="right")
    table.add_column("95% CI", justify="right")
    for track, value in scores["tracks"].items():
        low_high = ci.get("tracks", {}).get(track)
        table.add_row(
            TRACK_SHORT_NAMES.get(track, track),
            f"{value:.4f}",
            f"{low_high[0]:.3f}-{low_high[1]:.3f}" if low_high else "",
        )
    overall_ci = ci.get("overall")
    table.add_row(
        "[bold]overall[/bold]",
        f"[bold]{scores['overall']:.4f}[/bold]",
        f"{overall_ci[0]:.3f}-{overall_ci[1]:.3f}" if overall_ci else "",
    )
    Console().print(table)
    if scores.get("missing"):
        console.print(f"{scores['missing']} question(s) had no prediction and were scored as empty responses")
    console.print(f"wrote {out / 'scores.json'} and {out / 'scores.md'}")


@eval_app.command("score")
def eval_score(
    data: Annotated[Path, typer.Argument(help="ShopBench-format JSON Lines with the truth")],
    predictions: Annotated[Path, typer.Argument(help='JSON Lines of {"index": i, "response": s}')],
    out: Annotated[Path, typer.Option(help="folder for scores.json and scores.md")],
    embedding_model: Annotated[
        list[str] | None, typer.Option(help="METRIC=PATH for a sentence-embedding metric's local model")
    ] = None,
    bootstrap: Annotated[int, typer.Option(help="bootstrap resamples for the 95% intervals (0: none)")] = 1000,
) -> None:
    """Score any system's raw responses exactly as the KDD Cup 2024 evaluator does."""
    from shoptune.config import load_config
    from shoptune.evaluate.runner import EvalConfig, score_file

    config = load_config(
        EvalConfig, None, {"embedding_models": _pairs(embedding_model, "--embedding-model"), "bootstrap": bootstrap}
    )
    _show_scores(score_file(data, predictions, out, config), out)


@eval_app.command("run")
def eval_run(
    data: Annotated[Path, typer.Argument(help="ShopBench-format JSON Lines")],
    out: Annotated[Path, typer.Option(help="folder for predictions, scores and the resolved config")],
    model: Annotated[
        str | None,
        typer.Option(help="model name, .gguf file, Hugging Face folder or hub id (default: smollm2-135m-instruct)"),
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="YAML with any EvalConfig settings; options below override it")
    ] = None,
    adapter: Annotated[str | None, typer.Option(help="PEFT LoRA adapter folder to apply to the model")] = None,
    backend: Annotated[str | None, typer.Option(help="hf (default), openai or vllm")] = None,
    base_url: Annotated[str | None, typer.Option(help="openai backend: the server's /v1 URL")] = None,
    batch_size: Annotated[int | None, typer.Option(help="questions per batch")] = None,
    mc_mode: Annotated[str | None, typer.Option(help="logits (one forward pass) or generate")] = None,
    max_new_tokens: Annotated[list[str] | None, typer.Option(help="TASK_TYPE=N, e.g. generation=64")] = None,
    chat_template: Annotated[
        bool | None, typer.Option("--chat-template/--no-chat-template", help="default: when the model has one")
    ] = None,
    no_system_prompt: Annotated[
        bool, typer.Option("--no-system-prompt", help="omit the official baselines' system prompt")
    ] = False,
    dtype: Annotated[str | None, typer.Option(help="auto, float32, bfloat16 or float16")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda, cuda:1, ...")] = None,
    allow_download: Annotated[
        bool, typer.Option("--allow-download", help="let a hub id be fetched if not cached")
    ] = False,
    limit: Annotated[int | None, typer.Option(help="only the first N questions")] = None,
    embedding_model: Annotated[
        list[str] | None, typer.Option(help="METRIC=PATH for a sentence-embedding metric")
    ] = None,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """Answer every question with a model, then score; an interrupted run resumes where it stopped."""
    from shoptune.config import load_config
    from shoptune.evaluate.runner import EvalConfig, run_eval

    tokens = _pairs(max_new_tokens, "--max-new-tokens")
    overrides: dict[str, Any] = {
        "model": model,
        "adapter": adapter,
        "backend": backend,
        "base_url": base_url,
        "batch_size": batch_size,
        "mc_mode": mc_mode,
        "chat_template": chat_template,
        "dtype": dtype,
        "device": device,
        "limit": limit,
        "max_new_tokens": {k: _int(v, "--max-new-tokens") for k, v in tokens.items()} if tokens else None,
        "embedding_models": _pairs(embedding_model, "--embedding-model"),
        "allow_download": allow_download or None,
    }
    settings = load_config(EvalConfig, config, overrides)
    if no_system_prompt:
        settings.system_prompt = None
    result = run_eval(data, out, settings, progress=progress)
    console.print(f"answered {result.computed} question(s), reused {result.reused} from earlier runs")
    if result.truncated_prompts:
        console.print(
            f"warning: {result.truncated_prompts} prompt(s) were longer than the model's context and lost their "
            "beginning (counted in run.json)"
        )
    _show_scores(result.scores, out)


@tasks_app.command("list")
def tasks_list() -> None:
    """Every subtask: capability, ShopBench task type and metric, source."""
    from shoptune.evaluate.scoring import TRACK_SHORT_NAMES
    from shoptune.tasks.registry import TRACK_OF, all_subtasks

    table = Table(title="shoptune subtasks")
    table.add_column("capability", no_wrap=True)
    table.add_column("subtask", no_wrap=True)
    table.add_column("type", no_wrap=True)
    table.add_column("metric", no_wrap=True)
    table.add_column("built from")
    tasks = sorted(all_subtasks().values(), key=lambda t: (list(TRACK_OF).index(t.capability), t.name))
    for task in tasks:
        short = TRACK_SHORT_NAMES[TRACK_OF[task.capability]]
        table.add_row(short, task.name, task.task_type.value, task.metric.value, task.source)
    Console().print(table)


@data_app.command("build")
def data_build(
    spec: Annotated[Path, typer.Argument(help="mixture spec YAML (see configs/mixtures/)")],
    out: Annotated[Path, typer.Option(help="folder for the dataset (save_to_disk) and manifest.json")],
    workers: Annotated[
        int | None, typer.Option(min=1, help="processes that build subtasks (default: all CPUs for large mixtures)")
    ] = None,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """Build a mixture: examples per subtask, de-duplicated, decontaminated, split, saved."""
    from shoptune.config import load_config
    from shoptune.data.build import build_mixture
    from shoptune.data.spec import MixtureSpec
    from shoptune.evaluate.scoring import TRACK_SHORT_NAMES
    from shoptune.tasks.registry import TRACK_OF, all_subtasks

    settings = load_config(MixtureSpec, spec).resolve_paths(spec.parent)
    info = build_mixture(settings, out, workers=workers, progress=progress)
    table = Table(
        title=f"mixture {info['name']}: {info['examples']['train']} train, {info['examples']['validation']} validation"
    )
    for column in ("capability", "subtask", "task type", "metric"):
        table.add_column(column)
    table.add_column("train", justify="right")
    subtasks = all_subtasks()
    for name, n in info["by_subtask"].items():
        task = subtasks[name]  # extra examples are kept only for selected, registered subtasks
        capability = TRACK_SHORT_NAMES[TRACK_OF[task.capability]]
        table.add_row(capability, name, task.task_type.value, task.metric.value, str(n))
    Console().print(table)
    for key in ("by_capability", "by_task_type", "by_language", "removed", "prompt_length"):
        console.print(f"{key}: " + ", ".join(f"{k} {v}" for k, v in info[key].items()))
    if info["subtasks_without_data"]:
        console.print(f"without data (add their source under raw_dir): {', '.join(info['subtasks_without_data'])}")
    console.print(f"wrote {out} (load with datasets.load_from_disk) and {out / 'manifest.json'}")


@data_app.command("heldout")
def data_heldout(
    out: Annotated[Path, typer.Option(help="JSON Lines file to write (the shipped one: data/heldout/heldout.jsonl)")],
    raw_dir: Annotated[Path, typer.Option(help="raw data folder")] = Path("data/raw"),
    per_subtask: Annotated[int, typer.Option(min=1, help="questions per subtask")] = 100,
    seed: Annotated[int, typer.Option(help="draws the questions")] = 0,
) -> None:
    """Build the held-out benchmark from raw data no mixture trains on, worded with the reserved paraphrases."""
    from shoptune.data.heldout import build_heldout, write_heldout

    examples, info = build_heldout(raw_dir, per_subtask, seed)
    manifest = write_heldout(examples, info, out)
    for key in ("by_track", "by_task_type", "by_subtask"):
        console.print(f"{key}: " + ", ".join(f"{k} {v}" for k, v in info[key].items()))
    console.print(f"wrote {len(examples)} questions to {out} and {manifest}")


@data_app.command("generate")
def data_generate(
    spec: Annotated[Path, typer.Argument(help="generation spec YAML (see configs/generate/)")],
    out: Annotated[Path, typer.Option(help="folder for generated.jsonl, stats.json and the request cache")],
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """Have a teacher LLM (any OpenAI-compatible endpoint) write validated examples per subtask."""
    from shoptune.config import load_config
    from shoptune.data.generate import GenerateSpec, generate

    settings = load_config(GenerateSpec, spec)
    if settings.raw_dir is not None and not settings.raw_dir.exists():
        settings.raw_dir = spec.parent / settings.raw_dir
    stats = generate(settings, out, progress=progress)
    console.print(", ".join(f"{k} {v}" for k, v in stats.items()))
    console.print(
        f"wrote {out / 'generated.jsonl'}; add it to a mixture with extra_examples: [{out / 'generated.jsonl'}]"
    )


@app.command("train")
def train_command(
    config: Annotated[Path, typer.Argument(help="training config YAML (see configs/train/)")],
    out: Annotated[Path, typer.Option(help="run folder: adapter/, checkpoints/, logs/, config.yaml, summary")],
    model: Annotated[str | None, typer.Option(help="base model folder or hub id (overrides the config)")] = None,
    max_steps: Annotated[int | None, typer.Option(help="stop after N optimiser steps")] = None,
    rank: Annotated[int | None, typer.Option(help="LoRA rank (overrides lora.rank)")] = None,
    resume: Annotated[bool, typer.Option(help="continue from the newest checkpoint in --out")] = True,
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
) -> None:
    """LoRA-tune a model on a mixture; rerun the same command to resume after an interruption."""
    from shoptune.config import load_config
    from shoptune.train.config import TrainConfig
    from shoptune.train.trainer import train

    overrides = {"model": model, "max_steps": max_steps, "lora": {"rank": rank} if rank is not None else None}
    settings = load_config(TrainConfig, config, overrides)
    for field in ("mixture", "data", "eval_data"):
        value = getattr(settings, field)
        if value is not None and not value.exists() and (config.parent / value).exists():
            setattr(settings, field, config.parent / value)
    summary = train(settings, out, resume=resume, progress=progress)
    if summary:
        params = summary["parameters"]
        console.print(
            f"trainable parameters {params['trainable']:,} of {params['total']:,}; steps {summary['steps']}; "
            f"held-out loss {summary['initial_eval_loss']} -> {summary['final_eval_loss']}"
        )
        console.print(f"wrote {out / 'adapter'} (PEFT adapter) and {out / 'train_summary.json'}")


@app.command("merge")
def merge_command(
    adapter: Annotated[Path, typer.Argument(help="a PEFT adapter folder (e.g. RUN/adapter)")],
    out: Annotated[Path, typer.Option(help="folder for the merged model")],
    model: Annotated[str | None, typer.Option(help="base model (default: smollm2-135m-instruct)")] = None,
) -> None:
    """Fold a LoRA adapter into its base model."""
    from shoptune.hub import DEFAULT_MODEL
    from shoptune.train.trainer import merge

    merge(model or DEFAULT_MODEL, adapter, out)
    console.print(f"wrote merged model to {out}")


@study_app.command("run")
def study_run(
    spec: Annotated[Path, typer.Argument(help="study spec YAML (see configs/studies/)")],
    out: Annotated[Path, typer.Option(help="study folder: cells/, mixtures/, results.*, report.md, plots")],
    executor: Annotated[str, typer.Option(help="local (one cell after another) or ray (one cell per GPU)")] = "local",
    ray_address: Annotated[
        str | None, typer.Option(help="ray executor: the cluster's address (default: local)")
    ] = None,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """Run every cell (build, train, score), then write the table and the report; reruns redo only what changed."""
    if executor not in ("local", "ray"):
        raise ShoptuneError(f"--executor {executor!r}: expected local or ray")
    from shoptune.study.report import write_report
    from shoptune.study.runner import run_study
    from shoptune.study.spec import load_study

    counts = run_study(load_study(spec), out, progress=progress, executor=executor, address=ray_address)
    console.print(", ".join(f"{k} {v}" for k, v in counts.items()))
    report = write_report(out)
    console.print(f"report: {report}")
    if counts["failed"]:
        console.print(f"{counts['failed']} cell(s) failed; each says why in {out / 'cells'}/<cell>/error.json")
        raise typer.Exit(1)


@study_app.command("report")
def study_report(out: Annotated[Path, typer.Argument(help="a study folder")]) -> None:
    """Rewrite the Markdown report and PNG plots from the study's results."""
    from shoptune.study.report import write_report

    console.print(f"report: {write_report(out)}")


@app.command("serve")
def serve_command(
    model: Annotated[
        str | None, typer.Argument(help="model name, .gguf file, folder or hub id (default: smollm2-135m-instruct)")
    ] = None,
    adapter: Annotated[str | None, typer.Option(help="PEFT LoRA adapter folder to apply")] = None,
    name: Annotated[str | None, typer.Option(help="the model name clients send (default: the folder's name)")] = None,
    host: Annotated[str, typer.Option(help="address to listen on (beyond loopback, an API key is required)")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(min=0, max=65535, help="port to listen on (0: any free port)")] = 8000,
    max_tokens: Annotated[int, typer.Option(min=1, help="the most tokens one request may ask for")] = 1024,
    max_prompts: Annotated[int, typer.Option(min=1, help="prompts per /v1/completions request")] = 64,
    max_queue: Annotated[int, typer.Option(min=1, help="requests waiting or running; more get 503")] = 64,
    batch: Annotated[int, typer.Option(min=1, help="prompts the model answers per turn")] = 8,
) -> None:
    """Serve a model (plus adapter) over an OpenAI-compatible API, streaming included. Set SHOPTUNE_API_KEY to
    require that key from clients (required with a --host beyond loopback)."""
    import asyncio
    import os

    from shoptune.evaluate.backends import HFBackend
    from shoptune.hub import DEFAULT_MODEL
    from shoptune.serve import API_KEY_ENV, ModelServer, ServeLimits, is_loopback, listen, make_app, run

    api_key = os.environ.get(API_KEY_ENV) or None
    if api_key is None and not is_loopback(host):
        raise ShoptuneError(
            f"--host {host} lets other machines reach the model: set {API_KEY_ENV} to the key clients must send"
        )
    limits = ServeLimits(max_tokens=max_tokens, max_prompts=max_prompts, max_queue=max_queue, batch=batch)
    sock = listen(host, port)
    path = model or DEFAULT_MODEL
    backend = HFBackend(path, adapter=adapter, system_prompt=None)
    server = ModelServer(backend, name or Path(path.rstrip("/")).name, limits)
    bound = sock.getsockname()[1]
    key = "API key required" if api_key else f"no API key ({API_KEY_ENV} unset)"
    console.print(f"serving '{server.name}' at http://{host}:{bound}/v1, {key} (Ctrl-C stops)")
    asyncio.run(run(make_app(server, api_key), sock, limits))  # until Ctrl-C or SIGTERM: a graceful stop
    console.print("stopped serving")


def _int(value: str, option: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ShoptuneError(f"{option}: {value!r} is not a whole number") from None


def main() -> None:
    try:
        # Not standalone: typer would turn Ctrl-C into a silent exit 130 before it reached this function.
        code = app(standalone_mode=False)
    except ShoptuneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except typer.TyperException as exc:  # a usage error: an unknown option, a missing argument
        show = getattr(exc, "show", None)
        show() if show is not None else print(f"error: {exc.format_message()}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except (KeyboardInterrupt, typer.Abort):
        code = 130
    if code == 130:
        console.print("interrupted: what was finished is kept; run the same command again to resume")
    sys.exit(code if isinstance(code, int) else 0)
