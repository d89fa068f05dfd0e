"""The compare runner on the real embedded engine: one prompt to several conversations, parallel or in order."""

from __future__ import annotations

from pathlib import Path

from helpers import GEMMA, SMOL

from llmspell.backends.llamacpp import LlamaCppBackend
from llmspell.chat import Conversation
from llmspell.compare import CompareEvent, Target, compare
from llmspell.config import Config
from llmspell.hub import Hub
from llmspell.store import Store
from llmspell.types import Options

SHORT = Options(temperature=0, max_tokens=24)
LONG = Options(temperature=0, max_tokens=400)
STORY = "Write a very long story about a dragon who learns to paint, in many paragraphs."


def _hub(backend: LlamaCppBackend) -> Hub:
    return Hub(Config(ollama_enabled=False), backends=[backend])


async def _run(hub: Hub, convs: list[Conversation], text: str, **kwargs: object) -> list[CompareEvent]:
    return [e async for e in compare(hub, convs, text, **kwargs)]  # type: ignore[arg-type]


def _first(events: list[CompareEvent], index: int, kind: str) -> int:
    return next(i for i, e in enumerate(events) if e.index == index and e.kind == kind)


async def test_parallel_two_models_both_answer_with_stats_and_overlap(backend: LlamaCppBackend, tmp_path: Path) -> None:
    hub, store = _hub(backend), Store(tmp_path / "h.db")
    # both loaded first: otherwise smollm2 may finish its answer while gemma3 still loads, and nothing overlaps
    await _run(hub, [Conversation(SMOL, options=SHORT), Conversation(GEMMA, options=SHORT)], "Hi", parallel=False)
    convs = [Conversation(SMOL, options=SHORT), Conversation(GEMMA, options=SHORT)]
    events = await _run(hub, convs, "What is the capital of France?", store=store)
    for i, conv in enumerate(convs):
        done = events[_first(events, i, "done")]
        m = done.metrics
        assert m.status == "done" and m.stats is not None
        assert m.text.strip() and m.text == conv.entries[-1].content
        assert m.generated_tokens == m.stats.generated_tokens > 0
        assert m.ttft is not None and m.ttft > 0 and m.tokens_per_s > 0
        assert m.stop_reason in ("stop", "length")
        saved = store.load(conv.id)
        assert [e.role for e in saved.entries] == ["user", "assistant"]
        assert saved.entries[1].content == m.text and saved.entries[1].state == "done"
    # both were generating at the same time: each ran on its share of the cores at some token
    for name in (SMOL, GEMMA):
        assert max(1, backend.budget.total // 2) in backend.worker_for(name).report.threads_used


async def test_two_conversations_with_one_model_stream_at_the_same_time(backend: LlamaCppBackend) -> None:
    hub = _hub(backend)
    opts = Options(temperature=0, max_tokens=48)
    convs = [Conversation(SMOL, options=opts), Conversation(SMOL, options=opts)]
    await _run(hub, [Conversation(SMOL, options=SHORT)], "Hi")  # loaded, so both start from a warm engine
    events = await _run(hub, convs, "Write a story about a dragon.")
    assert all(e.metrics.status == "done" for e in events if e.kind == "done")
    assert {e.index for e in events if e.kind == "done"} == {0, 1}
    # a second instance of the model answered the second conversation instead of queueing it behind the first
    copies = backend.instances(SMOL)
    answered = sorted(e.metrics.generated_tokens for e in events if e.kind == "done")
    assert len(copies) == 2 and sorted(w.report.generated_tokens for w in copies) == answered
    assert convs[0].entries[-1].content == convs[1].entries[-1].content, "same prompt, greedy: same answer"
    # with nobody else generating, a later request goes to an idle instance (no third copy)
    await _run(hub, [convs[0]], "And then?")
    assert len(backend.instances(SMOL)) == 2


async def test_one_after_another_runs_in_order(backend: LlamaCppBackend) -> None:
    hub = _hub(backend)
    convs = [Conversation(SMOL, options=SHORT), Conversation(GEMMA, options=SHORT)]
    events = await _run(hub, convs, "Name a colour.", parallel=False)
    assert next(e.kind for e in events if e.index == 0) == "start"
    last_of_first = max(i for i, e in enumerate(events) if e.index == 0)
    first_of_second = min(i for i, e in enumerate(events) if e.index == 1)
    assert last_of_first < first_of_second, "the second stream starts only after the first ended"
    assert all(events[_first(events, i, "done")].metrics.stats is not None for i in (0, 1))


async def test_closing_the_stream_cancels_every_answer_and_keeps_the_partial_text(
    backend: LlamaCppBackend, tmp_path: Path
) -> None:
    hub, store = _hub(backend), Store(tmp_path / "h.db")
    convs = [Conversation(SMOL, options=LONG), Conversation(GEMMA, options=LONG)]
    stream = compare(hub, convs, STORY, store=store)
    chunks = {0: 0, 1: 0}
    async for event in stream:
        if event.kind == "chunk":
            chunks[event.index] += 1
        if min(chunks.values()) >= 3:
            break
    await stream.aclose()
    for conv in convs:
        answer = conv.entries[-1]
        assert answer.state == "cancelled" and answer.content, "the partial answer is kept, marked cancelled"
        assert store.load(conv.id).entries[-1].state == "cancelled"
        assert store.load(conv.id).entries[-1].content == answer.content
    # the engine is free at once: the next prompt to both is answered
    events = await _run(hub, [Target(c, SHORT) for c in convs], "Say hello.", store=store)
    assert sorted(e.index for e in events if e.kind == "done") == [0, 1]


async def test_live_metrics_while_streaming_then_engine_stats(backend: LlamaCppBackend) -> None:
    hub = _hub(backend)
    conv = Conversation(SMOL, options=Options(temperature=0, max_tokens=40))
    live = []
    async for event in compare(hub, [conv], STORY):
        if event.kind == "chunk" and event.metrics.chunks >= 5 and not live:
            m = event.metrics
            live.append((m.status, m.stats, m.chunks, m.tokens_per_s, m.live_summary()))
        if event.kind == "done":
            final = event.metrics
    status, stats, n, rate, line = live[0]
    assert status == "streaming" and stats is None and n >= 5 and rate > 0
    assert line.startswith("TTFT ") and "tok/s" in line and f"{n} tokens" in line
    assert final.stats is not None and final.stop_reason == "length" and final.generated_tokens == 40
    assert final.live_summary() == final.stats.summary() and "stopped at max tokens" in final.live_summary()


async def test_a_failing_target_reports_one_message_and_the_others_answer(backend: LlamaCppBackend) -> None:
    hub = _hub(backend)
    convs = [Conversation("nosuchmodel:7b", options=SHORT), Conversation(SMOL, options=SHORT)]
    events = await _run(hub, convs, "Hello")
    error = next(e for e in events if e.kind == "error")
    assert error.index == 0 and error.metrics.status == "error" and error.metrics.stop_reason == "error"
    assert "nosuchmodel" in (error.metrics.error or "") and "Traceback" not in (error.metrics.error or "")
    assert events[_first(events, 1, "done")].metrics.stats is not None
    assert convs[0].entries[0].content == "Hello", "the prompt is kept in the failed conversation"


async def test_per_turn_options_override_the_conversation(backend: LlamaCppBackend) -> None:
    hub = _hub(backend)
    conv = Conversation(SMOL, options=Options(temperature=0, max_tokens=200))
    events = await _run(hub, [Target(conv, Options(max_tokens=5))], STORY)
    done = events[_first(events, 0, "done")]
    assert done.metrics.generated_tokens == 5 and done.metrics.stop_reason == "length"
