"""Benchmark: what a blind arena round costs over the raw engine, and how fast votes are kept and rated.

Run: .venv/bin/python bench/arena.py [--repeats 3] [--tokens 128]
Prints, quiet and with one core kept busy by another process:
- a round of two answers one after another (the REPL's and the kernel's way) against the raw engine producing
  the same two answers in a row: tokens per wall-clock second, ratio (target >= 0.95);
- a round of two answers at once (the TUI's way) against the same raw pair: ratio (more than 1 is a gain);
then the time to store one vote and to fit the leaderboard with its bootstrap for 1,000 and 10,000 votes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

os.environ.setdefault("LLMSPELL_HOME", tempfile.mkdtemp(prefix="llmspell-bench-"))
sys.path.insert(0, str(Path(__file__).parent))

from busy import busy_core
from engine import close_raw, cpu_name, raw_engine

from llmspell.arena import Arena, board
from llmspell.backends.llamacpp import LlamaCppBackend, gguf_info
from llmspell.config import Config
from llmspell.hub import Hub
from llmspell.machine import physical_cores
from llmspell.ratings import leaderboard
from llmspell.spec import parse_spec
from llmspell.store import Store
from llmspell.types import Message, Options, Stats
from llmspell.votes import Answer, Vote

MODELS = ("smollm2:135m", "gemma3:270m")
PROMPT = "Write a long, detailed story about a dragon who learns to paint. Use many paragraphs."


def raw_pair(backend: LlamaCppBackend, prompt: str, n_tokens: int, threads: int) -> tuple[int, float]:
    """The raw engine answering ``prompt`` with each model in turn: tokens and wall-clock seconds."""
    start = time.perf_counter()
    total = 0
    for spec in MODELS:
        model = backend.resolve(parse_spec(spec))
        path = backend.ensure_file(model)
        info = gguf_info(path)
        text, add_bos, _ = backend.render_chat(model, info, [Message("user", prompt)])
        _ttft, _rate, n = raw_engine(path, text, add_bos, True, n_tokens, threads, backend.config.num_ctx)
        total += n
    return total, time.perf_counter() - start


async def core_pair(hub: Hub, options: Options, prompt: str) -> tuple[int, float]:
    """The core (Hub.chat, no arena) answering ``prompt`` with each model in turn: tokens and seconds."""
    start = time.perf_counter()
    total = 0
    for spec in MODELS:
        async for chunk in hub.chat(spec, [Message("user", prompt)], options):
            if chunk.done and chunk.stats is not None:
                total += chunk.stats.generated_tokens
    return total, time.perf_counter() - start


async def arena_round(hub: Hub, arena: Arena, prompt: str, *, parallel: bool) -> tuple[int, float]:
    """One blind round as a face runs it (draw, equal options, stream both): tokens and wall-clock seconds."""
    start = time.perf_counter()
    round_ = arena.start(prompt)
    async for _ in round_.stream(hub, parallel=parallel):
        pass
    seconds = time.perf_counter() - start
    assert round_.problem() is None, round_.problem()
    return sum(m.generated_tokens for m in round_.metrics), seconds


def rate(runs: list[tuple[int, float]]) -> float:
    """Median tokens per wall-clock second."""
    return statistics.median(n / s for n, s in runs)


async def rounds(
    hub: Hub, arena: Arena, backend: LlamaCppBackend, repeats: int, n_tokens: int, thread_counts: list[int]
) -> dict[str, float]:
    """Raw pairs (the best of the fixed thread counts), sequential and parallel rounds, interleaved so a drifting
    machine hits all alike; also the tokens each produced, to show they did the same work."""
    raw: dict[int, list[tuple[int, float]]] = {t: [] for t in thread_counts}
    seq, par, core = [], [], []
    for i in range(repeats):
        prompt = f"Story number {i + 1}. {PROMPT}"
        for t in thread_counts:
            raw[t].append(raw_pair(backend, prompt, n_tokens, t))
        core.append(await core_pair(hub, arena.round_options(), prompt))
        seq.append(await arena_round(hub, arena, prompt, parallel=False))
        par.append(await arena_round(hub, arena, prompt, parallel=True))
    best = max(thread_counts, key=lambda t: rate(raw[t]))
    return {
        "raw": rate(raw[best]),
        "threads": best,
        "seq": rate(seq),
        "core": rate(core),
        "par": rate(par),
        "raw_tokens": statistics.median(n for n, _ in raw[best]),
        "round_tokens": statistics.median(n for n, _ in seq),
    }


def synthetic_votes(n: int, models: int, seed: int = 1) -> list[Vote]:
    """``n`` votes among ``models`` models of known strength, with stats, as the store keeps them."""
    rng = random.Random(seed)
    names = [f"model-{i}" for i in range(models)]
    stats = Stats(prompt_tokens=20, generated_tokens=100, time_to_first_token=0.05, generation_time=1.0)
    votes = []
    for _ in range(n):
        a, b = rng.sample(range(models), 2)
        p = 1 / (1 + 10 ** ((b - a) * 40 / 400))
        winner: int | str = "tie" if rng.random() < 0.1 else (0 if rng.random() < p else 1)
        answers = tuple(Answer(names[x], "llamacpp", "Q4_K_M", None, "text", stats) for x in (a, b))
        votes.append(Vote("prompt", answers, winner))
    return votes


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=128)
    args = parser.parse_args()
    hub = Hub(Config())
    backend: LlamaCppBackend = hub.backends["llamacpp"]  # type: ignore[assignment]
    # greedy and no early end, so the raw engine and the round produce the same tokens
    arena = Arena(hub, None, options=Options(temperature=0, max_tokens=args.tokens, repeat_penalty=1.0), seed=1)
    await arena.set_pool(list(MODELS))
    raw_pair(backend, "warm up", 4, backend.threads())
    await arena_round(hub, arena, "warm up", parallel=False)
    print(f"# bench/arena.py  {date.today()}  {cpu_name()}  {os.cpu_count()} logical cores")
    print(f"two answers of up to {args.tokens} tokens (smollm2:135m and gemma3:270m), {args.repeats} repeats, medians")
    for busy in (False, True):
        # beside a busy core the raw engine does best with fewer threads than cores: give it its best count
        counts = sorted({1, backend.threads(), physical_cores()}) if busy else [physical_cores()]
        with busy_core(busy):
            r = await rounds(hub, arena, backend, args.repeats, args.tokens, counts)
        label = "one core busy" if busy else "quiet"
        print(
            f"{label}: raw pair {r['raw']:.1f} tok/s ({r['threads']:.0f} threads, best of {counts}; "
            f"{r['raw_tokens']:.0f} tokens, round {r['round_tokens']:.0f}); round one after another {r['seq']:.1f} "
            f"(ratio {r['seq'] / r['raw']:.3f}, target >= 0.95; "
            f"the core without the arena {r['core'] / r['raw']:.3f}); "
            f"round at once {r['par']:.1f} "
            f"(ratio {r['par'] / r['raw']:.3f})"
        )
    close_raw()
    await hub.close()

    store = Store(Path(tempfile.mkdtemp(prefix="llmspell-bench-votes-")) / "history.sqlite3")
    votes = synthetic_votes(200, 4)
    start = time.perf_counter()
    for v in votes:
        store.add_vote(v)
    print(f"storing a vote: {(time.perf_counter() - start) / len(votes) * 1000:.2f} ms each (one transaction)")
    for n, models in ((1_000, 6), (10_000, 20)):
        many = synthetic_votes(n, models)
        start = time.perf_counter()
        board(many)
        full = time.perf_counter() - start
        start = time.perf_counter()
        leaderboard([v.ballot for v in many], rounds=0)
        fit = time.perf_counter() - start
        print(f"leaderboard of {n} votes, {models} models: fit {fit * 1000:.0f} ms, with 200 refits {full:.2f} s")
    store.close()


if __name__ == "__main__":
    asyncio.run(main())
