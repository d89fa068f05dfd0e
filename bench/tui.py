"""Benchmark: the chat screen end to end (headless Textual app) against raw llama-cpp-python, in one run.

Run: .venv/bin/python bench/tui.py [--repeats 3] [--tokens 200]
Prints three ratios (and, for (1), the same pane with live rendering off, to show what drawing costs, and
drawing without a core left to it, as before issue 12):
  (1) one pane on smollm2:135m: tokens/s from the first token to the final render of the pane, over raw
      llama-cpp-python's generation tokens/s on the same prompt (target >= 0.95);
  (2) a synthetic 2,000 tokens/s stream into a pane: how long after the last token the pane shows the whole
      answer (target < 200 ms) and the latency of keys pressed while it streams (target < 50 ms);
  (3) two panes of smollm2:135m streaming at once: their total tokens/s over one pane alone (target >= 0.9).
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
from collections.abc import AsyncGenerator, Sequence
from datetime import date
from pathlib import Path

os.environ.setdefault("LLMSPELL_HOME", tempfile.mkdtemp(prefix="llmspell-bench-"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine import close_raw, cpu_name, raw_engine

from llmspell.backends.base import Backend
from llmspell.backends.llamacpp import LlamaCppBackend, gguf_info
from llmspell.config import Config
from llmspell.hub import Hub
from llmspell.machine import physical_cores
from llmspell.spec import ModelSpec, parse_spec
from llmspell.store import Store
from llmspell.types import BackendStatus, Chunk, Message, ModelInfo, Options, PullProgress, Stats
from llmspell_tui.app import create_app
from llmspell_tui.screens.chat import ChatScreen
from llmspell_tui.widgets import pane as pane_module
from llmspell_tui.widgets.pane import ChatPane

SPEC = "smollm2:135m"
PROMPT = "Write a long, detailed story about a dragon who learns to paint. Use many paragraphs."
SYNTH_RATE = 2000.0
SYNTH_TOKENS = 4000


class SyntheticBackend(Backend):
    """Bench-only stand-in: streams Markdown at a fixed token rate, so rendering is measured, not the engine."""

    kind = "llamacpp"

    def __init__(self, rate: float, tokens: int) -> None:
        super().__init__()
        self.rate, self.tokens = rate, tokens
        #: when the last token was handed out (perf_counter)
        self.last_token_at = 0.0

    async def status(self) -> BackendStatus:
        """Always ready."""
        return BackendStatus(self.name, True, version="synthetic", device="none", model_count=1)

    async def list_models(self) -> list[ModelInfo]:
        """One model."""
        return [ModelInfo(name="synthetic:1", backend=self.name)]

    async def has_model(self, spec: ModelSpec) -> bool:
        """Every name."""
        return True

    async def info(self, spec: ModelSpec) -> ModelInfo:
        """The one model."""
        return ModelInfo(name=spec.tag, backend=self.name)

    async def pull(self, spec: ModelSpec) -> AsyncGenerator[PullProgress, None]:
        """Nothing to pull."""
        yield PullProgress("success", done=True)

    async def delete(self, spec: ModelSpec) -> None:
        """Nothing to delete."""

    async def loaded(self) -> list[str]:
        """Nothing loaded."""
        return []

    async def unload(self, spec: ModelSpec) -> bool:
        """Nothing to unload."""
        return False

    async def chat(
        self, spec: ModelSpec, messages: Sequence[Message], options: Options | None = None
    ) -> AsyncGenerator[Chunk, None]:
        """Markdown (paragraphs, a list, a code fence) at ``rate`` tokens/s, released on the clock like an engine."""
        words = ("the ", "dragon ", "paints ", "a ", "**bright** ", "sky ", "over ", "`hills` ", "and ", "sea")
        start = time.perf_counter()
        for i in range(self.tokens):
            due = start + i / self.rate
            delay = due - time.perf_counter()
            if delay > 0.001:
                await asyncio.sleep(delay)
            text = words[i % len(words)]
            if i % 97 == 96:
                text += ".\n\n"
            if i % 499 == 250:
                text += "\n\n```python\nprint('paint')\n```\n\n- one\n- two\n\n"
            yield Chunk(text)
        self.last_token_at = time.perf_counter()
        elapsed = self.last_token_at - start
        yield Chunk(
            "", done=True, stats=Stats(generated_tokens=self.tokens, generation_time=elapsed, total_time=elapsed)
        )

    async def complete(
        self, spec: ModelSpec, prompt: str, options: Options | None = None
    ) -> AsyncGenerator[Chunk, None]:
        """The same stream."""
        async for c in self.chat(spec, [Message("user", prompt)], options):
            yield c


def _watch_finish(panes: Sequence[ChatPane], done_at: dict[int, float]) -> None:
    """Record when each pane's final render (the full Markdown update) completed."""
    for i, pane in enumerate(panes):
        original = pane.finish

        async def finish(*args: object, _i: int = i, _orig: object = original, **kwargs: object) -> None:
            await _orig(*args, **kwargs)  # type: ignore[operator]
            done_at[_i] = time.perf_counter()

        pane.finish = finish  # type: ignore[method-assign]


