"""The typed values that cross the core's contract: messages, options, chunks, stats, status."""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from llmspell.errors import InvalidOptions
from llmspell.optionspec import OptionSpec, opt

Role = Literal["system", "user", "assistant", "tool"]
StopReason = Literal["stop", "length", "cancelled", "error"]


@dataclass(frozen=True)
class ToolCall:
    """A model's request to run one tool: the call's id, the tool's name and its arguments."""

    id: str
    name: str
    arguments: dict[str, Any]
    #: the arguments text as the model wrote it, when it was not a JSON object (then ``arguments`` is empty)
    raw: str = ""

    @classmethod
    def parse(cls, call_id: str, name: str, text: str | dict[str, Any] | None) -> ToolCall:
        """A call from the arguments as a server sends them (JSON text, or an object already parsed)."""
        if isinstance(text, dict):
            return cls(call_id, name, dict(text))
        if text is None or not text.strip():
            # models often send nothing for a tool without parameters
            return cls(call_id, name, {})
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError:
            return cls(call_id, name, {}, raw=text)
        return cls(call_id, name, parsed) if isinstance(parsed, dict) else cls(call_id, name, {}, raw=text)

    def __hash__(self) -> int:
        # a frozen value, so a Message holding calls can be hashed like any other; equal dicts hash alike
        return hash((self.id, self.name, json.dumps(self.arguments, sort_keys=True, default=str), self.raw))

    @property
    def arguments_text(self) -> str:
        """The arguments as the JSON text the OpenAI API carries (the model's own text when it was not JSON)."""
        return self.raw if self.raw else json.dumps(self.arguments, ensure_ascii=False)

    def to_dict(self) -> dict[str, Any]:
        """The OpenAI shape: ``{"id", "type": "function", "function": {"name", "arguments": JSON text}}``."""
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments_text}}

    @classmethod
    def coerce(cls, value: ToolCall | dict[str, Any]) -> ToolCall:
        """Accept a ToolCall or its OpenAI dict shape; anything else is an InvalidOptions naming what is wrong."""
        if isinstance(value, ToolCall):
            return value
        if not isinstance(value, dict):
            raise InvalidOptions(f"a tool call must be a dict with 'id' and 'function', not {type(value).__name__}")
        unknown = set(value) - {"id", "type", "function", "index"}
        if unknown:
            raise InvalidOptions(f"unknown tool call field(s): {', '.join(sorted(unknown))}")
        if value.get("type", "function") != "function":
            raise InvalidOptions(f"tool call type must be 'function', not {value.get('type')!r}")
        call_id, function = value.get("id"), value.get("function")
        if not isinstance(call_id, str) or not call_id:
            raise InvalidOptions("a tool call needs an 'id' string (the tool message answering it names it)")
        if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
            raise InvalidOptions('a tool call needs "function": {"name": ..., "arguments": ...}')
        extra = set(function) - {"name", "arguments"}
        if extra:
            raise InvalidOptions(f"unknown tool call function field(s): {', '.join(sorted(extra))}")
        arguments = function.get("arguments")
        if arguments is not None and not isinstance(arguments, (str, dict)):
            raise InvalidOptions("tool call arguments must be a JSON string (or an object)")
        return cls.parse(call_id, function["name"], arguments)


_ROLES = ("system", "user", "assistant", "tool")


