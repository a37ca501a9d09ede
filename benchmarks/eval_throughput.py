"""Evaluation throughput: shoptune's engine against the KDD Cup starter kit's way, same model, same run.

The baseline does what the kit's baseline does, one question at a time: render the prompt, plain
greedy `generate` (1 new token for multiple choice, 100 otherwise), parse. The engine is
`shoptune eval run`'s answering loop (length-sorted batches cut where padding costs more than another
run, the shared system-prompt prefix computed once, per-type token budgets, MC by one forward pass over
the option digits). Both use the same loaded model and the same prompts. The limit printed beside them is
the prompts' prefill at this machine's matmul peak, measured in the same run: 2 x parameters x prompt
tokens FLOPs, however the engine gets there.

With --options, each answering option that is off by default is measured too, on the same questions and on the
held-out benchmark's fixed subset (18 questions a subtask): bfloat16 weights (where the CPU has bf16 instructions),
dynamic int8 weights, torch.compile; for each, its time against the engine's default, how many answers are
identical, and its effect on the held-out score.

    python benchmarks/eval_throughput.py [--model NAME_OR_PATH] [--data FILE] [--batch-size N] [--options] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from shoptune.evaluate.backends import HFBackend
from shoptune.evaluate.config import EvalConfig
from shoptune.evaluate.parsers import parse_multiple_choice
from shoptune.evaluate.runner import answer
from shoptune.hub import DEFAULT_MODEL, tiny_model_path
from shoptune.schema import TaskType, read_examples
from shoptune.tasks.render import option_labels

ROOT = Path(__file__).resolve().parents[1]


def baseline_answers(backend: HFBackend, prompts: list[str], is_mc: list[bool]) -> list[str]:
    out = []
    for prompt, mc in zip(prompts, is_mc, strict=True):
        enc = backend.encode([prompt])  # the same rendering and truncation as the engine
        with torch.inference_mode():
            ids = backend.model.generate(
                **enc, max_new_tokens=1 if mc else 100, do_sample=False, pad_token_id=backend.tokenizer.pad_token_id
            )
        out.append(backend.tokenizer.decode(ids[0, enc["input_ids"].shape[1] :], skip_special_tokens=True))
    return out


def engine_answers(backend: HFBackend, examples: list, config: EvalConfig) -> list[str]:
    answers: dict[int, str] = {}
    answer(backend, examples, list(range(len(examples))), config, lambda b: answers.update(b), progress=False)
    return [answers[i] for i in range(len(examples))]


def random_llama(hidden: int, layers: int) -> str:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path())
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 11 // 4,
        num_hidden_layers=layers,
        num_attention_heads=max(hidden // 64, 1),
        num_key_value_heads=max(hidden // 128, 1),
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    folder = tempfile.mkdtemp(prefix="random-llama-")
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def matmul_peak(seconds: float = 1.0) -> float:
    """The best fp32 matmul rate of this machine now, in FLOP/s: large square products and the shapes of a
    transformer's projections, each repeated for about `seconds`, the fastest single product kept."""
    best = 0.0
    for m, k, n in ((2048, 2048, 2048), (4096, 4096, 4096), (4096, 576, 1536), (4096, 1536, 576)):
        a, b = torch.randn(m, k), torch.randn(k, n)
        a @ b
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            a @ b
            best = max(best, 2 * m * k * n / (time.perf_counter() - start))
    return best


def prompt_tokens(backend: HFBackend, prompts: list[str]) -> int:
    return sum(len(row) for row in backend.tokenize([backend.render(p) for p in prompts]))


def timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


OPTIONS = {
    "bfloat16": {"dtype": "bfloat16"},
    "int8": {"int8": True},
    "compile": {"compile": True},
}


