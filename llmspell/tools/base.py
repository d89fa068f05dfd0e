"""The tool model: a Tool, its schema derived from a Python function, argument validation, the registry, results.

A model asks for a tool by name with JSON arguments; :meth:`ToolRegistry.call` parses and validates them against
the tool's JSON schema before anything runs, asks the user before side effects, runs the handler with a timeout
and always answers with a :class:`ToolResult` whose ``content`` is what the model is told. Nothing a model sends
can make ``call`` raise (cancellation aside, which propagates as asyncio requires).
"""

from __future__ import annotations

import asyncio
import enum
import functools
import inspect
import json
import re
import time
import types
import typing
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Union

import jsonschema
from jsonschema.exceptions import ValidationError

from llmspell.errors import LLMSpellError, ToolError

__all__ = [
    "ConfirmCallback",
    "Tool",
    "ToolRegistry",
    "ToolResult",
    "tool_from_function",
]

#: what a face passes to ask the user: given the tool and its (validated) arguments, yes or no
ConfirmCallback = Callable[["Tool", dict[str, Any]], "Awaitable[bool] | bool"]

# OpenAI's rule for function names; Ollama and llama.cpp templates accept the same set
_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def _schema_validator(name: str, parameters: Mapping[str, Any]) -> jsonschema.protocols.Validator:
    """A validator for a tool's parameter schema, or a ToolError saying what is wrong with the schema."""
    if not isinstance(parameters, Mapping) or parameters.get("type") != "object":
        raise ToolError(
            f"tool {name!r}: its parameters must be a JSON schema of type object, got {parameters!r:.80}",
            hint='Use {"type": "object", "properties": {...}}.',
        )
    cls = jsonschema.validators.validator_for(parameters, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(parameters)
    except jsonschema.SchemaError as err:
        raise ToolError(f"tool {name!r}: its parameter schema is invalid: {err.message}") from None
    return cls(parameters)


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ToolError(
            f"tool name {name!r} is not allowed: use 1-64 letters, digits, '_' or '-'",
            hint="Models and the OpenAI API only accept such names; pass name=... to rename it.",
        )


@dataclass
class Tool:
    """Something a model may call: a name, what it is for, a JSON schema of its arguments and the code to run."""

    name: str
    description: str
    #: a JSON schema of type object; the model's arguments are validated against it before the handler runs
    parameters: dict[str, Any]
    #: sync or async; called with the validated arguments as keyword arguments
    handler: Callable[..., Any]
    #: True: changes something (files, processes), so the user must confirm each call unless it is allowed
    side_effects: bool = False
    #: where it comes from, for listings: "python", "builtin", "mcp:<server>"
    source: str = "python"
    _validator: jsonschema.protocols.Validator = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_name(self.name)
        self._validator = _schema_validator(self.name, self.parameters)

    def openai_schema(self) -> dict[str, Any]:
        """The tool in the OpenAI ``tools`` shape (also what Ollama and chat templates take)."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }

    def validate(self, arguments: Mapping[str, Any]) -> str | None:
        """None if the arguments fit the schema, else one line naming each wrong argument and what is wrong."""
        errors = sorted(self._validator.iter_errors(arguments), key=lambda e: (list(e.absolute_path), e.message))
        if not errors:
            return None
        lines = [_describe_error(e) for e in errors[:3]]
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        return "; ".join(dict.fromkeys(lines)) + more

    @property
    def is_async(self) -> bool:
        """Whether the handler is a coroutine function (run on the event loop, cancellable)."""
        return _is_async_callable(self.handler)


@dataclass
class ToolResult:
    """The outcome of one tool call: what the model is told, and what a face shows and the store keeps."""

    name: str
    #: the arguments as parsed (a dict), or the raw text when it was not a JSON object
    arguments: dict[str, Any] | str
    #: what the model is told: the handler's output as text, or the error / refusal in words
    content: str
    ok: bool
    error: str | None = None
    #: how long the handler ran (0 when it never started)
    seconds: float = 0.0
    #: the user said no (or nobody could be asked): the handler never ran
    refused: bool = False
    #: the call was cancelled (by the user or the caller); only ever delivered through ``on_result``
    cancelled: bool = False
    #: the same call (name and arguments) was already answered in this turn: it was not run again, and the model
    #: was told the earlier result
    repeated: bool = False


def _is_async_callable(fn: Callable[..., Any]) -> bool:
    while isinstance(fn, functools.partial):
        fn = fn.func
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))  # noqa: B004


def _json_path(path: Iterable[Any]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _describe_error(err: ValidationError) -> str:
    """One short phrase for one validation error, naming the argument (the model reads this to fix its call)."""
    where = _json_path(err.absolute_path)
    subject = f"argument {where!r}" if where else "the arguments"
    if err.validator == "required":
        missing = re.match(r"'(.+)' is a required property", err.message)
        name = missing.group(1) if missing else err.message
        full = f"{where}.{name}" if where else name
        return f"missing required argument {full!r}"
    if err.validator == "additionalProperties":
        known = list(err.schema.get("properties", {})) if isinstance(err.schema, Mapping) else []
        extra = sorted(set(err.instance) - set(known)) if isinstance(err.instance, dict) else []
        names = ", ".join(repr(f"{where}.{x}" if where else x) for x in extra) or err.message
        accepted = ", ".join(known) if known else "none"
        return f"unknown argument {names} (accepted: {accepted})"
    if err.validator == "type":
        want = err.validator_value
        want_text = " or ".join(want) if isinstance(want, list) else str(want)
        return f"{subject} must be {want_text}, got {_json_type(err.instance)} {_short(err.instance)}"
    if err.validator == "enum":
        choices = ", ".join(_short(v) for v in err.validator_value)
        return f"{subject} must be one of {choices}, got {_short(err.instance)}"
    if err.validator == "const":
        return f"{subject} must be {_short(err.validator_value)}, got {_short(err.instance)}"
    return f"{subject}: {err.message}"


# ---------------------------------------------------------------------------------------------------------------
# schema from a Python function


_SCALARS: dict[Any, str] = {str: "string", int: "integer", float: "number", bool: "boolean"}
_SUPPORTED = "str, int, float, bool, list[...], dict[str, ...], Literal[...], an Enum, or Optional of these"


def _literal_schema(values: tuple[Any, ...], where: str) -> dict[str, Any]:
    plain = [v.value if isinstance(v, enum.Enum) else v for v in values]
    kinds = set()
    for v in plain:
        if v is not None and type(v) not in _SCALARS:
            raise ToolError(f"{where}: Literal values must be str, int, float, bool or None, got {v!r}")
        kinds.add("null" if v is None else _SCALARS[type(v)])
    schema: dict[str, Any] = {"enum": plain}
    if len(kinds) == 1:
        schema = {"type": kinds.pop(), "enum": plain}
    return schema


def _enum_schema(cls: type[enum.Enum], where: str) -> dict[str, Any]:
    schema = _literal_schema(tuple(m.value for m in cls), where)
    doc = inspect.getdoc(cls)
    if doc and doc != inspect.getdoc(enum.Enum) and not doc.startswith("An enumeration"):
        schema["description"] = doc.split("\n\n", 1)[0].replace("\n", " ")
    return schema


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    if isinstance(schema.get("type"), str) and "enum" not in schema and schema["type"] != "null":
        return {**schema, "type": [schema["type"], "null"]}
    if "enum" in schema:
        out = {**schema, "enum": [*schema["enum"], None] if None not in schema["enum"] else schema["enum"]}
        if isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
        return out
    return {"anyOf": [schema, {"type": "null"}]}


def _schema_for(hint: Any, where: str) -> dict[str, Any]:
    """The JSON schema of one type hint, or a ToolError naming the parameter and what types are supported."""
    if hint in _SCALARS:
        return {"type": _SCALARS[hint]}
    if hint is Any:
        return {}
    if hint is None or hint is type(None):
        return {"type": "null"}
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return _enum_schema(hint, where)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Annotated:
        schema = _schema_for(args[0], where)
        notes = [a for a in args[1:] if isinstance(a, str)]
        if notes:
            schema["description"] = " ".join(notes)
        return schema
    if origin is Literal:
        return _literal_schema(args, where)
    if origin in (Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        if len(members) == 1:
            inner = _schema_for(members[0], where)
            return _nullable(inner) if len(members) < len(args) else inner
        schemas = [_schema_for(a, where) for a in members]
        if len(members) < len(args):
            schemas.append({"type": "null"})
        return {"anyOf": schemas}
    if hint is list or origin is list:
        if len(args) > 1:
            raise ToolError(f"{where}: list takes one item type, got {hint!r}")
        return {"type": "array", "items": _schema_for(args[0], where)} if args else {"type": "array"}
    if hint is dict or origin is dict:
        if not args:
            return {"type": "object"}
        if args[0] is not str:
            raise ToolError(f"{where}: dict keys must be str (JSON object keys are strings), got {hint!r}")
        value = _schema_for(args[1], where)
        return {"type": "object", "additionalProperties": value} if value else {"type": "object"}
    raise ToolError(f"{where} has type {_hint_name(hint)}, which a tool cannot take", hint=f"Use {_SUPPORTED}.")


def _hint_name(hint: Any) -> str:
    return hint.__name__ if isinstance(hint, type) else repr(hint)


def _coercer(hint: Any) -> Callable[[Any], Any] | None:
    """A function turning a validated JSON value into what the Python hint promises (Enum members, ints), if any."""
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return hint
    if hint is int:
        # JSON Schema counts 3.0 as an integer; the handler was promised an int
        return lambda v: int(v) if isinstance(v, float) else v
    if hint is float:
        return lambda v: float(v) if isinstance(v, int) and not isinstance(v, bool) else v
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Annotated:
        return _coercer(args[0])
    if origin is Literal:
        if any(isinstance(a, enum.Enum) for a in args):
            by_value = {(a.value if isinstance(a, enum.Enum) else a): a for a in args}
            return lambda v: by_value.get(v, v)
        return None
    if origin in (Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        inner = _coercer(members[0]) if len(members) == 1 else None
        return None if inner is None else (lambda v: None if v is None else inner(v))
    if origin is list and args:
        item = _coercer(args[0])
        return None if item is None else (lambda v: [item(x) for x in v])
    if origin is dict and len(args) == 2:
        val = _coercer(args[1])
        return None if val is None else (lambda v: {k: val(x) for k, x in v.items()})
    return None


_SECTION_RE = re.compile(
    r"^(Args|Arguments|Parameters|Params|Keyword Args|Keyword Arguments|Other Parameters|Returns?|Yields?|Raises|"
    r"Examples?|Notes?|Attributes|See Also|Warnings?|References|Todo)\s*:?\s*$"
)
_SPHINX_RE = re.compile(r"^:param\s+(?:[^:]*\s)?\*{0,2}(\w+)\s*:\s*(.*)$")
# "name (type): text" or "name: text" (Google); "name : type" or "name" alone (NumPy, text on the next lines)
_GOOGLE_RE = re.compile(r"^\*{0,2}(\w+)(?:\s*\([^)]*\))?:\s*(.*)$")
_NUMPY_RE = re.compile(r"^\*{0,2}(\w+)(?:\s+:.*)?$")
_PARAM_SECTIONS = {"Args", "Arguments", "Parameters", "Params", "Keyword Args", "Keyword Arguments", "Other Parameters"}


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """The description (first paragraph) and per-parameter descriptions of a Google, Sphinx or NumPy docstring."""
    if not doc:
        return "", {}
    lines = inspect.cleandoc(doc).splitlines()
    summary: list[str] = []
    for line in lines:
        stripped = line.strip()
        if not stripped or _SECTION_RE.match(stripped) or stripped.startswith(":"):
            break
        summary.append(stripped)
    params: dict[str, str] = {}
    current: str | None = None
    section: str | None = None
    entry_indent: int | None = None
    for i, line in enumerate(lines):
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if not stripped or set(stripped) <= {"-", "="}:
            continue
        following = lines[i + 1].strip() if i + 1 < len(lines) else ""
        header = _SECTION_RE.match(stripped)
        # a Google header ends with ":"; a NumPy one is underlined with dashes
        if header and indent == 0 and (stripped.endswith(":") or (following and set(following) <= {"-"})):
            section, current, entry_indent = header.group(1), None, None
            continue
        sphinx = _SPHINX_RE.match(stripped)
        if sphinx:
            section, current, entry_indent = None, sphinx.group(1), indent
            params[current] = sphinx.group(2).strip()
            continue
        if stripped.startswith(":"):
            current = None
            continue
        if section in _PARAM_SECTIONS:
            if entry_indent is None:
                entry_indent = indent
            if indent <= entry_indent:
                google, numpy = _GOOGLE_RE.match(stripped), _NUMPY_RE.match(stripped)
                current = google.group(1) if google else numpy.group(1) if numpy else None
                if current is not None:
                    params[current] = google.group(2).strip() if google else ""
                continue
        if current is not None and entry_indent is not None and indent > entry_indent:
            params[current] = (params[current] + " " + stripped).strip()
        else:
            current = None
    return " ".join(summary), {k: v for k, v in params.items() if v}


def tool_from_function(
    fn: Callable[..., Any],
    *,
    name: str | None = None,
    description: str | None = None,
    side_effects: bool = False,
) -> Tool:
    """A Tool from a plain (sync or async) function: the schema from its type hints, the text from its docstring."""
    fn_name = getattr(fn, "__name__", None) or type(fn).__name__
    tool_name = name or fn_name
    _check_name(tool_name)
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError) as err:
        raise ToolError(f"cannot read the signature of {fn_name}: {err}") from None
    target = fn.__call__ if not inspect.isroutine(fn) and callable(fn) else fn  # type: ignore[operator]
    try:
        hints = typing.get_type_hints(target, include_extras=True)
    except Exception as err:  # a forward reference that does not resolve
        raise ToolError(f"cannot read the type hints of {fn_name}: {err}") from None
    summary, param_docs = parse_docstring(inspect.getdoc(fn))
    properties: dict[str, Any] = {}
    required: list[str] = []
    coercers: dict[str, Callable[[Any], Any]] = {}
    for param in signature.parameters.values():
        where = f"parameter {param.name!r} of {fn_name}"
        if param.kind is inspect.Parameter.POSITIONAL_ONLY:
            raise ToolError(f"{where} is positional-only; tools are called with keyword arguments")
        if param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            raise ToolError(f"{fn_name} takes *{param.name}; a tool's arguments must all be named, typed parameters")
        if param.name not in hints:
            raise ToolError(f"{where} has no type hint", hint=f"Annotate it with {_SUPPORTED}.")
        hint = hints[param.name]
        schema = _schema_for(hint, where)
        if param.name in param_docs and "description" not in schema:
            schema["description"] = param_docs[param.name]
        if param.default is inspect.Parameter.empty:
            required.append(param.name)
        else:
            default = param.default.value if isinstance(param.default, enum.Enum) else param.default
            try:
                json.dumps(default)
                schema["default"] = default
            except (TypeError, ValueError):
                pass  # a default the model cannot see is still applied by Python
        properties[param.name] = schema
        conv = _coercer(hint)
        if conv is not None:
            coercers[param.name] = conv
    parameters: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        parameters["required"] = required
    return Tool(
        name=tool_name,
        description=description if description is not None else summary,
        parameters=parameters,
        handler=_with_coercion(fn, coercers) if coercers else fn,
        side_effects=side_effects,
    )


def _with_coercion(fn: Callable[..., Any], coercers: dict[str, Callable[[Any], Any]]) -> Callable[..., Any]:
    """fn wrapped so its arguments arrive as the Python types its hints promise (sync stays sync, async async)."""

    def convert(kwargs: dict[str, Any]) -> dict[str, Any]:
        return {k: (coercers[k](v) if k in coercers else v) for k, v in kwargs.items()}

    if _is_async_callable(fn):

        async def async_wrapper(**kwargs: Any) -> Any:
            return await fn(**convert(kwargs))

        return functools.update_wrapper(async_wrapper, fn) if inspect.isroutine(fn) else async_wrapper

    def wrapper(**kwargs: Any) -> Any:
        return fn(**convert(kwargs))

    return functools.update_wrapper(wrapper, fn) if inspect.isroutine(fn) else wrapper


# ---------------------------------------------------------------------------------------------------------------
# the registry


def _one_line(err: BaseException) -> str:
    """An exception as one readable line: our own errors by their message, others by type and message."""
    if isinstance(err, LLMSpellError):
        text = err.message
    else:
        text = str(err).strip()
        text = f"{type(err).__name__}: {text}" if text else type(err).__name__
    text = " ".join(text.split())
    return text if len(text) <= 500 else text[:497] + "..."


def _as_text(value: Any) -> str:
    """A handler's return value as the text a model reads."""
    if value is None:
        return "done"
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)


