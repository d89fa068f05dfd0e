"""The arena core: ratings that recover a known order, fair drawing, one set of options for every answer of a
round, votes that round-trip as JSONL and survive a crash, and blind rounds on the real engine."""

from __future__ import annotations

import json
import math
import os
import queue
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from helpers import GEMMA, SMOL

from llmspell.arena import DEFAULT_MAX_TOKENS, Arena, Contender, Round, board, export_file, parse_choice, read_votes
from llmspell.backends.llamacpp import LlamaCppBackend
from llmspell.cli.main import main
from llmspell.compare import StreamMetrics
from llmspell.config import Config, load_config
from llmspell.errors import ConfigError, InvalidOptions
from llmspell.hub import Hub
from llmspell.options import ENGINE_DEFAULTS
from llmspell.ratings import Ballot, leaderboard
from llmspell.spec import parse_spec
from llmspell.store import SCHEMA_VERSION, Store
from llmspell.types import Options, Stats
from llmspell.votes import BAD, TIE, Answer, Vote

#: five models 150 points apart, the best last
TRUTH = {f"model-{n}": 1000.0 + 150 * (n - 2) for n in range(5)}
FIXTURE_V0 = Path(__file__).parent / "fixtures" / "history-0.sqlite"
HEX = set("0123456789abcdef")


def _votes_from_truth(count: int, seed: int, *, ties: float = 0.1, bad: float = 0.03) -> list[Ballot]:
    """Ballots a crowd would cast if TRUTH were right: random pairs (a tenth of them 3-way rounds), the winner
    drawn by Bradley-Terry odds, with a share of ties and "both bad" that says nothing about strength."""
    rng = random.Random(seed)
    names = list(TRUTH)
    ballots = []
    for _ in range(count):
        shown = tuple(rng.sample(names, 3 if rng.random() < 0.1 else 2))
        roll = rng.random()
        winner: int | str
        if roll < ties:
            winner = TIE
        elif roll < ties + bad:
            winner = BAD
        else:
            strengths = [10 ** (TRUTH[m] / 400) for m in shown]
            winner = rng.choices(range(len(shown)), strengths)[0]
        ballots.append(Ballot(shown, winner))
    return ballots


def _width(standings: list) -> float:
    return statistics.mean(s.high - s.low for s in standings)


# ----- ratings ---------------------------------------------------------------------------------------------


def test_the_fit_recovers_a_known_order_from_simulated_votes() -> None:
    standings = leaderboard(_votes_from_truth(1500, seed=11))
    assert [s.model for s in standings] == sorted(TRUTH, key=TRUTH.__getitem__, reverse=True)
    assert [s.rank for s in standings] == [1, 2, 3, 4, 5]
    assert statistics.mean(s.rating for s in standings) == pytest.approx(1000.0, abs=0.5)
    # random ties and "both bad" pull every pair towards even, so the spread comes out a little under the
    # truth's 600 points; it must still be of that size, not collapsed or blown up
    spread = standings[0].rating - standings[-1].rating
    assert 0.6 * 600 < spread < 1.15 * 600, spread
    assert sum(s.votes for s in standings) == sum(len(b.models) for b in _votes_from_truth(1500, seed=11))

    # without ties the ratings land on the truth itself
    clean = {s.model: s.rating for s in leaderboard(_votes_from_truth(1500, seed=12, ties=0, bad=0), rounds=0)}
    for model, true in TRUTH.items():
        assert clean[model] == pytest.approx(true, abs=75), (model, clean[model])


def test_intervals_narrow_as_votes_grow_contain_the_rating_and_the_board_is_the_same_every_time() -> None:
    few = leaderboard(_votes_from_truth(150, seed=3))
    many_votes = _votes_from_truth(3000, seed=3)
    many = leaderboard(many_votes)
    assert _width(few) > 2 * _width(many), (_width(few), _width(many))
    for s in few + many:
        assert s.low <= s.rating <= s.high and s.low < s.high
    assert leaderboard(many_votes) == many, "the same votes give the same standings, intervals included"
    assert leaderboard(many_votes, rounds=0)[0].low == leaderboard(many_votes, rounds=0)[0].rating


