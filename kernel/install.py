"""Register the llmspell kernel spec with Jupyter (wraps jupyter_client's KernelSpecManager)."""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from llmspell_kernel import DEFAULT_MODEL_ENV, DISPLAY_NAME, KERNEL_NAME


def kernel_json(default_model: str | None = None, python: str | None = None) -> dict[str, object]:
    """The kernel.json contents: how Jupyter starts the kernel, and the model it starts with."""
    spec: dict[str, object] = {
        # -P (Python 3.11+): the notebook's folder is not put first on sys.path, so a folder there named llmspell
        # (the parent of a clone, say) cannot shadow the installed package as an empty namespace package
        "argv": [python or sys.executable, "-P", "-m", "llmspell_kernel", "-f", "{connection_file}"],
        "display_name": DISPLAY_NAME,
        "language": "markdown",
        # SIGINT reaches the kernel even while its message loop is busy; the kernel turns it into a clean cancel
        "interrupt_mode": "signal",
        "metadata": {"debugger": False},
    }
    if default_model:
        spec["env"] = {DEFAULT_MODEL_ENV: default_model}
    return spec


def install(
    *,
    user: bool = False,
    prefix: str | None = None,
    sys_prefix: bool = False,
    default_model: str | None = None,
) -> Path:
    """Install the kernel spec ("llmspell") and return the folder it was written to."""
    from jupyter_client.kernelspec import KernelSpecManager

    from llmspell.errors import LLMSpellError
    from llmspell.spec import parse_spec

    if default_model:
        parse_spec(default_model)  # a malformed spec fails here, not when the first notebook starts
    if sys_prefix:
        if prefix:
            raise LLMSpellError("choose one of --prefix and --sys-prefix")
        prefix = sys.prefix
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / KERNEL_NAME
        source.mkdir()
        (source / "kernel.json").write_text(json.dumps(kernel_json(default_model), indent=2) + "\n", encoding="utf-8")
        try:
            dest = KernelSpecManager().install_kernel_spec(str(source), KERNEL_NAME, user=user, prefix=prefix)
        except OSError as exc:
            # a folder without write access, a read-only file system, a prefix that is a file: the same fix for all
            where = exc.filename or prefix or "the Jupyter data folder"
            hint = "use --user (your own Jupyter folder) or --sys-prefix (this virtualenv)"
            if prefix and not user:
                hint = f"check that {prefix} is a folder you can write to, or {hint}"
            raise LLMSpellError(f"cannot write the kernel spec to {where}: {exc.strerror or exc}", hint=hint) from None
    return Path(dest)


def add_install_arguments(parser: argparse.ArgumentParser) -> None:
    """The install options, shared by `llmspell kernel install` and `python -m llmspell_kernel install`."""
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--user", action="store_true", help="install for this user only (~/.local/share/jupyter)")
    where.add_argument("--sys-prefix", action="store_true", help="install into this Python's prefix (a virtualenv)")
    where.add_argument("--prefix", metavar="P", help="install into the prefix P (P/share/jupyter/kernels)")
    parser.add_argument("--default-model", metavar="SPEC", help="the model a new notebook starts with")


def install_from_args(args: argparse.Namespace) -> int:
    """Run an install from parsed arguments; print where the spec went."""
    dest = install(user=args.user, prefix=args.prefix, sys_prefix=args.sys_prefix, default_model=args.default_model)
    model = f", default model {args.default_model}" if args.default_model else ""
    print(f"installed kernel spec {KERNEL_NAME!r} ({DISPLAY_NAME}{model}) in {dest}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The parser of `python -m llmspell_kernel install` (the words after `install`)."""
    parser = argparse.ArgumentParser(prog="python -m llmspell_kernel install", description="Install the kernel spec.")
    add_install_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m llmspell_kernel install ...`."""
    args = build_parser().parse_args(argv)
    from llmspell.errors import LLMSpellError

    try:
        return install_from_args(args)
    except LLMSpellError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
