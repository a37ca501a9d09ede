"""Load on `shoptune serve`, bounded and on loopback only: latency under load against the same server unloaded.

Starts `shoptune serve MODEL` with an API key, then, in one run:
1. baseline: small chat requests sent one at a time by one client (the unloaded latency);
2. load: REQUESTS small chat requests from CLIENTS concurrent clients through the openai client, half of them
   streamed, while one large /v1/completions request (LARGE_PROMPTS prompts x LARGE_TOKENS tokens) is in flight;
3. without the key: every request must get 401;
4. half-open: HALF_OPEN connections that send part of a request and stop; each must be closed by the server.
Prints p50/p95 latency (and time to first token for streams) under load against the baseline, errors, the
large request's time, whether the greedy answers under load equal those given one at a time (the questions the
baseline asked), and the server's peak resident memory (VmHWM).

    python benchmarks/serve_load.py [--model NAME_OR_PATH] [--requests 200] [--clients 8] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai

from shoptune.schema import read_examples

ROOT = Path(__file__).resolve().parents[1]
KEY = "load-test-key"
NAME = "shop"


def start_server(model: str, max_tokens: int) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "SHOPTUNE_API_KEY": KEY, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "shoptune", "serve", model, "--port", "0", "--name", NAME]
    proc = subprocess.Popen(
        [*cmd, "--max-tokens", str(max_tokens), "--max-prompts", "64"], stderr=subprocess.PIPE, text=True, env=env
    )
    line = proc.stderr.readline()
    if "serving" not in line:
        proc.kill()
        sys.exit(f"the server did not start: {line}{proc.stderr.read()}")
    url = line.split(" at ")[1].split(",")[0]
    threading.Thread(target=proc.stderr.read, daemon=True).start()  # keep its log from blocking it
    for _ in range(300):
        try:
            request = urllib.request.Request(url + "/models", headers={"Authorization": f"Bearer {KEY}"})
            urllib.request.urlopen(request, timeout=5).read()
            return proc, url
        except OSError:
            time.sleep(0.1)
    sys.exit("the server never answered")


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def small_request(api: openai.OpenAI, prompt: str, stream: bool, max_tokens: int) -> dict:
    """One chat request; its latency, time to first token (streams), its answer and whether it failed."""
    start = time.perf_counter()
    messages = [{"role": "user", "content": prompt}]
    try:
        if stream:
            first, text = None, ""
            for chunk in api.chat.completions.create(model=NAME, messages=messages, max_tokens=max_tokens, stream=True):
                piece = chunk.choices[0].delta.content if chunk.choices else None
                if piece:
                    first = first if first is not None else time.perf_counter() - start
                    text += piece
            return {"seconds": time.perf_counter() - start, "first_token": first, "text": text, "error": None}
        reply = api.chat.completions.create(model=NAME, messages=messages, max_tokens=max_tokens)
        text = reply.choices[0].message.content
        return {"seconds": time.perf_counter() - start, "first_token": None, "text": text, "error": None}
    except openai.APIError as exc:
        return {"seconds": time.perf_counter() - start, "first_token": None, "text": None, "error": type(exc).__name__}


def half_open(url: str, n: int, wait: float) -> int:
    """Connections that send half a request; how many the server has closed within `wait` seconds."""
    host, port = url.split("//")[1].split("/")[0].split(":")
    conns = []
    for _ in range(n):
        conn = socket.create_connection((host, int(port)))
        conn.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n{")
        conns.append(conn)
    deadline, closed = time.monotonic() + wait, 0
    for conn in conns:
        conn.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            while conn.recv(4096):
                pass
            closed += 1
        except OSError:
            pass
        conn.close()
    return closed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--large-prompts", type=int, default=64)
    parser.add_argument("--large-tokens", type=int, default=64)
    parser.add_argument("--half-open", type=int, default=50)
    parser.add_argument("--json", type=Path, help="write the figures to this file")
    args = parser.parse_args()

    questions = [ex.input_field for ex in read_examples(ROOT / "data" / "shopbench" / "development.json")]
    proc, url = start_server(args.model, max(args.max_tokens, args.large_tokens))
    try:
        api = openai.OpenAI(base_url=url, api_key=KEY, max_retries=0, timeout=600)
        baseline = [small_request(api, questions[i % len(questions)], False, args.max_tokens) for i in range(20)]

        large: dict = {}

        def send_large() -> None:
            start = time.perf_counter()
            try:
                api.completions.create(model=NAME, prompt=questions[: args.large_prompts], max_tokens=args.large_tokens)
                large["error"] = None
            except openai.APIError as exc:
                large["error"] = type(exc).__name__
            large["seconds"] = time.perf_counter() - start

        big = threading.Thread(target=send_large)
        big.start()
        time.sleep(0.2)
        with ThreadPoolExecutor(args.clients) as pool:
            loaded = list(
                pool.map(
                    lambda i: small_request(api, questions[i % len(questions)], i % 2 == 0, args.max_tokens),
                    range(args.requests),
                )
            )
        big.join()

        stranger = openai.OpenAI(base_url=url, api_key="wrong", max_retries=0)
        refused = sum(small_request(stranger, "hello", False, 4)["error"] == "AuthenticationError" for _ in range(10))
        closed = half_open(url, args.half_open, wait=20.0)
        rss = peak_rss_mib(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=60)

    base_p50 = percentile([r["seconds"] for r in baseline], 0.5)
    ok = [r for r in loaded if r["error"] is None]
    # Greedy answers under load against the same questions asked one at a time: the batch must not change them.
    compared = [(r, baseline[i % len(questions)]) for i, r in enumerate(loaded) if i % len(questions) < len(baseline)]
    same = sum(r["text"] == alone["text"] for r, alone in compared)
    lat = [r["seconds"] for r in ok]
    ttft = [r["first_token"] for r in ok if r["first_token"] is not None]
    figures = {
        "model": args.model,
        "requests": args.requests,
        "clients": args.clients,
        "baseline_p50_s": base_p50,
        "p50_s": percentile(lat, 0.5),
        "p95_s": percentile(lat, 0.95),
        "ttft_p50_s": percentile(ttft, 0.5) if ttft else None,
        "errors": len(loaded) - len(ok),
        "same_answers_as_one_at_a_time": [same, len(compared)],
        "error_kinds": dict(Counter(r["error"] for r in loaded if r["error"])),
        "large_request_s": large.get("seconds"),
        "large_request_error": large.get("error"),
        "unauthorised_refused": f"{refused}/10",
        "half_open_closed": f"{closed}/{args.half_open}",
        "server_peak_rss_mib": rss,
    }
    print(f"model {args.model}; {args.requests} chat requests from {args.clients} clients, half streamed")
    print(f"  unloaded (1 client, one at a time): p50 {base_p50:.2f} s")
    print(
        f"  under load, with one {args.large_prompts}x{args.large_tokens}-token request in flight: "
        f"p50 {figures['p50_s']:.2f} s ({figures['p50_s'] / base_p50:.1f}x unloaded), "
        f"p95 {figures['p95_s']:.2f} s ({figures['p95_s'] / base_p50:.1f}x), "
        f"first token p50 {figures['ttft_p50_s'] or float('nan'):.2f} s"
    )
    print(f"  errors {figures['errors']} {figures['error_kinds']}; large request {figures['large_request_s']:.1f} s")
    print(f"  answers under load equal to one-at-a-time answers: {same}/{len(compared)}")
    print(f"  wrong key refused {refused}/10; half-open connections closed {closed}/{args.half_open}")
    print(f"  server peak RSS {rss:,.0f} MiB")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