def test_ties_bad_and_a_clean_sweep() -> None:
    even = leaderboard([Ballot(("x", "y"), TIE)] * 20 + [Ballot(("y", "z"), TIE)] * 20)
    assert {s.model: round(s.rating, 6) for s in even} == {"x": 1000.0, "y": 1000.0, "z": 1000.0}
    assert {s.model: (s.wins, s.losses, s.ties, s.votes) for s in even} == {
        "x": (0, 0, 20, 20),
        "y": (0, 0, 40, 40),
        "z": (0, 0, 20, 20),
    }
    assert all(s.win_rate == 0.5 for s in even)

    sweep = leaderboard([Ballot(("champ", "other"), 0), Ballot(("other", "champ"), 1)] * 15)
    champ, other = sweep
    assert champ.model == "champ" and math.isfinite(champ.rating) and math.isfinite(other.rating)
    assert champ.rating > other.rating and (champ.wins, champ.losses, other.losses) == (30, 0, 30)
    assert champ.win_rate == 1.0 and other.win_rate == 0.0

    answers = (Answer("x", "llamacpp", None, None, "a"), Answer("y", "llamacpp", None, None, "b"))
    both_bad = Vote("2+2?", answers, BAD)
    assert both_bad.winner == BAD and both_bad.winner_text == "both bad"
    assert board([both_bad]) == board([Vote("2+2?", answers, TIE)]), "both bad is a tie in the fit"
    assert [(s.ties, s.wins, s.losses) for s in board([both_bad])] == [(1, 0, 0), (1, 0, 0)]


# ----- drawing and round options (no engine: drawing never touches it) ------------------------------------


def _pool(n: int) -> list[Contender]:
    return [Contender(f"m{i}@llamacpp", f"m{i}", "llamacpp", "Q4_0", f"{i:064x}") for i in range(n)]


def _as_if_answered(round_: Round) -> None:
    """Mark every answer of a round finished, so it can be voted without running the engine."""
    round_.metrics = [StreamMetrics(i, c.label, "done", parts=["ok"]) for i, c in enumerate(round_.contenders)]


def test_drawing_is_fair_every_model_and_pair_in_both_orders(tmp_path: Path) -> None:
    store = Store(tmp_path / "h.sqlite3")
    arena = Arena(Hub(Config(ollama_enabled=False)), store, seed=5)
    arena.pool = _pool(4)
    orders: Counter[tuple[str, str]] = Counter()
    rng = random.Random(0)
    for n in range(200):
        round_ = arena.start(f"prompt {n}")
        labels = [c.label for c in round_.contenders]
        assert len(labels) == 2 and labels[0] != labels[1], "never a model against itself"
        assert round_.letters == ["A", "B"]
        with pytest.raises(InvalidOptions, match="after the vote"):
            round_.reveal()
        orders[(labels[0], labels[1])] += 1
        _as_if_answered(round_)
        arena.vote(round_, rng.choice(["a", "b", "tie", "bad"]))
        seen = arena.exposure().values()
        assert max(seen) - min(seen) <= 1, f"after {n + 1} votes: {arena.exposure()}"
    assert arena.exposure() == dict.fromkeys((c.label for c in arena.pool), 100)
    pairs = Counter(frozenset(order) for order in orders.elements())
    assert len(pairs) == 6 and max(pairs.values()) - min(pairs.values()) <= 2, pairs
    assert len(orders) == 12, "every model is shown as A and as B against every other"
    assert len(store.votes()) == 200

    trio = Arena(Hub(Config(ollama_enabled=False)), size=3, seed=1)
    trio.pool = _pool(4)
    for _ in range(40):
        round_ = trio.start("hello")
        assert len({c.label for c in round_.contenders}) == 3 and round_.letters == ["A", "B", "C"]
        _as_if_answered(round_)
        trio.vote(round_, "c")
    assert set(trio.exposure().values()) == {30}