async def _send(screen: ChatScreen, pilot: object, text: str) -> tuple[float, dict[int, float]]:
    done_at: dict[int, float] = {}
    _watch_finish(screen.panes, done_at)
    screen.prompt.text = text
    sent = time.perf_counter()
    assert screen.send(text)
    # each pane's end is stamped by _watch_finish, so a coarse poll here costs no accuracy (and little CPU)
    while screen.generating or len(done_at) < len(screen.last_metrics):
        await asyncio.sleep(0.05)
    return sent, done_at


async def _without_room_to_draw(screen: ChatScreen, pilot: object, prompt: str) -> float:
    """One pane's tokens/s with the engine keeping every core while the pane draws, and the 5 ms GIL switch."""
    from contextlib import nullcontext

    from llmspell.backends import _threads

    pane = screen.active_pane
    room, gil = pane._room_to_draw, _threads.GIL_SWITCH
    pane._room_to_draw, _threads.GIL_SWITCH = (lambda: nullcontext(False)), sys.getswitchinterval()
    try:
        await screen.action_new_conversation()
        _, done = await _send(screen, pilot, prompt)
    finally:
        pane._room_to_draw, _threads.GIL_SWITCH = room, gil
    m = screen.last_metrics[0]
    assert m.first_token_at is not None
    (ended,) = done.values()
    return (m.chunks - 1) / (ended - m.first_token_at)


async def pane_runs(repeats: int, n_tokens: int) -> dict[str, float]:
    """(1) and (3): one pane alone and two panes at once on the real engine, alternating with the raw engine."""
    hub = Hub(Config(ollama_enabled=False, options=Options(temperature=0, max_tokens=n_tokens)))
    backend: LlamaCppBackend = hub.backends["llamacpp"]  # type: ignore[assignment]
    model = backend.resolve(parse_spec(SPEC))
    path = backend.ensure_file(model)
    info = gguf_info(path)
    threads, n_ctx = backend.threads(), backend.config.num_ctx
    app = create_app(hub, Store(Path(os.environ["LLMSPELL_HOME"]) / "bench-history.db"))
    one_e2e, one_wall, raw, two_wall, unrendered, crowded = [], [], [], [], [], []
    async with app.run_test(size=(160, 48)) as pilot:
        screen = app.screen
        assert isinstance(screen, ChatScreen)
        await pilot.press("ctrl+n")
        await pilot.press("ctrl+t")  # compare on: the warm-up loads a copy of the model for each pane
        await _send(screen, pilot, "Hi")
        for i in range(repeats):
            prompt = f"Story number {i + 1}. {PROMPT}"
            rendered, add_bos, _ = backend.render_chat(model, info, [Message("user", prompt)])
            if i % 2:
                raw.append(raw_engine(path, rendered, add_bos, True, n_tokens, threads, n_ctx)[1])
            # one pane alone: a fresh conversation each time, so the whole prompt is read as in the raw run
            screen.compare_mode = False
            await screen.action_new_conversation()
            sent, done = await _send(screen, pilot, prompt)
            m = screen.last_metrics[0]
            assert m.stats is not None and m.first_token_at is not None
            (ended,) = done.values()  # the focused pane's final render
            one_e2e.append((m.chunks - 1) / (ended - m.first_token_at))
            one_wall.append(m.stats.generated_tokens / (ended - sent))
            if not i % 2:
                raw.append(raw_engine(path, rendered, add_bos, True, n_tokens, threads, n_ctx)[1])
            # the same pane with live rendering off (only the final render): what the rest of the app costs
            pane_module.FLUSH_EVERY, flush_every = 1e9, pane_module.FLUSH_EVERY
            try:
                await screen.action_new_conversation()
                _, done = await _send(screen, pilot, prompt)
            finally:
                pane_module.FLUSH_EVERY = flush_every
            m = screen.last_metrics[0]
            assert m.first_token_at is not None
            (ended,) = done.values()
            unrendered.append((m.chunks - 1) / (ended - m.first_token_at))
            # the same pane as before issue 12: drawing with no core left to it, the engine waiting up to Python's
            # default 5 ms for the GIL between tokens
            crowded.append(await _without_room_to_draw(screen, pilot, prompt))
            # two panes at once, each with a fresh conversation
            screen.compare_mode = True
            for pane in screen.panes:
                await pane.load(pane.new_conversation())
            sent, done = await _send(screen, pilot, f"Poem number {i + 1}. {PROMPT}")
            total = sum(m.stats.generated_tokens for m in screen.last_metrics if m.stats)
            two_wall.append(total / (max(done.values()) - sent))
    close_raw()
    return {
        "raw_tps": statistics.median(raw),
        "pane_tps": statistics.median(one_e2e),
        "unrendered_tps": statistics.median(unrendered),
        "crowded_tps": statistics.median(crowded),
        # each round's two runs follow each other within seconds: their ratio shrugs off the machine's drift
        "room_gain": statistics.median(a / b for a, b in zip(one_e2e, crowded, strict=True)),
        "one_wall_tps": statistics.median(one_wall),
        "two_wall_tps": statistics.median(two_wall),
    }


