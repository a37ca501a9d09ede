"""`shoptune data generate SPEC --out DIR`: new examples per subtask written by a teacher LLM.

Each requested example is one job: the teacher sees the subtask, its answer format and a real
demonstration drawn from the raw data, and must answer with one JSON record. A reply that does not
validate against the subtask's answer schema is asked for again with a fresh request; after
`attempts` failures the example is dropped and counted. Replies are cached per request, so a rerun
or a resumed run makes no call it has made before (and bills none); the output is written once, atomically.
Failed requests are counted by cause; `max_requests` caps what a run may spend and keeps what it made;
`plan` says what a run would cost before it starts.
"""

from __future__ import annotations

import json
import random
import re
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field
from tqdm import tqdm

from shoptune.config import SPEC_RECORD, StrictConfig
from shoptune.errors import ShoptuneError
from shoptune.files import write_json
from shoptune.runs import Layout, RunFolder, settings
from shoptune.schema import Example, TaskType, parse_example, write_jsonl
from shoptune.sources.records import RawCorpus
from shoptune.sources.registry import load_raw
from shoptune.sources.teacher import Teacher, TeacherError
from shoptune.tasks.catalog import all_subtasks
from shoptune.tasks.registry import Subtask
from shoptune.tasks.render import OPTION_LINE

SYSTEM = (
    "You write high-quality training examples for an online-shopping assistant, in the format of the "
    "ShopBench benchmark (Amazon KDD Cup 2024). Reply with exactly one JSON object and nothing else."
)
FORMATS = {
    TaskType.MULTIPLE_CHOICE: "input_field is the question followed by one line per option, '0. ...', '1. ...', "
    "'2. ...', '3. ...', then a last line 'Answer: '; output_field is the integer index of the correct option.",
    TaskType.RETRIEVAL: "input_field lists numbered candidates '1. ...', '2. ...'; output_field is a list of the "
    "numbers (1 to 3 of them) of the correct candidates.",
    TaskType.RANKING: "input_field lists exactly 5 numbered candidates '1. ...' to '5. ...'; output_field is a list "
    "of 5 relevance values, one per candidate in listed order: 1 exact, 0.1 substitute, 0.01 complement, 0 irrelevant.",
    TaskType.NER: "output_field is a list of the entity strings exactly as they appear in input_field.",
    TaskType.GENERATION: "output_field is the reference answer text.",
}
NUMBERED = re.compile(r"^\s*(\d+)\.\s", re.MULTILINE)
FENCE = re.compile(r"^```(?:json)?\s*|\s*```$")


class GenerateSpec(StrictConfig):
    name: str = Field(description="a name for this generation run")
    model: str = Field(description="the teacher model, as the endpoint names it")
    base_url: str | None = Field(None, description="the endpoint's /v1 URL (default: OpenAI's)")
    api_key_env: str = Field("OPENAI_API_KEY", description="the variable that holds the endpoint's API key")
    subtasks: list[str] | None = Field(None, description="subtasks to write examples of (default: every subtask)")
    examples_per_subtask: int = Field(100, ge=1, description="examples asked of the teacher per subtask")
    attempts: int = Field(3, ge=1, le=20, description="requests per example before an invalid reply is given up")
    temperature: float = Field(0.7, ge=0.0, le=2.0, description="the teacher's sampling temperature")
    max_tokens: int = Field(768, ge=16, description="tokens the teacher may write per reply")
    concurrency: int = Field(8, ge=1, le=256, description="requests in flight at once")
    timeout: float = Field(60.0, gt=0, description="seconds to wait for one reply (connecting: 10 s at most)")
    max_retries: int = Field(2, ge=0, le=20, description="retries of a failed request, with backoff")
    max_requests: int | None = Field(None, ge=1, description="stop making requests after this many (cached: free)")
    seed: int = Field(0, description="draws the demonstrations and seeds the teacher's sampling")
    raw_dir: Path | None = Field(
        Path("data/raw"), description="raw data the teacher's demonstrations are drawn from (none: no demonstration)"
    )
    price_per_1k_prompt_tokens: float = Field(
        0.0, ge=0, description="for the cost estimate: price of 1,000 prompt tokens"
    )
    price_per_1k_completion_tokens: float = Field(
        0.0, ge=0, description="for the cost estimate: price of 1,000 completion tokens"
    )
    cache_dir: Path | None = Field(None, description="where replies are cached (default: DIR/cache)")

    def selected(self) -> list[Subtask]:
        known = all_subtasks()
        unknown = sorted(set(self.subtasks or []) - set(known))
        if unknown:
            raise ShoptuneError(f"unknown subtask(s) {unknown}; `shoptune tasks list` shows them")
        return [t for t in known.values() if self.subtasks is None or t.name in self.subtasks]