def test_rounds_not_voted_still_rotate_the_pool_and_a_model_that_keeps_failing_leaves_it() -> None:
    arena = Arena(Hub(Config(ollama_enabled=False)), seed=2)
    arena.pool = _pool(4)
    seen: Counter[str] = Counter()
    for _ in range(4):
        seen.update(c.label for c in arena.start("hi").contenders)  # each round skipped, never voted
    assert set(seen.values()) == {2}, "a skipped round is exposure too: the same pair is not drawn again and again"

    broken = arena.pool[0].label
    failures = 0
    while failures < 2:
        round_ = arena.start("hi")
        round_.metrics = [
            StreamMetrics(i, c.label, "error" if c.label == broken else "done", error="it cannot answer")
            for i, c in enumerate(round_.contenders)
        ]
        failures += any(c.label == broken for c in round_.contenders)
        assert round_.on_end is not None
        round_.on_end(round_)  # what the end of Round.stream does
        if failures < 2:
            assert broken in [c.label for c in arena.pool], "one failure may be the prompt's fault"
    assert broken not in [c.label for c in arena.pool]
    assert arena.take_dropped() == [(broken, "left the pool after 2 failed answers")]
    assert arena.take_dropped() == [], "said once"
    for _ in range(20):
        assert broken not in [c.label for c in arena.start("hi").contenders]

    pair = Arena(Hub(Config(ollama_enabled=False)))
    pair.pool = _pool(2)
    for _ in range(3):
        round_ = pair.start("hi")
        round_.metrics = [StreamMetrics(i, c.label, "error") for i, c in enumerate(round_.contenders)]
        assert round_.on_end is not None
        round_.on_end(round_)
    assert len(pair.pool) == 2, "the pool never shrinks below two"


def test_a_drawn_round_cannot_start_without_a_pool_or_a_prompt() -> None:
    arena = Arena(Hub(Config(ollama_enabled=False)))
    with pytest.raises(InvalidOptions, match="no pool"):
        arena.start("hello")
    arena.pool = _pool(2)
    with pytest.raises(InvalidOptions, match="empty prompt"):
        arena.start("   ")
    round_ = arena.start("hello")
    with pytest.raises(InvalidOptions, match="not started"):
        arena.vote(round_, "a")


def test_round_options_make_every_setting_explicit_and_the_user_wins() -> None:
    config = Config(ollama_enabled=False, num_ctx=3072, options=Options(temperature=0.5, top_k=10, seed=-1))
    plain = Arena(Hub(config), seed=2).round_options()
    assert plain.seed is not None and 0 <= plain.seed < 2**31, "a seed is drawn when none (or -1) is set"
    assert plain.num_ctx == 3072 and plain.max_tokens == DEFAULT_MAX_TOKENS
    assert (plain.temperature, plain.top_k) == (0.5, 10), "the config's [options] over the engine's defaults"
    for name in ("top_p", "min_p", "repeat_penalty"):
        assert getattr(plain, name) == ENGINE_DEFAULTS[name]
    for name in ("temperature", "top_k", "top_p", "min_p", "repeat_penalty"):
        assert getattr(plain, name) is not None, name

    user = Options(temperature=0, seed=7, num_ctx=512, max_tokens=8)
    mine = Arena(Hub(config), options=user).round_options()
    assert (mine.temperature, mine.seed, mine.num_ctx, mine.max_tokens) == (0, 7, 512, 8)
    assert mine.top_k == 10
    random_seed = Arena(Hub(config), options=Options(seed=-1)).round_options()
    assert random_seed.seed is not None and random_seed.seed >= 0

    arena = Arena(Hub(config), options=user)
    arena.pool = _pool(2)
    assert arena.start("hi").options == mine, "a round carries one set of options for all its answers"


def test_parse_choice_takes_letters_tie_and_bad_and_names_the_choices_otherwise() -> None:
    assert [parse_choice(x, 2) for x in ("a", "B", " b ", "A")] == [0, 1, 1, 0]
    assert [parse_choice(x, 2) for x in ("tie", "T", "=", "bad", "x", "both bad", "Both Bad")] == [
        TIE, TIE, TIE, BAD, BAD, BAD, BAD,
    ]  # fmt: skip
    assert parse_choice("c", 3) == 2 and parse_choice("D", 4) == 3
    for typed in ("c", "maybe", "", "ab"):
        with pytest.raises(InvalidOptions) as err:
            parse_choice(typed, 2)
        assert "is not a vote" in str(err.value) and "A/B, tie or bad" in str(err.value)
    with pytest.raises(InvalidOptions, match="A/B/C, tie or bad"):
        parse_choice("d", 3)


# ----- votes as JSONL, the store, the CLI --------------------------------------------------------------------


