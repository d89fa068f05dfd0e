"""``llmspell chat`` end to end: the installed command on a real pseudo-terminal (pexpect) and through pipes."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pexpect
import pytest

from llmspell.config import config_path
from llmspell.store import Store

LLMSPELL = Path(sys.executable).parent / "llmspell"
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[=>]|\r")


def _env(shared_models: Path) -> dict[str, str]:
    # os.environ already carries the autouse fixture's LLMSPELL_HOME, HF caches and dead OLLAMA_HOST
    return {
        **os.environ,
        "LLMSPELL_MODELS": str(shared_models),
        "TERM": "xterm-256color",
        # pexpect does not answer cursor-position requests; without this the prompt waits for one
        "PROMPT_TOOLKIT_NO_CPR": "1",
    }


@pytest.fixture
def spawn(shared_models: Path) -> Iterator[Callable[..., pexpect.spawn]]:
    """Start ``llmspell chat ARGS`` on a pseudo-terminal; every child is killed when the test ends."""
    children: list[pexpect.spawn] = []

    def start(*args: str) -> pexpect.spawn:
        child = pexpect.spawn(
            str(LLMSPELL),
            ["chat", *args],
            env=_env(shared_models),
            encoding="utf-8",
            dimensions=(40, 120),
            timeout=300,
        )
        children.append(child)
        return child

    yield start
    for child in children:
        child.close(force=True)


def _plain(text: str) -> str:
    return _ANSI.sub("", text)


def run(child: pexpect.spawn, line: str, expect: str) -> str:
    """Type a line, wait for ``expect`` and then the next prompt; return what was printed (escape codes removed)."""
    child.send(line + "\r")
    child.expect_exact(expect)
    seen = child.before + child.after
    child.expect_exact(">>> ")
    return _plain(seen + child.before)


def _latest_answer() -> tuple[str, str]:
    rows = Store().list(1)
    if not rows:
        return "", ""
    entry = Store().load(rows[0].id).entries[-1]
    return (entry.content, entry.state) if entry.role == "assistant" else ("", "")


def test_a_session_on_a_terminal_streams_answers_runs_every_command_and_resumes(spawn, tmp_path: Path) -> None:
    child = spawn("smollm2:135m", "--temperature", "0", "--seed", "1", "--max-tokens", "40")
    child.expect_exact("llmspell chat · smollm2:135m")
    child.expect_exact(">>> ")

    out = run(child, "Name the capital of France.", "tok/s")
    assert "Paris" in out and out.index("Paris") < out.index("TTFT"), "the answer, then its stats line"

    # Ctrl-C at the prompt clears the line; nothing is sent
    child.send("this line is never sent")
    child.send("\x03")
    out = run(child, "/history", "reopen one")
    assert "1 msgs" not in out and "2 msgs" in out

    # Ctrl-C while an answer streams stops it; the partial answer stays; the next prompt works
    run(child, "/set max_tokens 1500", "set max_tokens = 1500")
    child.send("Write a very long story about a dragon.\r")
    for _ in range(30000):
        text, state = _latest_answer()
        if state == "streaming" and len(text) > 30:
            break
        time.sleep(0.01)
    child.send("\x03")
    child.expect_exact("[interrupted")
    child.expect_exact(">>> ")
    partial, state = _latest_answer()
    assert state == "cancelled" and 30 < len(partial)
    run(child, "/set max_tokens 12", "set max_tokens = 12")
    out = run(child, "Say hi.", "tok/s")
    assert "interrupted" not in out

    out = run(child, "/help", "Ctrl-D leaves")
    assert all(c in out for c in ("/model SPEC", "/compare SPEC...", "/json", "/export FILE.md", "/bye"))
    assert "gemma3:270m@llamacpp" in run(child, "/models", "not listed")
    assert "llamacpp: ready" in run(child, "/status", "ollama: not ready")
    run(child, "/system Answer briefly.", "system prompt set")
    run(child, "/set temperature 0", "set temperature = 0.0")
    run(child, "/set quiet on", "quiet on")
    out = run(child, "/show", "display:")
    assert "Answer briefly." in out and "temperature=0.0" in out and "quiet=on" in out
    run(child, "/set quiet off", "quiet off")
    assert "eval rate:" in run(child, "/stats", "in this conversation")
    run(child, '/json {"type":"object"}', "answers must now be the JSON schema")
    run(child, "/json off", "free text again")
    run(child, "/compare smollm2:135m nosuchmodel", "the next prompt goes to")
    out = run(child, "Say hi.", "/load ID continues")
    assert "error: no model named 'nosuchmodel'" in out and out.count("tok/s") == 2
    run(child, "/save dragons", "saved as 'dragons'")
    assert "dragons" in run(child, "/history", "reopen one")
    target = tmp_path / "dragons.md"
    run(child, f"/export {target}", "wrote")
    exported = target.read_text()
    assert exported.startswith("# dragons") and "*(interrupted)*" in exported
    assert "this line is never sent" not in exported
    run(child, "/reset", "new conversation")
    out = run(child, "/load dragons", "Say hi.")
    assert "Name the capital of France." in out
    assert "model: smollm2:135m" in run(child, "/model", "change it")
    assert "error: model name 'bad!!spec'" in run(child, "/model bad!!spec", "error:")
    assert "Ollama is not reachable" in run(child, "/model smollm2:135m@ollama", "error:")
    assert "error: unknown command /modles" in run(child, "/modles", "error:")
    out = _plain(child.before)
    child.send("/bye\r")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert "Traceback" not in out

    # --resume reopens the latest conversation, shows it, and continues it
    again = spawn("--resume", "--max-tokens", "12", "--temperature", "0")
    again.expect_exact("Name the capital of France.")
    again.expect_exact(">>> ")
    run(again, "And of Italy?", "tok/s")
    again.send("\x04")
    again.expect(pexpect.EOF)
    again.close()
    assert again.exitstatus == 0
    saved = Store().load(Store().list(1)[0].id)
    assert saved.title == "dragons" and saved.entries[-2].content == "And of Italy?"
    assert saved.entries[-1].state == "done" and saved.entries[-1].content


def test_an_unreachable_backend_at_start_is_one_line_and_the_prompt_stays(spawn) -> None:
    child = spawn("smollm2:135m@ollama")
    child.expect_exact("error: Ollama is not reachable at http://127.0.0.1:9")
    child.expect_exact(">>> ")
    out = run(child, "Hello", "error: Ollama is not reachable at http://127.0.0.1:9 (generating)")
    assert "ollama serve" in out
    child.send("/bye\r")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0 and "Traceback" not in _plain(child.before or "")


def _piped(shared_models: Path, *args: str, stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LLMSPELL), "chat", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(shared_models),
    )


def test_piped_input_prints_the_answer_and_exits(shared_models: Path) -> None:
    proc = _piped(
        shared_models, "smollm2:135m", "--temperature", "0", "--max-tokens", "24", stdin="Name the capital of France.\n"
    )
    assert proc.returncode == 0, proc.stderr
    assert "Paris" in proc.stdout and "\x1b" not in proc.stdout and ">>>" not in proc.stdout
    assert "tok/s" in proc.stderr, "the stats line goes to stderr, so stdout is only the answer"
    saved = Store().load(Store().list(1)[0].id)
    assert [e.role for e in saved.entries] == ["user", "assistant"], "a piped chat is saved too"


def test_piped_quiet_prints_no_stats_and_system_is_saved(shared_models: Path) -> None:
    proc = _piped(
        shared_models,
        "smollm2:135m",
        "--quiet",
        "--system",
        "You answer in one short sentence.",
        "--temperature",
        "0",
        "--max-tokens",
        "24",
        stdin="Name the capital of France.\n",
    )
    assert proc.returncode == 0, proc.stderr
    assert "Paris" in proc.stdout
    assert "tok/s" not in proc.stderr and "TTFT" not in proc.stderr, proc.stderr
    saved = Store().load(Store().list(1)[0].id)
    assert saved.system == "You answer in one short sentence."
    assert saved.entries[-1].state == "done" and saved.entries[-1].content.strip() in proc.stdout


def test_piped_chat_without_a_spec_uses_the_configured_default_model(shared_models: Path) -> None:
    # a spelling of the model no built-in default uses, so the test can tell the config was read
    config_path().parent.mkdir(parents=True, exist_ok=True)
    config_path().write_text('default_model = "local/smollm2:135m@llamacpp"\n')
    proc = _piped(shared_models, "--temperature", "0", "--max-tokens", "24", stdin="Name the capital of France.\n")
    assert proc.returncode == 0, proc.stderr
    assert "Paris" in proc.stdout
    saved = Store().load(Store().list(1)[0].id)
    assert saved.model == "local/smollm2:135m@llamacpp"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("bad!!spec", "error: model name 'bad!!spec'"),
        ("nosuchmodel", "error: no model named 'nosuchmodel'"),
        ("smollm2:135m@ollama", "error: Ollama is not reachable at http://127.0.0.1:9"),
    ],
)
def test_piped_errors_are_one_line_and_exit_1(shared_models: Path, spec: str, message: str) -> None:
    proc = _piped(shared_models, spec, "--quiet", stdin="hi\n")
    assert proc.returncode == 1
    assert proc.stderr.startswith(message) and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stdout == "" and "Traceback" not in proc.stderr


@pytest.mark.parametrize("stdin", ["", "  \n\n"])
def test_piped_empty_input_is_one_line_and_exit_2(shared_models: Path, stdin: str) -> None:
    proc = _piped(shared_models, "smollm2:135m", stdin=stdin)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: no prompt on standard input; pipe one in"), proc.stderr
    assert proc.stdout == "" and not Store().list(), "nothing is sent or saved"


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        (["--temperature", "9"], "error: option temperature=9.0 is out of range", 1),
        (["--top-k", "many"], "argument --top-k: invalid int value: 'many'", 2),
        (["--format", "@missing.json"], "error: cannot read the format file missing.json: No such file", 1),
        (["--format", "{not json"], 'error: option format must be "json" or a JSON schema', 1),
    ],
)
def test_bad_flag_values_are_one_message_and_a_nonzero_exit(
    shared_models: Path, tmp_path: Path, args: list[str], message: str, code: int
) -> None:
    proc = subprocess.run(
        [str(LLMSPELL), "chat", "smollm2:135m", *args],
        input="hi\n",
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=_env(shared_models),
    )
    assert proc.returncode == code, proc.stderr
    assert message in proc.stderr and "internal error" not in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_run_names_an_unreadable_format_file_too(shared_models: Path, tmp_path: Path) -> None:
    # `run` reads --format through the same function as chat
    proc = subprocess.run(
        [str(LLMSPELL), "run", "smollm2:135m", "hi", "--format", "@missing.json"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=_env(shared_models),
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: cannot read the format file missing.json: No such file"), proc.stderr


def test_ctrl_c_in_a_piped_chat_stops_the_answer_exits_130_and_keeps_it_marked(
    shared_models: Path, tmp_path: Path
) -> None:
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("Write a very long story about a dragon.\n")
    with prompt.open("rb") as stdin:
        proc = subprocess.Popen(
            [str(LLMSPELL), "chat", "smollm2:135m", "--temperature", "0", "--max-tokens", "2000"],
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_env(shared_models),
        )
    try:
        assert proc.stdout is not None
        seen = b""
        while len(seen.strip()) < 20:  # Ctrl-C once the answer is on its way
            ready, _, _ = select.select([proc.stdout], [], [], 300)
            assert ready, "no answer on stdout"
            chunk = os.read(proc.stdout.fileno(), 4096)
            assert chunk, f"stdout ended before the answer began: {proc.stderr.read() if proc.stderr else ''!r}"
            seen += chunk
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "[interrupted" in err.decode() and "Traceback" not in err.decode()
    saved = Store().load(Store().list(1)[0].id)
    answer = saved.entries[-1]
    assert answer.role == "assistant" and answer.state == "cancelled"
    assert answer.content.strip() == (seen + rest).decode().strip(), "what was printed is what was kept"


def _cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process (all its threads) has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _drain(child: pexpect.spawn, seconds: float) -> str:
    """Read what the terminal shows for ``seconds`` (the reader of a real terminal never stops reading)."""
    out, end = "", time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            out += child.read_nonblocking(1 << 16, timeout=max(0.0, min(0.05, end - time.monotonic())))
        except pexpect.TIMEOUT:
            pass
    return out


@pytest.mark.parametrize("how", ["interrupt character", "SIGINT", "twice"])
def test_ctrl_c_on_a_terminal_stops_the_engine_and_gives_the_prompt_back(spawn, how: str) -> None:
    """The report's case: 120x40 terminal, a long answer, output read all the time, Ctrl-C while it streams."""
    child = spawn("smollm2:135m", "--temperature", "0.8", "--max-tokens", "3000")
    child.expect_exact(">>> ")
    child.send("Write a long story about a dragon.\r")
    for _ in range(30000):
        _drain(child, 0.01)
        text, state = _latest_answer()
        if state == "streaming" and len(text) > 40:
            break
    else:
        raise AssertionError("the answer never started")
    if how == "SIGINT":
        os.kill(child.pid, signal.SIGINT)
    else:
        child.send("\x03\x03" if how == "twice" else "\x03")
    # bounds, not timings: the mark and the prompt come back, and the session still reads commands
    child.expect_exact("[interrupted", timeout=60)
    child.expect_exact(">>> ", timeout=60)
    partial, state = _latest_answer()
    assert state == "cancelled" and len(partial) > 40, "kept and marked, never left 'streaming'"
    # the engine stopped with the answer: at the prompt the process uses next to no CPU (decoding takes every
    # core it is given, about a CPU-second per second)
    before = _cpu_seconds(child.pid)
    _drain(child, 1.0)
    assert _cpu_seconds(child.pid) - before < 0.3
    assert _latest_answer() == (partial, "cancelled"), "nothing was added after the stop"
    out = run(child, "/model", "change it with")
    assert "model: smollm2:135m" in out
    child.send("/bye\r")
    child.expect(pexpect.EOF, timeout=60)