def teacher_messages(task: Subtask, number: int, demo: Example | None) -> list[dict[str, str]]:
    lines = [
        f"Subtask: {task.name} ({task.description})",
        f"Capability: {task.capability.value}",
        f"Task type: {task.task_type.value}",
        f"Format: {FORMATS[task.task_type]}",
    ]
    if demo is not None:
        example = {"input_field": demo.input_field, "output_field": demo.output_field}
        lines.append(f"An example of this subtask:\n{json.dumps(example, ensure_ascii=False)}")
    lines.append(
        f"Write example number {number}: a new example with other products and other wording, in the same format. "
        'Reply with JSON: {"input_field": ..., "output_field": ...}'
    )
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "\n".join(lines)}]


def validate_reply(task: Subtask, text: str) -> Example:
    """The teacher's reply as a record of this subtask, or ValueError saying what is wrong with it."""
    try:
        obj = json.loads(FENCE.sub("", text.strip()))
    except json.JSONDecodeError:
        raise ValueError("not JSON") from None
    if not isinstance(obj, dict) or "input_field" not in obj or "output_field" not in obj:
        raise ValueError("missing input_field or output_field")
    try:
        ex = parse_example(task.example(obj["input_field"], obj["output_field"]).__dict__)
    except (ShoptuneError, ValueError, TypeError) as exc:
        raise ValueError(f"schema: {str(exc)[:80]}") from None
    prompt, answer = ex.input_field, ex.output_field
    if task.task_type is TaskType.MULTIPLE_CHOICE:
        labels = sorted(set(OPTION_LINE.findall(prompt)))
        if len(labels) < 2 or str(answer) not in labels:
            raise ValueError("answer is not one of the listed options")
    elif task.task_type in (TaskType.RETRIEVAL, TaskType.RANKING):
        n = len(NUMBERED.findall(prompt))
        if task.task_type is TaskType.RETRIEVAL and not all(1 <= i <= n for i in answer):
            raise ValueError("answer names a candidate that is not listed")
        if task.task_type is TaskType.RANKING and len(answer) != n:
            raise ValueError("one relevance per listed candidate is needed")
    elif task.task_type is TaskType.NER and not all(e.lower() in prompt.lower() for e in answer):
        raise ValueError("an entity does not appear in the input")
    return ex


@dataclass
class Stats:
    requested: int = 0
    produced: int = 0
    dropped: int = 0
    http_calls: int = 0
    cache_hits: int = 0
    failed_requests: int = 0
    failed: Counter = field(default_factory=Counter)  # cause -> requests (endpoint.cause's names, "capped")
    first_failure: str | None = None
    invalid: Counter = field(default_factory=Counter)
    prompt_tokens: int = 0  # of this run's requests: what it was billed for
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0  # of replies read from the cache: billed by an earlier run
    cached_completion_tokens: int = 0

    def as_dict(self, spec: GenerateSpec) -> dict[str, Any]:
        return {
            **{k: v for k, v in vars(self).items() if k not in ("invalid", "failed")},
            "failed": dict(self.failed),
            "invalid": dict(self.invalid),
            "cost": round(cost(spec, self.prompt_tokens, self.completion_tokens), 6),
        }