def _sample_votes() -> list[Vote]:
    fast = Stats(12, 10, 7, 0.25, 0.125, 0.1, 0.5, 0.75, "length")
    slow = Stats(30, 30, 20, 1.5, 0.5, 0.25, 2.0, 2.5, "stop")
    smol = Answer("smollm2:135m", "llamacpp", "Q4_1", "b" * 64, "Paris.", fast)
    gemma = Answer("gemma3:270m", "llamacpp", "Q4_K_M", "a" * 64, "C'est Paris 🇫🇷\n« oui »", slow)
    llama = Answer("llama3.2", "ollama", None, None, "Paris, France", None)
    opts = Options(temperature=0, seed=42, max_tokens=64, num_ctx=2048, stop=("User:",), top_k=40)
    return [
        Vote("Capital of France?", (smol, gemma), 0, opts, id="v1", created=1000.5),
        Vote("Say hi", (gemma, smol), TIE, opts, system="Be brief.", category="greetings", id="v2", created=1001.25),
        Vote("Write a haiku", (smol, gemma, llama), 2, Options(seed=3), category="poetry", id="v3", created=1002.0),
        Vote("2+2?", (llama, smol), BAD, Options(), id="v4", created=1003.0),
    ]


def test_votes_round_trip_through_jsonl_and_the_store(tmp_path: Path) -> None:
    votes = _sample_votes()
    assert export_file(votes, tmp_path / "votes.jsonl") == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["votes.jsonl"], "no temporary file left beside it"
    lines = (tmp_path / "votes.jsonl").read_text(encoding="utf-8").splitlines()
    assert read_votes(lines) == votes
    first = json.loads(lines[0])
    assert (first["model_a"], first["model_b"], first["winner"]) == (
        "smollm2:135m@llamacpp",
        "gemma3:270m@llamacpp",
        "model_a",
    )
    assert [json.loads(x)["winner"] for x in lines[1:]] == ["tie", "model_c", "tie (bothbad)"]

    store = Store(tmp_path / "fresh.sqlite3")
    for vote in read_votes(lines):
        store.add_vote(vote)
    store.add_vote(votes[0])  # the same id again is stored once
    store.close()
    again = Store(tmp_path / "fresh.sqlite3").votes()
    assert again == votes
    assert board(again) == board(votes), "the same votes give the same leaderboard, speeds included"
    speeds = {s.model: s.tokens_per_s for s in board(again)}
    assert speeds["smollm2:135m@llamacpp"] is not None and speeds["llama3.2@ollama"] is None


def test_a_public_arena_line_is_read_as_a_vote() -> None:
    line = {
        "question_id": "58210e39b3fd4441a2bd4a518bb44c2d",
        "model_a": "chatglm-6b",
        "model_b": "koala-13b",
        "winner": "tie (bothbad)",
        "judge": "arena_user_973",
        "conversation_a": [
            {"role": "user", "content": "What is the difference between OpenCL and CUDA?"},
            {"role": "assistant", "content": "OpenCL and CUDA are two different programming models."},
        ],
        "conversation_b": [
            {"role": "user", "content": "What is the difference between OpenCL and CUDA?"},
            {"role": "assistant", "content": "OpenCL and CUDA are both frameworks."},
        ],
        "turn": 1,
        "anony": True,
        "language": "English",
        "tstamp": 1682351591.1322,
    }
    (vote,) = read_votes([json.dumps(line)])
    assert vote.id == line["question_id"] and vote.winner == BAD and vote.judge == "arena_user_973"
    assert vote.prompt == "What is the difference between OpenCL and CUDA?" and vote.created == 1682351591.1322
    assert [(a.model, a.backend, a.content) for a in vote.answers] == [
        ("chatglm-6b", "unknown", "OpenCL and CUDA are two different programming models."),
        ("koala-13b", "unknown", "OpenCL and CUDA are both frameworks."),
    ]


def _line(qid: str, **changes: object) -> str:
    line: dict[str, object] = {
        "question_id": qid,
        "model_a": "x@llamacpp",
        "model_b": "y@llamacpp",
        "winner": "model_a",
        "conversation_a": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
        "conversation_b": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hey"}],
    }
    line.update(changes)
    return json.dumps(line)


