"""A conversation longer than the model's context: the oldest turns are left out (the system prompt and the
newest turns stay, with room for the answer), the store and the result say so, or the config says to fail."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmspell.chat import Conversation, Entry
from llmspell.config import Config
from llmspell.errors import PromptTooLong
from llmspell.hub import Hub
from llmspell.session import Session
from llmspell.store import Store
from llmspell.types import Message, Options

SYSTEM = "You are a terse assistant. Always answer in five words or fewer."


def long_conversation(turns: int = 12) -> Conversation:
    """A stored conversation of many turns, as a user would reopen it: each turn some 60 tokens."""
    conv = Conversation("smollm2:135m", SYSTEM, Options(num_ctx=512, max_tokens=8, temperature=0))
    for i in range(turns):
        conv.entries.append(Entry("user", f"Question {i}: " + "tell me about the history of the river valley " * 4))
        conv.entries.append(Entry("assistant", f"Answer {i}: " + "the valley was settled long ago by farmers " * 4))
    return conv


@pytest.fixture
def hub(shared_models: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("LLMSPELL_MODELS", str(shared_models))
    h = Hub(Config())
    yield h
    h.backends["llamacpp"].close_sync()  # type: ignore[attr-defined]


async def run_turn(session: Session, text: str):
    turn = session.send(text)
    try:
        async for _ in turn:
            pass
    except Exception:  # recorded by the turn; the result says what failed
        pass
    finally:
        await turn.aclose()
    return session.result(turn)


async def test_the_oldest_turns_are_left_out_and_the_store_remembers(hub: Hub) -> None:
    store = Store()
    conv = long_conversation()
    store.persist(conv)
    session = Session(hub, store, conv)
    result = await run_turn(session, "What did we talk about?")
    assert result.state == "done" and result.error is None and result.text
    assert result.left_out >= 2 and result.left_out % 2 == 0  # whole turns, never an answer without its question
    assert conv.context_from == result.left_out
    assert "earlier messages left out" in result.context_note and "smollm2:135m" in result.context_note
    sent = conv.messages(len(conv.entries) - 1)
    assert sent[0].role == "system" and sent[0].content == SYSTEM  # the system prompt always stays
    assert sent[1].role == "user" and sent[-1].content == "What did we talk about?"
    # room was left for the answer, and it fit: the engine read the prompt and wrote under the context
    assert result.stats is not None and result.stats.prompt_tokens + 8 <= 512
    # the store keeps the mark: a reopened conversation sends the same, and the next turn needs no new cut
    again = store.load(conv.id)
    assert again.context_from == conv.context_from and len(again.entries) == len(conv.entries)
    nxt = await run_turn(Session(hub, store, again), "And then?")
    assert nxt.state == "done" and again.context_from >= conv.context_from
    store.close()


async def test_fail_instead_keeps_everything_and_says_why(hub: Hub) -> None:
    hub.config.context_overflow = "fail"
    conv = long_conversation()
    result = await run_turn(Session(hub, None, conv), "What did we talk about?")
    assert result.state == "failed" and result.left_out == 0 and conv.context_from == 0
    assert result.error is not None and "context window is 512" in result.error


async def test_a_prompt_that_alone_does_not_fit_is_an_error(hub: Hub) -> None:
    conv = long_conversation(turns=2)
    session = Session(hub, None, conv)
    turn = session.send("word " * 2000)
    with pytest.raises(PromptTooLong, match="context window is 512"):
        async for _ in turn:
            pass
    await turn.aclose()
    # the prompt with its failed answer is kept, and the history the next turn sends is as it was
    assert conv.context_from == 0 and conv.entries[-2].content.startswith("word")
    assert conv.entries[-1].state == "failed" and turn.left_out == 0


async def test_a_chat_prompt_must_leave_room_for_an_answer_a_completion_need_not(hub: Hub) -> None:
    from llmspell.chat import Turn

    backend = hub.backends["llamacpp"]
    spec = hub.spec("smollm2:135m@llamacpp")
    text = "the valley was settled long ago by farmers " * 22  # about 200 tokens
    opts = Options(num_ctx=256, max_tokens=64, temperature=0)
    with pytest.raises(PromptTooLong, match="with room for a 64-token answer"):
        await anext(backend.chat(spec, [Message("user", text)], opts))
    chunks = [c async for c in backend.complete(spec, text, opts)]  # raw: it may fill the context
    assert chunks[-1].done and chunks[-1].stats is not None
    # a conversation near the limit leaves its oldest turn out, so the answer gets its room
    conv = Conversation("smollm2:135m", None, opts)
    conv.entries += [Entry("user", text[:500]), Entry("assistant", "Farmers settled it.")]
    turn = Turn(hub, conv, text[:550])  # with the first turn it fits the context, but leaves under 64 tokens
    answer = [c async for c in turn]
    stats = answer[-1].stats
    assert turn.left_out == 2 and stats is not None
    assert stats.generated_tokens == 64 or stats.stop_reason == "stop"  # never cut short by the context
