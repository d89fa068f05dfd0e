"""Prompts for the embedded engine: compiled chat templates, shared prefixes, grammars, build facts."""

from __future__ import annotations

import functools
import json
import re
import sys
import time
from typing import Any

from llmspell.errors import InvalidOptions


def _shared_prefix(a: str, b: str) -> int:
    """How many leading characters two prompts share."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


#: how long a chat template may take to render one conversation; real ones take milliseconds, a hostile one
#: looped 10**10 times and held every face (and serve's every client) until it was killed
RENDER_SECONDS = 5.0
#: the most characters a rendered prompt may have (a template that rendered 50 MB aborted the engine)
MAX_PROMPT_CHARS = 16 * 2**20
#: seconds between two looks at a rendering template's variables for a value past the size budget
SIZE_CHECK_EVERY = 0.001


#: the largest integer a template may build, in bits (a number of ~30,000 digits prints in well under a second)
_MAX_INT_BITS = 100_000


def _big_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class TemplateBudgetExceeded(Exception):
    """A chat template went past its time or size budget while rendering."""


def _bounded_environment() -> Any:
    """Jinja's immutable sandbox, as llama-cpp-python configures it for chat templates, where a repetition
    (``"x" * n``) or a power that would exceed the prompt budget is refused before it is computed."""
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    class Bounded(ImmutableSandboxedEnvironment):
        intercepted_binops = frozenset({"*", "**", "%"})

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            if operator == "*":
                for seq, times in ((left, right), (right, left)):
                    repeated = isinstance(seq, str | list | tuple) and isinstance(times, int)
                    if repeated and len(seq) * times > MAX_PROMPT_CHARS:
                        raise TemplateBudgetExceeded(f"it repeats a value {times:,} times")
                if _big_int(left) and _big_int(right) and left.bit_length() + right.bit_length() > _MAX_INT_BITS:
                    raise TemplateBudgetExceeded("it multiplies numbers too large to print")
            if operator == "**" and isinstance(right, int | float):
                if abs(right) > 1024 or (
                    _big_int(left) and abs(left) > 1 and left.bit_length() * right > _MAX_INT_BITS
                ):
                    raise TemplateBudgetExceeded(f"it raises a number to the power {right:,}")
            if (
                operator == "%"
                and isinstance(left, str)
                and any(int(n) > MAX_PROMPT_CHARS for n in re.findall(r"%[-+ #0]*(\d+)", left))
            ):
                raise TemplateBudgetExceeded("it formats a value wider than the prompt budget")
            return super().call_binop(context, operator, left, right)

        def call(self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
            # widths and counts (zfill, center, ljust, repeat...) past the budget are refused before they are built
            if any(_big_int(a) and a > MAX_PROMPT_CHARS for a in (*args, *kwargs.values())):
                raise TemplateBudgetExceeded("it asks for a value wider than the prompt budget")
            return super().call(__context, __obj, *args, **kwargs)

    env = Bounded(
        loader=jinja2.BaseLoader(),
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[Jinja2ChatFormatter.IgnoreGenerationTags, jinja2.ext.loopcontrols],
    )
    env.filters["tojson"] = Jinja2ChatFormatter.tojson
    return env


def _too_big(values: dict[str, Any], limit: int) -> bool:
    """Whether a template's variables (and the attributes of its namespaces) hold text longer than ``limit``."""
    from jinja2.utils import Namespace

    for value in values.values():
        if isinstance(value, str) and len(value) > limit:
            return True
        if isinstance(value, Namespace):
            # a namespace keeps its attributes in a private dict; reading it changes nothing
            attrs = object.__getattribute__(value, "_Namespace__attrs")
            if any(isinstance(v, str) and len(v) > limit for v in attrs.values()):
                return True
    return False


