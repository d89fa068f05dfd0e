"""Benchmark: tokens/s on a machine that is not idle, llmspell's default threads against every fixed count.

Run: .venv/bin/python bench/busy.py [--repeats 3] [--tokens 128] [--models smollm2:135m gemma3:270m]

In one run, for each model: the raw engine (llama-cpp-python's Llama.generate) at every fixed thread count
and llmspell with its defaults, each on a quiet machine and with a background process that keeps one core
busy (a plain Python loop, started and stopped here); then two llmspell processes generating at once, and
for reference two raw engines at the default thread count. Every measurement runs in a fresh process of its
own (the model loaded before the clock starts), so nothing is cached between them. Prints ratios against the
best fixed thread count measured under the same load:

- busy machine: llmspell default >= 0.9 of the best fixed count
- quiet machine: >= 0.98
- two llmspell processes at once: together >= 1.0x one process alone
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

os.environ.setdefault("LLMSPELL_HOME", tempfile.mkdtemp(prefix="llmspell-bench-"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

PROMPT = "Write a long, detailed story about a dragon who learns to paint. Use many paragraphs."
#: a run stops here even if it has not produced its tokens (2 threads beside a busy core can make 1 token/s)
DEADLINE = 20.0


# ----- the child: one measurement in a process of its own ---------------------------------------------------


def _rendered(spec: str, prompt: str) -> tuple[Any, str, bool, bool]:
    from llmspell.api import get_hub
    from llmspell.backends.llamacpp import gguf_info
    from llmspell.spec import parse_spec
    from llmspell.types import Message

    backend = get_hub().backends["llamacpp"]
    model = backend.resolve(parse_spec(spec))  # type: ignore[attr-defined]
    path = backend.ensure_file(model)  # type: ignore[attr-defined]
    info = gguf_info(path)
    chat = bool(info.chat_template) or bool(model.resolved and model.resolved.variant.chat_template)
    if chat:
        text, add_bos, _ = backend.render_chat(model, info, [Message("user", prompt)])  # type: ignore[attr-defined]
        return path, text, add_bos, True
    return path, prompt, bool(info.metadata.get("tokenizer.ggml.add_bos_token", True)), False


def _wait(start_at: float) -> None:
    # CLOCK_MONOTONIC is one clock for every process of the machine: two children start together
    delay = start_at - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def _result(start: float, first: float | None, end: float, n: int, threads: list[int]) -> dict[str, Any]:
    """One run's figures, as the child prints them: tokens/s from the first token on, as every bench here."""
    assert first is not None, "no token came"
    return {
        "ttft": first - start,
        "tps": (n - 1) / (end - first) if n > 1 else 0.0,
        "tokens": n,
        "start": start,
        "end": end,
        "threads": threads,
    }


def child_raw(spec: str, threads: int, n_tokens: int, prompt: str, start_at: float) -> dict[str, Any]:
    """The raw engine at a fixed thread count."""
    import llama_cpp
    from llama_cpp import Llama

    from llmspell.backends._llama_worker import quiet_engine

    path, text, add_bos, chat = _rendered(spec, prompt)
    quiet_engine()
    llm = Llama(str(path), n_ctx=4096, n_threads=threads, n_threads_batch=threads, verbose=False)
    tokens = llm.tokenize(text.encode(), add_bos=add_bos, special=chat)
    _wait(start_at)
    start = time.monotonic()
    first = None
    n = 0
    for tok in llm.generate(tokens, temp=0.0, top_k=40, top_p=0.95, min_p=0.05, repeat_penalty=1.0):
        now = time.monotonic()
        if first is None:
            first = now
        if llama_cpp.llama_vocab_is_eog(llm._model.vocab, tok):
            break
        llm._model.detokenize([tok])
        n += 1
        if n >= n_tokens or now - start > DEADLINE:
            break
    end = time.monotonic()
    llm.close()
    return _result(start, first, end, n, [threads])


async def child_ours(spec: str, n_tokens: int, prompt: str, start_at: float) -> dict[str, Any]:
    """llmspell.stream with its defaults (the model loaded by a first short answer, before the clock)."""
    import llmspell
    from llmspell.api import get_hub

    _, _, _, chat = _rendered(spec, prompt)
    opts = dict(temperature=0, repeat_penalty=1.0, top_k=40, top_p=0.95, min_p=0.05)

    def messages(p: str) -> Any:
        return [{"role": "user", "content": p}] if chat else p

    async for _ in llmspell.stream(spec, messages("hi"), raw=not chat, max_tokens=1, **opts):
        pass
    backend = get_hub().backends["llamacpp"]
    _wait(start_at)
    start = time.monotonic()
    first = None
    n = 0
    stream = llmspell.stream(spec, messages(prompt), raw=not chat, max_tokens=n_tokens, **opts)
    async for chunk in stream:
        now = time.monotonic()
        if chunk.text:
            first = first or now
            n += 1
        if chunk.done:
            if chunk.stats:
                n = chunk.stats.generated_tokens
            break
        if now - start > DEADLINE:
            await stream.aclose()
            break
    end = time.monotonic()
    used = sorted(backend.worker_for(spec).report.threads_used)  # type: ignore[attr-defined]
    await get_hub().close()
    return _result(start, first, end, n, used)


# ----- the parent: loads, runs, ratios ----------------------------------------------------------------------


@contextmanager
def busy_core(on: bool):  # type: ignore[no-untyped-def]
    """A background process keeping one core busy for as long as the block runs."""
    if not on:
        yield
        return
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    time.sleep(0.5)  # let it be running before anything is measured
    try:
        yield
    finally:
        proc.kill()
        proc.wait()


