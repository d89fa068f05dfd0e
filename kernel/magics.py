"""Cell parsing for the llmspell kernel: magic lines on top, the prompt below; names, help and completion."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass

from llmspell.errors import LLMSpellError


class MagicError(LLMSpellError):
    """A magic that does not exist, or one given arguments it cannot take."""

    kind = "magic_error"

    def __init__(self, message: str, *, hint: str | None = None, incomplete: bool = False) -> None:
        super().__init__(message, hint=hint)
        #: the magic wants lines below it and has none yet: while typing, the cell is incomplete, not invalid
        self.incomplete = incomplete


@dataclass(frozen=True)
class MagicSpec:
    """What one magic is called, what it takes and what it does (for %help, completion and checks)."""

    name: str
    usage: str
    help: str
    #: "none": no argument; "optional": may have one; "required": must have one
    args: str = "optional"
    #: the magic takes the prompt below it (instead of the prompt going to the conversation)
    uses_prompt: bool = False
    #: a magic that uses the prompt may also stand without one (it then does something else)
    prompt_optional: bool = False
    #: the argument is a model spec (for completion)
    models: bool = False
    #: model names are completed only after this first word of the argument (e.g. "pool"); empty: after any
    models_after: str = ""
    #: a further check of the argument and the prompt when the cell is parsed; raises MagicError
    check: Callable[[str, str], None] | None = None


#: what %arena's first word may be (tag and category are one thing under two names)
ARENA_WORDS = ("pool", "vote", "tag", "category", "leaderboard")
_ARENA_USAGE = "%arena [pool SPEC SPEC ... / vote a/b/tie/bad / tag [CATEGORY] / leaderboard [CATEGORY]]"


def check_arena(arg: str, prompt: str) -> None:
    """Refuse a %arena whose words or prompt do not fit, before anything of the cell runs."""
    words = arg.split()
    word = words[0].lower() if words else ""
    if word and word not in ARENA_WORDS:
        close = difflib.get_close_matches(word, ARENA_WORDS, n=1, cutoff=0.6)
        hint = f"did you mean %arena {close[0]}? " if close else ""
        raise MagicError(f"%arena does not know {words[0]!r}", hint=f"{hint}usage: {_ARENA_USAGE}")
    if word == "vote" and len(words) != 2:
        raise MagicError("%arena vote needs one choice: a, b, tie or bad", hint="e.g. %arena vote a")
    if word in ("vote", "leaderboard") and prompt:
        raise MagicError(
            f"%arena {word} takes no prompt below it",
            hint="a prompt goes below a plain %arena (or %arena pool / tag) in its own cell",
        )


_EMBED_USAGE = "%embed TEXT, or %embed alone with one text per line below it"


def check_embed(arg: str, prompt: str) -> None:
    """Refuse a %embed with no text, or with texts both on its line and below it."""
    if arg and prompt:
        raise MagicError(
            "%embed takes one text on its line or texts on the lines below it, not both",
            hint="put every text on a line of its own below a plain %embed",
        )
    if not arg and not prompt:
        raise MagicError(
            "%embed needs a text on its line, or texts on the lines below it (one per line)",
            hint=f"usage: {_EMBED_USAGE}",
            incomplete=True,
        )


TOOLS_USAGE = "%tools [NAMES [--root DIR] [--yes] [--tool-choice CHOICE] [--max-steps N] | off]"


@dataclass(frozen=True)
class ToolsArgs:
    """What a %tools line asks for."""

    names: tuple[str, ...]
    root: str | None = None
    yes: bool = False
    tool_choice: str = "auto"
    max_steps: int | None = None


def parse_tools(arg: str) -> ToolsArgs:
    """Read a %tools argument (names, then flags); a flag without its value, or an unknown one, is a MagicError."""
    import shlex

    try:
        words = shlex.split(arg)
    except ValueError as exc:
        raise MagicError(f"%tools cannot read {arg!r}: {exc}", hint=f"usage: {TOOLS_USAGE}") from None
    names: list[str] = []
    found: dict[str, str] = {}
    yes = False
    i = 0
    while i < len(words):
        word = words[i]
        if word == "--yes":
            yes = True
        elif word in ("--root", "--tool-choice", "--max-steps"):
            if i + 1 >= len(words):
                raise MagicError(f"%tools {word} needs a value", hint=f"usage: {TOOLS_USAGE}")
            found[word] = words[i + 1]
            i += 1
        elif word.startswith("-"):
            raise MagicError(f"%tools does not know {word!r}", hint=f"usage: {TOOLS_USAGE}")
        else:
            names.extend(n for n in re.split(r"[,\s]+", word) if n)
        i += 1
    steps = found.get("--max-steps")
    if steps is not None and (not steps.isdigit() or int(steps) < 1):
        raise MagicError(f"%tools --max-steps takes a whole number of at least 1, not {steps!r}")
    if (found or yes) and not names:
        raise MagicError("%tools flags go with tool names", hint="e.g. %tools read_file --root notes")
    return ToolsArgs(
        tuple(dict.fromkeys(names)),
        found.get("--root"),
        yes,
        found.get("--tool-choice", "auto"),
        int(steps) if steps is not None else None,
    )


def check_tools(arg: str, prompt: str) -> None:
    """Refuse a %tools line whose flags do not read, before anything of the cell runs."""
    parse_tools(arg)


MAGICS: dict[str, MagicSpec] = {
    m.name: m
    for m in [
        MagicSpec(
            "model", "%model [SPEC]", "switch the conversation to a model (no SPEC: show the current one)", models=True
        ),
        MagicSpec("models", "%models", "a table of every model of every backend", args="none"),
        MagicSpec("status", "%status", "each backend: ready or not (and why), version, device, models", args="none"),
        MagicSpec("system", "%system [TEXT]", "set the system prompt (no TEXT: clear it)"),
        MagicSpec(
            "set",
            "%set KEY=VALUE ...",
            "set generation options, e.g. temperature=0.2 seed=1 max_tokens=200 (no argument: show them;"
            " KEY=default resets one)",
        ),
        MagicSpec("reset", "%reset", "start a new conversation (model, system prompt and options stay)", args="none"),
        MagicSpec(
            "history",
            "%history [list | open ID]",
            "show this conversation and its id; `list`: recent stored conversations; `open ID`: continue one",
        ),
        MagicSpec("pull", "%pull SPEC", "download a model, with progress", args="required", models=True),
        MagicSpec(
            "compare",
            "%compare SPEC1 SPEC2 [...]",
            "send the prompt below to each model, one after another, each with its stats",
            args="required",
            uses_prompt=True,
            models=True,
        ),
        MagicSpec(
            "arena",
            _ARENA_USAGE,
            "blind votes between models: with a prompt below, two models of the pool (up to four: [arena] size)"
            " answer it one after the other, shown only as A, B, ... (no names, and no speeds unless [arena]"
            " hide_stats = false), with this notebook's %set options and %system prompt; the conversation is not"
            " touched."
            " `%arena vote a` (b, tie, or bad: both bad) records the vote and reveals the models and their speeds."
            " `%arena pool SPEC SPEC ...` sets the pool (no SPEC: shows it; default: the config's [arena] pool,"
            " else every model on this machine). `%arena tag CATEGORY` (or `category`) tags the next votes;"
            " no CATEGORY clears it. `%arena` alone or `%arena leaderboard [CATEGORY]` shows the ratings with"
            " their 95% intervals. The stop button stops a round, which then cannot be voted",
            uses_prompt=True,
            prompt_optional=True,
            models=True,
            models_after="pool",
            check=check_arena,
        ),
        MagicSpec(
            "json",
            "%json [SCHEMA]",
            "answer the prompt below as JSON matching SCHEMA (a JSON schema; none: any JSON);"
            " the parsed value is the cell's result",
            uses_prompt=True,
        ),
        MagicSpec(
            "embed",
            "%embed [TEXT]",
            "embedding vectors from the current model: of TEXT, or of each line below a plain %embed; shows each"
            " vector's dimensions, norm and first values and, for two texts or more, their cosine similarities;"
            " the vectors are the cell's result (application/json)",
            uses_prompt=True,
            prompt_optional=True,
            check=check_embed,
        ),
        MagicSpec(
            "save", "%save FILE", "write the conversation to FILE (.json: JSON, otherwise Markdown)", args="required"
        ),
        MagicSpec(
            "tools",
            TOOLS_USAGE,
            "tools the model may call in the next prompts: built-in names (read_file, write_file, list_directory,"
            " search_files, search_in_files, file_info, make_directory, run_shell) and MCP server names, comma or"
            " space separated; `--root DIR` confines the file tools (default: tools.root or the kernel's folder);"
            " `--yes` lets tools that change things run without asking (otherwise the notebook asks, or refuses"
            " where it cannot ask); `--tool-choice auto|none|required|NAME` for the first step; `--max-steps N`."
            " No argument: list them; `off`: none",
            check=check_tools,
        ),
        MagicSpec("echo", "%echo TEXT", "print TEXT to the cell's standard output (handy in notebooks and tests)"),
        MagicSpec("help", "%help [MAGIC]", "this list, or the help of one magic"),
    ]
}

_MAGIC_LINE = re.compile(r"^%(?P<name>[A-Za-z_][\w-]*)?(?P<rest>.*)$")


@dataclass(frozen=True)
class Magic:
    """One magic line of a cell: the magic and its argument text."""

    name: str
    arg: str
    line: int

    @property
    def spec(self) -> MagicSpec:
        """The magic's description."""
        return MAGICS[self.name]


