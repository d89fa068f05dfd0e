"""Tool calling on the embedded engine: the formats a model writes its calls in, and a conversation's tool turns.

A :class:`ToolFormat` holds everything about one way of calling tools: how the tools reach the prompt, the text
that opens a call (the trigger of the lazy grammar, and where the streamed text stops being shown), the grammar a
call must follow, and how the calls are read back out of the answer. The model's own chat template picks it:

- ``hermes``: the template renders ``tools`` and writes ``<tool_call>{"name": .., "arguments": {..}}</tool_call>``
  (Hermes, Qwen 2.5/3, and most ChatML models trained for tools).
- ``llama3``: the template renders ``tools`` and the model answers with a bare ``{"name": .., "parameters": {..}}``
  (Llama 3.1-3.3); one call per turn, at the start of the answer.
- ``mistral``: ``[TOOL_CALLS][{"name": .., "arguments": {..}}, ...]`` (Mistral, Mixtral, Ministral).
- ``generic``: a template that does not render tools (SmolLM2, Gemma 3 and most small models), or renders them in a
  way none of the above reads. The engine adds a system section listing the tools and asking for the hermes call
  text, ``<tool_call>{"name": .., "arguments": {..}}</tool_call>``; the conversation's earlier calls are written
  into the assistant turns in that text, and each tool result becomes a user turn that starts with
  ``Tool result (NAME, id ID):`` (results in a row are one turn, ending with "Now answer the user in plain words."
  when they end the conversation), so a template that knows only user and assistant takes the conversation.

``tool_choice``: "auto" (or none given) lets the model write freely; once it writes a call's opening, a lazy grammar
holds the rest of the call to the tools' schemas. "required" and a named tool put the grammar on from the first
token. "none" renders no tools (earlier calls and results still render) and reads no calls back: the answer is
text, as the OpenAI API means it.

A call whose text is not a JSON object (only possible without a grammar, e.g. when it was cut short) comes back with
its arguments text in ``ToolCall.raw``, so the tool loop tells the model its arguments were invalid. A call cut by
``max_tokens`` comes back the same way (the done chunk's ``stop_reason`` is "length"). A call that does not even
name a tool is not a call: its text is returned as text on the done chunk.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import secrets
import string
from dataclasses import dataclass
from typing import Any, Literal

from llmspell.errors import InvalidOptions
from llmspell.types import Message, ToolCall

Choice = Literal["auto", "none", "required"] | str
FormatName = Literal["generic", "hermes", "llama3", "mistral"]

#: whitespace a grammar allows around a call (bounded: an unbounded run let a small model write newlines forever)
_WS_RULE = "tool-ws ::= [ \\t\\n]{0,4}"
_ID_CHARS = string.ascii_letters + string.digits


def new_call_id() -> str:
    """A fresh call id in the OpenAI style (``call_`` and 24 letters or digits)."""
    return "call_" + "".join(secrets.choice(_ID_CHARS) for _ in range(24))


@dataclass(frozen=True)
class LazyGrammar:
    """A grammar that applies only once the answer matches one of ``patterns`` (or a ``tokens`` id is written)."""

    grammar: Any
    patterns: tuple[str, ...]
    tokens: tuple[int, ...]


@dataclass(frozen=True)
class ToolFormat:
    """One way of writing tool calls: its opening text, the key of the arguments, whether the template renders
    the tools itself (``native``) or the engine describes them (generic)."""

    name: FormatName
    opening: str
    closing: str = ""
    args_key: str = "arguments"
    native: bool = True

    # ----- the grammar ------------------------------------------------------------------------------------

    def root_rule(self, alternatives: str, parallel: bool) -> str:
        """The grammar's root for calls whose JSON object is one of ``alternatives`` (a GBNF alternation): one
        call, or with ``parallel`` one or more."""
        if self.name == "llama3":
            return f"root ::= ({alternatives}) tool-ws"
        if self.name == "mistral":
            item = f"({alternatives})"
            rest = f'("," tool-ws {item})*' if parallel else ""
            return f'root ::= "[TOOL_CALLS]" tool-ws "[" tool-ws {item} {rest} "]" tool-ws'
        call = f"{_literal(self.opening)} tool-ws ({alternatives}) tool-ws {_literal(self.closing)}"
        repeat = "(tool-ws tool-call)*" if parallel else ""
        return f"root ::= tool-call {repeat} tool-ws\ntool-call ::= {call}"

    def trigger_pattern(self) -> str:
        """The regular expression (llama.cpp's, matched against the whole answer so far) that starts a lazy
        grammar; its group is where the grammar's text begins."""
        if self.name == "llama3":
            return r'^\s*(\{\s*"name")[\s\S]*'
        return r"[\s\S]*?(" + re.escape(self.opening) + r")[\s\S]*"

    # ----- reading an answer ------------------------------------------------------------------------------

    def call_start(self, text: str, at_start: bool) -> int | None:
        """Where a call begins in ``text`` (``at_start``: nothing but whitespace was written before it)."""
        if self.name == "llama3":
            stripped = text.lstrip()
            return len(text) - len(stripped) if at_start and stripped.startswith("{") else None
        i = text.find(self.opening)
        return i if i >= 0 else None

    def safe_length(self, text: str, at_start: bool) -> int:
        """How much of ``text`` (with no call in it) can be shown: the rest may be the beginning of a call."""
        if self.name == "llama3":
            return 0 if at_start and not text.strip() else len(text)
        for k in range(min(len(self.opening) - 1, len(text)), 0, -1):
            if self.opening.startswith(text[-k:]):
                return len(text) - k
        return len(text)

    def parse(self, held: str) -> tuple[list[ToolCall], str]:
        """The calls in ``held`` (the answer from a call's opening on) and any text after them."""
        if self.name == "llama3":
            return _json_calls(held, self.args_key)
        if self.name == "mistral":
            return _json_calls(held.split(self.opening, 1)[-1], self.args_key)
        calls: list[ToolCall] = []
        rest: list[str] = []
        for segment in held.split(self.opening)[1:]:
            inner, closed, after = segment.partition(self.closing)
            call = _one_call(inner, self.args_key)
            if call is None:
                rest.append(self.opening + segment)
                continue
            calls.append(call)
            if closed:
                rest.append(after)
        text = "".join(rest).strip()
        cut = self.safe_length(text, False)  # the beginning of one more call, cut by max_tokens, is not text
        return calls, text[:cut].rstrip()

    # ----- the conversation -------------------------------------------------------------------------------

    def call_text(self, call: ToolCall) -> str:
        """A call as the model writes it in this format (how an earlier call appears in a generic prompt)."""
        arguments: Any = call.arguments if not call.raw else call.raw
        body = json.dumps({"name": call.name, self.args_key: arguments}, ensure_ascii=False)
        return f"{self.opening}{body}{self.closing}"


GENERIC = ToolFormat("generic", "<tool_call>", "</tool_call>", native=False)
HERMES = ToolFormat("hermes", "<tool_call>", "</tool_call>")
LLAMA3 = ToolFormat("llama3", "{", args_key="parameters")
MISTRAL = ToolFormat("mistral", "[TOOL_CALLS]")


def _literal(text: str) -> str:
    return json.dumps(text)


def _one_call(text: str, args_key: str) -> ToolCall | None:
    """One call from its JSON text; a text that is not JSON still gives a call when it names its tool."""
    text = text.strip()
    try:
        value, _ = json.JSONDecoder().raw_decode(text)
    except json.JSONDecodeError:
        value = None
    if isinstance(value, dict) and isinstance(value.get("name"), str) and value["name"]:
        return _call_of(value, args_key)
    name = re.search(r'"name"\s*:\s*"([^"]+)"', text)
    if name is None:
        return None
    found = re.search(r'"(?:arguments|parameters)"\s*:\s*(.*)$', text, re.DOTALL)
    raw = found.group(1).strip() if found else text
    if raw.endswith("}") and raw.count("}") > raw.count("{"):
        raw = raw[:-1].rstrip()  # the call's own closing brace
    return ToolCall(new_call_id(), name.group(1), {}, raw=raw or text)


def _call_of(value: dict[str, Any], args_key: str) -> ToolCall:
    arguments = value.get(args_key, value.get("arguments", value.get("parameters")))
    if isinstance(arguments, dict):
        return ToolCall(new_call_id(), value["name"], arguments)
    if isinstance(arguments, str) or arguments is None:
        return ToolCall.parse(new_call_id(), value["name"], arguments)
    return ToolCall(new_call_id(), value["name"], {}, raw=json.dumps(arguments))


def _json_calls(text: str, args_key: str) -> tuple[list[ToolCall], str]:
    """Calls written as one JSON object or a list of them (llama3, mistral)."""
    text = text.strip()
    try:
        value, end = json.JSONDecoder().raw_decode(text)
    except json.JSONDecodeError:
        call = _one_call(text, args_key)
        return ([call], "") if call is not None else ([], text)
    items = value if isinstance(value, list) else [value]
    calls = [_call_of(v, args_key) for v in items if isinstance(v, dict) and isinstance(v.get("name"), str)]
    return (calls, text[end:].strip()) if calls else ([], text)


# ----- the request: tools and tool_choice -------------------------------------------------------------------


def check_tools(tools: Any) -> tuple[dict[str, Any], ...]:
    """The tools in the OpenAI shape, checked; each error names the tool and what is wrong with it."""
    if tools is None:
        return ()
    if not isinstance(tools, list | tuple):
        raise InvalidOptions("tools must be a list of {'type': 'function', 'function': {...}}")
    out: list[dict[str, Any]] = []
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type", "function") != "function" or not isinstance(function, dict):
            raise InvalidOptions(f"tool {i + 1} must be {{'type': 'function', 'function': {{'name': ...}}}}")
        name = function.get("name")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", name):
            raise InvalidOptions(
                f"tool {i + 1} has no usable name ({name!r})", hint="a name of letters, digits, _ . : or -"
            )
        params = function.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(params, dict):
            raise InvalidOptions(f"the parameters of tool {name!r} must be a JSON schema object")
        out.append({"type": "function", "function": {**function, "parameters": params}})
    names = [t["function"]["name"] for t in out]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InvalidOptions(f"tool names must differ: {', '.join(twice)} is given more than once")
    return tuple(out)


def check_choice(choice: Any, tools: tuple[dict[str, Any], ...]) -> Choice:
    """``tool_choice`` as "auto", "none", "required" or the name of one of ``tools``; anything else is refused."""
    names = [t["function"]["name"] for t in tools]
    if choice is None:
        return "auto"
    if choice in ("auto", "none", "required"):
        if choice == "required" and not tools:
            raise InvalidOptions('tool_choice "required" was given without any tools', hint="send tools with it")
        return str(choice)
    name = None
    if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("function"), dict):
        name = choice["function"].get("name")
    if not isinstance(name, str):
        raise InvalidOptions(
            f"tool_choice {choice!r:.80} is not one the engine takes",
            hint='use "auto", "none", "required" or {"type": "function", "function": {"name": ...}}',
        )
    if name not in names:
        raise InvalidOptions(
            f"tool_choice names {name!r}, which is not among the tools sent",
            hint=f"the tools are: {', '.join(names) or 'none'}",
        )
    return name