def spawn(kind: str, spec: str, n_tokens: int, prompt: str, start_at: float) -> subprocess.Popen[str]:
    """Start one measurement in a child process; its result is the JSON line it prints."""
    return subprocess.Popen(
        [sys.executable, __file__, "--child", kind, spec, str(n_tokens), prompt, repr(start_at)],
        stdout=subprocess.PIPE,
        text=True,
    )


def collect(procs: list[subprocess.Popen[str]]) -> list[dict[str, Any]]:
    """Wait for the children and read each one's result."""
    out = []
    for p in procs:
        stdout, _ = p.communicate(timeout=300)
        if p.returncode != 0:
            raise SystemExit(f"a measurement failed (exit {p.returncode})")
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def run(kind: str, spec: str, n_tokens: int, repeat: int, copies: int = 1) -> dict[str, Any]:
    """One measurement of ``copies`` processes starting together: per-process results and their total rate."""
    prompt = f"Story number {repeat + 1}. {PROMPT}"
    # far enough ahead for every child to load its model first (the clock starts only then)
    start_at = time.monotonic() + 4.0
    results = collect([spawn(kind, spec, n_tokens, prompt, start_at) for _ in range(copies)])
    wall = max(r["end"] for r in results) - min(r["start"] for r in results)
    return {
        "runs": results,
        "total_tps": sum(r["tokens"] for r in results) / wall,
        "tps": statistics.median(r["tps"] for r in results),
        "ttft": statistics.median(r["ttft"] for r in results),
    }


def med(runs: list[dict[str, Any]], key: str) -> float:
    """The median of one figure over repeats."""
    return statistics.median(r[key] for r in runs)


def bench_model(spec: str, repeats: int, n_tokens: int, thread_counts: list[int]) -> None:
    """Every figure for one model, printed as it is measured."""
    print(f"## {spec}", flush=True)
    for busy in (False, True):
        label = "one core busy" if busy else "quiet"
        with busy_core(busy):
            fixed: dict[int, list[dict[str, Any]]] = {t: [] for t in thread_counts}
            ours: list[dict[str, Any]] = []
            for i in range(repeats):  # interleaved, so drift of a shared machine hits every variant alike
                for t in thread_counts:
                    fixed[t].append(run(f"raw:{t}", spec, n_tokens, i))
                ours.append(run("ours", spec, n_tokens, i))
        best_t = max(thread_counts, key=lambda t: med(fixed[t], "tps"))
        best = med(fixed[best_t], "tps")
        raw = "  ".join(
            f"{t} thr {med(fixed[t], 'tps'):.1f} (ttft {med(fixed[t], 'ttft') * 1000:.0f} ms)" for t in thread_counts
        )
        used = sorted({t for r in ours for t in r["runs"][0]["threads"]})
        target = 0.9 if busy else 0.98
        print(f"{label}: raw engine {raw}", flush=True)
        # each round's runs follow one another within seconds: their ratio is steadier than the ratio of medians
        # on a machine whose speed drifts by 10% over minutes
        paired = statistics.median(
            ours[i]["tps"] / max(fixed[t][i]["tps"] for t in thread_counts) for i in range(repeats)
        )
        print(
            f"{label}: llmspell default {med(ours, 'tps'):.1f} tok/s (ttft {med(ours, 'ttft') * 1000:.0f} ms, "
            f"threads used {used})  ratio to best fixed ({best_t} thr) {med(ours, 'tps') / best:.3f}, "
            f"per round {paired:.3f}  (target >= {target})",
            flush=True,
        )
    alone, two, raw_two = [], [], []
    for i in range(repeats):
        alone.append(run("ours", spec, n_tokens, i))
        two.append(run("ours", spec, n_tokens, i, copies=2))
        raw_two.append(run(f"raw:{max(thread_counts)}", spec, n_tokens, i, copies=2))
    one = med(alone, "total_tps")
    together = med(two, "total_tps")
    print(
        f"two llmspell processes at once: {together:.1f} tok/s together vs {one:.1f} alone, "
        f"{together / one:.2f}x  (target >= 1.0)",
        flush=True,
    )
    print(
        f"  (two raw engines at {max(thread_counts)} threads each: {med(raw_two, 'total_tps'):.1f} tok/s "
        f"together, {med(raw_two, 'total_tps') / one:.2f}x)\n",
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--models", nargs="*", default=["smollm2:135m", "gemma3:270m"])
    ap.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, spec, n, prompt, start_at = args.child
        if kind == "ours":
            result = asyncio.run(child_ours(spec, int(n), prompt, float(start_at)))
        else:
            result = child_raw(spec, int(kind.split(":")[1]), int(n), prompt, float(start_at))
        print(json.dumps(result), flush=True)
        return

    import llama_cpp
    from engine import cpu_name

    from llmspell.machine import physical_cores

    counts = list(range(1, max(physical_cores(), os.cpu_count() or 1) + 1))
    print(
        f"# bench/busy.py  {date.today()}  {cpu_name()}  {os.cpu_count()} logical cores, default "
        f"{physical_cores()} threads  llama-cpp-python {llama_cpp.__version__}"
    )
    print(
        f"# temperature 0, {args.tokens} new tokens (a run stops after {DEADLINE:.0f} s), {args.repeats} "
        "repeats, medians; each run a fresh process\n",
        flush=True,
    )
    for spec in args.models:
        bench_model(spec, args.repeats, args.tokens, counts)


if __name__ == "__main__":
    main()