@dataclass(frozen=True)
class Cell:
    """A parsed cell: its magic lines in order, then the prompt (possibly empty)."""

    magics: tuple[Magic, ...]
    prompt: str


def _unknown(name: str) -> MagicError:
    close = difflib.get_close_matches(name, list(MAGICS), n=2, cutoff=0.6) if name else []
    hint = f"did you mean {' or '.join('%' + c for c in close)}? " if close else ""
    return MagicError(
        f"unknown magic %{name}" if name else "a magic needs a name after %",
        hint=f"{hint}%help lists the magics: {', '.join('%' + m for m in MAGICS)}",
    )


def parse_cell(code: str) -> Cell:
    """Split a cell into its leading magic lines and the prompt; every magic is checked before anything runs."""
    lines = code.splitlines()
    magics: list[Magic] = []
    i = 0
    while i < len(lines):
        stripped = lines[i].strip()
        if not stripped:
            i += 1
            continue
        if not stripped.startswith("%"):
            break
        found = _MAGIC_LINE.match(stripped)
        name = (found.group("name") or "") if found else ""
        rest = found.group("rest") if found else ""
        if name not in MAGICS or (rest and not rest[0].isspace()):
            raise _unknown(name + (rest.split()[0] if rest and not rest[0].isspace() else ""))
        magics.append(Magic(name, rest.strip(), i + 1))
        i += 1
    prompt = "\n".join(lines[i:]).strip()
    for m in magics:
        if m.spec.args == "none" and m.arg:
            raise MagicError(f"%{m.name} takes no argument, not {m.arg!r}", hint=f"usage: {m.spec.usage}")
        if m.spec.args == "required" and not m.arg:
            raise MagicError(f"%{m.name} needs an argument", hint=f"usage: {m.spec.usage}")
        if m.spec.uses_prompt and not m.spec.prompt_optional and not prompt:
            raise MagicError(f"%{m.name} needs a prompt on the lines below it", hint=f"usage: {m.spec.usage}\nPROMPT")
        if m.spec.check is not None:
            m.spec.check(m.arg, prompt)
    users = [m for m in magics if m.spec.uses_prompt]
    if len(users) > 1:
        raise MagicError(
            f"%{users[0].name} and %{users[1].name} both want the prompt; use one per cell",
            hint="split the cell in two",
        )
    return Cell(tuple(magics), prompt)