# ----- the grammar ------------------------------------------------------------------------------------------


def call_grammar(
    fmt: ToolFormat, tools: tuple[dict[str, Any], ...], only: str | None = None, *, parallel: bool = False
) -> Any:
    """The llama.cpp grammar of ``fmt``'s calls to ``tools`` (or to the one named ``only``), their arguments held
    to each tool's parameters schema: one call per answer (as llama-server without parallel_tool_calls: a small
    model let to go on repeats its call until max_tokens), or several with ``parallel``. A schema no grammar can
    be made from is an InvalidOptions naming its tool."""
    chosen = [t["function"] for t in tools if only is None or t["function"]["name"] == only]
    key = json.dumps([fmt.name, chosen, parallel], sort_keys=True)
    return _call_grammar(key)


@functools.lru_cache(maxsize=32)
def _call_grammar(key: str) -> Any:
    from llama_cpp.llama_grammar import LlamaGrammar, SchemaConverter

    from llmspell.backends._llama_prompt import unsatisfiable_schema

    name, functions, parallel = json.loads(key)
    fmt = FORMATS[name]
    converter = SchemaConverter(  # type: ignore[no-untyped-call]  # llama-cpp-python's converter is untyped
        prop_order={"name": 0, fmt.args_key: 1}, allow_fetch=False, dotall=False, raw_pattern=False
    )
    rules = []
    for i, function in enumerate(functions):
        tool, params = function["name"], function["parameters"]
        problem = unsatisfiable_schema(params)
        if problem:
            raise InvalidOptions(f"tool {tool!r}: {problem}", hint="give its parameters a schema some call can match")
        schema = {
            "type": "object",
            "properties": {"name": {"const": tool}, fmt.args_key: params},
            "required": ["name", fmt.args_key],
        }
        try:
            resolved = converter.resolve_refs(schema, f"tool-{i}")
            rules.append(converter.visit(resolved, f"tool{i}"))  # type: ignore[no-untyped-call]
            # each tool alone, so a schema the engine cannot parse is reported by its name
            LlamaGrammar.from_string(_grammar_text(converter, fmt, rules[-1], parallel), verbose=False)
        except InvalidOptions:
            raise
        except Exception as exc:  # the converter and the engine raise plain exceptions for what they cannot do
            raise InvalidOptions(
                f"the parameters schema of tool {tool!r} cannot be turned into a grammar: {exc}",
                hint="simplify that tool's parameters (plain types, enums, objects and arrays work)",
            ) from None
    return LlamaGrammar.from_string(_grammar_text(converter, fmt, " | ".join(rules), parallel), verbose=False)


