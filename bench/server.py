"""Benchmark: `llmspell serve` over raw llama-cpp-python, through the official ollama and openai clients.

Run: .venv/bin/python bench/server.py [--repeats 3] [--tokens 128] [--clients 8]
Prints, in one run on smollm2:135m: generation tokens/s through /api/chat (ollama client) and through
/v1/chat/completions (openai client) over the raw engine measured in the same run (target >= 0.95 each), the
first-token overhead in ms, and N concurrent clients on one model (all complete, none starved, total tokens/s).
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

os.environ.setdefault("LLMSPELL_HOME", tempfile.mkdtemp(prefix="llmspell-bench-"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
import ollama
import openai
from engine import PROMPT, cpu_name, raw_engine

from llmspell.backends.llamacpp import LlamaCppBackend, gguf_info
from llmspell.config import load_config
from llmspell.spec import parse_spec
from llmspell.types import Message

MODEL = "smollm2:135m"
SAMPLING = {"temperature": 0, "top_k": 40, "top_p": 0.95, "min_p": 0.05, "repeat_penalty": 1.0}


def start_server(parallel: int = 1) -> tuple[subprocess.Popen[bytes], str]:
    """`llmspell serve` on a free port, the Ollama backend pointed nowhere; returns it once /health answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OLLAMA_HOST": "http://127.0.0.1:9"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llmspell",
            "serve",
            "--port",
            str(port),
            "--max-queue",
            "64",
            "--parallel",
            str(parallel),
            "--quiet",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            httpx.get(url + "/health", timeout=5)
            return proc, url
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("llmspell serve did not start")


def via_ollama(client: ollama.Client, prompt: str, n_tokens: int) -> tuple[float, float, int]:
    """TTFT and generation tokens/s seen by a caller of ollama.Client.chat(stream=True)."""
    start = time.perf_counter()
    first = None
    count = 0
    for part in client.chat(
        MODEL,
        messages=[{"role": "user", "content": prompt}],
        stream=True,
        options={**SAMPLING, "num_predict": n_tokens},
    ):
        if first is None and part.message.content:
            first = time.perf_counter()
        if part.done:
            count = part.eval_count or 0
    end = time.perf_counter()
    assert first is not None
    return first - start, (count - 1) / (end - first), count


def via_openai(client: openai.OpenAI, prompt: str, n_tokens: int) -> tuple[float, float, int]:
    """TTFT and generation tokens/s seen by a caller of the openai client's streaming chat completions."""
    start = time.perf_counter()
    first = None
    count = 0
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": prompt}],
        max_tokens=n_tokens,
        temperature=0,
        top_p=0.95,
        stream=True,
        stream_options={"include_usage": True},
    )
    for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter()
        if chunk.usage is not None:
            count = chunk.usage.completion_tokens
    end = time.perf_counter()
    assert first is not None
    return first - start, (count - 1) / (end - first), count