def test_a_tool_question_on_a_terminal_takes_one_key_and_ctrl_c_there_stops_the_turn(spawn, tmp_path: Path) -> None:
    child = spawn(
        "smollm2:135m",
        *("--tools", "write_file", "--root", str(tmp_path), "--tool-choice", "write_file", "--max-steps", "3"),
        *("--temperature", "0", "--seed", "7", "--max-tokens", "300"),
    )
    child.expect_exact(">>> ")
    child.send("Write hi to a.txt\r")
    child.expect(r"Allow write_file\(\{.*\}\)\? \[y/N\]")
    child.send("n")  # one key, no Enter
    child.expect_exact("refused: the user did not allow this call to write_file")
    child.expect_exact(">>> ")
    child.send("Write hi to a.txt\r")
    child.expect(r"\[y/N\]")
    child.sendintr()
    child.expect_exact("no (Ctrl-C)")
    child.expect_exact("interrupted")
    child.expect_exact(">>> ")
    assert list(tmp_path.iterdir()) == [], "nothing was written"
    # the turn Ctrl-C stopped is kept with its refused call, so the conversation goes on from there
    child.send("/bye\r")
    child.expect(pexpect.EOF)
    conv = Store().load(Store().list(1)[0].id)
    tools = [e for e in conv.entries if e.role == "tool"]
    assert len(tools) == 2 and all(e.tool is not None and e.tool["refused"] for e in tools)
