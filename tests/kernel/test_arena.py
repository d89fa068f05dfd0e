"""The kernel's %arena: blind rounds in a real kernel on smollm2:135m and gemma3:270m, the vote and its reveal, the
leaderboard's HTML and SVG; the parsing of %arena and the leaderboard's drawing in process."""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

import pytest
from kernel_session import KernelSession, Ran, kernel_env, start_kernel

from llmspell.ratings import Standing
from llmspell_kernel.arena_view import leaderboard_html, leaderboard_text, ratings_svg
from llmspell_kernel.magics import MagicError, completion_context, help_markdown, is_complete, parse_cell

SMOL = "smollm2:135m"
GEMMA = "gemma3:270m"
LABELS = (f"{SMOL}@llamacpp", f"{GEMMA}@llamacpp")


def _everything(ran: Ran) -> str:
    """Every text the cell showed: streams, and each representation of each display and its updates."""
    parts = []
    for m in ran.outputs:
        content = m["content"]
        if "text" in content:
            parts.append(content["text"])
        parts.extend(str(v) for v in content.get("data", {}).values())
    return "\n".join(parts)


def _assert_one_clear_error(ran: Ran, message: str) -> None:
    assert ran.status == "error", ran.outputs
    assert message in ran.error
    assert "Traceback" not in ran.error and 'File "' not in ran.error
    assert ran.reply["ename"] != "InternalError"


# ----- in process: parsing, completion, drawing -----------------------------------------------------------------


def test_arena_parses_with_or_without_a_prompt() -> None:
    assert parse_cell("%arena\nWhy is the sky blue?").prompt == "Why is the sky blue?"
    assert parse_cell("%arena").magics[0].arg == ""
    assert parse_cell("%arena pool a b\nHi").magics[0].arg == "pool a b"
    assert parse_cell("%arena leaderboard coding").prompt == ""
    assert is_complete("%arena") == "complete"
    assert is_complete("%arena vote") == "invalid"


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("%arena bogus", "%arena does not know 'bogus'"),
        ("%arena vot a", "did you mean %arena vote"),
        ("%arena vote", "%arena vote needs one choice"),
        ("%arena vote a b", "%arena vote needs one choice"),
        ("%arena vote a\nWhy?", "%arena vote takes no prompt below it"),
        ("%arena leaderboard\nWhy?", "%arena leaderboard takes no prompt below it"),
        ("%arena\n%json\nWhy?", "both want the prompt"),
    ],
)
def test_a_bad_arena_line_is_refused_before_anything_runs(code: str, message: str) -> None:
    with pytest.raises(MagicError, match=re.escape(message)):
        parse_cell("%echo first\n" + code)


def test_model_names_complete_only_after_arena_pool() -> None:
    assert completion_context("%arena pool sm", 14) == ("model", "sm", 12)
    assert completion_context("%arena pool smollm2:135m ge", 27) == ("model", "ge", 25)
    assert completion_context("%arena vo", 9)[0] == ""
    assert completion_context("%arena vote a", 13)[0] == ""
    assert completion_context("%arena tag co", 13)[0] == ""


def test_help_explains_arena() -> None:
    text = help_markdown("arena")
    for words in ("%arena vote a", "%arena pool SPEC SPEC", "%arena tag CATEGORY", "leaderboard", "hide_stats"):
        assert words in text
    assert "%arena [" in help_markdown()


def _standing(model: str, rating: float, low: float, high: float, rank: int) -> Standing:
    return Standing(
        model, rating, low, high, votes=3, wins=2, losses=1, ties=0, tokens_per_s=42.0, ttft=0.25, rank=rank
    )


def test_the_leaderboard_drawing_escapes_names_and_draws_one_line_per_model() -> None:
    standings = [
        _standing("<b>bold</b>@llamacpp", 1100.0, 1020.0, 1180.0, 1),
        _standing("plain:1b@ollama", 1000.0, 950.0, 1050.0, 2),
        _standing("a & b@llamacpp", 900.0, 900.0, 900.0, 3),  # too few votes to resample: no interval
    ]
    html = leaderboard_html(standings, "arena leaderboard: 5 votes")
    assert "<b>bold</b>" not in html and "&lt;b&gt;bold&lt;/b&gt;@llamacpp" in html
    assert "a &amp; b@llamacpp" in html and "a & b" not in html
    assert html.count("<svg") == 1 and html.count("<tr>") == 4  # the header and one row per model
    svg = ratings_svg(standings)
    assert svg.count('class="interval"') == 3 and svg.count("<circle") == 3
    # the lines run from each interval's low end to its high end, on one scale: the best model's is rightmost
    ends = [
        tuple(float(v) for v in found) for found in re.findall(r'class="interval" x1="([\d.]+)".*?x2="([\d.]+)"', svg)
    ]
    assert ends[0][0] < ends[0][1] and ends[2][0] == ends[2][1] and ends[2][1] < ends[1][0] < ends[0][0]
    assert re.search(r">1000</text>", svg), "the axis has round rating ticks"
    for cells in (
        "<td>1</td><td>&lt;b&gt;bold&lt;/b&gt;@llamacpp</td><td>1100</td><td>1020 to 1180</td>",
        "<td>2/1/0</td>",
    ):
        assert cells in html
    plain = leaderboard_text(standings)
    assert plain.splitlines()[0].split() == [
        "#",
        "model",
        "rating",
        "95%",
        "interval",
        "votes",
        "W/L/T",
        "tok/s",
        "TTFT",
    ]
    assert "<b>bold</b>@llamacpp" in plain and "250 ms" in plain and "42.0" in plain
    assert ratings_svg([]) == ""