class ChatTemplate:
    """A compiled chat template that renders within a time and size budget (off the event loop: the caller runs
    :meth:`render` in a thread, and a hostile template stops at the deadline, not when it is done)."""

    def __init__(self, template: str, eos: str, bos: str) -> None:
        self.eos, self.bos = eos, bos
        self._template = _bounded_environment().from_string(template)

    def render(
        self,
        messages: list[dict[str, Any]],
        *,
        tools: list[dict[str, Any]] | None = None,
        seconds: float | None = None,
        max_chars: int | None = None,
    ) -> str:
        """The prompt for ``messages`` (and ``tools``, OpenAI shape, for a template that shows them); raises
        TemplateBudgetExceeded past ``seconds`` or ``max_chars`` (by default RENDER_SECONDS and MAX_PROMPT_CHARS)."""
        from datetime import datetime

        seconds = RENDER_SECONDS if seconds is None else seconds
        max_chars = MAX_PROMPT_CHARS if max_chars is None else max_chars

        def raise_exception(message: str) -> None:
            raise ValueError(message)

        deadline = time.monotonic() + seconds
        next_size_check = 0.0

        def check(frame: Any, event: str, arg: Any) -> Any:
            nonlocal next_size_check
            if frame.f_code.co_filename != "<template>":
                return None
            # only on a line of the template's own code: an exception raised from any other event (a generator
            # closing, say) is printed as "ignored" and removes the trace, and the template would run on unbounded
            if event == "line":
                now = time.monotonic()
                if now > deadline:
                    raise TemplateBudgetExceeded(f"it took more than {seconds:g} s")
                # a value doubled with ~ (which no sandbox hook sees) is stopped before it fills the memory. Reading
                # a frame's variables on every line made rendering 9x slower than untraced; once a millisecond
                # bounds the overshoot to what one millisecond of copying can build (a few MB)
                if now >= next_size_check:
                    next_size_check = now + SIZE_CHECK_EVERY
                    if _too_big(frame.f_locals, max_chars):
                        raise TemplateBudgetExceeded(f"it built a value of more than {max_chars:,} characters")
            return check

        parts: list[str] = []
        size = 0
        previous = sys.gettrace()
        sys.settrace(check)
        try:
            for part in self._template.generate(
                messages=messages,
                eos_token=self.eos,
                bos_token=self.bos,
                raise_exception=raise_exception,
                add_generation_prompt=True,
                strftime_now=lambda f: datetime.now().strftime(f),
                # None when there are none, as llama-cpp-python passes it: templates test "tools is not none"
                tools=tools or None,
                tool_choice=None,
                functions=None,
                function_call=None,
            ):
                size += len(part)
                if time.monotonic() > deadline:
                    raise TemplateBudgetExceeded(f"it took more than {seconds:g} s")
                if size > max_chars:
                    raise TemplateBudgetExceeded(f"it rendered more than {max_chars:,} characters")
                parts.append(part)
        finally:
            sys.settrace(previous)
        return "".join(parts)


@functools.lru_cache(maxsize=16)
def _formatter(template: str, eos: str, bos: str) -> ChatTemplate:
    """A compiled chat template (compiling Jinja costs milliseconds that would land on every first token)."""
    return ChatTemplate(template, eos, bos)


def unsatisfiable_schema(fmt: Any) -> str | None:
    """Why no value can satisfy the JSON schema ``fmt`` (an empty ``enum``, ``anyOf``, ``oneOf`` or ``type`` list,
    at any depth), or None. llama.cpp cannot parse the grammar made from such a schema, and the engine died on it
    with SIGSEGV (found by the server's schema fuzz): it is refused before a grammar is made, for every face."""
    stack: list[Any] = [fmt]
    while stack:
        node = stack.pop()
        if not isinstance(node, dict):
            continue
        for key in ("enum", "anyOf", "oneOf", "type"):
            if node.get(key) == []:
                return f"the JSON schema has an empty {key!r}, which no answer can match"
        for key, value in node.items():
            if key in _SUBSCHEMA and isinstance(value, dict):
                stack.append(value)
            elif key in _SUBSCHEMA_LISTS and isinstance(value, list):
                stack.extend(value)
            elif key in _SUBSCHEMA_MAPS and isinstance(value, dict):
                stack.extend(value.values())
    return None


#: where a JSON schema holds other schemas: one, a list of them, a name -> schema map
_SUBSCHEMA = frozenset({"items", "additionalProperties", "not", "if", "then", "else", "contains"})
_SUBSCHEMA_LISTS = frozenset({"anyOf", "oneOf", "allOf", "prefixItems", "items"})
_SUBSCHEMA_MAPS = frozenset({"properties", "$defs", "definitions", "patternProperties"})


@functools.lru_cache(maxsize=32)
def _grammar_for(fmt: str) -> Any:
    """A llama.cpp grammar for "json" or a JSON schema (cached: building one parses the schema)."""
    from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar

    if fmt == "json":
        return LlamaGrammar.from_string(JSON_GBNF, verbose=False)
    problem = unsatisfiable_schema(json.loads(fmt))
    if problem:
        raise InvalidOptions(f"format: {problem}", hint="give a schema some answer can match")
    try:
        return LlamaGrammar.from_json_schema(fmt, verbose=False)
    except Exception as exc:  # the converter raises plain exceptions for unsupported schema features
        raise InvalidOptions(f"the JSON schema in format cannot be turned into a grammar: {exc}") from None


@functools.cache
def engine_uses_openmp() -> bool:
    """Whether llama.cpp was built with OpenMP (each thread driving a model then gets its own spinning pool)."""
    import llama_cpp

    return b"OPENMP = 1" in llama_cpp.llama_print_system_info()


@functools.cache
def _gpu_offload() -> bool:
    import llama_cpp

    return bool(llama_cpp.llama_supports_gpu_offload())
