"""`llmspell kernel install`: register the Jupyter kernel (the kernel package is imported only when used)."""

from __future__ import annotations

import argparse
from typing import Any


async def cmd_kernel_install(args: argparse.Namespace) -> int:
    """Install the "llmspell" kernel spec where Jupyter finds it."""
    from llmspell_kernel.install import install_from_args

    return int(install_from_args(args))


def add_kernel_parser(sub: Any) -> None:
    """Add `llmspell kernel install [--user|--sys-prefix|--prefix P] [--default-model SPEC]` to the CLI."""
    # the options are defined once, next to the installer, so `python -m llmspell_kernel install` takes the same ones
    from llmspell_kernel.install import add_install_arguments

    kernel = sub.add_parser("kernel", help="the Jupyter kernel: install its kernel spec")
    ksub = kernel.add_subparsers(dest="kernel_command", required=True, metavar="ACTION")
    k = ksub.add_parser(
        "install", help='register the "llmspell" kernel with Jupyter (display name "LLMSpell (local LLM)")'
    )
    add_install_arguments(k)
    k.set_defaults(func=cmd_kernel_install)