def _grammar_text(converter: Any, fmt: ToolFormat, alternatives: str, parallel: bool) -> str:
    rules = {k: v for k, v in converter._rules.items() if k != "root"}
    body = "\n".join(f"{k} ::= {v}" for k, v in sorted(rules.items()))
    return f"{fmt.root_rule(alternatives, parallel)}\n{_WS_RULE}\n{body}\n"


# ----- the template: which format, and the conversation for it ---------------------------------------------

FORMATS: dict[str, ToolFormat] = {f.name: f for f in (GENERIC, HERMES, LLAMA3, MISTRAL)}

_PROBE_NAME = "llmspell_probe_tool"
_PROBE = {
    "type": "function",
    "function": {
        "name": _PROBE_NAME,
        "description": "llmspell probe description",
        "parameters": {"type": "object", "properties": {"probe_arg": {"type": "string"}}, "required": ["probe_arg"]},
    },
}


def detect_format(template: Any, source: str) -> ToolFormat:
    """The format a chat template (``template``: a compiled ChatTemplate of ``source``) expects: one it renders
    tools for and whose call text it shows, else GENERIC."""
    try:
        shown = template.render([{"role": "user", "content": "hi"}], tools=[_PROBE], seconds=1.0)
    except Exception:  # a template that cannot take tools at all
        return GENERIC
    if _PROBE_NAME not in shown:
        return GENERIC
    if "[TOOL_CALLS]" in source:
        return MISTRAL
    if "<tool_call>" in source:
        return HERMES
    if "<|python_tag|>" in source or ("ipython" in source and '"parameters"' in source):
        return LLAMA3
    return GENERIC