#: a whole word of a magic's argument that stands for an earlier answer: _, __ or _N
_ANSWER_REF = re.compile(r"(?<!\S)(?:_(?P<count>\d+)|(?P<back>__?))(?!\S)")
_ANSWERS_HELP = "_ is the last answer, __ the one before it, _N the answer of cell N (Out[N])"


def expand_answers(arg: str, answers: dict[int, str]) -> str:
    """Replace each standalone ``_``, ``__`` and ``_N`` in a magic's argument by that earlier answer's text."""

    def one(found: re.Match[str]) -> str:
        if found.group("count") is not None:
            n = int(found.group("count"))
            if n not in answers:
                have = ", ".join(f"_{k}" for k in sorted(answers)[-5:]) or "none yet"
                raise MagicError(f"no answer in Out[{n}] for _{n}", hint=f"answers so far: {have}; {_ANSWERS_HELP}")
            return answers[n]
        back = len(found.group("back"))
        if len(answers) < back:
            what = "no answer yet" if not answers else "only one answer so far"
            raise MagicError(f"{what}, so {found.group('back')} stands for nothing", hint=_ANSWERS_HELP)
        return answers[sorted(answers)[-back]]

    return _ANSWER_REF.sub(one, arg)


def help_markdown(name: str | None = None) -> str:
    """The %help text: every magic, or one."""
    if name:
        key = name.lstrip("%")
        if key not in MAGICS:
            raise _unknown(key)
        m = MAGICS[key]
        return f"`{m.usage}`: {m.help}"
    rows = "\n".join(f"| `{m.usage}` | {m.help} |" for m in MAGICS.values())
    return (
        "A cell of plain text is a prompt to the current model; the conversation carries across cells.\n"
        "Magics go on the first lines of a cell; the prompt (if any) follows them.\n\n"
        "| magic | what it does |\n|---|---|\n" + rows + "\n\nIn a magic's argument, `_` is the last answer, `__` the"
        " one before it and `_N` the answer of cell N (`Out[N]`), e.g. `%echo _` or `%system _3`.\n\n"
        "Interrupt (the stop button) stops an answer and keeps what arrived; the cell ends as an error"
        " (Interrupted), so Run All stops there. Tab completes magics and model names; Shift-Tab on a model name"
        " shows its details."
    )


