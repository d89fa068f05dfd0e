"""End-to-end tests of the embedded backend on the real smollm2:135m and gemma3:270m."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import jsonschema
import numpy as np
import psutil
import pytest
from helpers import GEMMA, SMOL, collect, smollm2_file, wait_idle

from llmspell.backends.llamacpp import LlamaCppBackend, estimate_ram, gguf_info
from llmspell.config import Config
from llmspell.errors import (
    GenerationError,
    InsufficientResources,
    InvalidOptions,
    ModelFileCorrupt,
    ModelFileMissing,
    ModelNotFound,
    NoChatTemplate,
)
from llmspell.machine import physical_cores
from llmspell.spec import parse_spec
from llmspell.types import Message, Options

HI = [Message("user", "Name the capital of France.")]
GREEDY = Options(temperature=0, max_tokens=24)


async def test_chat_streams_text_and_ends_with_stats(backend: LlamaCppBackend) -> None:
    chunks = [c async for c in backend.chat(parse_spec(SMOL), HI, GREEDY)]
    assert len(chunks) > 3, "the answer arrives in pieces, not at once"
    assert all(not c.done for c in chunks[:-1]) and chunks[-1].done
    text = "".join(c.text for c in chunks)
    assert "Paris" in text
    stats = chunks[-1].stats
    assert stats is not None
    assert stats.prompt_tokens > 10 and stats.generated_tokens > 0
    assert stats.time_to_first_token > 0 and stats.generation_tokens_per_s > 0
    assert stats.load_time > 0, "the first request loads the model"
    assert stats.stop_reason in ("stop", "length")
    _, again = await collect(backend.chat(parse_spec(SMOL), HI, GREEDY))
    assert again.stats.load_time == 0, "the model stays loaded between requests"


async def test_threads_default_to_physical_cores(backend: LlamaCppBackend) -> None:
    await collect(backend.chat(parse_spec(SMOL), HI, Options(max_tokens=2)))
    worker = backend.worker_for(SMOL)
    assert backend.budget.total == physical_cores(), "at most one thread per physical core"
    # fewer only while other programs keep cores busy (tests/core/test_threads.py)
    assert worker is not None and worker.report.threads_used <= set(range(1, physical_cores() + 1))
    assert backend.device().startswith("CPU") or backend.device().startswith("GPU")


async def test_greedy_is_deterministic_and_seed_repeats_sampling(backend: LlamaCppBackend) -> None:
    a, _ = await collect(backend.chat(parse_spec(SMOL), HI, GREEDY))
    b, _ = await collect(backend.chat(parse_spec(SMOL), HI, GREEDY))
    assert a == b
    story = [Message("user", "Tell me a story about a cat.")]
    seeded = Options(temperature=1.2, seed=1234, max_tokens=20)
    x, _ = await collect(backend.chat(parse_spec(SMOL), story, seeded))
    y, _ = await collect(backend.chat(parse_spec(SMOL), story, seeded))
    assert x == y
    others = {
        (await collect(backend.chat(parse_spec(SMOL), story, Options(temperature=1.2, seed=s, max_tokens=20))))[0]
        for s in (1, 2, 3)
    }
    assert len(others | {x}) > 1, "different seeds sample different answers"


async def test_max_tokens_and_stop_sequences(backend: LlamaCppBackend) -> None:
    story = [Message("user", "Write a long story about a dragon.")]
    _, last = await collect(backend.chat(parse_spec(SMOL), story, Options(temperature=0, max_tokens=5)))
    assert last.stats.generated_tokens == 5 and last.stats.stop_reason == "length"
    full, _ = await collect(backend.chat(parse_spec(SMOL), story, Options(temperature=0, max_tokens=60)))
    assert " the" in full
    cut, last = await collect(
        backend.chat(parse_spec(SMOL), story, Options(temperature=0, max_tokens=60, stop=(" the",)))
    )
    assert " the" not in cut and last.stats.stop_reason == "stop"
    assert full.startswith(cut), "text before the stop sequence is delivered whole"


async def test_json_schema_format_output_parses_and_validates(backend: LlamaCppBackend) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
        "required": ["city", "population"],
        "additionalProperties": False,
    }
    text, last = await collect(
        backend.chat(
            parse_spec(SMOL),
            [Message("user", "Give the largest city of France and its population as JSON.")],
            Options(temperature=0, max_tokens=80, format=schema),
        )
    )
    value = json.loads(text)
    jsonschema.validate(value, schema)
    assert last.stats.stop_reason == "stop"
    text, last = await collect(
        backend.chat(
            parse_spec(SMOL),
            [Message("user", 'Reply with a JSON object with one key "colour".')],
            Options(temperature=0, max_tokens=200, format="json"),
        )
    )
    assert last.stats.stop_reason == "stop", text
    assert isinstance(json.loads(text), dict)


async def test_unusable_schema_is_a_clear_error(backend: LlamaCppBackend) -> None:
    with pytest.raises(InvalidOptions, match="JSON schema"):
        await collect(backend.chat(parse_spec(SMOL), HI, Options(format={"type": "no-such-type"})))


async def test_closing_the_stream_stops_generation_within_a_token(backend: LlamaCppBackend) -> None:
    story = [Message("user", "Write a very long story about a dragon.")]
    stream = backend.chat(parse_spec(SMOL), story, Options(temperature=0, max_tokens=400))
    received = 0
    async for chunk in stream:
        received += 1 if chunk.text else 0
        if received == 5:
            break
    await stream.aclose()
    worker = backend.worker_for(SMOL)
    await wait_idle(worker)
    assert worker.report.stop_reason == "cancelled"
    # one token may be in flight when the flag is raised, and one piece may have been held back
    assert worker.report.generated_tokens <= received + 2
    text, last = await collect(backend.chat(parse_spec(SMOL), HI, GREEDY))
    assert "Paris" in text and last.stats.stop_reason != "cancelled", "the next request works at once"


async def test_cancel_during_a_long_prefill_aborts_the_prompt_evaluation(backend: LlamaCppBackend) -> None:
    long_text = " ".join(f"Item {i} is a small red box." for i in range(900))
    opts = Options(temperature=0, max_tokens=8, num_ctx=12288)
    stream = backend.chat(parse_spec(SMOL), [Message("user", long_text + "\nSummarise.")], opts)
    accepted = await stream.__anext__()  # the prompt fits: an empty chunk says so before its evaluation starts
    assert accepted.text == "" and not accepted.done
    first = asyncio.ensure_future(stream.__anext__())
    worker = None
    for _ in range(3000):
        await asyncio.sleep(0.005)
        worker = backend.worker_for(SMOL)
        if (
            worker is not None
            and worker.llama is not None
            and worker.report.phase == "prefill"
            and worker.llama.n_tokens >= 512
        ):
            break
    assert worker is not None and worker.report.phase == "prefill", "the prompt was being evaluated"
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    await stream.aclose()
    await wait_idle(worker)
    report = worker.report
    assert report.stop_reason == "cancelled"
    assert report.evaluated_at_abort is not None and report.evaluated_at_abort < report.prompt_tokens
    text, last = await collect(backend.chat(parse_spec(SMOL), HI, Options(temperature=0, max_tokens=24, num_ctx=12288)))
    assert "Paris" in text and last.stats.stop_reason != "cancelled"


async def test_next_turn_reuses_the_conversation_prefix(backend: LlamaCppBackend) -> None:
    convo = [Message("system", "You are terse."), Message("user", "Name a fruit.")]
    answer, first = await collect(backend.chat(parse_spec(SMOL), convo, GREEDY))
    convo += [Message("assistant", answer), Message("user", "Name another one.")]
    _, second = await collect(backend.chat(parse_spec(SMOL), convo, GREEDY))
    assert second.stats.cached_tokens >= first.stats.prompt_tokens
    assert second.stats.prompt_eval_tokens < second.stats.prompt_tokens - first.stats.prompt_tokens + 8


async def test_two_alternating_conversations_keep_their_prefix(backend: LlamaCppBackend) -> None:
    topics = {"a": "Tell me about the ocean in detail.", "b": "Explain how bicycles work in detail."}
    convos = {k: [Message("user", v)] for k, v in topics.items()}
    firsts = {}
    for k in ("a", "b"):
        answer, last = await collect(backend.chat(parse_spec(SMOL), convos[k], Options(temperature=0, max_tokens=80)))
        convos[k] += [Message("assistant", answer), Message("user", "Say more.")]
        firsts[k] = last.stats
    worker = backend.worker_for(SMOL)
    for k in ("a", "b"):
        _, last = await collect(backend.chat(parse_spec(SMOL), convos[k], Options(temperature=0, max_tokens=8)))
        assert last.stats.cached_tokens >= firsts[k].prompt_tokens, f"conversation {k} was not re-read"
        assert worker.report.restored_state
    assert worker.report.saved_state


async def test_gemma_base_model_completes_and_chats_through_the_catalog_template(backend: LlamaCppBackend) -> None:
    text, last = await collect(
        backend.complete(
            parse_spec(GEMMA), "The capital of France is the city of", Options(temperature=0, max_tokens=8)
        )
    )
    assert "Paris" in text and last.stats.generated_tokens > 0
    info = await backend.info(parse_spec(GEMMA))
    assert info.has_chat_template and "<start_of_turn>" in (info.chat_template or "")
    assert info.quantization == "Q4_K_M" and info.sha256 and info.family
    text, _ = await collect(backend.chat(parse_spec(GEMMA), HI, Options(temperature=0, max_tokens=8)))
    assert "<start_of_turn>" not in text and "<end_of_turn>" not in text


async def test_gguf_without_template_refuses_to_chat_but_completes(backend: LlamaCppBackend) -> None:
    await collect(backend.complete(parse_spec(GEMMA), "Hi", Options(max_tokens=1)))
    path = backend.resolve(parse_spec(GEMMA)).path
    spec = parse_spec(str(path))
    with pytest.raises(NoChatTemplate) as err:
        await collect(backend.chat(spec, HI, GREEDY))
    assert "no chat template" in str(err.value) and "plain completion" in str(err.value)
    text, _ = await collect(backend.complete(spec, "One, two, three,", Options(temperature=0, max_tokens=6)))
    assert "four" in text.lower()


async def test_smollm2_is_read_in_place_from_its_wheel(backend: LlamaCppBackend) -> None:
    model = backend.resolve(parse_spec(SMOL))
    assert model.source == "pypi" and model.path == smollm2_file()
    info = await backend.info(parse_spec(SMOL))
    assert info.quantization == "Q4_1" and info.has_chat_template and info.context_length == 8192
    assert info.location == str(smollm2_file()) and len(info.sha256 or "") == 64


async def test_missing_and_corrupt_files_get_clear_errors_and_stay_untouched(
    backend: LlamaCppBackend, tmp_path: Path
) -> None:
    with pytest.raises(ModelFileMissing, match="does not exist"):
        await collect(backend.chat(parse_spec(str(tmp_path / "nope.gguf")), HI, GREEDY))
    cut = tmp_path / "cut.gguf"
    with smollm2_file().open("rb") as src:
        cut.write_bytes(src.read(30_000_000))
    before = cut.read_bytes()
    with pytest.raises(ModelFileCorrupt) as err:
        await collect(backend.chat(parse_spec(str(cut)), HI, GREEDY))
    assert "truncated" in str(err.value) and str(cut) in str(err.value)
    assert cut.read_bytes() == before
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    with pytest.raises(ModelFileCorrupt, match="not a GGUF"):
        await collect(backend.chat(parse_spec(str(junk)), HI, GREEDY))
    text, _ = await collect(backend.chat(parse_spec(SMOL), HI, GREEDY))
    assert "Paris" in text, "the process is alive and well after bad files"


async def test_unknown_and_not_downloaded_models_say_what_to_do(backend: LlamaCppBackend) -> None:
    with pytest.raises(ModelNotFound) as err:
        await collect(backend.chat(parse_spec("smollm:135m"), HI, GREEDY))
    assert "smollm2" in str(err.value)
    with pytest.raises(ModelNotFound) as err:
        await collect(backend.chat(parse_spec("tinyllama"), HI, GREEDY))
    assert "llmspell model pull tinyllama" in str(err.value)
    with pytest.raises(ModelNotFound) as err:
        await collect(backend.chat(parse_spec("smollm2:9000b"), HI, GREEDY))
    assert "135m" in str(err.value)


async def test_too_long_prompt_and_too_much_memory(backend: LlamaCppBackend) -> None:
    with pytest.raises(GenerationError) as err:
        await collect(backend.chat(parse_spec(SMOL), [Message("user", "word " * 3000)], Options(num_ctx=512)))
    assert "context window is 512" in str(err.value) and "num_ctx" in str(err.value)
    # a million-token context needs about 22.7 GiB: other programs' memory (held here for real) makes sure that
    # is more than the machine has free, whatever its page cache happens to hold
    need = estimate_ram(gguf_info(smollm2_file()), 1_048_576)
    short = psutil.virtual_memory().available - need + 1024**3
    if short > 4 * 1024**3:
        pytest.skip(f"{psutil.virtual_memory().available / 1024**3:.0f} GiB free: more than a 1M-token context needs")
    ballast = np.ones(max(0, short), dtype=np.uint8)  # every page written, so it is really taken
    try:
        with pytest.raises(InsufficientResources) as err:
            await collect(backend.chat(parse_spec(SMOL), HI, Options(num_ctx=1_048_576)))
    finally:
        del ballast
    assert "needs about" in str(err.value) and "available" in str(err.value)


async def test_unload_frees_the_model_and_keep_alive_zero_unloads_after_each_answer(
    backend: LlamaCppBackend,
) -> None:
    await collect(backend.chat(parse_spec(SMOL), HI, Options(max_tokens=2)))
    assert await backend.loaded() == [SMOL]
    assert await backend.unload(parse_spec(SMOL)) is True
    assert await backend.loaded() == []
    assert await backend.unload(parse_spec(SMOL)) is False
    backend.config.keep_alive = 0
    await collect(backend.chat(parse_spec(SMOL), HI, Options(max_tokens=2)))
    for _ in range(500):
        if not await backend.loaded():
            break
        await asyncio.sleep(0.01)
    assert await backend.loaded() == []


async def test_requests_queue_on_one_model_and_the_loop_stays_free(backend: LlamaCppBackend) -> None:
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.001)

    t = asyncio.create_task(ticker())
    results = await asyncio.gather(
        *(
            collect(backend.chat(parse_spec(SMOL), [Message("user", q)], Options(temperature=0, max_tokens=16)))
            for q in ("Name a colour.", "Name an animal.", "Name a city.")
        )
    )
    stop.set()
    await t
    assert all(last.stats.generated_tokens > 0 for _, last in results)
    assert ticks > 20, "the event loop kept running while the engine worked"


async def test_gguf_in_hf_cache_and_ollama_store_load_in_place(
    backend: LlamaCppBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hashlib
    import os

    src = smollm2_file()
    hf = tmp_path / "hf"
    repo = hf / "models--someone--Tiny-GGUF"
    blob = repo / "blobs" / ("0" * 64)
    blob.parent.mkdir(parents=True)
    os.link(src, blob) if os.stat(src).st_dev == os.stat(tmp_path).st_dev else shutil.copyfile(src, blob)
    snap = repo / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    (snap / "tiny-Q4_1.gguf").symlink_to(Path("../../blobs") / blob.name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    monkeypatch.setenv("HF_HUB_CACHE", str(hf))

    store = tmp_path / "ollama"
    digest = hashlib.sha256(b"stand-in digest").hexdigest()
    (store / "blobs").mkdir(parents=True)
    os.symlink(src, store / "blobs" / f"sha256-{digest}")
    manifest = store / "manifests" / "registry.ollama.ai" / "library" / "tiny" / "latest"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(
        json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "config": {
                    "mediaType": "application/vnd.docker.container.image.v1+json",
                    "digest": "sha256:" + "1" * 64,
                    "size": 10,
                },
                "layers": [
                    {
                        "mediaType": "application/vnd.ollama.image.model",
                        "digest": f"sha256:{digest}",
                        "size": src.stat().st_size,
                    }
                ],
            }
        )
    )
    monkeypatch.setenv("OLLAMA_MODELS", str(store))

    names = {m.name: m for m in await backend.list_models()}
    assert "hf.co/someone/Tiny-GGUF:Q4_1" in names and "tiny:latest" in names
    assert names["tiny:latest"].source == "ollama-store"
    for name in ("hf.co/someone/Tiny-GGUF:Q4_1", "tiny:latest"):
        text, _ = await collect(backend.chat(parse_spec(name), HI, GREEDY))
        assert "Paris" in text
        worker = backend.worker_for(name)
        assert worker is not None and str(worker.path).startswith(str(tmp_path)), "read in place, not copied"


async def test_unload_during_an_answer_ends_it_as_cancelled(backend: LlamaCppBackend) -> None:
    story = [Message("user", "Write a very long story about a dragon.")]
    stream = backend.chat(parse_spec(SMOL), story, Options(temperature=0, max_tokens=400))
    pieces = []
    async for chunk in stream:
        pieces.append(chunk)
        if len(pieces) == 3:
            assert await backend.unload(parse_spec(SMOL)) is True
    last = pieces[-1]
    assert last.done and last.stats.stop_reason == "cancelled" and last.stats.generated_tokens < 400
    assert await backend.loaded() == []
    text, _ = await collect(backend.chat(parse_spec(SMOL), HI, GREEDY))
    assert "Paris" in text, "the model loads again on the next request"


async def test_sha256_of_a_file_without_a_known_hash_is_computed_once(backend: LlamaCppBackend, tmp_path: Path) -> None:
    import hashlib
    import os

    model = tmp_path / "copy.gguf"
    shutil.copyfile(smollm2_file(), model)
    info = await backend.info(parse_spec(str(model)))
    assert info.sha256 == hashlib.sha256(model.read_bytes()).hexdigest()
    cache = json.loads((Path(os.environ["LLMSPELL_HOME"]) / "cache" / "sha256.json").read_text())
    assert list(cache.values()) == [info.sha256], "remembered, so the next info does not read the file again"
    with model.open("ab") as f:
        f.write(b"\0" * 32)
    changed = await backend.info(parse_spec(str(model)))
    assert changed.sha256 == hashlib.sha256(model.read_bytes()).hexdigest() != info.sha256


async def test_models_generating_at_once_split_the_cores(shared_models: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a fixed thread count, so what this test sees is the split among models, not the machine's other load
    monkeypatch.setenv("LLMSPELL_MODELS", str(shared_models))
    backend = LlamaCppBackend(Config(keep_alive=300, num_ctx=2048, threads=physical_cores()))
    try:
        await _split_the_cores(backend)
    finally:
        backend.close_sync()


async def _split_the_cores(backend: LlamaCppBackend) -> None:
    story = [Message("user", "Write a long story about a dragon.")]
    for name in (SMOL, GEMMA):  # both loaded first: no load inside the timed overlap
        await collect(backend.complete(parse_spec(name), "Hi", Options(max_tokens=1)))
    total = backend.budget.total
    # gemma3 generates a long text; smollm2's whole answer comes while it does (started once gemma3's first token
    # is out, so the two overlap however the machine schedules them)
    gemma = backend.complete(parse_spec(GEMMA), "Once upon a time", Options(temperature=0, max_tokens=2000))
    try:
        await anext(gemma)
        await collect(backend.chat(parse_spec(SMOL), story, Options(temperature=0, max_tokens=48)))
        assert backend.worker_for(GEMMA).report.phase != "done", "gemma3 was still generating"  # type: ignore[union-attr]
    finally:
        await gemma.aclose()
    smol_used = backend.worker_for(SMOL).report.threads_used  # type: ignore[union-attr]
    assert smol_used == {max(1, total // 2)}, f"smollm2 ran with {smol_used} while gemma3 generated"
    # gemma3 steps down too, at its next token boundary; on a loaded machine that may come only after smollm2
    # has finished (one of its decodes on every core beside other work can outlast smollm2's whole answer)
    for name in (SMOL, GEMMA):  # a worker leaves the budget a moment after its last chunk is sent
        await wait_idle(backend.worker_for(name))
    await collect(backend.chat(parse_spec(SMOL), HI, GREEDY))
    assert backend.worker_for(SMOL).report.threads_used == {total}, "alone again, it has every core"
    await collect(backend.chat(parse_spec(SMOL), HI, Options(temperature=0, max_tokens=4, num_threads=1)))
    assert backend.worker_for(SMOL).report.threads_used == {1}, "an explicit num_threads wins"


async def test_loading_models_leaves_stdout_and_stderr_alone(
    backend: LlamaCppBackend, capfd: pytest.CaptureFixture[str]
) -> None:
    """What the rest of the process writes while models load arrives (a TUI's screen, a server's log).

    llama-cpp-python hides a load's output by pointing the process's stdout and stderr at /dev/null for the
    length of the load; two loads at once (two panes, two models served side by side) left them there for good.
    """
    import os
    import sys

    before = (os.readlink("/proc/self/fd/1"), os.readlink("/proc/self/fd/2"), sys.stdout, sys.stderr)
    loads = asyncio.gather(
        collect(backend.chat(parse_spec(SMOL), HI, Options(max_tokens=2))),
        collect(backend.chat(parse_spec(GEMMA), HI, Options(max_tokens=2))),
    )
    n = 0
    while not loads.done():
        print(f"out line {n}", flush=True)
        print(f"err line {n}", file=sys.stderr, flush=True)
        n += 1
        await asyncio.sleep(0.002)
    await loads
    assert sorted(await backend.loaded()) == sorted([SMOL, GEMMA]), "both models were loaded in this test"
    assert (os.readlink("/proc/self/fd/1"), os.readlink("/proc/self/fd/2"), sys.stdout, sys.stderr) == before
    out, err = capfd.readouterr()
    assert n > 5, "lines were written while the models loaded"
    assert out.splitlines() == [f"out line {i}" for i in range(n)], "no line written during a load was lost"
    assert err.splitlines() == [f"err line {i}" for i in range(n)]


async def test_a_keep_alive_the_timers_cannot_hold_never_wedges_the_model(backend: LlamaCppBackend) -> None:
    """A keep-alive of inf, NaN or 1e300 is refused at every edge; one that slips past them (set on the worker
    itself) is bounded in the worker's wait, which once raised OverflowError, ended the thread and left the
    model registered, so every later request for it hung. -1 keeps the model loaded (it used to unload it)."""
    quick = Options(temperature=0, max_tokens=2)
    await collect(backend.chat(parse_spec(SMOL), [Message("user", "Hi")], quick))
    for bad in (float("inf"), float("nan"), 1e300):
        with pytest.raises(InvalidOptions, match=r"keep_alive .* is out of range"):
            await backend.set_keep_alive(parse_spec(SMOL), bad)
    worker = backend.worker_for(SMOL)
    assert worker is not None
    for bad in (float("inf"), float("nan"), 1e300, -1.0):
        worker.keep_alive = bad
        # this answer ends with the worker waiting for the next job under the bad keep-alive...
        await collect(backend.chat(parse_spec(SMOL), [Message("user", "Hi")], quick))
        await wait_idle(worker)
        # ...and the next one is still answered by the same, living worker (a bound, not a timing)
        _text, last = await asyncio.wait_for(
            collect(backend.chat(parse_spec(SMOL), [Message("user", "Hi")], quick)), 120
        )
        assert last.stats is not None and backend.worker_for(SMOL) is worker and worker.alive
