"""The REPL's blind arena, on the real models: letters until the vote, names after it, the vote stored."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from llmspell.store import Store

from .conftest import Driver


async def test_a_blind_round_hides_the_names_until_the_vote(start_repl: Callable[..., Awaitable[Driver]]) -> None:
    d = await start_repl("smollm2:135m")
    out = await d.command("/arena smollm2 smollm2:135m gemma3:270m nosuch:1b", "arena on")
    assert "2 models" in out, "two spellings of one model are one contender"
    assert "left out nosuch:1b" in out

    start = len(d.out)
    d.type("Name a colour.\r")
    await d.until("which is better?", after=start)
    await d.until(d.at_prompt)
    round_out = d.out[start:]
    assert "─ A ─" in round_out and "─ B ─" in round_out, "each answer under its letter"
    assert "smollm2" not in round_out and "gemma3" not in round_out, "no name before the vote"
    assert "tok/s" not in round_out, "speed gives a model away: hidden until the vote by default"
    assert len(d.repl.conv.entries) == 0, "an arena round stays out of the conversation"

    out = await d.command("maybe", "is not a vote")
    assert "vote A/B, tie or bad" in out and d.repl.arena_round is not None, "a wrong word keeps the round"

    out = await d.command("b", "vote saved")
    assert "smollm2:135m@llamacpp" in out and "gemma3:270m@llamacpp" in out, "names shown after the vote"
    assert "← your choice" in out and "tok/s" in out
    votes = Store().votes()
    assert len(votes) == 1 and votes[0].winner == 1
    assert {a.label for a in votes[0].answers} == {"smollm2:135m@llamacpp", "gemma3:270m@llamacpp"}

    out = await d.command("/vote a", "no round is waiting")
    out = await d.command("/arena board", "1 vote")
    winner, loser = (a.label for a in votes[0].answers[::-1])
    assert "RATING" in out and "1 vote" in out and out.index(winner) < out.index(loser), "the winner ranks first"

    await d.command("/arena off", "arena off")
    await d.command("Say hi.", "tok/s")
    assert len(d.repl.conv.entries) == 2, "prompts go to the conversation again"
    d.type("/bye\r")
    assert await d.ended() == 0


async def test_the_arena_needs_two_usable_models(start_repl: Callable[..., Awaitable[Driver]]) -> None:
    d = await start_repl("smollm2:135m")
    out = await d.command("/arena smollm2:135m nosuch:1b", "error:")
    assert "at least two different models" in out and "nosuch:1b" in out
    assert d.repl.arena is None
    out = await d.command("Say hi.", "tok/s")
    assert len(d.repl.conv.entries) == 2
