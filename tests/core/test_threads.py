"""The engine's thread count follows what the machine gives it: real busy processes beside real generations."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from helpers import SMOL, collect

from llmspell.backends._threads import BUSY_SHARE, CpuLoad
from llmspell.backends.llamacpp import LlamaCppBackend
from llmspell.config import Config
from llmspell.spec import parse_spec
from llmspell.types import Message, Options

pytestmark = pytest.mark.skipif(not CpuLoad().supported, reason="no /proc/stat: the load is not measured here")

STORY = [Message("user", "Write a long story about a dragon who learns to paint. Use many paragraphs.")]


class Spinners:
    """Processes that each keep one core busy, as other programs on a user's machine do."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, n: int) -> None:
        """Start n more."""
        self.procs.extend(subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n))

    def stop(self) -> None:
        """Kill every one."""
        for p in self.procs:
            p.kill()
            p.wait()
        self.procs.clear()


@pytest.fixture
def spinners() -> Iterator[Spinners]:
    """Busy processes for one test; every one is killed when the test ends."""
    s = Spinners()
    yield s
    s.stop()


def wait_for(load: CpuLoad, cond: Callable[[float], bool], what: str, tries: int = 100) -> float:
    """Read the load every tenth of a second until ``cond`` holds (bounded)."""
    others = 0.0
    for _ in range(tries):
        time.sleep(0.1)
        others = load.update()
        if cond(others):
            return others
    raise AssertionError(f"{what}: others used {others:.2f} cores at the last reading")


def baseline(load: CpuLoad) -> float:
    """What the rest of the machine uses before a test adds its own load (a median of five readings)."""
    return sorted(wait_for(load, lambda _o: True, "no reading") for _ in range(5))[2]


def test_a_busy_process_is_measured_and_its_end_too(spinners: Spinners) -> None:
    load = CpuLoad()
    before = baseline(load)
    spinners.start(1)
    seen = min(load.cpus, before + 1.0) - 0.2
    wait_for(load, lambda o: o >= seen, f"a spinning process was not seen (was {before:.2f})")
    spinners.stop()
    wait_for(load, lambda o: o < before + BUSY_SHARE, f"still busy after the spinner stopped (was {before:.2f})")


def test_our_own_work_is_not_counted_as_other_programs() -> None:
    load = CpuLoad()
    before = baseline(load)
    stop = threading.Event()

    def burn() -> None:  # a thread of this process keeping a core busy, as the engine's own threads do
        while not stop.is_set():
            sum(range(1000))

    t = threading.Thread(target=burn)
    t.start()
    try:
        during = baseline(load)
    finally:
        stop.set()
        t.join()
    assert during < before + BUSY_SHARE, f"our own CPU was taken for other programs: {before:.2f} -> {during:.2f}"


@pytest.fixture
def adaptive(backend: LlamaCppBackend) -> LlamaCppBackend:
    if backend.budget.total < 2:
        pytest.skip("one core only: there is no thread count to step down to")
    assert backend.budget.adaptive, "without a threads setting the engine adapts to the machine's load"
    return backend


async def test_generation_steps_down_beside_a_busy_core_and_back_up(
    adaptive: LlamaCppBackend, spinners: Spinners
) -> None:
    backend = adaptive
    budget = backend.budget
    total = budget.total
    busy_already = await asyncio.to_thread(baseline, budget.load)  # type: ignore[arg-type]
    if busy_already >= BUSY_SHARE:
        pytest.skip(f"other programs use {busy_already:.1f} cores already: no idle core for the engine to take back")
    await collect(backend.chat(parse_spec(SMOL), STORY, Options(max_tokens=1)))  # loaded before the load starts
    # every core but one busy: one thread is what is left for the engine
    spinners.start(budget.load.cpus - 1)  # type: ignore[union-attr]
    await asyncio.to_thread(wait_for, budget.load, lambda o: o >= budget.load.cpus - 1.2, "spinners not seen")  # type: ignore[arg-type, union-attr]
    worker = backend.worker_for(SMOL)
    assert worker is not None
    stream = backend.chat(parse_spec(SMOL), STORY, Options(temperature=0, max_tokens=600, seed=1))
    seen_busy = ""
    killed = False
    try:
        async for chunk in stream:
            if chunk.done:
                break
            if not killed and len(worker.report.threads_used) and worker.report.threads_used == {1}:
                seen_busy = backend.device()
                spinners.stop()
                killed = True
            if killed and total in worker.report.threads_used:
                break
    finally:
        await stream.aclose()
    assert killed, f"the answer never ran on one thread beside the busy cores: {worker.report.threads_used}"
    assert f"1 of {total} threads: " in seen_busy and "busy elsewhere" in seen_busy, seen_busy
    assert total in worker.report.threads_used, "once the other process stopped, the engine took its cores back"
    assert min(worker.report.threads_used) == 1


