"""Tools in the Jupyter kernel through jupyter_client, on the real smollm2:135m: %tools lists, turns on and off, a
cell's calls are shown as they happen (the call, its outcome, the first lines it returned), a side effect is asked
about through the frontend's input box, and refused with a hint where the frontend has none. A forced first call
keeps it repeatable."""

from __future__ import annotations

import time
from pathlib import Path
from queue import Empty
from typing import Any

from kernel_session import CELL_TIMEOUT, KernelSession, Ran

SMOL = "smollm2:135m"


def run(session: KernelSession, code: str, *, answer: str | None = None) -> tuple[Ran, list[str]]:
    """Execute ``code``; with ``answer`` the frontend allows input and types it at each question (the questions
    asked are returned), without it the frontend has no input box."""
    kc = session.kc
    msg_id = kc.execute(code, allow_stdin=answer is not None)
    outputs: list[dict[str, Any]] = []
    asked: list[str] = []
    deadline = time.monotonic() + CELL_TIMEOUT
    while True:
        assert time.monotonic() < deadline, f"no idle status for {code!r}; got {outputs}"
        if answer is not None:
            try:
                request = kc.get_stdin_msg(timeout=0.01)
            except Empty:
                pass
            else:
                asked.append(request["content"]["prompt"])
                kc.input(answer)
        try:
            msg = kc.get_iopub_msg(timeout=0.05)
        except Empty:
            continue
        if msg["parent_header"].get("msg_id") != msg_id or msg["msg_type"] == "execute_input":
            continue
        if msg["msg_type"] == "status":
            if msg["content"]["execution_state"] == "idle":
                break
            continue
        outputs.append(msg)
    while True:
        reply = kc.get_shell_msg(timeout=CELL_TIMEOUT)
        if reply["parent_header"].get("msg_id") == msg_id:
            return Ran(reply["content"], outputs), asked


def stderr(ran: Ran) -> str:
    return "".join(c["text"] for c in ran.of("stream") if c["name"] == "stderr")


def test_tools_on_a_call_shown_in_the_cell_asked_or_refused_and_off(session: KernelSession, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("the secret word is plum\n")
    assert run(session, f"%model {SMOL}\n%set temperature=0 seed=7 max_tokens=60")[0].status == "ok"
    assert "no tools on" in run(session, "%tools")[0].stdout

    ran, _ = run(session, f"%tools read_file --root {tmp_path} --tool-choice read_file --max-steps 2")
    assert ran.status == "ok" and "tools on: read_file" in ran.stdout
    listed = run(session, "%tools")[0].stdout
    assert "read_file (built-in, runs without asking)" in listed and str(tmp_path.resolve()) in listed

    ran, _ = run(session, "Read the file a.txt")
    assert ran.status == "ok"
    block = next(c["data"] for c in ran.of("update_display_data") if "→ read_file(" in c["data"]["text/plain"])
    assert block["text/plain"].startswith('→ read_file({"path": "a.txt"})\n  ok')
    assert "the secret word is plum" in block["text/plain"] and "the secret word is plum" in block["text/markdown"]
    assert "→ read_file(" in ran.shown  # the block stays beside the final answer

    # no input box: the write is refused, and the note says how to allow it
    line = f"write_file --root {tmp_path} --tool-choice write_file --max-steps 2"
    assert run(session, f"%tools {line}")[0].status == "ok"
    ran, _ = run(session, 'Save "hi" in b.txt')
    assert ran.status == "ok" and not (tmp_path / "b.txt").exists()
    assert f"(%tools {line} --yes allows it)" in stderr(ran)
    assert "refused: the user did not allow this call to write_file" in ran.shown

    # with an input box the user is asked; y lets it write
    assert run(session, "%reset")[0].status == "ok"
    ran, asked = run(session, 'Save "hi" in b.txt', answer="y")
    assert asked == ['Allow write_file({"content": "hi", "path": "b.txt"})? [y/N] ']
    assert (tmp_path / "b.txt").read_text() == "hi" and "\n  ok" in ran.shown

    history = run(session, "%history")[0].markdown
    assert "`→ write_file(" in history and "tool write_file: ok" in history

    assert "tools off" in run(session, "%tools off")[0].stdout
    assert "no tools on" in run(session, "%tools")[0].stdout
    bad = run(session, "%tools nope")[0]
    assert bad.status == "error" and "no tool or MCP server named 'nope'" in bad.error