@dataclass(frozen=True)
class Message:
    """One turn of a conversation: text, or an assistant turn calling tools, or a tool's result (role "tool")."""

    role: Role
    content: str
    #: the tools an assistant turn called (its content may then be empty)
    tool_calls: tuple[ToolCall, ...] = ()
    #: for role "tool": the id of the call this message answers, and the tool's name
    tool_call_id: str | None = None
    name: str | None = None

    @classmethod
    def coerce(cls, value: Message | dict[str, Any]) -> Message:
        """Accept a Message or an OpenAI-style dict (``role``, ``content``; ``tool_calls``, ``tool_call_id``)."""
        if isinstance(value, Message):
            return value
        if not isinstance(value, dict):
            raise InvalidOptions(f"a message must be a dict with 'role' and 'content', not {type(value).__name__}")
        unknown = set(value) - {"role", "content", "tool_calls", "tool_call_id", "name"}
        if unknown:
            raise InvalidOptions(f"unknown message field(s): {', '.join(sorted(unknown))}")
        role, content = value.get("role"), value.get("content")
        if role not in _ROLES:
            raise InvalidOptions(f"message role must be system, user, assistant or tool, not {role!r}")
        raw_calls = value.get("tool_calls") or []
        if raw_calls and role != "assistant":
            raise InvalidOptions(f"only an assistant message can have tool_calls, not a {role} message")
        if not isinstance(raw_calls, (list, tuple)):
            raise InvalidOptions("message tool_calls must be a list")
        calls = tuple(ToolCall.coerce(c) for c in raw_calls)
        if content is None and calls:
            content = ""  # the API sends null content beside tool calls
        if not isinstance(content, str):
            raise InvalidOptions("message content must be a string")
        call_id, name = value.get("tool_call_id"), value.get("name")
        if role == "tool" and (not isinstance(call_id, str) or not call_id):
            raise InvalidOptions("a tool message needs the 'tool_call_id' of the call it answers")
        if role != "tool" and call_id is not None:
            raise InvalidOptions(f"only a tool message has a tool_call_id, not a {role} message")
        if name is not None and role != "tool":
            # kept as before: a participant name on other roles means nothing to the backends
            raise InvalidOptions("unknown message field(s): name (only a tool message names its tool)")
        if name is not None and not isinstance(name, str):
            raise InvalidOptions("message name must be a string")
        return cls(role=role, content=content, tool_calls=calls, tool_call_id=call_id, name=name)

    def to_dict(self) -> dict[str, Any]:
        """The OpenAI-style dict form (the tool keys only when set, so a plain message is ``{role, content}``)."""
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            out["tool_calls"] = [c.to_dict() for c in self.tool_calls]
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        if self.name is not None:
            out["name"] = self.name
        return out


