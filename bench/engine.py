"""Benchmark: llmspell.stream against raw llama-cpp-python on the same prompt, settings and machine.

Run: .venv/bin/python bench/engine.py [--repeats 3] [--tokens 128]
Prints, per model: generation tokens/s ratio (target >= 0.98), TTFT difference (target <= 10 ms), and the
first-token time of turn 10 over turn 1 of a growing conversation (target <= 1.3), alone and with two
conversations alternating on one model.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

os.environ.setdefault("LLMSPELL_HOME", tempfile.mkdtemp(prefix="llmspell-bench-"))

import llmspell
from llmspell.api import get_hub
from llmspell.backends.llamacpp import LlamaCppBackend, gguf_info
from llmspell.machine import physical_cores
from llmspell.spec import parse_spec
from llmspell.types import Message

PROMPT = "Write a long, detailed story about a dragon who learns to paint. Use many paragraphs."
TURNS = [
    "Name a country in Europe.",
    "What is its capital?",
    "Name a famous dish from there.",
    "How is it cooked?",
    "Name a river there.",
    "How long is it?",
    "Name a painter from there.",
    "Name one painting.",
    "What colours are in it?",
    "Summarise our chat in one line.",
]


def raw_engine(
    path: Path, prompt: str, add_bos: bool, special: bool, n_tokens: int, threads: int, n_ctx: int
) -> tuple[float, float, int]:
    """TTFT and generation tokens/s of the raw engine: Llama.generate on the same tokens, greedy."""
    import llama_cpp
    from llama_cpp import Llama

    llm = _RAW.get(path)
    if llm is None:
        llm = Llama(str(path), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, verbose=False)
        _RAW[path] = llm
    # a cached engine keeps the count it was made with: set it for this run (bench/arena.py tries several)
    llm._ctx.set_n_threads(threads, threads)  # type: ignore[attr-defined]
    start = time.perf_counter()
    tokens = llm.tokenize(prompt.encode(), add_bos=add_bos, special=special)
    first = None
    n = 0
    for tok in llm.generate(tokens, temp=0.0, top_k=40, top_p=0.95, min_p=0.05, repeat_penalty=1.0):
        if first is None:
            first = time.perf_counter()
        if llama_cpp.llama_vocab_is_eog(llm._model.vocab, tok):
            break
        llm._model.detokenize([tok])
        n += 1
        if n >= n_tokens:
            break
    end = time.perf_counter()
    assert first is not None
    return first - start, (n - 1) / (end - first), n


_RAW: dict[Path, object] = {}


def close_raw() -> None:
    """Free the raw engines now, not in a destructor at interpreter exit (llama-cpp-python's then fails)."""
    for llm in _RAW.values():
        llm.close()  # type: ignore[attr-defined]
    _RAW.clear()


def cpu_name() -> str:
    """The processor's model name, for the benchmarks' header lines."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def raw_conversation(backend: LlamaCppBackend, spec: str) -> list[float]:
    """First-token time per turn of the same growing conversation on the raw engine (its own prefix reuse)."""
    import llama_cpp

    model = backend.resolve(parse_spec(spec))
    info = gguf_info(model.path)
    llm = _RAW[model.path]
    llm.reset()  # type: ignore[attr-defined]
    history: list[Message] = []
    ttfts = []
    for turn in TURNS:
        history.append(Message("user", f"(conversation 0) {turn}"))
        start = time.perf_counter()
        prompt, add_bos, _ = backend.render_chat(model, info, history)
        tokens = llm.tokenize(prompt.encode(), add_bos=add_bos, special=True)  # type: ignore[attr-defined]
        out: list[int] = []
        first = None
        for tok in llm.generate(tokens, temp=0.0, top_k=40, top_p=0.95, min_p=0.05, repeat_penalty=1.0):  # type: ignore[attr-defined]
            if first is None:
                first = time.perf_counter()
            if llama_cpp.llama_vocab_is_eog(llm._model.vocab, tok) or len(out) >= 48:  # type: ignore[attr-defined]
                break
            out.append(tok)
        ttfts.append((first or time.perf_counter()) - start)
        history.append(Message("assistant", llm.detokenize(out).decode(errors="replace")))  # type: ignore[attr-defined]
    return ttfts


async def ours(spec: str, prompt: str, n_tokens: int, *, chat: bool) -> tuple[float, float, int]:
    """TTFT and generation tokens/s seen by a caller of llmspell.stream."""
    start = time.perf_counter()
    first = None
    stats = None
    kwargs = dict(temperature=0, max_tokens=n_tokens, repeat_penalty=1.0, top_k=40, top_p=0.95, min_p=0.05)
    async for chunk in llmspell.stream(
        spec, prompt if not chat else [{"role": "user", "content": prompt}], raw=not chat, **kwargs
    ):
        if first is None and chunk.text:
            first = time.perf_counter()
        if chunk.done:
            stats = chunk.stats
    end = time.perf_counter()
    assert first is not None and stats is not None
    return first - start, (stats.generated_tokens - 1) / (end - first), stats.generated_tokens


async def conversation_ttft(spec: str, convos: int) -> list[float]:
    """First-token time of each turn of ``convos`` conversations taking turns on one model."""
    histories: list[list[Message]] = [[] for _ in range(convos)]
    ttfts: list[list[float]] = [[] for _ in range(convos)]
    for turn in TURNS:
        for i in range(convos):
            histories[i].append(Message("user", f"(conversation {i}) {turn}"))
            start = time.perf_counter()
            first = None
            text = []
            async for chunk in llmspell.stream(spec, histories[i], temperature=0, max_tokens=48):
                if first is None and chunk.text:
                    first = time.perf_counter()
                text.append(chunk.text)
            ttfts[i].append((first or time.perf_counter()) - start)
            histories[i].append(Message("assistant", "".join(text)))
    return ttfts[0]


async def bench_model(spec: str, repeats: int, n_tokens: int) -> dict[str, float]:
    """All measures for one model; the engine is warmed up (loaded) before anything is timed."""
    hub = get_hub()
    backend: LlamaCppBackend = hub.backends["llamacpp"]  # type: ignore[assignment]
    model = backend.resolve(parse_spec(spec))
    path = backend.ensure_file(model)
    info = gguf_info(path)
    chat = bool(info.chat_template) or bool(model.resolved and model.resolved.variant.chat_template)
    threads = backend.threads()
    n_ctx = backend.config.num_ctx

    def rendered(prompt: str) -> tuple[str, bool]:
        if chat:
            text, add_bos, _ = backend.render_chat(model, info, [Message("user", prompt)])
            return text, add_bos
        return prompt, bool(info.metadata.get("tokenizer.ggml.add_bos_token", True))

    raw_engine(path, *rendered(PROMPT), chat, 4, threads, n_ctx)  # both engines loaded before timing
    await ours(spec, PROMPT, 4, chat=chat)
    raw_runs, our_runs = [], []
    for i in range(repeats):
        # a new story each time, so neither side finds the whole prompt cached; both keep what they can reuse
        # (the template's system prompt); the order alternates so drift of a shared machine hits both alike
        prompt = f"Story number {i + 1}. {PROMPT}"
        if i % 2:
            our_runs.append(await ours(spec, prompt, n_tokens, chat=chat))
            raw_runs.append(raw_engine(path, *rendered(prompt), chat, n_tokens, threads, n_ctx))
        else:
            raw_runs.append(raw_engine(path, *rendered(prompt), chat, n_tokens, threads, n_ctx))
            our_runs.append(await ours(spec, prompt, n_tokens, chat=chat))
    raw_ttft = statistics.median(r[0] for r in raw_runs)
    raw_tps = statistics.median(r[1] for r in raw_runs)
    our_ttft = statistics.median(r[0] for r in our_runs)
    our_tps = statistics.median(r[1] for r in our_runs)
    result = {
        "raw_tps": raw_tps,
        "our_tps": our_tps,
        "tps_ratio": our_tps / raw_tps,
        "raw_ttft_ms": raw_ttft * 1000,
        "our_ttft_ms": our_ttft * 1000,
        "ttft_diff_ms": (our_ttft - raw_ttft) * 1000,
        "raw_tokens": statistics.median(r[2] for r in raw_runs),
        "our_tokens": statistics.median(r[2] for r in our_runs),
    }
    if chat:
        runs: dict[int, list[list[float]]] = {1: [], 2: []}
        for _ in range(repeats):
            for convos in (1, 2):
                await backend.unload(parse_spec(spec))  # no state left over from the previous run
                # loaded but with nothing reusable: turn 1 is a new conversation that reads its whole prompt
                await ours(spec, "hi", 1, chat=False)
                runs[convos].append(await conversation_ttft(spec, convos))
        raw_runs_conv = [raw_conversation(backend, spec) for _ in range(repeats)]
        raw_conv = [statistics.median(r[i] for r in raw_runs_conv) for i in range(len(TURNS))]
        one = [statistics.median(r[i] for r in runs[1]) for i in range(len(TURNS))]
        two = [statistics.median(r[i] for r in runs[2]) for i in range(len(TURNS))]
        result.update(
            {
                "raw_turn1_ms": raw_conv[0] * 1000,
                "raw_turn10_ms": raw_conv[-1] * 1000,
                "turn1_ms": one[0] * 1000,
                "turn10_ms": one[-1] * 1000,
                "turn10_over_1": one[-1] / one[0],
                "alt_turn1_ms": two[0] * 1000,
                "alt_turn10_ms": two[-1] * 1000,
                "alt_turn10_over_1": two[-1] / two[0],
            }
        )
    return result


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--models", nargs="*", default=["smollm2:135m", "gemma3:270m"])
    args = ap.parse_args()
    import llama_cpp

    print(
        f"# bench/engine.py  {date.today()}  {platform.machine()} {cpu_name()}  "
        f"{os.cpu_count()} logical cores, {physical_cores()} threads  llama-cpp-python {llama_cpp.__version__}  "
        f"Python {sys.version.split()[0]}"
    )
    print(f"# temperature 0, {args.tokens} new tokens, {args.repeats} repeats, medians\n")
    for spec in args.models:
        r = await bench_model(spec, args.repeats, args.tokens)
        print(f"## {spec}")
        print(
            f"generation tok/s: raw {r['raw_tps']:.1f}  llmspell {r['our_tps']:.1f}  ratio {r['tps_ratio']:.3f}"
            f"  (target >= 0.98)  [tokens: raw {r['raw_tokens']:.0f}, llmspell {r['our_tokens']:.0f}]"
        )
        print(
            f"time to first token: raw {r['raw_ttft_ms']:.1f} ms  llmspell {r['our_ttft_ms']:.1f} ms  "
            f"difference {r['ttft_diff_ms']:+.1f} ms  (target <= 10 ms)"
        )
        if "turn1_ms" in r:
            print(
                f"growing conversation: turn 1 {r['turn1_ms']:.1f} ms, turn 10 {r['turn10_ms']:.1f} ms, "
                f"ratio {r['turn10_over_1']:.2f}  (target <= 1.3)"
            )
            print(
                f"  (raw engine, same conversation: turn 1 {r['raw_turn1_ms']:.1f} ms, "
                f"turn 10 {r['raw_turn10_ms']:.1f} ms, ratio {r['raw_turn10_ms'] / r['raw_turn1_ms']:.2f})"
            )
            print(
                f"two alternating conversations: turn 1 {r['alt_turn1_ms']:.1f} ms, turn 10 "
                f"{r['alt_turn10_ms']:.1f} ms, ratio {r['alt_turn10_over_1']:.2f}  (target <= 1.3)"
            )
        print()
    close_raw()
    await get_hub().close()


if __name__ == "__main__":
    asyncio.run(main())