async def test_an_explicit_thread_count_wins_over_the_load(adaptive: LlamaCppBackend, spinners: Spinners) -> None:
    backend = adaptive
    total = backend.budget.total
    spinners.start(1)
    await asyncio.to_thread(wait_for, backend.budget.load, lambda o: o >= 0.8, "spinner not seen")  # type: ignore[arg-type]
    await collect(backend.chat(parse_spec(SMOL), STORY, Options(temperature=0, max_tokens=8, num_threads=total)))
    assert backend.worker_for(SMOL).report.threads_used == {total}  # type: ignore[union-attr]


async def test_threads_set_in_the_config_are_taken_as_they_are(
    shared_models: object, monkeypatch: pytest.MonkeyPatch, spinners: Spinners
) -> None:
    monkeypatch.setenv("LLMSPELL_MODELS", str(shared_models))
    backend = LlamaCppBackend(Config(keep_alive=300, num_ctx=2048, threads=2))
    try:
        spinners.start(1)
        assert not backend.budget.adaptive
        assert backend.device() == "CPU (2 threads, as configured)", "a fixed count says nothing of load"
        await collect(backend.chat(parse_spec(SMOL), STORY, Options(temperature=0, max_tokens=8)))
        assert backend.worker_for(SMOL).report.threads_used == {2}  # type: ignore[union-attr]
    finally:
        backend.close_sync()


def test_model_status_says_how_many_threads_and_why(spinners: Spinners) -> None:
    from llmspell.machine import physical_cores

    total = physical_cores()
    if total < 2:
        pytest.skip("one core only: the engine always runs one thread")

    def status() -> str:
        proc = subprocess.run(
            [sys.executable, "-m", "llmspell", "model", "status"], capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0, proc.stderr
        return next(line for line in proc.stdout.splitlines() if "device:" in line)

    quiet = status()
    assert f"CPU ({total} threads)" in quiet or "busy elsewhere" in quiet, quiet
    load = CpuLoad()
    spinners.start(load.cpus - 1)
    wait_for(load, lambda o: o >= load.cpus - 1.2, "spinners not seen")
    busy = status()
    assert f"CPU (1 of {total} threads: " in busy and "busy elsewhere" in busy, busy


async def test_a_face_drawing_gets_a_core_and_the_interpreter_switches_fast(adaptive: LlamaCppBackend) -> None:
    """While a face of this process draws, the engine leaves it a core; meanwhile a Python thread waiting for
    the GIL (the engine's, between two tokens) gets it within a millisecond, not Python's default 5 ms."""
    backend = adaptive
    total = backend.budget.total
    default_switch = sys.getswitchinterval()
    async with backend.room_to_draw() as held:
        assert not held, "nothing generates: there is nothing to hold"
    await collect(backend.chat(parse_spec(SMOL), STORY, Options(max_tokens=1)))
    worker = backend.worker_for(SMOL)
    assert worker is not None
    stream = backend.chat(parse_spec(SMOL), STORY, Options(temperature=0, max_tokens=600, seed=1))
    try:
        await anext(stream)  # generating
        switch_while_generating = sys.getswitchinterval()
        async with backend.room_to_draw() as held:
            assert held
            for _ in range(3):  # a few tokens while the face draws
                await anext(stream)
    finally:
        await stream.aclose()
    assert total - 1 in worker.report.threads_used, f"the engine kept every core: {worker.report.threads_used}"
    assert switch_while_generating == pytest.approx(0.001)
    await asyncio.sleep(0)
    for _ in range(100):  # the worker leaves the budget a moment after the stream closes
        if sys.getswitchinterval() == default_switch:
            break
        await asyncio.sleep(0.01)
    assert sys.getswitchinterval() == default_switch, "the interpreter's default comes back once nothing generates"


async def test_threads_fixed_in_the_config_are_never_lowered_for_drawing(
    shared_models: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMSPELL_MODELS", str(shared_models))
    backend = LlamaCppBackend(Config(keep_alive=300, num_ctx=2048, threads=2))
    try:
        stream = backend.chat(parse_spec(SMOL), STORY, Options(temperature=0, max_tokens=40))
        try:
            await anext(stream)
            async with backend.room_to_draw() as held:
                assert not held
                for _ in range(3):
                    await anext(stream)
        finally:
            await stream.aclose()
        assert backend.worker_for(SMOL).report.threads_used == {2}  # type: ignore[union-attr]
    finally:
        backend.close_sync()