@dataclass(frozen=True)
class Options:
    """Generation options; ``None`` means the backend's default. Unknown keys are rejected.

    Each field carries everything else about its option (``opt``: kind, help, range, default, CLI flag,
    Ollama and OpenAI names), and every face, flag and wire mapping is made from that (``OPTIONS``):
    adding an option is adding a field here.
    """

    # fmt: off
    temperature: float | None = field(default=None, metadata=opt(
        "float", "randomness; 0 = always the likeliest token", "0.8", 0.0, 5.0, 0.8,
        "--temperature", "temperature", "temperature"))
    top_k: int | None = field(default=None, metadata=opt(
        "int", "sample among the k likeliest tokens", "40", 0, 100_000, 40, "--top-k", "top_k"))
    top_p: float | None = field(default=None, metadata=opt(
        "float", "nucleus: likeliest tokens up to this share", "0.95", 0.0, 1.0, 0.95, "--top-p", "top_p", "top_p"))
    min_p: float | None = field(default=None, metadata=opt(
        "float", "drop tokens under this share of the top", "0.05", 0.0, 1.0, 0.05, "--min-p", "min_p"))
    repeat_penalty: float | None = field(default=None, metadata=opt(
        "float", "above 1 discourages repeating tokens", "1.0", 0.0, 10.0, 1.0, "--repeat-penalty", "repeat_penalty"))
    frequency_penalty: float | None = field(default=None, metadata=opt(
        "float", "lower odds of a token the more it was used", "0.0", -2.0, 2.0, 0.0,
        "--frequency-penalty", "frequency_penalty", "frequency_penalty"))
    presence_penalty: float | None = field(default=None, metadata=opt(
        "float", "lower odds of any token already used", "0.0", -2.0, 2.0, 0.0,
        "--presence-penalty", "presence_penalty", "presence_penalty"))
    seed: int | None = field(default=None, metadata=opt(
        "int", "same seed + settings = same answer", "random", -1, 2**32 - 1, None, "--seed", "seed", "seed"))
    stop: tuple[str, ...] = field(default=(), metadata=opt(
        "stop", "stop at any of these texts (a|b)", "none", flag="--stop", ollama="stop", openai="stop"))
    max_tokens: int | None = field(default=None, metadata=opt(
        "int", "stop after this many tokens", "until the context is full", 1, 1_000_000, None,
        "--max-tokens", "num_predict", "max_tokens"))
    num_ctx: int | None = field(default=None, metadata=opt(
        "int", "context window in tokens", "the config's num_ctx", 16, 1_048_576, None, "--num-ctx", "num_ctx"))
    # no flag: `run` never had one, and the engine picks the count from the machine's load (README)
    num_threads: int | None = field(default=None, metadata=opt(
        "int", "engine threads", "one per free core", 1, 1024, None, None, "num_thread"))
    # a JSON schema the answer must satisfy, or the string "json" for any JSON value; Ollama takes it beside
    # its options and OpenAI as response_format, both mapped by hand in serve
    format: dict[str, Any] | str | None = field(default=None, metadata=opt(
        "format", '"json" or a JSON schema the answer must match', "free text", flag="--format", form=False))
    # the log-probability of each token written, and of the N likeliest in its place (0: none); asked for by
    # API clients (OpenAI's logprobs/top_logprobs, Ollama's), so it has no flag and no field in the TUI's form
    logprobs: int | None = field(default=None, metadata=opt(
        "int", "log-probabilities per token, with this many alternatives", "off", 0, 20, None, form=False))
    # fmt: on

    def __post_init__(self) -> None:
        for name, (lo, hi) in RANGES.items():
            value = getattr(self, name)
            if value is None:
                continue
            want_int = name in INT_OPTIONS
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or (want_int and not isinstance(value, int))
            ):
                kind = "an integer" if want_int else "a number"
                raise InvalidOptions(f"option {name} must be {kind}, not {value!r}")
            if not lo <= value <= hi:
                raise InvalidOptions(f"option {name}={value} is out of range; use a value from {lo} to {hi}")
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        elif not all(isinstance(s, str) and s for s in self.stop):
            raise InvalidOptions("option stop must be a list of non-empty strings")
        else:
            object.__setattr__(self, "stop", tuple(self.stop))
        fmt = self.format
        if isinstance(fmt, str) and fmt != "json":
            try:
                fmt = json.loads(fmt)
            except json.JSONDecodeError as exc:
                raise InvalidOptions(f'option format must be "json" or a JSON schema; {exc}') from None
            object.__setattr__(self, "format", fmt)
        if fmt is not None and not isinstance(fmt, (str, dict)):
            raise InvalidOptions('option format must be "json" or a JSON schema object')

    @classmethod
    def names(cls) -> list[str]:
        """Every option name, in declaration order."""
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None = None, **kwargs: Any) -> Options:
        """Build from a mapping (config file, HTTP body, keyword arguments); unknown keys are errors."""
        merged = {**(data or {}), **kwargs}
        unknown = sorted(set(merged) - set(cls.names()))
        if unknown:
            raise InvalidOptions(
                f"unknown option(s): {', '.join(unknown)}", hint=f"valid options: {', '.join(cls.names())}"
            )
        if merged.get("stop") is None:
            merged.pop("stop", None)
        return cls(**merged)

    def merged(self, other: Options | None) -> Options:
        """These options with every value set in ``other`` taking precedence."""
        if other is None:
            return self
        changes = {
            f.name: getattr(other, f.name)
            for f in dataclasses.fields(other)
            if getattr(other, f.name) not in (None, ())
        }
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Only the options that are set."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v not in (None, ())}

    def with_values(self, values: dict[str, Any]) -> Options:
        """A copy with ``values`` set; a value of None (or an empty stop list) goes back to the default."""
        unknown = sorted(set(values) - set(self.names()))
        if unknown:
            raise InvalidOptions(
                f"unknown option(s): {', '.join(unknown)}", hint=f"valid options: {', '.join(self.names())}"
            )
        changes: dict[str, Any] = {k: (() if k == "stop" and v is None else v) for k, v in values.items()}
        return dataclasses.replace(self, **changes)

    def with_text(self, text: str) -> Options:
        """A copy with ``key=value`` words applied, as typed in a face (``temperature=0.2 seed=1 stop=User:``)."""
        return self.with_values(parse_option_words(text))


#: every option, in the order of the fields of Options, with its name filled in
OPTIONS: tuple[OptionSpec, ...] = tuple(
    dataclasses.replace(f.metadata["option"], name=f.name) for f in dataclasses.fields(Options)
)
#: names of the options that take whole numbers, and of those that take any number
INT_OPTIONS = frozenset(o.name for o in OPTIONS if o.kind == "int")
FLOAT_OPTIONS = frozenset(o.name for o in OPTIONS if o.kind == "float")
#: each ranged option's (low, high)
RANGES: dict[str, tuple[float, float]] = {
    o.name: (o.low, o.high) for o in OPTIONS if o.low is not None and o.high is not None
}
#: words that put an option back to the backend's default
_UNSET_WORDS = frozenset({"default", "none", "unset", ""})


