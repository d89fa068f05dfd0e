"""``llmspell arena``: the leaderboard of the user's blind votes, and the votes as JSONL (export and import)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmspell.errors import InvalidOptions

if TYPE_CHECKING:
    from llmspell.ratings import Standing


def add_arena_parser(sub: Any) -> None:
    """Add ``arena leaderboard|export|import`` to the ``llmspell`` command."""
    arena = sub.add_parser("arena", help="blind votes between models: leaderboard, export, import")
    asub = arena.add_subparsers(dest="arena_command", required=True, metavar="ACTION")
    a = asub.add_parser("leaderboard", help="ratings from every vote (Bradley-Terry, 95%% bootstrap intervals)")
    a.add_argument("--category", help="only the votes tagged with this category")
    a.add_argument("--json", action="store_true", help="machine-readable output")
    a.add_argument("--rounds", type=int, default=200, help="bootstrap resamples for the intervals (default 200)")
    a.set_defaults(func=cmd_leaderboard)
    a = asub.add_parser("export", help="every vote as JSONL, the shape public arena datasets use")
    a.add_argument("file", nargs="?", default="-", help="where to write (default: standard output)")
    a.add_argument("--category", help="only the votes tagged with this category")
    a.set_defaults(func=cmd_export)
    a = asub.add_parser("import", help="add the votes of a JSONL file (an export, or a public arena dataset)")
    a.add_argument("file", help="a .jsonl file ('-' reads standard input)")
    a.set_defaults(func=cmd_import)


def _store() -> Any:
    from llmspell.store import Store

    return Store()


async def cmd_leaderboard(args: argparse.Namespace) -> int:
    """Print the leaderboard: rating, interval, votes, wins/losses/ties and speed, then the intervals drawn."""
    from llmspell.arena import load_board

    if not 0 <= args.rounds <= 10_000:
        raise InvalidOptions(f"--rounds {args.rounds} is out of range", hint="use 0 to 10000")
    store = _store()
    try:
        count, standings = load_board(store, args.category, rounds=args.rounds)
    finally:
        store.close()
    if args.json:
        report = {"votes": count, "category": args.category, "models": [s.to_dict() for s in standings]}
        json.dump(report, sys.stdout, indent=2)
        print()
        return 0
    if not standings:
        where = f" tagged {args.category!r}" if args.category else ""
        print(f"no votes{where} yet: vote in the TUI's arena (F5), with /arena in `llmspell chat` or %arena")
        return 0
    for line in leaderboard_lines(standings):
        print(line)
    tagged = f" tagged {args.category!r}" if args.category else ""
    print(f"\n{count} vote{'s' if count != 1 else ''}{tagged}")
    return 0


def leaderboard_lines(standings: list[Standing]) -> list[str]:
    """The leaderboard as text: a table (rating, interval, votes, W/L/T, speed), then the intervals drawn."""
    from llmspell.arena import BOARD_HEADERS, board_rows
    from llmspell.ratings import interval_bars

    table = [[h.upper() for h in BOARD_HEADERS], *board_rows(standings)]
    widths = [max(len(r[i]) for r in table) for i in range(len(BOARD_HEADERS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in table]
    bars, axis = interval_bars(standings)
    name_width = max(len(s.model) for s in standings)
    lines.append("")
    lines += [f"{s.model.ljust(name_width)}  {bar}" for s, bar in zip(standings, bars, strict=True)]
    lines.append(f"{''.ljust(name_width)}  {axis}")
    lines.append("tok/s and TTFT: medians over the answers that ran alone (not side by side)")
    return lines


async def cmd_export(args: argparse.Namespace) -> int:
    """Write the votes as JSONL to a file (whole or not at all) or to standard output."""
    from llmspell.arena import export_file, export_votes

    store = _store()
    try:
        votes = store.votes(args.category)
    finally:
        store.close()
    if args.file == "-":
        export_votes(votes, sys.stdout)
        return 0
    count = export_file(votes, args.file)
    print(f"wrote {count} votes to {args.file}", file=sys.stderr)
    return 0


def _lines(name: str) -> tuple[list[str], str]:
    """The lines of a file and how to name it in a message; an unreadable file is a clear error."""
    path = Path(name).expanduser()
    try:
        return path.read_text(encoding="utf-8").splitlines(), str(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidOptions(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None


async def cmd_import(args: argparse.Namespace) -> int:
    """Read a JSONL file of votes (all lines checked before any is stored); votes already stored are skipped."""
    from llmspell.arena import read_votes

    if args.file == "-":
        try:
            text = sys.stdin.buffer.read().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidOptions(f"standard input is not UTF-8 text: {exc.reason}") from None
        votes = read_votes(text.splitlines(), "standard input")
    else:
        votes = read_votes(*_lines(args.file))
    store = _store()
    try:
        added = store.add_votes(votes)
    finally:
        store.close()
    print(f"added {added} votes ({len(votes) - added} were already there)")
    return 0
