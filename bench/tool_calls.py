"""Benchmark: a tool call's round trip through the embedded backend against the raw engine, grammar cost included.

Run: .venv/bin/python bench/tool_calls.py [--repeats 5] [--models smollm2:135m gemma3:270m]
Per model, a forced call (tool_choice names get_weather, greedy): the time from ``chat(...)`` to the done chunk
holding the parsed call, against raw llama-cpp-python (``Llama.generate`` on the same rendered prompt) writing
the same number of tokens with the same grammar, and without a grammar; then "auto" (a lazy grammar that starts
at ``<tool_call>``) on the same request. Prints medians and the ratios; then all of it again with one core kept
busy by another process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("LLMSPELL_HOME", tempfile.mkdtemp(prefix="llmspell-bench-"))
sys.path.insert(0, str(Path(__file__).parent))

from busy import busy_core
from engine import cpu_name

from llmspell.backends._llama_tools import call_grammar, check_tools
from llmspell.backends.llamacpp import LlamaCppBackend, gguf_info
from llmspell.config import Config
from llmspell.spec import parse_spec
from llmspell.types import Message, Options

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather now in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"],
        },
    },
}
ASK = [Message("user", "What is the weather in Paris, in celsius?")]
NAMED = {"type": "function", "function": {"name": "get_weather"}}
GREEDY = Options(temperature=0.0, max_tokens=80, seed=1)


async def ours(backend: LlamaCppBackend, spec: str, choice: Any) -> tuple[float, int, int]:
    """Seconds from the request to the done chunk, tokens written, calls read."""
    start = time.perf_counter()
    last = None
    async for chunk in backend.chat(parse_spec(spec), ASK, GREEDY, tools=[WEATHER], tool_choice=choice):
        last = chunk
    end = time.perf_counter()
    assert last is not None and last.stats is not None
    return end - start, last.stats.generated_tokens, len(last.tool_calls)


def raw(llm: Any, prompt: str, add_bos: bool, grammar: Any, n_tokens: int) -> float:
    """Seconds for the raw engine to read ``prompt`` and write ``n_tokens`` greedily (with ``grammar`` if any),
    its text decoded and, with a grammar, the call's JSON read as the backend reads it."""
    start = time.perf_counter()
    tokens = llm.tokenize(prompt.encode(), add_bos=add_bos, special=True)
    out = bytearray()
    n = 0
    for tok in llm.generate(tokens, temp=0.0, top_k=40, top_p=0.95, min_p=0.05, repeat_penalty=1.0, grammar=grammar):
        n += 1
        out += llm._model.detokenize([tok], special=False)
        if n >= n_tokens:
            break
    text = out.decode("utf-8", errors="replace")
    if grammar is not None:
        body = text.split("<tool_call>", 1)[-1].split("</tool_call>", 1)[0]
        json.loads(body)
    return time.perf_counter() - start


async def bench_model(backend: LlamaCppBackend, spec: str, repeats: int) -> dict[str, float]:
    from llama_cpp import Llama

    model, info, _, n_ctx = await backend._prepare(parse_spec(spec), GREEDY)
    prompt, add_bos, _, fmt = backend.render_tools(model, info, ASK, check_tools([WEATHER]), "get_weather")
    grammar = call_grammar(fmt, check_tools([WEATHER]), "get_weather")
    await ours(backend, spec, NAMED)  # loads the model
    worker = backend.worker_for(spec)
    assert worker is not None
    threads = worker.llama.n_threads
    llm = Llama(str(model.path), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, verbose=False)
    times: dict[str, list[float]] = {"ours": [], "raw_grammar": [], "raw_free": [], "ours_auto": []}
    n_tokens = 0
    for _ in range(repeats):
        # rotating order: neither side always runs right after the other
        t, n_tokens, calls = await ours(backend, spec, NAMED)
        assert calls == 1
        times["ours"].append(t)
        times["raw_grammar"].append(raw(llm, prompt, add_bos, grammar, n_tokens))
        times["raw_free"].append(raw(llm, prompt, add_bos, None, n_tokens))
        t, _, _ = await ours(backend, spec, "auto")
        times["ours_auto"].append(t)
    llm.close()
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"{spec} ({gguf_info(model.path).metadata.get('general.architecture')}), {threads} threads, forced call of "
        f"{n_tokens} tokens:\n"
        f"  llmspell forced call (grammar, parsed): {med['ours'] * 1000:.1f} ms\n"
        f"  raw engine, same tokens, same grammar:  {med['raw_grammar'] * 1000:.1f} ms\n"
        f"  raw engine, same count, no grammar:     {med['raw_free'] * 1000:.1f} ms\n"
        f"  llmspell auto (lazy grammar):           {med['ours_auto'] * 1000:.1f} ms\n"
        f"  llmspell / raw with grammar: {med['ours'] / med['raw_grammar']:.3f}   "
        f"raw grammar / raw free: {med['raw_grammar'] / med['raw_free']:.3f}   "
        f"llmspell / raw free: {med['ours'] / med['raw_free']:.3f}",
        flush=True,
    )
    return med


async def main_async(models: list[str], repeats: int) -> None:
    for busy in (False, True):
        print(f"\n## {'one core busy' if busy else 'quiet'}", flush=True)
        with busy_core(busy):
            for spec in models:
                backend = LlamaCppBackend(Config(keep_alive=300, num_ctx=2048))
                try:
                    await bench_model(backend, spec, repeats)
                finally:
                    await backend.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--models", nargs="*", default=["smollm2:135m", "gemma3:270m"])
    args = ap.parse_args()
    import llama_cpp

    print(
        f"# bench/tool_calls.py  {time.strftime('%Y-%m-%d')}  {cpu_name()}  {os.cpu_count()} logical cores  "
        f"llama-cpp-python {llama_cpp.__version__}  load {os.getloadavg()[0]:.2f}\n"
        f"# temperature 0, {args.repeats} repeats, medians; times from the request to the last token (prompt "
        "reading included, its KV prefix reused by both sides after the first run)",
        flush=True,
    )
    asyncio.run(main_async(args.models, args.repeats))


if __name__ == "__main__":
    main()