class ToolRegistry:
    """The tools a conversation may use, by name; :meth:`call` is the one safe way to run them."""

    def __init__(
        self,
        tools: Iterable[Tool] = (),
        *,
        allow: Iterable[str] = (),
        timeout: float | None = None,
        max_content_chars: int | None = 100_000,
    ) -> None:
        self._tools: dict[str, Tool] = {}
        #: names of side-effect tools that run without asking; "*" allows every tool (a --yes switch)
        self.allow: set[str] = set(allow)
        #: the timeout a call gets when it names none (None: no limit)
        self.timeout = timeout
        #: content longer than this is cut with a note, so one tool cannot flood the context window
        self.max_content_chars = max_content_chars
        for tool in tools:
            self.add(tool)

    def add(self, tool: Tool | Callable[..., Any], *, replace: bool = False) -> Tool:
        """Register a Tool (or a plain function, made into one); a second tool of the same name is an error."""
        if not isinstance(tool, Tool):
            tool = tool_from_function(tool)
        old = self._tools.get(tool.name)
        if old is not None and not replace:
            raise ToolError(
                f"a tool named {tool.name!r} is already registered (from {old.source})",
                hint="Rename one of them, or pass replace=True.",
            )
        self._tools[tool.name] = tool
        return tool

    def remove(self, name: str) -> None:
        """Forget a tool (no error if it is not there)."""
        self._tools.pop(name, None)

    def get(self, name: str) -> Tool:
        """The tool of that name, or a ToolError naming the known ones."""
        tool = self._tools.get(name)
        if tool is None:
            raise ToolError(self._unknown(name))
        return tool

    def names(self) -> list[str]:
        """The names of all tools, in the order they were added."""
        return list(self._tools)

    def tools(self) -> list[Tool]:
        """All tools, in the order they were added."""
        return list(self._tools.values())

    def schemas(self) -> list[dict[str, Any]]:
        """Every tool in the OpenAI ``tools`` shape, ready to send to a backend."""
        return [t.openai_schema() for t in self._tools.values()]

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __len__(self) -> int:
        return len(self._tools)

    def __iter__(self) -> Iterator[Tool]:
        return iter(list(self._tools.values()))

    def is_allowed(self, tool: Tool) -> bool:
        """Whether the tool may run without asking the user."""
        return not tool.side_effects or "*" in self.allow or tool.name in self.allow

    def _unknown(self, name: str) -> str:
        known = ", ".join(self._tools) or "none"
        return f"there is no tool named {name!r}; the tools are: {known}"

    async def call(
        self,
        name: str,
        arguments: dict[str, Any] | str | None,
        *,
        confirm: ConfirmCallback | None = None,
        timeout: float | None = None,
        on_result: Callable[[ToolResult], None] | None = None,
    ) -> ToolResult:
        """Run one tool call safely and say what happened; bad calls, refusals and failures are results, not raises.

        ``arguments`` may be a dict or the JSON text a model produced. ``confirm`` is asked before a side-effect
        tool runs (unless it is in ``allow``); without it such a call is refused. ``timeout`` (or the registry's)
        bounds the handler. ``on_result`` receives every result, including the one of a call that was cancelled:
        cancelling the task running ``call`` cancels an async handler; a sync one finishes in its thread and its
        result is discarded, and that result says so. The CancelledError still propagates.
        """
        result = await self._call(name, arguments, confirm=confirm, timeout=timeout, on_result=on_result)
        if on_result is not None:
            on_result(result)
        return result

    async def _call(
        self,
        name: str,
        arguments: dict[str, Any] | str | None,
        *,
        confirm: ConfirmCallback | None,
        timeout: float | None,
        on_result: Callable[[ToolResult], None] | None,
    ) -> ToolResult:
        args, problem = _parse_arguments(arguments)
        raw: dict[str, Any] | str = args if args is not None else (arguments if isinstance(arguments, str) else "")
        tool = self._tools.get(name)
        if tool is None:
            return self._failed(name, raw, self._unknown(name))
        if args is None:
            return self._failed(name, raw, f"invalid arguments for {name}: {problem}")
        invalid = tool.validate(args)
        if invalid is not None:
            return self._failed(name, args, f"invalid arguments for {name}: {invalid}")

        if not self.is_allowed(tool):
            try:
                approved = await self._ask(tool, args, confirm)
            except asyncio.CancelledError:
                self._deliver_cancel(on_result, tool, args, 0.0, "cancelled while waiting for the user's confirmation")
                raise
            if approved is not True:
                why = approved if isinstance(approved, str) else f"the user did not allow this call to {tool.name}"
                return ToolResult(
                    name=tool.name,
                    arguments=args,
                    content=f"refused: {why}. Do not retry it; tell the user what you wanted to do instead.",
                    ok=False,
                    error=why,
                    refused=True,
                )

        limit = timeout if timeout is not None else self.timeout
        started = time.perf_counter()
        try:
            if tool.is_async:
                value = await asyncio.wait_for(tool.handler(**args), limit)
            else:
                value = await asyncio.wait_for(asyncio.to_thread(tool.handler, **args), limit)
                if inspect.isawaitable(value):
                    # a sync callable that hands back a coroutine (a partial of an async function, say)
                    value = await asyncio.wait_for(value, limit)
        except asyncio.CancelledError:
            note = (
                "cancelled; the handler was stopped"
                if tool.is_async
                else "cancelled; the handler was still running in a thread and may still finish, "
                "but its result was discarded"
            )
            self._deliver_cancel(on_result, tool, args, time.perf_counter() - started, note)
            raise
        except TimeoutError:
            seconds = time.perf_counter() - started
            note = (
                f"timed out after {limit:g} s; the handler was stopped"
                if tool.is_async
                else f"timed out after {limit:g} s; the handler was still running in a thread and may still finish, "
                "but its result was discarded"
            )
            return self._failed(name, args, f"{name} {note}", seconds)
        except Exception as err:
            return self._failed(name, args, f"{name} failed: {_one_line(err)}", time.perf_counter() - started)
        seconds = time.perf_counter() - started
        return ToolResult(
            name=tool.name, arguments=args, content=self._cap(_as_text(value)), ok=True, error=None, seconds=seconds
        )

    async def _ask(self, tool: Tool, args: dict[str, Any], confirm: ConfirmCallback | None) -> bool | str:
        """True if the user allows the call; otherwise False or a sentence saying why not."""
        if confirm is None:
            return (
                f"{tool.name} changes things and needs the user's confirmation, but none could be asked "
                f"(allow it explicitly to run it without asking)"
            )
        try:
            answer = confirm(tool, args)
            if inspect.isawaitable(answer):
                answer = await answer
        except asyncio.CancelledError:
            raise
        except Exception as err:
            return f"asking the user failed ({_one_line(err)}), so {tool.name} did not run"
        return answer is True

    def _cap(self, text: str) -> str:
        limit = self.max_content_chars
        if limit is None or len(text) <= limit:
            return text
        return text[:limit] + f"\n[output cut: {len(text) - limit} more characters not shown]"

    @staticmethod
    def _failed(name: str, arguments: dict[str, Any] | str, error: str, seconds: float = 0.0) -> ToolResult:
        return ToolResult(
            name=name, arguments=arguments, content=f"error: {error}", ok=False, error=error, seconds=seconds
        )

    @staticmethod
    def _deliver_cancel(
        on_result: Callable[[ToolResult], None] | None, tool: Tool, args: dict[str, Any], seconds: float, note: str
    ) -> None:
        if on_result is None:
            return
        error = f"{tool.name} {note}"
        on_result(
            ToolResult(
                name=tool.name,
                arguments=args,
                content=f"error: {error}",
                ok=False,
                error=error,
                seconds=seconds,
                cancelled=True,
            )
        )


def _parse_arguments(arguments: dict[str, Any] | str | None) -> tuple[dict[str, Any] | None, str | None]:
    """The arguments as a dict, or None and one line saying what is wrong with them."""
    if arguments is None:
        return {}, None
    if isinstance(arguments, str):
        if not arguments.strip():
            # models often send "" for a tool without parameters
            return {}, None
        try:
            parsed = json.loads(arguments)
        except json.JSONDecodeError as err:
            return None, f"they are not valid JSON ({err.msg} at line {err.lineno} column {err.colno})"
        arguments = parsed
    if not isinstance(arguments, dict):
        return None, f"they must be a JSON object of named arguments, got {_json_type(arguments)}"
    return arguments, None