# ----- a real kernel ---------------------------------------------------------------------------------------------


def test_a_fresh_kernel_says_how_to_vote_and_refuses_what_it_cannot_do(
    spec_prefix: Path, tmp_path: Path, shared_models: Path
) -> None:
    ks = start_kernel(spec_prefix, kernel_env(tmp_path, shared_models))
    try:
        empty = ks.run("%arena")
        assert empty.status == "ok" and empty.stdout.count("\n") == 1
        assert empty.stdout.startswith("no arena votes yet") and "%arena vote a" in empty.stdout
        # no round yet: nothing to vote on, one line, the kernel goes on
        no_round = ks.run("%arena vote a")
        _assert_one_clear_error(no_round, "no arena round is waiting for a vote")
        assert [m["msg_type"] for m in no_round.outputs] == ["error"]
        # one model (two spellings of it are still one) is not a pool
        for cell in (f"%arena pool {SMOL}", f"%arena pool {SMOL} {SMOL}@llamacpp"):
            one = ks.run(cell)
            _assert_one_clear_error(one, "the arena needs at least two different models that can be used now (have 1)")
            assert "smollm2:135m gemma3:270m" in one.error, "the hint says what to do"
        assert "arena pool: not set" in ks.run("%arena pool").stdout
        assert ks.run("%echo still here").stdout == "still here\n"
    finally:
        ks.close()


def test_a_blind_round_is_voted_then_revealed_and_ranked(session: KernelSession) -> None:
    assert session.run("%set max_tokens=8 temperature=0").status == "ok"
    pool = session.run(f"%arena pool {SMOL} {GEMMA}")
    assert pool.status == "ok" and pool.stdout.startswith("arena pool: 2 models"), pool.outputs
    assert session.run("%arena tag sky").stdout.startswith("arena category: sky")
    history = session.run("%history").markdown

    ran = session.run("%arena\nWhat colour is the sky?")
    assert ran.status == "ok", ran.outputs
    shown = _everything(ran)
    titles = [c["data"]["text/markdown"].split("\n", 1)[0] for c in ran.of("display_data")]
    assert titles[:2] == ["**A**", "**B**"], titles
    assert "A: " in ran.shown and "B: " in ran.shown
    for name in (SMOL, GEMMA, "@llamacpp"):
        assert name not in shown, f"{name} is shown before the vote"
    # [arena] hide_stats is on by default: a speed would give a model away
    assert "tok/s" not in shown and "TTFT" not in shown
    assert "%arena vote a" in shown
    assert session.run("%history").markdown == history, "a round is not a turn of the notebook's conversation"

    vote = session.run("%arena vote a")
    assert vote.status == "ok", vote.outputs
    reveal = vote.of("display_data")[0]["data"]["text/markdown"]
    assert reveal.startswith("You voted **A** (category sky)")
    assert "| answer | model | tokens/s | TTFT | chosen |" in reveal
    assert all(label in reveal for label in LABELS)
    assert re.search(r"\| A \| [^|]+ \| [\d.]+ \| \d+ ms|\| A \| [^|]+ \| [\d.]+ \| [\d.]+ s", reveal)
    # the round's answers now carry their model and stats, within the %set token budget (the options reached it)
    filled = [c["data"]["text/markdown"] for c in vote.of("update_display_data")]
    assert len(filled) == 2 and filled[0].startswith("**A: ") and filled[1].startswith("**B: ")
    counts = [int(found.group(1)) for md in filled if (found := re.search(r"(\d+) generated tokens", md))]
    assert len(counts) == 2 and all(1 <= n <= 8 for n in counts), filled

    _assert_one_clear_error(session.run("%arena vote b"), "this round is already voted")

    for cell in ("%arena", "%arena leaderboard sky"):
        board = session.run(cell)
        assert board.status == "ok", board.outputs
        data: dict[str, Any] = board.of("display_data")[0]["data"]
        assert "<svg" in data["text/html"] and data["text/html"].count('class="interval"') == 2
        assert all(label in data["text/html"] and label in data["text/plain"] for label in LABELS)
        assert "1 vote" in data["text/plain"]
    other = session.run("%arena leaderboard cats")
    assert other.stdout.startswith("no arena votes in category 'cats' yet (categories: sky)")
    assert session.run("%arena tag").stdout == "arena category cleared\n"


def test_a_stopped_round_cannot_be_voted(session: KernelSession) -> None:
    session.run(f"%arena pool {SMOL} {GEMMA}")
    session.run("%set max_tokens=300 temperature=0")
    pressed = threading.Event()

    def on_output(msg: dict[str, Any]) -> None:
        # the stop button, once the first answer has begun to arrive
        if msg["msg_type"] == "update_display_data" and not pressed.is_set():
            pressed.set()
            threading.Thread(target=session.km.interrupt_kernel).start()

    ran = session.run("%arena\nWrite a long story about a dragon who collects teapots.", on_output=on_output)
    assert pressed.is_set()
    assert ran.status == "error" and ran.reply["ename"] == "Interrupted"
    assert "this round cannot be voted" in ran.error
    assert "[interrupted]" in _everything(ran)
    assert not any(name in _everything(ran) for name in (SMOL, GEMMA))
    _assert_one_clear_error(session.run("%arena vote a"), "was stopped before its end, so this round cannot be voted")
    session.run("%set max_tokens=default temperature=default")
    assert session.run("%echo still here").stdout == "still here\n"
