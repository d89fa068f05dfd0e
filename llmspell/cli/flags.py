"""The generation-option flags of ``run`` and ``chat``, made from the option table so both read alike."""

from __future__ import annotations

import argparse
from typing import Any

from llmspell.options import OPTIONS
from llmspell.types import Options, read_format

_TYPES: dict[str, Any] = {"float": float, "int": int}


def add_option_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per option of the table that has one (``--temperature``, ``--stop`` repeatable, ...)."""
    for o in OPTIONS:
        if o.flag is None:
            continue
        help_text = f"{o.help} ({', '.join(x for x in (o.range_text, f'default {o.default}') if x)})"
        if o.kind == "stop":
            parser.add_argument(o.flag, dest=o.name, action="append", help=f"{o.help} (repeatable)")
        elif o.kind == "format":
            parser.add_argument(o.flag, dest=o.name, help=f"{o.help}, or @file.json")
        else:
            parser.add_argument(o.flag, dest=o.name, type=_TYPES[o.kind], help=help_text)


def options_from_args(args: argparse.Namespace) -> Options:
    """The options given as flags; checked as every face checks them (range, type, a readable @file)."""
    raw: dict[str, Any] = {}
    for o in OPTIONS:
        value = getattr(args, o.name, None) if o.flag else None
        if value is None or value == []:
            continue
        if o.kind == "stop":
            value = tuple(value)
        elif o.kind == "format":
            value = read_format(value)
        raw[o.name] = value
    return Options.from_dict(raw)
