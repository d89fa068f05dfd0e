"""The REPL's blind arena: /arena turns each prompt into a round between two models shown as A and B; the next
line is the vote (a, b, tie or bad), and only then are the names shown."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from rich.text import Text

from llmspell.arena import Arena, load_board, parse_choice
from llmspell.errors import InvalidOptions

if TYPE_CHECKING:
    from llmspell.cli.repl_session import Repl

#: what the prompt reads while a round waits for its vote
VOTE_PROMPT = "vote A/B/tie/bad> "
#: words that drop a round without a vote
SKIP = {"skip", "s", "/skip"}


async def cmd_arena(repl: Repl, arg: str) -> bool:
    """/arena [MODEL...] | off | board [CATEGORY] | tag [CATEGORY]."""
    word, _, rest = arg.partition(" ")
    if word == "off":
        repl.arena, repl.arena_round = None, None
        repl.say("arena off: prompts go to the conversation again")
        return True
    if word in ("board", "leaderboard"):
        await show_board(repl, rest.strip() or None)
        return True
    if word == "tag":
        if repl.arena is None:
            raise InvalidOptions("the arena is off", hint="start it with /arena [MODEL...]")
        repl.arena.category = rest.strip() or None
        repl.say(f"the next votes are tagged {rest.strip()!r}" if rest.strip() else "the next votes are not tagged")
        return True
    arena = Arena(repl.hub, repl.store, options=repl.conv.options, system=repl.conv.system)
    pool = await arena.set_pool(arg.split() or None)
    repl.arena, repl.arena_round = arena, None
    for spec, why in arena.skipped:
        repl.dim(f"left out {spec}: {why}")
    repl.say(
        f"arena on: {len(pool)} models; each prompt goes to {arena.size} of them, shown as "
        f"{', '.join('ABCD'[: arena.size])} in a random order. Vote a, b, tie or bad after the answers; "
        "/arena board shows the ratings, /arena off leaves"
    )
    return True


async def cmd_vote(repl: Repl, arg: str) -> bool:
    """/vote CHOICE: the same as typing the choice after a round."""
    await vote(repl, arg)
    return True


async def show_board(repl: Repl, category: str | None) -> None:
    """Print the leaderboard of the stored votes (of one category)."""
    from llmspell.cli.arena import leaderboard_lines

    if repl.store is None:
        raise InvalidOptions("there is no store here to keep votes in")
    count, standings = await asyncio.to_thread(load_board, repl.store, category)
    if not standings:
        repl.say("no votes yet: /arena MODEL MODEL, then a prompt, then a vote")
        return
    for line in leaderboard_lines(standings):
        repl.console.print(Text(line), soft_wrap=True, crop=False)
    repl.dim(f"{count} vote{'s' if count != 1 else ''}" + (f" tagged {category!r}" if category else ""))


async def play(repl: Repl, text: str) -> None:
    """One blind round for ``text``: the answers one after another under their letters, then the call to vote."""
    from llmspell.cli.repl_render import make_view

    assert repl.arena is not None
    arena = repl.arena
    # read at every round, so a /set or /system between rounds applies to the next one
    arena.options, arena.system = repl.conv.options, repl.conv.system
    hide = repl.hub.config.arena_hide_stats
    round_ = arena.start(text)
    view = None
    stream = round_.stream(repl.hub, parallel=False)
    try:
        async for event in stream:
            if event.kind == "start":
                repl.console.rule(Text(round_.letters[event.index], style="bold"))
                view = make_view(repl.console, markdown=repl.markdown)
                continue
            if view is not None:
                view.feed(event.text)
            if event.kind in ("done", "error") and view is not None:
                view.close()
                view = None
                m = event.metrics
                if m.error:
                    repl.error(m.error)
                elif not hide and m.stats is not None and not repl.quiet:
                    repl.dim(m.stats.summary())
            await asyncio.sleep(0)  # let a Ctrl-C in between tokens, as for any answer
    except asyncio.CancelledError:
        if not repl._take_back_interrupt():
            raise
    finally:
        await repl._close_stream(stream)
        if view is not None:
            view.close()
    for label, why in arena.take_dropped():
        repl.dim(f"{label} {why}")
    problem = round_.problem()
    if problem is not None:
        repl.error(problem)
        return
    repl.arena_round = round_
    repl.say(
        f"which is better? {', '.join(x.lower() for x in round_.letters)}, tie, or bad (all bad); skip drops the round"
    )


async def vote(repl: Repl, text: str) -> None:
    """Record the vote typed for the waiting round, then show which model gave which answer."""
    round_ = repl.arena_round
    if repl.arena is None or round_ is None:
        raise InvalidOptions("no round is waiting for a vote", hint="send a prompt in /arena mode first")
    if text.strip().lower() in SKIP:
        repl.arena_round = None
        repl.say("round dropped without a vote")
        return
    choice = parse_choice(text, len(round_.contenders))
    vote_ = await asyncio.to_thread(repl.arena.vote, round_, choice)
    repl.arena_round = None
    width = max(len(label) for _, label, _ in round_.reveal())
    for letter, label, m in round_.reveal():
        mark = "  ← your choice" if vote_.winner_text == letter else ""
        speed = ""
        if m is not None and m.stats is not None:
            speed = f"  TTFT {m.stats.time_to_first_token * 1000:5.0f} ms  {m.stats.generation_tokens_per_s:6.1f} tok/s"
        repl.say(f"{letter}: {label:<{width}}{speed}{mark}")
    repl.dim(f"vote saved ({vote_.winner_text}); /arena board shows the ratings")


def waiting(repl: Repl) -> bool:
    """Whether the next line typed is a vote."""
    return repl.arena is not None and repl.arena_round is not None
