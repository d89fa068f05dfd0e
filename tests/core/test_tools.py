"""The tool model: schemas derived from Python functions, arguments validated before anything runs, handlers run
safely (threads, timeouts, cancel), confirmation before side effects, and every outcome a result the model reads."""

from __future__ import annotations

import asyncio
import enum
import threading
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import jsonschema
import pytest

from llmspell.errors import ToolError
from llmspell.tools import Tool, ToolRegistry, ToolResult, parse_docstring, tool_from_function


class Unit(enum.Enum):
    """A temperature unit."""

    CELSIUS = "celsius"
    FAHRENHEIT = "fahrenheit"


def weather(city: str, days: int = 1, unit: Unit = Unit.CELSIUS, detailed: bool = False) -> str:
    """Get the weather forecast for a city.

    Uses the local almanac.

    Args:
        city (str): the city's name,
            as the user wrote it.
        days: how many days ahead.
    """
    return f"{city}: sunny for {days} days in {unit.value}, detailed={detailed}"


def _props(tool: Tool) -> dict[str, Any]:
    return tool.parameters["properties"]  # type: ignore[no-any-return]


# --- schema derivation --------------------------------------------------------------------------------------


def test_a_typed_function_becomes_a_tool_with_its_schema_and_descriptions() -> None:
    tool = tool_from_function(weather)
    assert tool.name == "weather" and tool.source == "python" and tool.side_effects is False
    assert tool.description == "Get the weather forecast for a city."
    params = tool.parameters
    assert params["type"] == "object" and params["required"] == ["city"]
    assert params["additionalProperties"] is False
    assert _props(tool)["city"] == {"type": "string", "description": "the city's name, as the user wrote it."}
    assert _props(tool)["days"] == {"type": "integer", "description": "how many days ahead.", "default": 1}
    assert _props(tool)["unit"]["enum"] == ["celsius", "fahrenheit"] and _props(tool)["unit"]["default"] == "celsius"
    assert _props(tool)["detailed"]["type"] == "boolean"
    assert tool.openai_schema() == {
        "type": "function",
        "function": {"name": "weather", "description": tool.description, "parameters": params},
    }
    jsonschema.Draft202012Validator.check_schema(params)


def test_containers_literals_optionals_and_annotations_map_to_json_schema() -> None:
    def f(
        tags: list[str],
        scores: dict[str, float],
        mode: Literal["fast", "slow"],
        note: Annotated[str, "a short note"],
        limit: int | None = None,
        level: Optional[Literal[1, 2]] = None,  # noqa: UP045 - the old spelling must work too
        either: int | str = 0,
        anything: Any = None,
        raw: list = [],  # noqa: B006 - a bare list is an array of anything
    ) -> None:
        """Do f."""

    props = _props(tool_from_function(f))
    assert props["tags"] == {"type": "array", "items": {"type": "string"}}
    assert props["scores"] == {"type": "object", "additionalProperties": {"type": "number"}}
    assert props["mode"] == {"type": "string", "enum": ["fast", "slow"]}
    assert props["note"] == {"type": "string", "description": "a short note"}
    assert props["limit"] == {"type": ["integer", "null"], "default": None}
    assert props["level"]["enum"] == [1, 2, None]
    assert props["either"]["anyOf"] == [{"type": "integer"}, {"type": "string"}]
    assert props["anything"] == {"default": None}
    assert props["raw"] == {"type": "array", "default": []}
    assert tool_from_function(f).parameters["required"] == ["tags", "scores", "mode", "note"]


def test_sphinx_and_numpy_docstrings_describe_parameters() -> None:
    def sphinx(a: str, b: int) -> None:
        """Sphinx style.

        :param a: the first
        :param int b: the second,
            continued
        :returns: nothing
        """

    def numpy(a: str, b: int) -> None:
        """NumPy style.

        Parameters
        ----------
        a : str
            The first.
        b : int
            The second.
        """

    for fn, second in ((sphinx, "the second, continued"), (numpy, "The second.")):
        tool = tool_from_function(fn)
        assert tool.description.endswith("style.")
        assert _props(tool)["b"]["description"] == second
    assert parse_docstring(None) == ("", {})