async def synthetic_run() -> dict[str, float]:
    """(2): a 2,000 tokens/s stream into one pane; keys pressed while it streams; lag after the last token."""
    synth = SyntheticBackend(SYNTH_RATE, SYNTH_TOKENS)
    hub = Hub(Config(ollama_enabled=False, default_model="synthetic:1"), backends=[synth])
    app = create_app(hub, Store(Path(os.environ["LLMSPELL_HOME"]) / "bench-synth.db"))
    latencies: list[float] = []
    async with app.run_test(size=(160, 48)) as pilot:
        screen = app.screen
        assert isinstance(screen, ChatScreen)
        await pilot.pause()
        handled: list[float] = []
        original = screen.action_toggle_compare

        def toggle() -> None:
            handled.append(time.perf_counter())
            original()

        screen.action_toggle_compare = toggle  # type: ignore[method-assign]
        done_at: dict[int, float] = {}
        _watch_finish(screen.panes, done_at)
        assert screen.send("Tell me about dragons.")
        await asyncio.sleep(0.2)
        while screen.generating:
            # a key as the terminal driver delivers it: a message posted to the app from outside its loop's turn
            pressed = time.perf_counter()
            n = len(handled)
            app.post_message(_key("ctrl+t"))
            while len(handled) == n and screen.generating:
                await asyncio.sleep(0.0005)
            if len(handled) > n:
                latencies.append(handled[-1] - pressed)
            await asyncio.sleep(0.1)
        while not done_at:
            await asyncio.sleep(0.002)
        (ended,) = done_at.values()
        m = screen.last_metrics[0]
        shown = screen.active_pane.answer_text
        assert m.stats is not None and len(shown) == len(m.text)
        rate = m.chunks / (synth.last_token_at - (m.first_token_at or synth.last_token_at))
    return {
        "lag_ms": (ended - synth.last_token_at) * 1000,
        "key_p50_ms": statistics.median(latencies) * 1000,
        "key_max_ms": max(latencies) * 1000,
        "keys": float(len(latencies)),
        "delivered_tps": rate,
    }


def _key(key: str) -> object:
    from textual import events

    return events.Key(key, None)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=200)
    args = ap.parse_args()
    import llama_cpp
    import textual

    print(
        f"# bench/tui.py  {date.today()}  {platform.machine()} {cpu_name()}  {os.cpu_count()} logical cores, "
        f"{physical_cores()} threads  llama-cpp-python {llama_cpp.__version__}  textual {textual.__version__}  "
        f"Python {sys.version.split()[0]}"
    )
    print(f"# {SPEC}, temperature 0, {args.tokens} new tokens, {args.repeats} repeats, medians\n", flush=True)
    synth = await synthetic_run()
    print(
        f"(2) synthetic {SYNTH_RATE:.0f} tok/s stream ({SYNTH_TOKENS} tokens, {synth['delivered_tps']:.0f} tok/s "
        f"reached the pane): final render {synth['lag_ms']:.1f} ms after the last token (target < 200 ms); "
        f"key latency median {synth['key_p50_ms']:.1f} ms, max {synth['key_max_ms']:.1f} ms over "
        f"{synth['keys']:.0f} keys (target < 50 ms)",
        flush=True,
    )
    r = await pane_runs(args.repeats, args.tokens)
    print(
        f"(1) one pane, first token to final render: {r['pane_tps']:.1f} tok/s; raw llama-cpp-python "
        f"{r['raw_tps']:.1f} tok/s; ratio {r['pane_tps'] / r['raw_tps']:.3f}  (target >= 0.95)",
        flush=True,
    )
    print(
        f"    the same pane with live rendering off (final render only): {r['unrendered_tps']:.1f} tok/s; ratio "
        f"{r['unrendered_tps'] / r['raw_tps']:.3f} (what the app costs besides drawing the stream)",
        flush=True,
    )
    print(
        f"    the same pane drawing on the engine's cores, 5 ms GIL switch (before issue 12): "
        f"{r['crowded_tps']:.1f} tok/s; ratio {r['crowded_tps'] / r['raw_tps']:.3f}; the pane as it is now over this, "
        f"per round: {r['room_gain']:.3f}",
        flush=True,
    )
    print(
        f"(3) two panes at once: {r['two_wall_tps']:.1f} tok/s together; one pane alone {r['one_wall_tps']:.1f} "
        f"tok/s (send to final render); ratio {r['two_wall_tps'] / r['one_wall_tps']:.2f}  (target >= 0.9)",
        flush=True,
    )


if __name__ == "__main__":
    asyncio.run(main())