def measure_options(model: str, examples: list, default: list[str]) -> dict[str, dict]:
    """Each option off by default: its time on these questions (against the default engine, in this run), its
    answers against the default's, and the held-out subset's score under it against the default's."""
    from shoptune.evaluate.runner import make_backend, run_eval, shared_backends

    heldout = ROOT / "data" / "heldout" / "heldout.jsonl"
    with tempfile.TemporaryDirectory() as folder:
        plain = EvalConfig(model=model, limit_per_task=18)
        reference = run_eval(heldout, Path(folder) / "default", plain, progress=False).scores.overall
        _, t_default = timed(engine_answers, HFBackend(model), examples, EvalConfig(model=model))
        found = {}
        for name, settings in OPTIONS.items():
            config = EvalConfig(model=model, **settings)
            with shared_backends():  # the held-out run below answers with this very backend
                started = time.perf_counter()
                backend = make_backend(config)
                engine_answers(backend, examples[:4], config)  # a compiled model compiles at its first questions
                warm = time.perf_counter() - started
                answers, seconds = timed(engine_answers, backend, examples, config)
                subset = config.model_copy(update={"limit_per_task": 18})
                scored = run_eval(heldout, Path(folder) / name, subset, progress=False)
            found[name] = {
                "seconds": seconds,
                "default_seconds": t_default,
                "speedup": t_default / seconds,
                "load_and_warm_up_seconds": warm,
                "same_answers": [sum(a == b for a, b in zip(answers, default, strict=True)), len(default)],
                "heldout_score": scored.scores.overall,
                "heldout_score_default": reference,
                "heldout_difference": scored.scores.overall - reference,
            }
            print(
                f"option {name}: {t_default / seconds:.2f}x the default engine ({seconds:.1f} s), answers identical "
                f"{found[name]['same_answers'][0]}/{len(default)}, held-out subset {scored.scores.overall:.4f} "
                f"against {reference:.4f} ({found[name]['heldout_difference']:+.4f}), warm-up {warm:.0f} s"
            )
        return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--random-llama", metavar="HIDDEN,LAYERS", help="benchmark a random Llama of this size")
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "shopbench" / "development.json")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the engine's (8 on CPU)")
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    parser.add_argument("--options", action="store_true", help="also measure bf16, int8 and torch.compile")
    args = parser.parse_args()

    examples = read_examples(args.data)
    prompts = [ex.input_field for ex in examples]
    is_mc = [ex.task_type is TaskType.MULTIPLE_CHOICE for ex in examples]
    if args.random_llama:
        args.model = random_llama(*map(int, args.random_llama.split(",")))
    backend = HFBackend(args.model)
    n = len(examples)
    print(f"model {args.model}, {n} questions ({sum(is_mc)} multiple choice), torch threads {torch.get_num_threads()}")

    tokens = prompt_tokens(backend, prompts)
    parameters = sum(p.numel() for p in backend.model.parameters())
    peak = matmul_peak()
    limit = 2 * parameters * tokens / peak
    print(
        f"prompts: {tokens:,} tokens (chat template applied) = {2 * parameters * tokens / 1e12:.2f} TFLOP of prefill "
        f"(2 x {parameters / 1e6:.1f}M parameters x tokens); matmul peak now {peak / 1e9:.0f} GFLOP/s; "
        f"prefill limit {limit:.1f} s"
    )
    engine_config = EvalConfig(model=args.model, batch_size=args.batch_size)
    engine, t_engine = timed(engine_answers, backend, examples, engine_config)
    base, t_base = timed(baseline_answers, backend, prompts, is_mc)
    gen_config = EvalConfig(model=args.model, batch_size=args.batch_size, mc_mode="generate")
    engine_gen, t_gen = timed(engine_answers, backend, examples, gen_config)

    print(f"baseline (one at a time, generate, parse): {n / t_base:8.2f} questions/s  ({t_base:.1f} s)")
    print(f"shoptune engine (mc logits, default):      {n / t_engine:8.2f} questions/s  ({t_engine:.1f} s)")
    print(f"shoptune engine (--mc-mode generate):      {n / t_gen:8.2f} questions/s  ({t_gen:.1f} s)")
    print(f"speed-up, engine / baseline:               {t_base / t_engine:8.2f}x")
    print(f"engine / prefill limit:                    {t_engine / limit:8.2f}x")
    print(f"speed-up, engine generate-mode / baseline: {t_base / t_gen:8.2f}x")

    mc = [i for i in range(n) if is_mc[i]]
    base_mc = {i: parse_multiple_choice(base[i]) for i in mc}
    valid = [i for i in mc if str(base_mc[i]) in option_labels(prompts[i])]
    same_gen = sum(parse_multiple_choice(engine_gen[i]) == base_mc[i] for i in mc)
    same_logits = sum(parse_multiple_choice(engine[i]) == base_mc[i] for i in valid)
    print(f"MC answers identical, generate mode vs baseline: {same_gen}/{len(mc)}")
    print(
        f"MC answers identical, logits mode vs baseline, where the baseline named an option: "
        f"{same_logits}/{len(valid)} (the baseline named an option in {len(valid)}/{len(mc)}; "
        "logits mode always does)"
    )
    options = measure_options(args.model, examples, engine) if args.options else {}
    if args.json:
        figures = {
            "model": args.model,
            "questions": n,
            "baseline_seconds": t_base,
            "engine_seconds": t_engine,
            "engine_generate_seconds": t_gen,
            "ratio": t_base / t_engine,
            "limit_seconds": limit,
            "engine_over_limit": t_engine / limit,
            "prompt_tokens": tokens,
            "parameters": parameters,
            "peak_gflops": peak / 1e9,
            "ratio_generate": t_base / t_gen,
            "mc_identical_generate": [same_gen, len(mc)],
            "mc_identical_logits": [same_logits, len(valid)],
            "options": options,
        }
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    if same_gen != len(mc) or same_logits != len(valid):
        sys.exit(1)


if __name__ == "__main__":
    main()
