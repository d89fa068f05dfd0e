"""A kernel started with an unusable LLMSPELL_HOME (issue 17): it stays up, and every cell says what is wrong
with the home and how to fix it, in one message and never a Python traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from kernel_session import KernelSession, kernel_env, start_kernel


def _error(ks: KernelSession, code: str) -> str:
    """The one error a cell ends in: its name and words; fails on a traceback of Python frames."""
    ran = ks.run(code)
    assert ran.status == "error", ran.outputs
    (content,) = ran.of("error")
    shown = "\n".join(content.get("traceback") or [])
    assert "Traceback" not in shown and 'File "' not in shown, shown
    return f"{content['ename']}: {content['evalue']}"


@pytest.mark.parametrize("case", ["home is a file", "config names a bad endpoint"])
def test_a_kernel_with_a_bad_home_says_what_is_wrong_and_keeps_running(
    case: str, spec_prefix: Path, tmp_path: Path, shared_models: Path
) -> None:
    env = kernel_env(tmp_path, shared_models)
    home = Path(env["LLMSPELL_HOME"])
    if case == "home is a file":
        home.parent.mkdir(parents=True, exist_ok=True)
        home.write_text("not a folder")
        expected = [f"LLMSPELL_HOME={home} must be a folder you can write to", "it is a file, not a folder"]
    else:
        home.mkdir(parents=True)
        (home / "config.toml").write_text('[[endpoints]]\nname = 5\nkind = "openai"\nurl = "http://h"\n')
        expected = [str(home / "config.toml"), "[[endpoints]] #1: name = 5 must be"]
    ks = start_kernel(spec_prefix, env)
    try:
        for code in ("Name the capital of France.", "And of Italy?"):
            message = _error(ks, code)
            assert message.startswith("ConfigError: ") and all(part in message for part in expected), message
        # the kernel is still there and answers what needs no home
        alive = ks.run("%help")
        assert alive.status == "ok" and "%models" in alive.shown + alive.markdown + alive.stdout, alive.outputs
    finally:
        ks.close()
    # nothing was written over the file that stood where the home should be
    if case == "home is a file":
        assert home.read_text() == "not a folder"