def test_name_description_and_side_effects_can_be_given() -> None:
    tool = tool_from_function(weather, name="forecast", description="Forecast.", side_effects=True)
    assert (tool.name, tool.description, tool.side_effects) == ("forecast", "Forecast.", True)


@pytest.mark.parametrize(
    ("fn", "name", "words"),
    [
        (lambda x: x, None, ["'<lambda>' is not allowed"]),
        (weather, "get weather", ["'get weather' is not allowed", "letters, digits"]),
        (weather, "x" * 65, ["is not allowed"]),
    ],
)
def test_names_a_model_cannot_call_are_refused(fn: Any, name: str | None, words: list[str]) -> None:
    with pytest.raises(ToolError) as err:
        tool_from_function(fn, name=name)
    assert all(w in str(err.value) for w in words), str(err.value)


def _untyped(path):  # type: ignore[no-untyped-def]
    """No hints."""


def _star(*paths: str) -> None:
    """Star args."""


def _kw(**extra: str) -> None:
    """Keyword args."""


def _tuple(pair: tuple[int, int]) -> None:
    """A tuple."""


def _int_keys(m: dict[int, str]) -> None:
    """Int keys."""


def _custom(p: Path) -> None:
    """A path object."""


def _positional(a: int, /) -> None:
    """Positional only."""


@pytest.mark.parametrize(
    ("fn", "words"),
    [
        (_untyped, ["parameter 'path' of _untyped has no type hint"]),
        (_star, ["_star takes *paths"]),
        (_kw, ["_kw takes *extra"]),
        (_tuple, ["parameter 'pair' of _tuple has type", "a tool cannot take"]),
        (_int_keys, ["dict keys must be str"]),
        (_custom, ["parameter 'p' of _custom has type Path", "a tool cannot take"]),
        (_positional, ["positional-only"]),
    ],
)
def test_unsupported_signatures_say_which_parameter_and_why(fn: Any, words: list[str]) -> None:
    with pytest.raises(ToolError) as err:
        tool_from_function(fn)
    text = str(err.value)
    assert all(w in text for w in words), text


def test_a_hand_written_tool_needs_an_object_schema_that_is_valid() -> None:
    with pytest.raises(ToolError, match="must be a JSON schema of type object"):
        Tool("t", "T.", {"type": "string"}, handler=print)
    with pytest.raises(ToolError, match="parameter schema is invalid"):
        Tool("t", "T.", {"type": "object", "properties": {"a": {"type": "nonsense"}}}, handler=print)


# --- calls: arguments, validation, results ------------------------------------------------------------------