def concurrent(url: str, clients: int, n_tokens: int) -> dict[str, float]:
    """``clients`` threads, each its own ollama.Client, all asking one model at once."""
    results: list[tuple[int, float, float]] = []
    errors: list[str] = []
    lock = threading.Lock()
    go = threading.Barrier(clients)

    def one(i: int) -> None:
        client = ollama.Client(host=url, timeout=600)
        go.wait()
        start = time.perf_counter()
        try:
            final = client.chat(
                MODEL,
                messages=[{"role": "user", "content": f"Client {i}. {PROMPT}"}],
                options={**SAMPLING, "num_predict": n_tokens},
            )
        except Exception as exc:  # a starved or refused client is a result to report, not a crash
            with lock:
                errors.append(f"client {i}: {exc}")
            return
        with lock:
            results.append((final.eval_count or 0, time.perf_counter() - start, (final.eval_duration or 0) / 1e9))

    began = time.perf_counter()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - began
    tokens = sum(r[0] for r in results)
    return {
        "completed": len(results),
        "errors": len(errors),
        "error_text": "; ".join(errors[:3]),
        "min_tokens": min((r[0] for r in results), default=0),
        "total_tokens": tokens,
        "wall_s": wall,
        "total_tps": tokens / wall,
        "slowest_s": max((r[1] for r in results), default=0.0),
        "fastest_s": min((r[1] for r in results), default=0.0),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--parallel", type=int, default=1, help="serve's --parallel: copies of the model answering at once")
    args = ap.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]  # results survive an interrupted run
    import llama_cpp

    print(
        f"# bench/server.py  {date.today()}  {platform.machine()} {cpu_name()}  {os.cpu_count()} logical cores  "
        f"llama-cpp-python {llama_cpp.__version__}  Python {sys.version.split()[0]}"
    )
    print(
        f"# {MODEL}, temperature 0, {args.tokens} new tokens, {args.repeats} repeats, medians, "
        f"serve --parallel {args.parallel}\n"
    )

    backend = LlamaCppBackend(load_config())
    model = backend.resolve(parse_spec(MODEL))
    info = gguf_info(model.path)
    threads, n_ctx = backend.threads(), backend.config.num_ctx

    def raw(prompt: str, n: int) -> tuple[float, float, int]:
        text, add_bos, _ = backend.render_chat(model, info, [Message("user", prompt)])
        return raw_engine(model.path, text, add_bos, True, n, threads, n_ctx)

    proc, url = start_server(args.parallel)
    try:
        oc = ollama.Client(host=url, timeout=600)
        ai = openai.OpenAI(base_url=url + "/v1", api_key="bench", timeout=600, max_retries=0)
        raw("warm up", 4)  # every engine loaded before anything is timed
        via_ollama(oc, "warm up", 4)
        via_openai(ai, "warm up", 4)
        runs: dict[str, list[tuple[float, float, int]]] = {"raw": [], "ollama": [], "openai": []}
        order = ["raw", "ollama", "openai"]
        for i in range(args.repeats):
            prompt = f"Story number {i + 1}. {PROMPT}"
            # rotate the order so drift on a shared machine hits every path alike; a new prompt each round
            for name in order[i % 3 :] + order[: i % 3]:
                if name == "raw":
                    runs[name].append(raw(prompt, args.tokens))
                elif name == "ollama":
                    runs[name].append(via_ollama(oc, prompt, args.tokens))
                else:
                    runs[name].append(via_openai(ai, prompt, args.tokens))
        med = {k: (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v)) for k, v in runs.items()}
        raw_ttft, raw_tps = med["raw"]
        print(f"raw llama-cpp-python: {raw_tps:.1f} tok/s, first token {raw_ttft * 1000:.1f} ms")
        for name, label in (
            ("ollama", "/api/chat (ollama client)"),
            ("openai", "/v1/chat/completions (openai client)"),
        ):
            ttft, tps = med[name]
            print(
                f"{label}: {tps:.1f} tok/s, ratio {tps / raw_tps:.3f} (target >= 0.95); first token "
                f"{ttft * 1000:.1f} ms, overhead {(ttft - raw_ttft) * 1000:+.1f} ms"
            )
        c = concurrent(url, args.clients, args.tokens)
        print(
            f"\n{args.clients} concurrent clients on {MODEL} (/api/chat, {args.tokens} tokens each): "
            f"{c['completed']}/{args.clients} completed, {c['errors']} failed, fewest tokens {c['min_tokens']}; "
            f"total {c['total_tokens']} tokens in {c['wall_s']:.1f} s = {c['total_tps']:.1f} tok/s; "
            f"first done after {c['fastest_s']:.1f} s, last after {c['slowest_s']:.1f} s"
        )
        if c["errors"]:
            print(f"errors: {c['error_text']}")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            # a server stuck in its shutdown must not outlive the benchmark
            proc.kill()
            proc.wait(10)
        backend.close_sync()


if __name__ == "__main__":
    main()