def cost(spec: GenerateSpec, prompt_tokens: float, completion_tokens: float) -> float:
    return (
        prompt_tokens * spec.price_per_1k_prompt_tokens + completion_tokens * spec.price_per_1k_completion_tokens
    ) / 1000


CHARS_PER_TOKEN = 4  # the usual estimate for English text with OpenAI's tokenizers


def _demo(task: Subtask, corpus: RawCorpus | None, number: int, seed: int) -> Example | None:
    if corpus is None:
        return None
    for _ in range(20):
        ex = task.draw(task, corpus, random.Random(f"{seed}:demo:{task.name}:{number}"))
        if ex is not None:
            return ex
        number += 10_000
    return None


def _job(spec: GenerateSpec, task: Subtask, k: int, demo: Example | None) -> tuple[list[dict[str, str]], dict]:
    """Example k's messages, and the job they make: the key under which the cache remembers its answer."""
    messages = teacher_messages(task, k, demo)
    return messages, {"model": spec.model, "messages": messages, "seed": spec.seed, "k": k}


def _teacher(spec: GenerateSpec, out: Path) -> Teacher:
    return Teacher(
        base_url=spec.base_url,
        model=spec.model,
        cache_dir=spec.cache_dir or out / "cache",
        api_key_env=spec.api_key_env,
        timeout=spec.timeout,
        max_retries=spec.max_retries,
        max_requests=spec.max_requests,
    )


def plan(spec: GenerateSpec, out: Path) -> dict[str, Any]:
    """What a run would ask for, without asking: requests (first attempts; a reply that does not validate costs up
    to `attempts`), those already answered in the cache, estimated tokens (prompts measured, replies estimated
    from the demonstrations, both at CHARS_PER_TOKEN) and the cost at the spec's prices."""
    tasks = spec.selected()
    corpus = load_raw(spec.raw_dir) if spec.raw_dir is not None else None
    teacher = _teacher(spec, out)
    requests = cached = 0
    prompt_chars = reply_chars = 0
    for task in tasks:
        for k in range(spec.examples_per_subtask):
            demo = _demo(task, corpus, k, spec.seed)
            messages, job = _job(spec, task, k, demo)
            requests += 1
            if teacher.recall(job) is not None:
                cached += 1
                continue
            prompt_chars += sum(len(m["content"]) for m in messages)
            shown = {"input_field": demo.input_field, "output_field": demo.output_field} if demo else {}
            reply_chars += min(len(json.dumps(shown, ensure_ascii=False)) or 400, spec.max_tokens * CHARS_PER_TOKEN)
    prompt_tokens, completion_tokens = prompt_chars // CHARS_PER_TOKEN, reply_chars // CHARS_PER_TOKEN
    new = requests - cached
    if spec.max_requests is not None:
        share = min(1.0, spec.max_requests / new) if new else 1.0
        new, prompt_tokens, completion_tokens = (
            min(new, spec.max_requests),
            int(prompt_tokens * share),
            int(completion_tokens * share),
        )
    return {
        "subtasks": len(tasks),
        "requests": requests,
        "cached": cached,
        "new_requests": new,
        "max_requests_with_retries_of_invalid_replies": new * spec.attempts,
        "estimated_prompt_tokens": prompt_tokens,
        "estimated_completion_tokens": completion_tokens,
        "estimated_cost": round(cost(spec, prompt_tokens, completion_tokens), 4),
        "priced": bool(spec.price_per_1k_prompt_tokens or spec.price_per_1k_completion_tokens),
    }


GENERATED = "generated.jsonl"
GENERATE = Layout(
    "data generate", frozenset({GENERATED, "stats.json", SPEC_RECORD, "cache"}), SPEC_RECORD, made="examples generated"
)
# Settings that bound or price how a run asks, not what it asks for: a rerun may change them (a higher max_requests
# continues a capped run from the cache).
HOW_IT_ASKS = frozenset(
    {
        "api_key_env",
        "concurrency",
        "timeout",
        "max_retries",
        "max_requests",
        "price_per_1k_prompt_tokens",
        "price_per_1k_completion_tokens",
        "cache_dir",
    }
)