#: the longest keep-alive taken, in seconds (a year); a negative one means "until unloaded"
MAX_KEEP_ALIVE = 365 * 24 * 3600.0


def check_keep_alive(seconds: float, where: str = "keep_alive") -> float:
    """A keep-alive in seconds as every timer can hold it: 0 unloads, a negative value keeps the model loaded
    (normalised to -1), anything else must be finite and at most a year. NaN, infinity and 1e300 were taken
    as they were and killed the model's worker thread (a timestamp out of range), wedging the model."""
    if seconds != seconds or seconds > MAX_KEEP_ALIVE:
        raise InvalidOptions(
            f"{where} {seconds!r} is out of range",
            hint=f"use seconds from 0 to {MAX_KEEP_ALIVE:.0f} (a year), or -1 to keep the model loaded",
        )
    return -1.0 if seconds < 0 else float(seconds)


def read_format(text: str) -> str:
    """A ``format`` value as typed: ``@FILE`` is the JSON schema in FILE, anything else is the value itself."""
    if not text.startswith("@"):
        return text
    path = Path(text[1:]).expanduser()
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:  # a typo in a path is the user's to fix, not an internal error
        raise InvalidOptions(
            f"cannot read the format file {path}: {exc.strerror or exc}",
            hint="give a JSON schema file, e.g. @schema.json",
        ) from None
    except UnicodeDecodeError:
        raise InvalidOptions(f"the format file {path} is not UTF-8 text", hint="give a JSON schema file") from None


def parse_option_value(name: str, text: str) -> Any:
    """One option's value typed as text: numbers checked by type, ``stop`` split on ``|``, ``format`` as JSON.

    ``default`` (or ``none``) means "back to the backend's default" and returns None.
    """
    if name not in Options.names():
        raise InvalidOptions(f"unknown option {name!r}", hint=f"valid options: {', '.join(Options.names())}")
    text = text.strip()
    if text.lower() in _UNSET_WORDS:
        return None
    if name in INT_OPTIONS:
        try:
            return int(text)
        except ValueError:
            raise InvalidOptions(f"option {name} must be an integer, not {text!r}") from None
    if name in FLOAT_OPTIONS:
        try:
            return float(text)
        except ValueError:
            raise InvalidOptions(f"option {name} must be a number, not {text!r}") from None
    if name == "stop":
        return tuple(s for s in text.split("|") if s)
    # format: "json" or a JSON schema; Options validates it
    return text


def parse_option_words(text: str) -> dict[str, Any]:
    """``key=value`` words (shell-style quoting allowed) as a dict of typed option values.

    ``format=`` takes the rest of the line as it is, so a JSON schema needs no quoting.
    """
    import re
    import shlex

    out: dict[str, Any] = {}
    fmt = re.search(r"(?:^|\s)format=", text)
    if fmt:
        text, schema = text[: fmt.start()], text[fmt.end() :]
        out["format"] = parse_option_value("format", schema)
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise InvalidOptions(f"cannot read the options {text!r}: {exc}") from None
    for word in words:
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise InvalidOptions(f"expected key=value, not {word!r}", hint="e.g. temperature=0.2 seed=1 max_tokens=200")
        name = key.strip().replace("-", "_")
        out[name] = parse_option_value(name, value)
    Options().with_values(out)  # validate ranges now, so the caller learns at once
    return out


