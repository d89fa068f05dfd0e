"""Embeddings, logprobs and the other engine-side parts of serving the ecosystem, on the real engine: vectors
from any GGUF, a text past the context, cancel, encoders refused for chat, a character never cut in two, the
empty chunk that says a prompt was accepted."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import gguf
import numpy as np
import pytest
from helpers import collect

from llmspell.backends.llamacpp import LlamaCppBackend
from llmspell.config import Config
from llmspell.errors import InvalidOptions, PromptTooLong
from llmspell.hub import Hub
from llmspell.spec import parse_spec
from llmspell.types import Message, Options
from llmspell.vectors import shorten, similarity

SMOL = parse_spec("smollm2:135m")
GEMMA = parse_spec("gemma3:270m")
TEXTS = ["The cat sat on the mat.", "Interest rates rose again.", "A kitten slept on a rug."]


def dot(a: list[float], b: list[float]) -> float:
    return math.fsum(x * y for x, y in zip(a, b, strict=True))


async def test_any_chat_model_gives_unit_vectors_the_same_in_a_batch_or_alone(backend: LlamaCppBackend) -> None:
    for spec, size in ((SMOL, 576), (GEMMA, 640)):
        result = await backend.embed(spec, TEXTS)
        assert [len(v) for v in result.vectors] == [size] * 3 and result.model == spec.tag
        assert all(abs(dot(v, v) - 1) < 1e-9 for v in result.vectors)
        alone = [(await backend.embed(spec, [t])).vectors[0] for t in TEXTS]
        # packed into one decode, each text is still its own sequence: the same vector up to float rounding
        assert all(dot(a, b) > 0.99999 for a, b in zip(alone, result.vectors, strict=True))
        again = await backend.embed(spec, TEXTS)
        assert again.vectors == result.vectors  # and the same batch gives exactly the same vectors
        assert result.prompt_tokens == sum([(await backend.embed(spec, [t])).prompt_tokens for t in TEXTS])
    # the embedding copy is its own: chatting with the model afterwards still works, and both are listed
    text, _ = await collect(backend.chat(SMOL, [Message("user", "Hi")], Options(max_tokens=2)))
    assert text
    purposes = sorted(r.purpose for r in await backend.running() if r.name == "smollm2:135m")
    assert purposes == ["chat", "embed"]
    assert await backend.unload(SMOL) and not [r for r in await backend.running() if r.name == "smollm2:135m"]


async def test_a_text_past_the_context_is_cut_or_refused(backend: LlamaCppBackend) -> None:
    long_text = "word " * 3000
    small = Options(num_ctx=128)
    cut = await backend.embed(SMOL, [long_text], options=small)
    assert cut.prompt_tokens == 128
    with pytest.raises(PromptTooLong) as err:
        await backend.embed(SMOL, ["short", long_text], truncate=False, options=small)
    assert "text 2 is" in str(err.value) and "context window is 128" in str(err.value)
    with pytest.raises(InvalidOptions, match="nothing to embed"):
        await backend.embed(SMOL, [])


async def test_cancelling_an_embedding_stops_it_and_the_copy_goes_on(backend: LlamaCppBackend) -> None:
    task = asyncio.ensure_future(backend.embed(SMOL, ["a long text to read " * 50] * 200))
    while not any(r.busy for r in await backend.running() if r.purpose == "embed"):
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # the job saw the cancel between texts: the copy is free again and answers the next request
    again = await backend.embed(SMOL, ["hello"])
    assert len(again.vectors) == 1


async def test_the_hub_shortens_vectors_to_the_dimensions_asked(backend: LlamaCppBackend) -> None:
    hub = Hub(Config(), backends=[backend])
    full = await hub.embed("smollm2:135m@llamacpp", TEXTS)
    short = await hub.embed("smollm2:135m@llamacpp", TEXTS, dimensions=16)
    assert short.vectors == shorten(full.vectors, 16) and {len(v) for v in short.vectors} == {16}
    with pytest.raises(InvalidOptions, match="its vectors have 576 values"):
        await hub.embed("smollm2:135m@llamacpp", TEXTS, dimensions=1000)
    matrix = similarity(full.vectors)
    # a text is nearest to itself, and the two sentences about a cat are nearer each other than to rates
    assert all(max(range(3), key=lambda j, i=i: matrix[i][j]) == i for i in range(3))
    assert matrix[0][2] > matrix[0][1]


def _encoder_file(path: Path) -> Path:
    """A small GGUF whose architecture is BERT's (an encoder): enough for the header check, never loaded."""
    w = gguf.GGUFWriter(str(path), "bert")
    w.add_name("tiny-encoder")
    w.add_context_length(128)
    w.add_embedding_length(32)
    w.add_block_count(1)
    w.add_array("tokenizer.ggml.tokens", ["[CLS]", "[SEP]", "a", "b"])
    w.add_tensor("t0", np.arange(64, dtype=np.float32).reshape(2, 32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


async def test_an_embedding_model_is_refused_for_chat_with_the_command_that_works(
    backend: LlamaCppBackend, tmp_path: Path
) -> None:
    spec = parse_spec(str(_encoder_file(tmp_path / "encoder.gguf")))
    for stream in (backend.chat(spec, [Message("user", "hi")]), backend.complete(spec, "hi")):
        with pytest.raises(InvalidOptions) as err:
            await collect(stream)
        assert "is an embedding model" in str(err.value) and "llmspell embed" in str(err.value)
    info = await backend.info(spec)
    assert info.extra["capabilities"] == ["embedding"]


async def test_logprobs_of_each_token_and_its_rivals(backend: LlamaCppBackend) -> None:
    opts = Options(temperature=0, max_tokens=6, seed=1, logprobs=3)
    chunks = [c async for c in backend.chat(SMOL, [Message("user", "Say hello.")], opts)]
    logprobs = [lp for c in chunks for lp in c.logprobs]
    assert len(logprobs) == 6 and "".join(lp.token for lp in logprobs) == "".join(c.text for c in chunks)
    for lp in logprobs:
        # greedy: the token written is the likeliest, and the alternatives are in falling order
        assert lp.top[0][0] == lp.token and [t[1] for t in lp.top] == sorted((t[1] for t in lp.top), reverse=True)
        assert -30 < lp.logprob <= 0 and bytes(lp.bytes).decode() == lp.token
    plain = [c async for c in backend.chat(SMOL, [Message("user", "Say hello.")], Options(temperature=0, max_tokens=6))]
    assert not any(c.logprobs for c in plain)


async def test_a_character_cut_by_the_token_budget_is_left_out_not_garbled(backend: LlamaCppBackend) -> None:
    # smollm2 writes each of these Japanese characters as two tokens: odd budgets end inside a character
    prompt = "Translate to Japanese: I love Tokyo.\nJapanese:"
    texts = []
    for n in range(1, 8):
        text, _ = await collect(backend.complete(SMOL, prompt, Options(temperature=0, max_tokens=n)))
        texts.append(text)
    assert not any("\ufffd" in t for t in texts), texts
    assert any(texts[i] == texts[i + 1] for i in range(len(texts) - 1)), texts  # a half character was held back
    assert any(ord(c) > 0x3000 for c in texts[-1]), texts


async def test_the_first_chunk_says_the_prompt_was_accepted_before_any_token(backend: LlamaCppBackend) -> None:
    stream = backend.chat(SMOL, [Message("user", "Hi")], Options(max_tokens=3))
    first = await anext(stream)
    assert first.text == "" and not first.done and first.stats is None
    rest = [c async for c in stream]
    assert rest[-1].done and "".join(c.text for c in rest)
    with pytest.raises(PromptTooLong):  # a prompt that cannot fit fails before that chunk: a status code, not a line
        await anext(backend.chat(SMOL, [Message("user", "word " * 3000)], Options(num_ctx=256)))
