"""Benchmark: embeddings through llmspell (core, and `llmspell serve` read by the official clients) against
raw llama-cpp-python's ``Llama.embed`` on the same texts, model, threads and machine.

Run: .venv/bin/python bench/embed.py [--texts 64] [--repeats 3] [--busy]
Prints, per model: texts/s and tokens/s of each path and its ratio to the raw engine (target >= 0.95 for the
core; the server adds HTTP and JSON). ``--busy`` runs a busy-looping process on one core throughout, as a
user's machine is never idle.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

os.environ.setdefault("LLMSPELL_HOME", tempfile.mkdtemp(prefix="llmspell-bench-"))

from llmspell.backends.llamacpp import LlamaCppBackend
from llmspell.config import Config
from llmspell.machine import physical_cores
from llmspell.spec import parse_spec

SENTENCES = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Interest rates rose again this quarter, and markets fell sharply.",
    "A kitten slept on a warm rug beside the fireplace all afternoon.",
    "The committee will publish its report on renewable energy next week.",
    "She practised the violin every morning before going to school.",
    "Heavy rain is expected across the northern regions on Thursday.",
    "The new library opened with a collection of rare maps and letters.",
    "Researchers measured how quickly glaciers retreated over a century.",
]


def _spin() -> None:
    while True:
        pass


def raw(path: Path, texts: list[str], threads: int, n_ctx: int) -> tuple[float, int]:
    """Seconds and tokens for raw ``Llama.embed`` over ``texts`` (mean pooling, one text per decode)."""
    import llama_cpp
    from llama_cpp import Llama

    llm = Llama(
        str(path),
        embedding=True,
        pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
        n_ctx=n_ctx,
        n_batch=n_ctx,
        n_ubatch=n_ctx,
        n_threads=threads,
        n_threads_batch=threads,
        verbose=False,
    )
    llm.embed(texts[:2], normalize=True)  # warm
    start = time.perf_counter()
    _, tokens = llm.embed(texts, normalize=True, return_count=True)
    took = time.perf_counter() - start
    llm.close()
    return took, int(tokens)


async def core(backend: LlamaCppBackend, spec: str, texts: list[str]) -> tuple[float, int]:
    """Seconds and tokens for ``backend.embed`` over ``texts`` (its copy already loaded)."""
    await backend.embed(parse_spec(spec), texts[:2])
    start = time.perf_counter()
    result = await backend.embed(parse_spec(spec), texts)
    return time.perf_counter() - start, result.prompt_tokens


def served(url: str, spec: str, texts: list[str]) -> tuple[float, float]:
    """Seconds through /api/embed (ollama client) and /v1/embeddings (openai client, base64), one request each."""
    import ollama
    import openai

    oc = ollama.Client(host=url, timeout=600)
    ai = openai.OpenAI(base_url=url + "/v1", api_key="x", timeout=600, max_retries=0)
    oc.embed(model=spec, input=texts[:2])
    start = time.perf_counter()
    oc.embed(model=spec, input=texts)
    via_ollama = time.perf_counter() - start
    start = time.perf_counter()
    ai.embeddings.create(model=spec, input=texts)
    return via_ollama, time.perf_counter() - start


def main() -> None:
    """Run every path for each bundled model and print the table."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--texts", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--busy", action="store_true", help="keep one core busy with another process throughout")
    args = ap.parse_args()
    texts = [SENTENCES[i % len(SENTENCES)] + f" ({i})" for i in range(args.texts)]
    threads = physical_cores()
    spinner = None
    if args.busy:
        spinner = multiprocessing.Process(target=_spin, daemon=True)
        spinner.start()
    port = 11900 + os.getpid() % 50
    server = subprocess.Popen(
        [sys.executable, "-m", "llmspell", "serve", "--port", str(port), "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        import httpx

        for _ in range(600):
            try:
                httpx.get(url + "/api/version", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        print(f"# bench/embed.py  {date.today()}  {platform.processor() or platform.machine()}")
        print(f"# {os.cpu_count()} logical CPUs, {threads} threads, {args.texts} texts, best of {args.repeats}")
        print(f"# busy core: {'yes' if args.busy else 'no'}\n")
        backend = LlamaCppBackend(Config(num_ctx=512))
        for spec in ("smollm2:135m", "gemma3:270m"):
            path = backend.ensure_file(backend.resolve(parse_spec(spec)))  # gemma3 is assembled on first use
            raws, cores, olls, oais = [], [], [], []
            tokens = 0
            for i in range(args.repeats):
                # alternate which goes first, so neither always gets the cooler core
                if i % 2:
                    cores.append(asyncio.run(core(backend, spec, texts))[0])
                t, tokens = raw(path, texts, threads, 512)
                raws.append(t)
                if not i % 2:
                    cores.append(asyncio.run(core(backend, spec, texts))[0])
                o, a = served(url, spec, texts)
                olls.append(o)
                oais.append(a)
            best = {name: min(v) for name, v in (("raw", raws), ("core", cores), ("ollama", olls), ("openai", oais))}
            print(f"## {spec}  ({tokens} tokens in {args.texts} texts)")
            print("| path | texts/s | tokens/s | ratio to raw |")
            print("|---|---|---|---|")
            for name, t in best.items():
                print(f"| {name} | {args.texts / t:.1f} | {tokens / t:.0f} | {best['raw'] / t:.3f} |")
            spread = statistics.pstdev(cores) / statistics.mean(cores)
            print(f"\n(core spread over repeats: {spread:.1%})\n")
        backend.close_sync()
    finally:
        server.terminate()
        server.wait(30)
        if spinner is not None:
            spinner.terminate()


if __name__ == "__main__":
    main()