@dataclass(frozen=True)
class Stats:
    """What a finished (or stopped) generation measured. Times in seconds."""

    prompt_tokens: int = 0
    #: prompt tokens actually evaluated; the rest came from the reused prefix
    prompt_eval_tokens: int = 0
    generated_tokens: int = 0
    load_time: float = 0.0
    time_to_first_token: float = 0.0
    prompt_eval_time: float = 0.0
    generation_time: float = 0.0
    total_time: float = 0.0
    stop_reason: StopReason = "stop"
    #: the token counts were counted from the stream here, because the server reported none (no ``usage``)
    estimated: bool = False

    @property
    def cached_tokens(self) -> int:
        """Prompt tokens that were not evaluated again thanks to prefix reuse."""
        return self.prompt_tokens - self.prompt_eval_tokens

    @property
    def prompt_tokens_per_s(self) -> float:
        """Prompt evaluation speed."""
        return self.prompt_eval_tokens / self.prompt_eval_time if self.prompt_eval_time > 0 else 0.0

    @property
    def generation_tokens_per_s(self) -> float:
        """Generation speed, tokens after the first over the time after the first."""
        n = self.generated_tokens - 1
        return n / self.generation_time if n > 0 and self.generation_time > 0 else 0.0

    def summary(self) -> str:
        """One line for a face's footer: first-token time, tokens/s, token counts and why it stopped."""
        ttft = (
            f"{self.time_to_first_token * 1000:.0f} ms"
            if self.time_to_first_token < 1
            else f"{self.time_to_first_token:.2f} s"
        )
        parts = [
            f"TTFT {ttft}",
            f"{self.generation_tokens_per_s:.1f} tok/s",
            f"{self.prompt_tokens} prompt + {self.generated_tokens} generated tokens"
            if not self.estimated
            else f"≈{self.generated_tokens} generated tokens (counted here: the server sent no usage)",
        ]
        if self.cached_tokens:
            parts.append(f"{self.cached_tokens} reused")
        if self.stop_reason != "stop":
            parts.append(
                {"length": "stopped at max tokens", "cancelled": "interrupted"}.get(self.stop_reason, self.stop_reason)
            )
        return " · ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """All fields plus the derived rates."""
        d = dataclasses.asdict(self)
        d["cached_tokens"] = self.cached_tokens
        d["prompt_tokens_per_s"] = round(self.prompt_tokens_per_s, 2)
        d["generation_tokens_per_s"] = round(self.generation_tokens_per_s, 2)
        return d


@dataclass(frozen=True)
class Chunk:
    """One piece of a streamed answer; the last chunk has ``done`` set and carries ``stats``."""

    text: str = ""
    done: bool = False
    stats: Stats | None = None
    model: str = ""
    #: one entry per token in ``text``, when the options asked for ``logprobs``
    logprobs: tuple[TokenLogprob, ...] = ()
    #: the tools the model called, complete, on the chunk that finishes them (normally the last)
    tool_calls: tuple[ToolCall, ...] = ()


@dataclass(frozen=True)
class TokenLogprob:
    """One token written: its text, bytes and log-probability, and the likeliest tokens in its place."""

    token: str
    logprob: float
    #: the token's UTF-8 bytes (a token may hold part of a character, which ``token`` then shows as U+FFFD)
    bytes: tuple[int, ...] = ()
    #: (token, logprob, bytes) of the likeliest tokens at this place, likeliest first
    top: tuple[tuple[str, float, tuple[int, ...]], ...] = ()


@dataclass(frozen=True)
class Embeddings:
    """Vectors for a list of texts, in their order, with what computing them took."""

    vectors: list[list[float]]
    model: str
    #: tokens read, all texts together
    prompt_tokens: int = 0
    load_time: float = 0.0
    total_time: float = 0.0


#: terminal control sequences: CSI (colours, cursor moves, clearing) and OSC (window titles, links)
_ESCAPES = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]?")
#: the other control characters, C0 (but newline and tab) and C1, and DEL
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` safe to print on a terminal: escape sequences removed, other control characters shown as \ufffd.

    Model files and servers carry text (names, licences, templates) that llmspell prints; an escape code in one
    set the window title or cleared the screen of whoever ran ``llmspell model info``.
    """
    return _CONTROLS.sub("\ufffd", _ESCAPES.sub("", text))


#: ModelInfo.source of a packaged model whose file is joined from its package's chunks the first time it is used
#: (until then it has no file, so no location)
ASSEMBLED_ON_FIRST_USE = "pypi (assembled on first use)"


def base_model_warning(name: str) -> str:
    """What a face says to someone about to chat with a base model (one that continues text)."""
    return (
        f"{name} is a base model: it continues text and does not answer questions; "
        f'use plain completion instead (llmspell run {name} --raw "Once upon a time")'
    )