BAD_LINES = {
    "not JSON": ('{"question_id": "q9", "model_a": ', "not JSON"),
    "an unknown winner": (_line("q9", winner="model_z"), "unknown winner 'model_z'"),
    # a figure of the wrong type must be refused at the line, not reach the store (where it was an internal
    # error) or the leaderboard's speeds
    "stats of the wrong type": (
        _line("q9", llmspell={"answers": [{"stats": {"generated_tokens": "many"}}, {}]}),
        "generated_tokens",
    ),
    # content in the list-of-parts form is not text: refused at the line, before any line of the file is
    # stored (it used to fail in the store after the earlier lines were added)
    "content that is not text": (
        _line("q9", conversation_a=[{"role": "user", "content": [{"type": "text", "text": "hi"}]}]),
        "content",
    ),
    "a model against itself": (_line("q9", model_b="x@llamacpp"), "a vote between a model and itself"),
    # without its id, a file imported twice would count its votes twice
    "no question_id": (_line(""), "question_id is missing"),
    "an answer that is not there": (_line("q9", conversation_b=[{"role": "user", "content": "hi"}]), "no answer"),
    "no prompt": (_line("q9", conversation_a=[{"role": "assistant", "content": "hello"}]), "no prompt"),
    "a time that is not one": (_line("q9", tstamp="yesterday"), "tstamp"),
}