def generate(spec: GenerateSpec, out: Path, progress: bool = True) -> dict[str, Any]:
    with RunFolder.open(out, GENERATE, settings(spec, exclude=HOW_IT_ASKS)) as folder:
        folder.write_record(settings(spec))  # first: an interrupted run is continued only by the same spec
        info = _generate(spec, out, progress)
    if not info["produced"]:
        why = f"first failure: {info['first_failure']}" if info["first_failure"] else "every reply was invalid"
        raise ShoptuneError(
            f"the teacher produced 0 of {info['requested']} examples ({why}; counts by cause in {out / 'stats.json'})"
        )
    return info


def _generate(spec: GenerateSpec, out: Path, progress: bool) -> dict[str, Any]:
    tasks = spec.selected()
    corpus = load_raw(spec.raw_dir) if spec.raw_dir is not None else None
    teacher = _teacher(spec, out)
    stats = Stats(requested=len(tasks) * spec.examples_per_subtask)
    jobs = [(task, k) for task in tasks for k in range(spec.examples_per_subtask)]

    def run(job: tuple[Subtask, int]) -> tuple[Example | None, Counter]:
        """One example; the events are tallied by the caller, so no counter is shared between threads."""
        task, k = job
        events: Counter = Counter()
        messages, job = _job(spec, task, k, _demo(task, corpus, k, spec.seed))
        known = teacher.recall(job)
        for attempt in [known] if known is not None else range(spec.attempts):
            try:
                reply = teacher.complete(
                    messages,
                    temperature=spec.temperature,
                    max_tokens=spec.max_tokens,
                    seed=spec.seed * 1_000_003 + k * 101 + attempt,
                )
            except TeacherError as exc:
                events["failed:" + exc.cause] += 1
                events["first:" + str(exc)] = 1
                if exc.cause == "capped":
                    break
                continue
            billed = "cached_" if reply.cached else ""
            events.update(
                {
                    "cache_hits": int(reply.cached),
                    billed + "prompt_tokens": reply.prompt_tokens,
                    billed + "completion_tokens": reply.completion_tokens,
                }
            )
            try:
                ex = validate_reply(task, reply.text)
            except ValueError as exc:
                events["invalid:" + str(exc).split(":")[0]] += 1
                continue
            teacher.remember(job, attempt)
            return ex.model_copy(update={"source": f"teacher:{spec.model}"}), events
        return None, events

    results = []
    pool = ThreadPoolExecutor(max_workers=spec.concurrency)
    bar = tqdm(total=len(jobs), desc="generating", unit="ex", disable=not progress, file=sys.stderr)
    try:
        for ex, events in pool.map(run, jobs):
            results.append(ex)
            for key, value in events.items():
                kind, _, name = key.partition(":")
                if kind == "invalid":
                    stats.invalid[name] += value
                elif kind == "failed":
                    stats.failed[name] += value
                    stats.failed_requests += value
                elif kind == "first":
                    stats.first_failure = stats.first_failure or name
                else:
                    setattr(stats, key, getattr(stats, key) + value)
            bar.update(1)
    finally:  # a failed probe (or Ctrl-C) ends the run now, not after the queued jobs
        bar.close()
        pool.shutdown(wait=True, cancel_futures=True)
    stats.http_calls = teacher.http_calls
    kept: dict[str, Example] = {}
    for ex in results:
        if ex is None:
            stats.dropped += 1
        elif ex.input_field in kept:
            stats.invalid["duplicate"] += 1
            stats.dropped += 1
        else:
            kept[ex.input_field] = ex
    stats.produced = len(kept)
    write_jsonl(out / GENERATED, (ex.to_json() for ex in kept.values()))
    info = stats.as_dict(spec)
    write_json(out / "stats.json", info)
    return info