def generic_section(tools: tuple[dict[str, Any], ...], choice: Choice) -> str:
    """The system section that describes the tools to a model whose template does not (the generic format)."""
    listed = json.dumps(
        [
            {k: v for k, v in t["function"].items() if k in ("name", "description", "parameters")}
            for t in tools
            if choice in ("auto", "required") or t["function"]["name"] == choice
        ],
        ensure_ascii=False,
    )
    return (
        "You can call these tools:\n"
        f"{listed}\n\n"
        "To call a tool, write exactly:\n"
        '<tool_call>{"name": "TOOL_NAME", "arguments": {ARGUMENTS AS JSON}}</tool_call>\n'
        "Write one <tool_call> per call. Each result comes back in a message that starts with "
        '"Tool result". When you need no tool, answer normally.'
    )


def conversation(
    messages: list[Message], fmt: ToolFormat, tools: tuple[dict[str, Any], ...], choice: Choice
) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """The messages (as template dicts) and the ``tools`` value a template renders for ``fmt``.

    Native formats get the OpenAI shape with each call's arguments as an object (templates iterate them or
    ``tojson`` them). The generic format gets plain user and assistant turns (see the module's docstring)."""
    shown = [t for t in tools if choice in ("auto", "required") or t["function"]["name"] == choice]
    if fmt.native:
        return [_native(m, fmt) for m in messages], (list(shown) or None)
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == "tool":
            who = f"{m.name}, id {m.tool_call_id}" if m.name else f"id {m.tool_call_id}"
            item = {"role": "user", "content": f"Tool result ({who}):\n{m.content}"}
        elif m.tool_calls:
            calls = "\n".join(fmt.call_text(c) for c in m.tool_calls)
            item = {"role": "assistant", "content": f"{m.content}\n{calls}" if m.content else calls}
        else:
            item = {"role": m.role, "content": m.content}
        if out and out[-1]["role"] == item["role"] == "user":
            # several results in a row (or a result then a question) are one turn: templates want turns to alternate
            out[-1] = {"role": "user", "content": out[-1]["content"] + "\n\n" + item["content"]}
        else:
            out.append(item)
    if messages and messages[-1].role == "tool":
        # without it the small models this format is for (SmolLM2) copied their last call again and again
        out[-1] = {"role": "user", "content": out[-1]["content"] + "\n\n" + _ANSWER_NOW}
    if shown:
        section = generic_section(tuple(shown), choice)
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{section}"}
        else:
            out.insert(0, {"role": "system", "content": section})
    return out, None


