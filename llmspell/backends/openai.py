"""The OpenAI backend: any server speaking the OpenAI API (vLLM, SGLang, TGI, llama-server, LM Studio,
llama-cpp-python's server, ``llmspell serve``), reached as a named endpoint through the official async client.

It only ever reads what the server offers: models are not pulled or deleted here (capability flags say so and
the faces hide those actions). Token counts come from the stream's ``usage`` when the server sends it, else they
are counted here and marked so; first-token time and tokens/s are always measured on this side.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import time
import uuid
import weakref
from collections.abc import AsyncGenerator, Sequence
from typing import TYPE_CHECKING, Any

import httpx

from llmspell import config as cfgmod
from llmspell.backends.base import Backend
from llmspell.endpoints import tls_problem
from llmspell.errors import (
    BackendUnavailable,
    GenerationError,
    InvalidOptions,
    LLMSpellError,
    ModelNotFound,
    PromptTooLong,
)
from llmspell.spec import ModelSpec
from llmspell.types import (
    BackendStatus,
    Chunk,
    Embeddings,
    Message,
    ModelInfo,
    Options,
    PullProgress,
    Stats,
    TokenLogprob,
    ToolCall,
)

if TYPE_CHECKING:
    from llmspell.endpoints import Endpoint

log = logging.getLogger(__name__)

#: seconds a status check or a listing may take: a hung server must not hold up `llmspell model list`
_LIST_TIMEOUT = 10.0
#: seconds each probe for the server's name and version may take (they are optional)
_PROBE_TIMEOUT = 2.0
#: what is sent as the key to a server that needs none (vLLM's documentation uses "EMPTY" the same way)
_NO_KEY = "no-key"
#: finish reasons as the core's stop reasons
_STOP = {"length": "length", "stop": "stop", "eos": "stop", "tool_calls": "stop", "content_filter": "stop"}


def _transport_error(exc: BaseException) -> str | None:
    """What kind of transport failure ``exc`` is (by class name: the SDK's HTTP library differs by version)."""
    for seen in (exc, exc.__cause__, exc.__context__):
        name = type(seen).__name__ if seen is not None else ""
        if name in ("RemoteProtocolError", "ReadError", "WriteError", "IncompleteRead", "ProtocolError"):
            return "cut"
        if name in ("ReadTimeout", "PoolTimeout", "WriteTimeout"):
            return "read_timeout"
        if name == "ConnectTimeout":
            return "connect_timeout"
    return None


def _retry_after(headers: Any) -> str:
    """The wait a 429 asks for, in words ('' when the server does not say)."""
    value = headers.get("retry-after") if headers is not None else None
    if not value:
        return ""
    try:
        seconds = float(value)
    except ValueError:
        return f" (retry after {value})"
    return f" (the server asks to retry after {seconds:g} s)"


def _reason(exc: Any) -> str:
    """The reason an error answer gives, on one line, in the shapes servers use: OpenAI's and vLLM's ``message``,
    FastAPI's ``detail`` (llama-cpp-python's server), TGI's ``error`` string; else the client's own words."""
    body = getattr(exc, "body", None)
    found: Any = None
    if isinstance(body, dict):
        found = body.get("message") or body.get("detail") or body.get("error")
        if isinstance(found, dict):
            found = found.get("message")
        elif isinstance(found, list):  # FastAPI's validation errors
            found = "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in found)
    elif isinstance(body, str) and not body.lstrip().startswith("<"):  # a plain-text body, not an HTML page
        found = body
    text = " ".join(str(found or getattr(exc, "message", "") or exc).split())
    return text if len(text) <= 300 else text[:297] + "..."


def _response_format(fmt: dict[str, Any] | str | None) -> dict[str, Any] | None:
    """``Options.format`` as ``response_format``: a JSON schema as ``json_schema``, "json" as ``json_object``."""
    if fmt is None:
        return None
    if fmt == "json":
        return {"type": "json_object"}
    if isinstance(fmt, dict):
        return {"type": "json_schema", "json_schema": {"name": "answer", "schema": fmt, "strict": True}}
    raise InvalidOptions(f"format {fmt!r} cannot be sent to an OpenAI server", hint='use "json" or a JSON schema')


def _logprobs(choice: Any) -> tuple[TokenLogprob, ...]:
    """The logprobs of one streamed choice (chat or completions shape) as the core's TokenLogprob."""
    lp = getattr(choice, "logprobs", None)
    if lp is None:
        return ()
    content = getattr(lp, "content", None)
    if content is not None:  # chat: a list of tokens with their alternatives
        return tuple(
            TokenLogprob(
                t.token,
                float(t.logprob),
                tuple(t.bytes or t.token.encode()),
                tuple((a.token, float(a.logprob), tuple(a.bytes or a.token.encode())) for a in t.top_logprobs or ()),
            )
            for t in content
        )
    tokens = getattr(lp, "tokens", None) or []  # completions: parallel lists
    values = getattr(lp, "token_logprobs", None) or []
    tops = getattr(lp, "top_logprobs", None) or [{}] * len(tokens)
    return tuple(
        TokenLogprob(
            t, float(v or 0.0), tuple(t.encode()), tuple((k, float(x), tuple(k.encode())) for k, x in top.items())
        )
        for t, v, top in zip(tokens, values, tops, strict=False)
    )


def _older_form(params: dict[str, Any], refusal: str) -> dict[str, Any] | None:
    """The request in the form older engines take, when ``refusal`` is about a field they lack; None when it is
    about something else (then the refusal is the answer)."""
    text = refusal.lower()
    if "stream_options" in text and "stream_options" in params:
        return {k: v for k, v in params.items() if k != "stream_options"}
    fmt = params.get("response_format")
    about_format = "json_schema" in text or "response_format" in text
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema" and about_format:
        return {**params, "response_format": {"type": "json_object", "schema": fmt["json_schema"]["schema"]}}
    return None


def _tool_choice(choice: str | dict[str, Any] | None, tools: Sequence[dict[str, Any]]) -> str | dict[str, Any] | None:
    """``tool_choice`` checked before it is sent: "auto", "none", "required" or a function the tools name."""
    if choice is None or choice in ("auto", "none", "required"):
        return choice
    names = [t.get("function", {}).get("name") for t in tools if isinstance(t, dict)]
    if isinstance(choice, dict):
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if choice.get("type") == "function" and isinstance(name, str) and name in names:
            return {"type": "function", "function": {"name": name}}
        if choice.get("type") == "function" and isinstance(name, str):
            raise InvalidOptions(
                f"tool_choice names {name!r}, which is not among the tools sent",
                hint=f"the tools are: {', '.join(map(str, names)) or 'none'}",
            )
    raise InvalidOptions(
        f"tool_choice {choice!r:.80} is not one the API takes",
        hint='use "auto", "none", "required" or {"type": "function", "function": {"name": ...}}',
    )


def _wire_message(m: Message) -> dict[str, Any]:
    """One message as the chat API takes it (a tool message names its call, not its tool: servers refuse more)."""
    out = m.to_dict()
    if m.role == "tool":
        out.pop("name", None)
    return out


class _CallParts:
    """One tool call as its streamed fragments arrive (by index): the id and name once, the arguments in pieces."""

    def __init__(self) -> None:
        self.id = ""
        self.name = ""
        self.arguments: list[str] = []

    def add(self, delta: Any) -> None:
        # some servers (llama-cpp-python's) repeat the id and name on every fragment: the first one counts
        if getattr(delta, "id", None) and not self.id:
            self.id = delta.id
        function = getattr(delta, "function", None)
        if function is None:
            return
        if getattr(function, "name", None) and not self.name:
            self.name = function.name
        if getattr(function, "arguments", None):
            self.arguments.append(function.arguments)

    def call(self) -> ToolCall:
        return ToolCall.parse(self.id or f"call_{uuid.uuid4().hex[:24]}", self.name, "".join(self.arguments))


class OpenAIBackend(Backend):
    """One OpenAI-compatible server named in ``[[endpoints]]``; every call has a connect and a read timeout."""

    kind = "openai"
    IMPLEMENTS_PULL = False
    IMPLEMENTS_DELETE = False
    IMPLEMENTS_EMBED = True
    IMPLEMENTS_TOOLS = True

    @classmethod
    def from_config(cls, config: cfgmod.Config) -> OpenAIBackend:
        """There is no default OpenAI server: one is always a named endpoint."""
        raise BackendUnavailable(
            "an OpenAI-compatible server is reached as a named endpoint",
            hint="add one with `llmspell endpoint add NAME URL --kind openai`",
        )

    @classmethod
    def from_endpoint(cls, config: cfgmod.Config, endpoint: Endpoint) -> OpenAIBackend:
        """The server one ``[[endpoints]]`` entry of kind ``openai`` describes."""
        return cls(config, endpoint)

    def __init__(self, config: cfgmod.Config | None, endpoint: Endpoint) -> None:
        super().__init__(endpoint.name)
        self.config = config or cfgmod.load_config()
        self.endpoint: Endpoint = endpoint
        self.url = endpoint.url
        #: one client per event loop and key: its connection pool belongs to the loop that opened it, and a key
        #: exported after start is used from the next request on
        self._clients: dict[tuple[int, str], tuple[weakref.ref[asyncio.AbstractEventLoop], Any]] = {}
        self._models_cache: tuple[float, list[Any]] | None = None
        #: the engine's name and version, once a status check found them
        self._server: str | None = None
        self._probed = False
        #: answers streaming from this server now, and the last status taken while none was: llama-cpp-python's
        #: server ends a running answer (without a finish reason) when any other request arrives, even a model
        #: listing, so status checks and listings are answered from memory while an answer streams
        self._streams = 0
        self._last_status: BackendStatus | None = None

    @property
    def address(self) -> str | None:
        """The server's address."""
        return self.url

    @property
    def label(self) -> str:
        """How messages name the server: the endpoint and its address."""
        return f"endpoint {self.name} ({self.url})"

    # -- the client ---------------------------------------------------------------------------------------------

    def _client(self) -> Any:
        import openai

        key = self.endpoint.api_key() or ""
        loop = asyncio.get_running_loop()
        # a client whose loop has ended (the scripting API runs one loop per call) can never be used or closed
        # again: dropped, so its sockets go with it (200 calls had left 407 descriptors open)
        for stale in [k for k, (ref, _) in self._clients.items() if ref() is None or ref().is_closed()]:  # type: ignore[union-attr]
            del self._clients[stale]
        found = self._clients.get((id(loop), key))
        if found is not None:
            return found[1]
        # nor do OPENAI_ORG_ID and OPENAI_PROJECT_ID, which the client would send to every server
        headers: dict[str, Any] = {
            **self.endpoint.headers,
            "OpenAI-Organization": openai.Omit(),
            "OpenAI-Project": openai.Omit(),
        }
        client = openai.AsyncOpenAI(
            # the SDK's own HTTP client closes itself when collected by scheduling that on whatever loop runs then:
            # for a client of a finished loop that fails inside the next one (prompt_toolkit then stopped the REPL
            # with "Press ENTER"); a plain one is just collected, its sockets with it
            http_client=openai.DefaultAsyncHttpxClient(),
            base_url=self.url,
            # a placeholder when there is no key (the client insists on one, and local engines ignore it): a key
            # from OPENAI_API_KEY must never be sent to another server
            api_key=key or _NO_KEY,
            timeout=openai.Timeout(self.endpoint.read_timeout, connect=self.endpoint.connect_timeout),
            # a workbench shows a refusal at once, with the wait the server asked for, instead of retrying behind
            # the user's back
            max_retries=0,
            default_headers=headers,
        )
        self._clients[(id(loop), key)] = (weakref.ref(loop), client)
        return client

    def _error(self, exc: BaseException, what: str, spec: ModelSpec | None = None) -> LLMSpellError:
        """Any failure of a call as one error naming the endpoint, the cause and what to do."""
        import openai

        if isinstance(exc, LLMSpellError):
            return exc
        where = f"[[endpoints]] {self.name}"
        if isinstance(exc, openai.APIStatusError):
            return self._status_error(exc.status_code, exc, what, spec)
        tls = tls_problem(exc)
        if tls:
            return BackendUnavailable(
                f"{self.label}: the TLS handshake failed ({what}): {tls}",
                hint="check the url's scheme (http or https) and that this machine trusts the server's certificate "
                "(SSL_CERT_FILE names extra CA certificates)",
            )
        kind = _transport_error(exc)
        if isinstance(exc, openai.APITimeoutError) or kind in ("read_timeout", "connect_timeout"):
            if kind == "connect_timeout":
                return BackendUnavailable(
                    f"{self.label} did not accept a connection within {self.endpoint.connect_timeout:g} s ({what})",
                    hint=f"check the server is up and the url in {where}",
                )
            return BackendUnavailable(
                f"{self.label} sent nothing for {self.endpoint.read_timeout:g} s ({what})",
                hint=f"the server may be overloaded or still loading the model; read_timeout in {where} sets the wait",
            )
        if kind == "cut":
            return BackendUnavailable(
                f"the connection to {self.label} was cut while {what}",
                hint="the server or a proxy between closed it; what arrived is kept, marked unfinished",
            )
        if isinstance(exc, openai.APIConnectionError):
            return BackendUnavailable(
                f"{self.label} is not reachable ({what})", hint=f"check the server is up and the url in {where}"
            )
        if isinstance(exc, (httpx.HTTPError, OSError)):
            return BackendUnavailable(f"the connection to {self.label} failed while {what}: {exc}")
        return GenerationError(f"{self.label}: {type(exc).__name__}: {exc}")

    def _status_error(self, status: int, exc: Any, what: str, spec: ModelSpec | None) -> LLMSpellError:
        text = _reason(exc)
        if status in (401, 403):
            return BackendUnavailable(
                f"{self.label} refused access ({status}) while {what}: {text}", hint=self.endpoint.key_hint()
            )
        if status == 404 and spec is not None:
            return ModelNotFound(
                f"{self.label} has no model {spec.tag}",
                hint=f"see what it serves: llmspell model list --backend {self.name}",
            )
        if status == 429:
            wait = _retry_after(getattr(getattr(exc, "response", None), "headers", None))
            return BackendUnavailable(
                f"{self.label} is rate-limiting requests (429){wait} while {what}: {text}",
                hint="wait and send it again, or lower how many requests go to this endpoint at once",
            )
        if status in (400, 422):
            lowered = text.lower()
            if "context" in lowered and ("length" in lowered or "window" in lowered or "maximum" in lowered):
                return PromptTooLong(f"{self.label}: {text}", hint="shorten the conversation or the prompt")
            return InvalidOptions(f"{self.label} refused the request ({status}) while {what}: {text}")
        if status >= 500:
            return BackendUnavailable(
                f"{self.label} failed with a server error ({status}) while {what}: {text}",
                hint="the server is in trouble (overloaded, out of memory, restarting); check its log and retry",
            )
        return BackendUnavailable(f"{self.label} answered {status} while {what}: {text}")

    # -- what the server offers ---------------------------------------------------------------------------------

    async def _models(self, fresh: bool = False) -> list[Any]:
        """The server's ``/v1/models`` entries the filter lets through (kept a few seconds: resolving a spec, the
        status line and a listing all ask)."""
        now = time.monotonic()
        if self._models_cache and (self._streams or (not fresh and now - self._models_cache[0] < 5.0)):
            return self._models_cache[1]
        client = self._client()
        try:
            page = await asyncio.wait_for(client.models.list(), min(_LIST_TIMEOUT, self.endpoint.read_timeout))
        except TimeoutError:
            raise BackendUnavailable(
                f"{self.label} did not list its models within {min(_LIST_TIMEOUT, self.endpoint.read_timeout):g} s",
                hint=f"the server may be hung or overloaded; or turn it off with enabled = false in "
                f"[[endpoints]] {self.name}",
            ) from None
        except Exception as exc:
            raise self._error(exc, "listing models") from None
        models = [m for m in page.data if self.offers(m.id)]
        self._models_cache = (time.monotonic(), models)
        return models

    def _info(self, m: Any) -> ModelInfo:
        extra = {k: v for k, v in (getattr(m, "model_extra", None) or {}).items() if isinstance(v, (str, int, float))}
        if getattr(m, "owned_by", None):
            extra["owned_by"] = m.owned_by
        context = extra.get("max_model_len") or extra.get("context_length") or extra.get("max_context_length")
        return ModelInfo(
            name=m.id,
            backend=self.name,
            location=self.url,
            source="server",
            context_length=int(context) if isinstance(context, (int, float)) else None,
            extra=extra,
        )

    async def _server_name(self) -> str | None:
        """The engine and version, from the routes engines add beside the API (all optional, probed at once)."""
        root = self.url.removesuffix("/v1")
        headers = self.endpoint.request_headers()

        async def probe(client: httpx.AsyncClient, path: str) -> dict[str, Any] | None:
            try:
                resp = await client.get(root + path)
                doc = resp.json() if resp.status_code == 200 else None
            except (httpx.HTTPError, ValueError):
                return None
            return doc if isinstance(doc, dict) else None

        timeout = httpx.Timeout(_PROBE_TIMEOUT, connect=self.endpoint.connect_timeout)
        async with httpx.AsyncClient(timeout=timeout, headers=headers) as client:
            ollama, props, info, sglang, version = await asyncio.gather(
                probe(client, "/api/version"),
                probe(client, "/props"),
                probe(client, "/info"),
                probe(client, "/get_server_info"),
                probe(client, "/version"),
            )
        if ollama and ollama.get("llmspell_version"):
            return f"llmspell serve {ollama['llmspell_version']}"
        if ollama and ollama.get("version"):
            return f"Ollama {ollama['version']}"
        if props and ("build_info" in props or "default_generation_settings" in props):
            return f"llama-server {props.get('build_info', '')}".strip()
        if info and (info.get("router") == "text-generation-router" or ("model_id" in info and "version" in info)):
            return f"TGI {info.get('version', '')}".strip()
        if sglang and sglang.get("version"):
            return f"SGLang {sglang['version']}"
        if version and version.get("version"):
            return f"vLLM {version['version']}"
        return None

    async def status(self) -> BackendStatus:
        """Reachable? the round trip of a model listing, the engine's name and version, model count; never
        raises."""
        # the SDK's first import takes a second: on a thread, not the event loop, and before the clock starts
        await asyncio.to_thread(importlib.import_module, "openai")
        if self._streams and self._last_status is not None:
            return self._last_status  # see _streams: asking now could end the answer that is streaming
        started = time.perf_counter()
        try:
            models = await self._models(fresh=True)
        except LLMSpellError as exc:
            return BackendStatus(self.name, False, error=exc.message, address=self.url, device="remote", hint=exc.hint)
        latency = time.perf_counter() - started
        if not self._probed:
            # asked once, found or not: an engine does not change its name between status checks (the TUI asks
            # often, and a server that names itself nowhere would get five more requests each time)
            self._probed = True
            try:
                self._server = await self._server_name()
            except Exception as exc:  # naming the engine is a nicety; a failure here is not a status
                log.debug("probing %s for its name failed: %s", self.url, exc)
        server = self._server
        notes: tuple[str, ...] = ()
        if self.endpoint.models:
            notes += (f"models filter: {', '.join(self.endpoint.models)}",)
        self._last_status = BackendStatus(
            self.name,
            True,
            version=server,
            device="remote (OpenAI API)",
            model_count=len(models),
            address=self.url,
            notes=notes,
            latency=latency,
        )
        return self._last_status

    async def list_models(self) -> list[ModelInfo]:
        """The server's models (``/v1/models``), through the endpoint's filter."""
        return [self._info(m) for m in await self._models(fresh=True)]

    async def has_model(self, spec: ModelSpec) -> bool:
        """Whether the server lists the model (and the filter offers it)."""
        try:
            return any(m.id == spec.tag for m in await self._models())
        except LLMSpellError:
            return False

    async def _require(self, spec: ModelSpec) -> None:
        """Refuse a model the endpoint's filter leaves out, before any request is made for it."""
        if not self.offers(spec.tag):
            raise ModelNotFound(
                f"{self.label} does not offer {spec.tag}: its models filter is {', '.join(self.endpoint.models)}",
                hint=f"add it to models in [[endpoints]] {self.name}, or pick one of `llmspell model list "
                f"--backend {self.name}`",
            )

    async def info(self, spec: ModelSpec) -> ModelInfo:
        """What the server reports about one model (its ``/v1/models`` entry)."""
        await self._require(spec)
        models = await self._models(fresh=True)
        found = next((m for m in models if m.id == spec.tag), None)
        if found is None:
            offered = ", ".join(m.id for m in models[:8]) or "none"
            raise ModelNotFound(
                f"{self.label} has no model {spec.tag}",
                hint=f"it serves: {offered}{' ...' if len(models) > 8 else ''}",
            )
        return self._info(found)

    async def pull(self, spec: ModelSpec) -> AsyncGenerator[PullProgress, None]:
        """Not offered: the server serves what it was started with."""
        raise InvalidOptions(
            f"{self.label} does not pull models: it serves the models its server was started with",
            hint=f"see them with `llmspell model list --backend {self.name}`",
        )
        yield PullProgress("")  # pragma: no cover - makes this an async generator, as the contract wants

    async def delete(self, spec: ModelSpec) -> None:
        """Not offered: the models belong to the server."""
        raise InvalidOptions(
            f"{self.label} does not delete models: they belong to its server",
            hint="remove it on the server, or leave it out with the endpoint's models filter",
        )

    async def loaded(self) -> list[str]:
        """Not reported by the OpenAI API: an empty list."""
        return []

    async def unload(self, spec: ModelSpec) -> bool:
        """The OpenAI API cannot unload; nothing to do."""
        return False

    # -- generation ---------------------------------------------------------------------------------------------

    def _params(self, opts: Options) -> dict[str, Any]:
        """Our options as the API's fields; what the API lacks goes in the body as the engines name it."""
        out: dict[str, Any] = {}
        for ours, theirs in (
            ("temperature", "temperature"),
            ("top_p", "top_p"),
            ("max_tokens", "max_tokens"),
            ("seed", "seed"),
            ("frequency_penalty", "frequency_penalty"),
            ("presence_penalty", "presence_penalty"),
        ):
            value = getattr(opts, ours)
            if value is not None:
                out[theirs] = value
        if opts.seed is not None and opts.seed < 0:
            out.pop("seed")  # -1 means "random" here; the API has no such value
        if opts.stop:
            out["stop"] = list(opts.stop)[:4]  # the API allows four
        extra: dict[str, Any] = {}
        if opts.top_k is not None:
            extra["top_k"] = opts.top_k
        if opts.min_p is not None:
            extra["min_p"] = opts.min_p
        if opts.repeat_penalty is not None:
            # vLLM, SGLang and TGI call it repetition_penalty, llama.cpp's servers repeat_penalty
            extra["repeat_penalty"] = extra["repetition_penalty"] = opts.repeat_penalty
        if extra:
            out["extra_body"] = extra
        return out

    async def _open(self, create: Any, params: dict[str, Any], spec: ModelSpec) -> Any:
        """Start a streaming request. A server that refuses a field only newer engines take is asked again in
        the older form: without ``stream_options`` (only the usage is lost), or with the schema in a
        ``json_object`` format (llama-cpp-python's server and older llama-server take it so)."""
        for _ in range(3):
            try:
                return await create(**params)
            except Exception as exc:
                err = self._error(exc, "starting the answer", spec)
                older = _older_form(params, err.message)
                if older is None:
                    raise err from None
                log.info("%s refused a field; asking again in the older form: %s", self.label, err.message)
                params = older
        raise GenerationError(f"{self.label} refused every form of the request")

    async def _stream(self, spec: ModelSpec, create: Any, params: dict[str, Any]) -> AsyncGenerator[Chunk, None]:
        started = time.perf_counter()
        first: float | None = None
        last = started
        counted = 0
        usage: Any = None
        finish: str | None = None
        calls: dict[int, _CallParts] = {}
        self._streams += 1
        try:
            stream = await self._open(create, params, spec)
        except BaseException:
            self._streams -= 1
            raise
        try:
            async for event in stream:
                if getattr(event, "usage", None) is not None:
                    usage = event.usage
                for choice in event.choices or ():
                    if choice.index != 0:
                        continue
                    delta = getattr(choice, "delta", None)
                    text = (delta.content if delta is not None else getattr(choice, "text", None)) or ""
                    if choice.finish_reason:
                        finish = choice.finish_reason
                    for part in (getattr(delta, "tool_calls", None) or ()) if delta is not None else ():
                        calls.setdefault(part.index or 0, _CallParts()).add(part)
                        last = time.perf_counter()
                        if first is None:
                            first = last
                        counted += 1
                    if text:
                        last = time.perf_counter()
                        if first is None:
                            first = last
                        counted += 1
                        yield Chunk(text=text, model=spec.tag, logprobs=_logprobs(choice))
        except (GeneratorExit, asyncio.CancelledError):
            raise
        except Exception as exc:
            raise self._error(exc, "streaming the answer", spec) from None
        finally:
            # closing the response is how a stream is cancelled: the server sees the connection go
            self._streams -= 1
            with contextlib.suppress(Exception):
                await asyncio.shield(stream.close())
        if finish is None:
            raise BackendUnavailable(
                f"the answer from {self.label} ended before it was finished (the stream stopped without a finish "
                "reason)",
                hint="the server or a proxy cut it; what arrived is kept, marked unfinished",
            )
        done = time.perf_counter()
        generated = usage.completion_tokens if usage is not None and usage.completion_tokens else counted
        prompt = usage.prompt_tokens if usage is not None and usage.prompt_tokens else 0
        ttft = (first or done) - started
        yield Chunk(
            done=True,
            model=spec.tag,
            # a call without a name cannot be run or answered: a fragment the server sent on its own
            tool_calls=tuple(c.call() for _, c in sorted(calls.items()) if c.name),
            stats=Stats(
                prompt_tokens=prompt,
                prompt_eval_tokens=prompt,
                generated_tokens=generated,
                time_to_first_token=ttft,
                prompt_eval_time=ttft,
                generation_time=max(last - (first or last), 0.0),
                total_time=done - started,
                stop_reason=_STOP.get(finish, "stop"),  # type: ignore[arg-type]
                estimated=usage is None,
            ),
        )

    def _request(self, spec: ModelSpec, opts: Options) -> dict[str, Any]:
        """The request's common fields for ``opts``: the config's [options] already under the request's (as the
        other backends take them, so a comparison of a local and a remote model is on equal terms)."""
        params = {"model": spec.tag, "stream": True, "stream_options": {"include_usage": True}, **self._params(opts)}
        if opts.logprobs is not None:
            params["logprobs"] = True
            params["top_logprobs"] = opts.logprobs
        return params

    async def chat(
        self,
        spec: ModelSpec,
        messages: Sequence[Message],
        options: Options | None = None,
        *,
        tools: Sequence[dict[str, Any]] | None = None,
        tool_choice: str | dict[str, Any] | None = None,
    ) -> AsyncGenerator[Chunk, None]:
        """``/v1/chat/completions`` streaming; closing this stream closes the response, which cancels the answer.

        ``tools`` (the OpenAI shape) and ``tool_choice`` are sent as they are; the calls the model makes arrive on
        the last chunk as ``tool_calls``."""
        choice = _tool_choice(tool_choice, tools or ())
        await self._require(spec)
        opts = self.config.options.merged(options)
        params = self._request(spec, opts)
        params["messages"] = [_wire_message(m) for m in map(Message.coerce, messages)]
        if tools:
            params["tools"] = list(tools)
            if choice is not None:
                params["tool_choice"] = choice
        elif choice not in (None, "none"):
            raise InvalidOptions(f"tool_choice {choice!r:.80} was given without any tools", hint="send tools with it")
        response_format = _response_format(opts.format)
        if response_format is not None:
            params["response_format"] = response_format
        async with contextlib.aclosing(self._stream(spec, self._client().chat.completions.create, params)) as s:
            async for chunk in s:
                yield chunk

    async def complete(
        self, spec: ModelSpec, prompt: str, options: Options | None = None
    ) -> AsyncGenerator[Chunk, None]:
        """``/v1/completions`` streaming: the prompt continued as it is, with no chat template."""
        await self._require(spec)
        opts = self.config.options.merged(options)
        if opts.format is not None:
            raise InvalidOptions(
                f"{self.label}: a JSON format is sent with chat requests only (the completions API has none)",
                hint="ask through chat, or leave format out",
            )
        params = self._request(spec, opts)
        params["prompt"] = prompt
        if "top_logprobs" in params:  # the completions API takes the count itself
            params.pop("top_logprobs")
            params["logprobs"] = opts.logprobs
        async with contextlib.aclosing(self._stream(spec, self._client().completions.create, params)) as s:
            async for chunk in s:
                yield chunk

    async def embed(
        self,
        spec: ModelSpec,
        texts: Sequence[str],
        *,
        truncate: bool = True,
        options: Options | None = None,
    ) -> Embeddings:
        """``/v1/embeddings``, each vector scaled to length 1 (servers differ in whether they do)."""
        from llmspell.vectors import unit

        if not texts:
            raise InvalidOptions("there is nothing to embed", hint="send at least one text")
        await self._require(spec)
        started = time.perf_counter()
        try:
            resp = await self._client().embeddings.create(model=spec.tag, input=list(texts), encoding_format="float")
        except Exception as exc:
            raise self._error(exc, "embedding", spec) from None
        data = sorted(resp.data, key=lambda d: d.index)
        if len(data) != len(texts):
            raise GenerationError(f"{self.label} returned {len(data)} vectors for {len(texts)} texts")
        usage = getattr(resp, "usage", None)
        return Embeddings(
            [unit([float(x) for x in d.embedding]) for d in data],
            spec.tag,
            prompt_tokens=(usage.prompt_tokens if usage is not None else 0) or 0,
            total_time=time.perf_counter() - started,
        )

    async def close(self) -> None:
        """Close every client's connections."""
        clients, self._clients = [client for _, client in self._clients.values()], {}
        for client in clients:
            with contextlib.suppress(Exception):
                await client.close()