def is_complete(code: str) -> str:
    """The kernel's is_complete answer: 'invalid' for a bad magic, 'incomplete' inside a code fence or after '\\'."""
    try:
        parse_cell(code)
    except MagicError as exc:
        # a prompt (or the texts of %embed) is still being typed below a magic that wants one
        if exc.incomplete or "needs a prompt" in exc.message:
            return "incomplete"
        return "invalid"
    if code.count("```") % 2 == 1 or code.rstrip("\n").endswith("\\"):
        return "incomplete"
    return "complete"


def completion_context(code: str, cursor: int) -> tuple[str, str, int]:
    """What is being completed at ``cursor``: ("magic"|"model"|"option"|"", the word so far, where it starts)."""
    line_start = code.rfind("\n", 0, cursor) + 1
    line = code[line_start:cursor]
    word_start = max(line.rfind(" "), line.rfind("\t")) + 1
    word = line[word_start:]
    stripped = line.lstrip()
    if stripped.startswith("%") and not any(ch.isspace() for ch in stripped):
        return "magic", stripped, line_start + len(line) - len(stripped)
    first = line.split(maxsplit=1)[0] if line.strip() else ""
    spec = MAGICS.get(first[1:]) if first.startswith("%") else None
    if spec is not None and spec.models and word_start > 0:
        before = line[:word_start].split()[1:]
        if not spec.models_after or before[:1] == [spec.models_after]:
            return "model", word, line_start + word_start
    if first == "%set" and word_start > 0 and "=" not in word:
        return "option", word, line_start + word_start
    return "", word, line_start + word_start


def word_at(code: str, cursor: int) -> str:
    """The whitespace-delimited word under the cursor (for inspect)."""
    cursor = min(max(cursor, 0), len(code))
    start = cursor
    while start > 0 and not code[start - 1].isspace():
        start -= 1
    end = cursor
    while end < len(code) and not code[end].isspace():
        end += 1
    return code[start:end]