@pytest.mark.parametrize("case", list(BAD_LINES))
def test_a_bad_line_is_named_by_number_and_its_file_adds_nothing(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "good.jsonl"
    export_file(_sample_votes(), good)
    assert main(["arena", "import", str(good)]) == 0
    assert "added 4 votes (0 were already there)" in capsys.readouterr().out
    before = Store().votes()

    bad_line, what = BAD_LINES[case]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(_line("q8") + "\n\n" + bad_line + "\n", encoding="utf-8")
    if case in ("not JSON", "an unknown winner"):
        with pytest.raises(InvalidOptions, match="line 3"):
            read_votes(bad.read_text().splitlines(), "bad.jsonl")
    assert main(["arena", "import", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "line 3" in err.splitlines()[0] and what in err.splitlines()[0], err
    assert "Traceback" not in err and "internal error" not in err
    assert Store().votes() == before, "nothing of a bad file is stored, not even its good lines"


def test_export_and_import_through_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "in.jsonl"
    export_file(_sample_votes(), source)
    assert main(["arena", "import", str(source)]) == 0
    assert main(["arena", "import", str(source)]) == 0
    assert "added 0 votes (4 were already there)" in capsys.readouterr().out
    out = tmp_path / "out" / "poetry.jsonl"
    out.parent.mkdir()
    old_mask = os.umask(0o022)
    try:
        assert main(["arena", "export", "--category", "poetry", str(out)]) == 0
    finally:
        os.umask(old_mask)
    assert read_votes(out.read_text(encoding="utf-8").splitlines()) == [_sample_votes()[2]]
    assert out.stat().st_mode & 0o777 == 0o644, "a file to share gets the usual permissions, not owner-only"
    capsys.readouterr()

    # a folder that does not exist, and a path that is a folder: one clear line, nothing left behind
    assert main(["arena", "export", str(tmp_path / "missing" / "v.jsonl")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cannot write") and "missing" in err and "Traceback" not in err
    assert main(["arena", "export", str(out.parent)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cannot write") and "Traceback" not in err
    assert sorted(p.name for p in out.parent.iterdir()) == ["poetry.jsonl"], "no temporary file left"


def test_a_history_from_before_the_arena_migrates_and_keeps_votes_by_category(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    shutil.copy(FIXTURE_V0, path)
    store = Store(path)
    assert store.version == SCHEMA_VERSION >= 3
    assert len(store.list()) == 3, "the conversations are still there"
    assert store.votes() == [] and store.categories() == []
    for vote in _sample_votes():
        store.add_vote(vote)
    store.close()
    again = Store(path)
    assert again.version == SCHEMA_VERSION and again.votes() == _sample_votes()
    assert again.categories() == ["greetings", "poetry"]
    assert [v.id for v in again.votes("poetry")] == ["v3"] and again.votes("nothing") == []
    assert [len(v.answers) for v in again.votes()] == [2, 2, 3, 2]


@pytest.mark.parametrize(
    ("section", "named"),
    [
        ("size = 5", "arena.size"),
        ("size = 1", "arena.size"),
        ('pool = "x"', "arena.pool"),
        ('pool = ["smollm2:135m", 3]', "arena.pool"),
        ("hide_stats = 1", "arena.hide_stats"),
        ("rounds = 3", "rounds"),
    ],
)
def test_a_wrong_arena_setting_is_an_error_naming_the_key(section: str, named: str, tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f"[arena]\n{section}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert named in str(err.value) and str(path) in str(err.value)


def test_a_valid_arena_section_loads(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[arena]\npool = ["smollm2:135m", "gemma3:270m"]\nhide_stats = false\nsize = 3\n')
    cfg = load_config(path)
    assert (cfg.arena_pool, cfg.arena_hide_stats, cfg.arena_size) == (("smollm2:135m", "gemma3:270m"), False, 3)
    assert Arena(Hub(cfg)).size == 3
    assert (Config().arena_pool, Config().arena_hide_stats, Config().arena_size) == ((), True, 2)


# ----- on the real engine ------------------------------------------------------------------------------------


def _hub(backend: LlamaCppBackend, num_ctx: int = 1024) -> Hub:
    return Hub(Config(ollama_enabled=False, num_ctx=num_ctx), backends=[backend])


async def test_a_blind_round_on_the_real_models_is_voted_once_and_stored_whole(
    backend: LlamaCppBackend, tmp_path: Path
) -> None:
    hub, store = _hub(backend), Store(tmp_path / "h.sqlite3")
    arena = Arena(hub, store, options=Options(temperature=0, max_tokens=8))
    base = str(backend.ensure_file(backend.resolve(parse_spec(GEMMA))))  # the bare file: no chat template in it
    pool = await arena.set_pool([base, "smollm2", SMOL, GEMMA])
    assert [c.label for c in pool] == [f"{SMOL}@llamacpp", f"{GEMMA}@llamacpp"], "two spellings are one model"
    assert arena.skipped == [
        (
            base,
            f"{base} has no chat template (a base model: it continues text, it does not answer)"
            "; the arena is for chat models",
        )
    ]
    round_ = arena.start("Name the capital of France.")
    assert len({c.label for c in round_.contenders}) == 2
    with pytest.raises(InvalidOptions, match="after the vote"):
        round_.reveal()
    events = [e async for e in round_.stream(hub)]
    assert {e.index for e in events} == {0, 1} and round_.finished and round_.problem() is None
    opts = round_.options
    assert opts.seed is not None and opts.num_ctx == 1024 and opts.max_tokens == 8
    for c, m in zip(round_.contenders, round_.metrics, strict=True):
        assert m.status == "done" and m.text.strip() and m.stats is not None and m.stats.generated_tokens <= 8
        worker = backend.worker_for(c.model)
        assert worker is not None and worker.n_ctx == 1024, "every answer ran with the round's context size"

    vote = arena.vote(round_, "tie")
    assert vote.winner == TIE and vote.options == opts and round_.vote is vote
    assert [(letter, label) for letter, label, _ in round_.reveal()] == [
        ("A", round_.contenders[0].label),
        ("B", round_.contenders[1].label),
    ]
    with pytest.raises(InvalidOptions, match="already voted"):
        arena.vote(round_, "a")
    (stored,) = Store(tmp_path / "h.sqlite3").votes()
    assert stored == vote and stored.prompt == "Name the capital of France."
    for answer, m in zip(stored.answers, round_.metrics, strict=True):
        assert answer.quantization and answer.digest and len(answer.digest) == 64 and set(answer.digest) <= HEX
        assert answer.content == m.text and answer.stats == m.stats
    assert store.list() == [], "a blind round leaves nothing in the conversation history"
    assert arena.exposure() == {c.label: 1 for c in pool}

    later = Arena(hub, Store(tmp_path / "h.sqlite3"))
    await later.set_pool([SMOL, GEMMA])
    assert later.exposure() == {c.label: 1 for c in pool}, "a new arena counts the stored votes"


async def test_a_stopped_or_failed_round_cannot_be_voted(backend: LlamaCppBackend, tmp_path: Path) -> None:
    hub, store = _hub(backend), Store(tmp_path / "h.sqlite3")
    arena = Arena(hub, store, options=Options(temperature=0, max_tokens=200))
    await arena.set_pool([SMOL, GEMMA])
    round_ = arena.start("Write a very long story about a dragon who learns to paint.")
    stream = round_.stream(hub)
    try:
        async for event in stream:
            if event.kind == "chunk":
                break
    finally:
        await stream.aclose()
    problem = round_.problem()
    assert problem is not None and "was stopped before its end" in problem
    stopped = round_.letters[[m.status for m in round_.metrics].index("cancelled")]
    assert problem.startswith(f"answer {stopped} ")
    with pytest.raises(InvalidOptions, match="was stopped"):
        arena.vote(round_, "a")

    arena.options = Options(temperature=0, max_tokens=8, num_ctx=16)
    failed = arena.start("Write a very long story about a dragon who learns to paint, in many paragraphs.")
    events = [e async for e in failed.stream(hub)]
    assert [e.kind for e in events if e.kind == "error"] == ["error", "error"]
    problem = failed.problem()
    assert problem is not None and problem.startswith("answer A failed, so this round cannot be voted")
    assert all("context window" in (m.error or "") for m in failed.metrics), "each answer keeps why it failed"
    with pytest.raises(InvalidOptions, match="failed"):
        arena.vote(failed, "b")
    assert store.votes() == [] and round_.vote is None and failed.vote is None


CRASH_SCRIPT = """
import asyncio
from llmspell.arena import Arena
from llmspell.config import Config
from llmspell.hub import Hub
from llmspell.store import Store
from llmspell.types import Options


async def main():
    hub = Hub(Config(ollama_enabled=False, num_ctx=1024))
    arena = Arena(hub, Store(), options=Options(temperature=0, max_tokens=8))
    await arena.set_pool(["smollm2:135m", "gemma3:270m"])
    first = arena.start("Name the capital of France.")
    async for _ in first.stream(hub):
        pass
    print("voted", arena.vote(first, "a").id, flush=True)
    arena.options = Options(temperature=0, max_tokens=2000)
    second = arena.start("Write a very long story about a dragon who learns to paint.")
    told = False
    async for event in second.stream(hub):
        if event.kind == "chunk" and not told:
            print("streaming", flush=True)
            told = True
    print("finished", flush=True)


asyncio.run(main())
"""


def test_a_process_killed_mid_round_keeps_every_earlier_vote_whole(tmp_path: Path, shared_models: Path) -> None:
    home = tmp_path / "home"
    env = {**os.environ, "LLMSPELL_HOME": str(home), "LLMSPELL_MODELS": str(shared_models)}
    with (tmp_path / "stderr.txt").open("w") as errors:
        proc = subprocess.Popen(
            [sys.executable, "-c", CRASH_SCRIPT],
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
            env=env,
        )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.strip())
        lines.put(None)

    def wait_for(word: str) -> str:
        """The child's next line starting with ``word`` (bounded: the child may hang, the test must not)."""
        deadline = time.monotonic() + 240
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = lines.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                raise AssertionError(f"the child ended before {word!r}: {(tmp_path / 'stderr.txt').read_text()}")
            if line.startswith(word):
                return line
        raise AssertionError(f"the child never printed {word!r}")

    threading.Thread(target=pump, daemon=True).start()
    try:
        vote_id = wait_for("voted").split()[1]
        wait_for("streaming")
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "killed mid-round, not finished"

    path = home / "history.sqlite3"
    (vote,) = Store(path).votes()
    assert vote.id == vote_id and vote.winner == 0 and len(vote.answers) == 2
    assert all(a.content.strip() and a.stats is not None and a.digest for a in vote.answers)
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("SELECT COUNT(*) FROM arena_answers").fetchone()[0] == 2, "no half of the second round"
    finally:
        db.close()


def test_speeds_on_the_board_come_from_answers_that_ran_alone() -> None:
    def vote(parallel: bool, rate: float, models: tuple[str, str]) -> Vote:
        stats = Stats(generated_tokens=101, generation_time=100 / rate, time_to_first_token=0.1)
        answers = tuple(Answer(m, "llamacpp", None, None, "x", stats) for m in models)
        return Vote("q", answers, 0, parallel=parallel)

    votes = [vote(False, 50.0, ("a", "b")), vote(True, 20.0, ("a", "b")), vote(True, 20.0, ("a", "c"))]
    speeds = {s.model: s.tokens_per_s for s in board(votes, rounds=0)}
    assert speeds == {"a@llamacpp": 50.0, "b@llamacpp": 50.0, "c@llamacpp": None}, (
        "side by side the cores are shared: such a speed is not set beside one measured alone"
    )
    (back,) = read_votes([json.dumps(votes[1].to_json())])
    assert back.parallel and back == votes[1]