#: the line after a generic conversation's last tool results
_ANSWER_NOW = "Now answer the user in plain words."


def _native(m: Message, fmt: ToolFormat) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.tool_calls:
        out["tool_calls"] = [
            {
                "id": _call_id(c.id, fmt),
                "type": "function",
                "function": {"name": c.name, "arguments": c.arguments if not c.raw else c.raw},
            }
            for c in m.tool_calls
        ]
    if m.role == "tool":
        out["tool_call_id"] = _call_id(m.tool_call_id or "", fmt)
        if m.name:
            out["name"] = m.name
    return out


def _call_id(call_id: str, fmt: ToolFormat) -> str:
    # Mistral's templates refuse any id but nine letters and digits; the same id always maps to the same nine
    if fmt.name != "mistral" or re.fullmatch(r"[A-Za-z0-9]{9}", call_id):
        return call_id
    return hashlib.sha256(call_id.encode()).hexdigest()[:9]


class CallReader:
    """Splits a streamed answer into the text shown as it comes and the tool calls, which are held back."""

    def __init__(self, fmt: ToolFormat) -> None:
        self.fmt = fmt
        self._pending = ""
        self._held: str | None = None
        self._at_start = True

    def feed(self, text: str) -> str:
        """The part of ``text`` that can be shown now (what may open a call is kept until it is clear)."""
        if self._held is not None:
            self._held += text
            return ""
        self._pending += text
        start = self.fmt.call_start(self._pending, self._at_start)
        if start is not None:
            shown, self._held, self._pending = self._pending[:start], self._pending[start:], ""
        else:
            safe = self.fmt.safe_length(self._pending, self._at_start)
            shown, self._pending = self._pending[:safe], self._pending[safe:]
        if shown.strip():
            self._at_start = False
        return shown

    @property
    def in_call(self) -> bool:
        """Whether the answer has opened a call."""
        return self._held is not None

    def finish(self) -> tuple[str, tuple[ToolCall, ...]]:
        """The text still to show, and the calls, once the answer has ended."""
        if self._held is None:
            return self._pending, ()
        calls, rest = self.fmt.parse(self._held)
        if not calls:
            return self._pending + self._held, ()
        return rest, tuple(calls)