class Recorder:
    """A handler that records whether (and with what) it ran."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, path: str, count: int = 1) -> str:
        self.calls.append({"path": path, "count": count})
        return f"{path} x{count}"


def _registry(*tools: Tool, **kw: Any) -> ToolRegistry:
    return ToolRegistry(tools, **kw)


async def test_arguments_as_a_json_string_are_parsed_and_the_enum_arrives_as_an_enum() -> None:
    registry = _registry(tool_from_function(weather))
    result = await registry.call("weather", '{"city": "Oslo", "days": 3, "unit": "fahrenheit"}')
    assert result.ok and result.error is None
    assert result.content == "Oslo: sunny for 3 days in fahrenheit, detailed=False"
    assert result.arguments == {"city": "Oslo", "days": 3, "unit": "fahrenheit"}
    assert result.name == "weather" and result.seconds >= 0


@pytest.mark.parametrize(
    ("arguments", "words"),
    [
        ({}, ["missing required argument 'path'"]),
        ({"path": "a", "colour": "red"}, ["unknown argument 'colour'", "accepted: path, count"]),
        ({"path": "a", "count": "three"}, ["argument 'count' must be integer", 'got string "three"']),
        ({"path": 7}, ["argument 'path' must be string, got integer 7"]),
        ('{"path": "a", ', ["not valid JSON"]),
        ("[1, 2]", ["must be a JSON object", "got array"]),
    ],
)
async def test_a_bad_call_is_a_one_line_error_and_the_handler_never_runs(arguments: Any, words: list[str]) -> None:
    handler = Recorder()
    registry = _registry(tool_from_function(handler, name="touch"))
    result = await registry.call("touch", arguments)
    assert not result.ok and result.error is not None and "\n" not in result.error
    assert result.error.startswith("invalid arguments for touch:")
    assert all(w in result.error for w in words), result.error
    assert result.content == f"error: {result.error}"
    assert handler.calls == []


async def test_a_tool_without_parameters_accepts_empty_text_and_none() -> None:
    def ping() -> str:
        """Answer pong."""
        return "pong"

    registry = _registry(tool_from_function(ping))
    for arguments in ("", "  ", None, "{}", {}):
        assert (await registry.call("ping", arguments)).content == "pong"


async def test_an_unknown_tool_names_the_known_ones() -> None:
    registry = _registry(tool_from_function(weather), tool_from_function(Recorder(), name="touch"))
    result = await registry.call("wether", {"city": "x"})
    assert not result.ok and result.error == "there is no tool named 'wether'; the tools are: weather, touch"
    with pytest.raises(ToolError, match="no tool named 'wether'"):
        registry.get("wether")


async def test_sync_handlers_run_in_a_thread_and_async_ones_on_the_loop() -> None:
    seen: dict[str, bool] = {}

    def sync_tool() -> str:
        """Where am I."""
        seen["sync_on_main"] = threading.current_thread() is threading.main_thread()
        return "s"

    async def async_tool(n: int) -> dict[str, int]:
        """Double n."""
        seen["async_on_main"] = threading.current_thread() is threading.main_thread()
        await asyncio.sleep(0)
        return {"double": n * 2}

    registry = _registry(tool_from_function(sync_tool), tool_from_function(async_tool))
    assert (await registry.call("sync_tool", {})).content == "s"
    assert (await registry.call("async_tool", {"n": 21})).content == '{"double": 42}'
    assert seen == {"sync_on_main": False, "async_on_main": True}


async def test_results_are_text_for_the_model_and_long_ones_are_cut_with_a_note() -> None:
    def nothing() -> None:
        """Return nothing."""

    def lots() -> str:
        """Return a lot."""
        return "x" * 500

    registry = _registry(tool_from_function(nothing), tool_from_function(lots), max_content_chars=100)
    assert (await registry.call("nothing", {})).content == "done"
    content = (await registry.call("lots", {})).content
    assert content.startswith("x" * 100) and "[output cut: 400 more characters not shown]" in content


async def test_a_handler_exception_is_one_line_not_a_traceback() -> None:
    def broken(path: str) -> str:
        """Fail."""
        raise FileNotFoundError(f"no such file:\n  {path}")

    async def refusing(path: str) -> str:
        """Fail with our own error."""
        raise ToolError(f"{path} is not allowed", hint="a hint that stays out of the line")

    registry = _registry(tool_from_function(broken), tool_from_function(refusing))
    result = await registry.call("broken", {"path": "a.txt"})
    assert not result.ok and result.error == "broken failed: FileNotFoundError: no such file: a.txt"
    result = await registry.call("refusing", {"path": "b"})
    assert result.error == "refusing failed: b is not allowed"


async def test_a_timeout_stops_an_async_handler_and_the_model_is_told() -> None:
    stopped = asyncio.Event()

    async def hang() -> str:
        """Never answer."""
        try:
            await asyncio.Event().wait()
        finally:
            stopped.set()
        return "unreachable"

    registry = _registry(tool_from_function(hang), timeout=0.2)
    result = await registry.call("hang", {})
    assert not result.ok and result.error == "hang timed out after 0.2 s; the handler was stopped"
    assert stopped.is_set()


async def test_a_timed_out_sync_handler_finishes_in_its_thread_but_its_result_is_discarded() -> None:
    release, finished = threading.Event(), threading.Event()

    def slow() -> str:
        """Wait for release."""
        release.wait(30)
        finished.set()
        return "late"

    registry = _registry(tool_from_function(slow))
    result = await registry.call("slow", {}, timeout=0.1)
    assert not result.ok and "timed out after 0.1 s" in (result.error or "")
    assert "its result was discarded" in (result.error or "")
    release.set()
    assert await asyncio.to_thread(finished.wait, 10)


async def test_cancelling_a_call_cancels_its_async_handler_and_reports_it() -> None:
    started, stopped = asyncio.Event(), asyncio.Event()
    delivered: list[ToolResult] = []

    async def long_job(steps: int) -> str:
        """Work for a while."""
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            stopped.set()
            raise
        return "done"

    registry = _registry(tool_from_function(long_job))
    task = asyncio.create_task(registry.call("long_job", {"steps": 3}, on_result=delivered.append))
    await asyncio.wait_for(started.wait(), 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert stopped.is_set()
    [result] = delivered
    assert result.cancelled and not result.ok and result.arguments == {"steps": 3}
    assert result.error == "long_job cancelled; the handler was stopped"


async def test_cancelling_a_sync_handler_discards_its_result_and_says_so() -> None:
    started, release = threading.Event(), threading.Event()
    delivered: list[ToolResult] = []

    def blocking() -> str:
        """Block."""
        started.set()
        release.wait(30)
        return "late"

    registry = _registry(tool_from_function(blocking))
    task = asyncio.create_task(registry.call("blocking", {}, on_result=delivered.append))
    assert await asyncio.to_thread(started.wait, 10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    release.set()
    [result] = delivered
    assert result.cancelled and "may still finish, but its result was discarded" in (result.error or "")


# --- confirmation -------------------------------------------------------------------------------------------


def _writer(log: list[str]) -> Tool:
    def save(text: str) -> str:
        """Save text."""
        log.append(text)
        return "saved"

    return tool_from_function(save, side_effects=True)


async def test_a_side_effect_tool_asks_and_runs_only_on_yes() -> None:
    log: list[str] = []
    asked: list[tuple[str, dict[str, Any]]] = []
    registry = _registry(_writer(log))

    def yes(tool: Tool, args: dict[str, Any]) -> bool:
        asked.append((tool.name, args))
        return True

    async def no(tool: Tool, args: dict[str, Any]) -> bool:
        await asyncio.sleep(0)
        return False

    assert (await registry.call("save", {"text": "a"}, confirm=yes)).ok
    assert asked == [("save", {"text": "a"})] and log == ["a"]

    refused = await registry.call("save", {"text": "b"}, confirm=no)
    assert refused.refused and not refused.ok and log == ["a"]
    assert refused.error == "the user did not allow this call to save"
    assert refused.content.startswith("refused: the user did not allow this call to save")


async def test_without_a_way_to_ask_a_side_effect_tool_is_refused_unless_allowed() -> None:
    log: list[str] = []
    registry = _registry(_writer(log))
    refused = await registry.call("save", {"text": "a"})
    assert refused.refused and "needs the user's confirmation" in (refused.error or "") and log == []

    registry.allow.add("save")
    assert (await registry.call("save", {"text": "b"})).ok and log == ["b"]

    everything = _registry(_writer(log), allow={"*"})
    assert (await everything.call("save", {"text": "c"})).ok and log == ["b", "c"]


async def test_a_confirm_callback_that_fails_refuses_the_call() -> None:
    log: list[str] = []

    def broken(tool: Tool, args: dict[str, Any]) -> bool:
        raise RuntimeError("no terminal")

    result = await _registry(_writer(log)).call("save", {"text": "a"}, confirm=broken)
    assert result.refused and "asking the user failed (RuntimeError: no terminal)" in (result.error or "")
    assert log == []


async def test_read_only_tools_never_ask() -> None:
    def never(tool: Tool, args: dict[str, Any]) -> bool:
        raise AssertionError("a read-only tool asked for confirmation")

    result = await _registry(tool_from_function(weather)).call("weather", {"city": "Rome"}, confirm=never)
    assert result.ok


# --- the registry -------------------------------------------------------------------------------------------


def test_the_registry_lists_tools_in_the_openai_shape_and_refuses_duplicates() -> None:
    registry = ToolRegistry()
    registry.add(weather)  # a plain function is made into a tool
    registry.add(tool_from_function(Recorder(), name="touch"))
    assert registry.names() == ["weather", "touch"] and "touch" in registry and len(registry) == 2
    assert [s["function"]["name"] for s in registry.schemas()] == ["weather", "touch"]
    assert all(s["type"] == "function" for s in registry.schemas())
    with pytest.raises(ToolError, match="a tool named 'weather' is already registered"):
        registry.add(weather)
    registry.add(tool_from_function(weather, description="Other."), replace=True)
    assert registry.get("weather").description == "Other."
    registry.remove("touch")
    assert registry.names() == ["weather"]