#: what `model info` says of a base model (ModelInfo.base_model)
BASE_MODEL_KIND = "base model (not instruction-tuned): for plain completion (--raw) and speed comparisons, not chat"


@dataclass(frozen=True)
class ModelInfo:
    """What is known about one model of one backend (what a face shows of it: every text is printable)."""

    name: str
    backend: str
    #: where it lives: a file path, or a server address for remote backends
    location: str = ""
    #: "pypi", "pulled", "hf-cache", "ollama-store", "path", "server"
    source: str = ""
    size_bytes: int | None = None
    quantization: str | None = None
    family: str | None = None
    parameters: str | None = None
    context_length: int | None = None
    chat_template: str | None = None
    has_chat_template: bool | None = None
    license: str | None = None
    sha256: str | None = None
    loaded: bool = False
    description: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: for a loaded model: when its server will unload it (ISO 8601, UTC), if the backend says
    expires_at: str | None = None
    #: a base (pretrained, not instruction-tuned) model: it continues text and does not answer, so it is meant for
    #: plain completion; a chat template, where it has one, lets it take a chat but not follow it
    base_model: bool = False

    def __post_init__(self) -> None:
        # the text comes from model files and servers: no face may print an escape code from it
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, str) and value != (clean := printable(value)):
                object.__setattr__(self, f.name, clean)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return dataclasses.asdict(self)

    def facts(self) -> list[tuple[str, str]]:
        """What `llmspell model info` and the TUI's info dialog show, as label and value (empty ones left out)."""
        rows: list[tuple[str, object]] = [
            ("name", f"{self.name}@{self.backend}"),
            ("about", self.description),
            ("family", self.family),
            ("parameters", self.parameters),
            ("quantization", self.quantization),
            ("context", self.context_length),
            ("license", self.license),
            ("size", human_bytes(self.size_bytes) if self.size_bytes else None),
            ("source", self.source),
            ("file", self.location),
            ("sha256", self.sha256),
            ("loaded", "yes" if self.loaded else "no"),
            ("kind", BASE_MODEL_KIND if self.base_model else None),
            ("chat template", self.template_note()),
        ]
        return [(label, str(value)) for label, value in rows if value not in (None, "")]

    def template_note(self) -> str:
        """Whether the model can chat, in words: ``yes``, none (plain completion), or unknown until its file is
        read (a model not downloaded yet); a base model's template is said to be one it does not follow."""
        if self.has_chat_template is None:
            return "unknown until downloaded (read from the file)"
        if self.base_model:
            return (
                "yes, but it is a base model: it continues a chat rather than answering it"
                if self.has_chat_template
                else "none (a base model: plain completion only)"
            )
        return "yes" if self.has_chat_template else "none (plain completion only)"

    def chat_warning(self) -> str | None:
        """What a face tells the user who picks this model for a chat, or None when nothing is amiss."""
        if self.base_model:
            return base_model_warning(self.name)
        if self.has_chat_template is False:
            return f"{self.name} has no chat template, so it cannot chat; use plain completion (--raw)"
        return None


@dataclass(frozen=True)
class BackendStatus:
    """Whether a backend can be used, and if not, why."""

    backend: str
    ready: bool
    version: str | None = None
    device: str | None = None
    model_count: int = 0
    loaded: tuple[str, ...] = ()
    error: str | None = None
    address: str | None = None
    #: things worth knowing that do not make the backend unusable
    notes: tuple[str, ...] = ()
    #: seconds one small request took (a server's round trip); None when not measured
    latency: float | None = None
    #: what to do about ``error`` (the key variable to set, the setting to check), when there is advice
    hint: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        d = dataclasses.asdict(self)
        d["loaded"] = list(self.loaded)
        d["notes"] = list(self.notes)
        return d


@dataclass(frozen=True)
class PullProgress:
    """One step of a pull: a status line, and bytes done of total when downloading."""

    status: str
    completed: int = 0
    total: int = 0
    digest: str | None = None
    done: bool = False
    path: Path | None = None

    @property
    def fraction(self) -> float:
        """Completed over total, 0 when the total is unknown."""
        return self.completed / self.total if self.total else 0.0


def human_bytes(n: float | None) -> str:
    """1.2 GB style sizes (decimal units, as model cards and Ollama print them)."""
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit in ("B", "KB") else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"
