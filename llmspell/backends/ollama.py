"""The Ollama backend: any server speaking the Ollama API, through the official ``ollama.AsyncClient``."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import uuid
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from typing import Any

import httpx

from llmspell import config as cfgmod
from llmspell.backends.base import Backend, RunningModel
from llmspell.endpoints import Endpoint, tls_problem
from llmspell.errors import BackendUnavailable, GenerationError, InvalidOptions, LLMSpellError, ModelNotFound
from llmspell.options import OLLAMA_OPTIONS
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

_NS = 1e9
#: seconds a listing waits for an answer: /api/tags and /api/ps answer at once on a healthy server, and a hung one
#: must not hold up `llmspell model list` (which lists the embedded models beside it) for the full read timeout
_LIST_TIMEOUT = 3.0


def _api_key() -> str | None:
    """The key the official client sends (``OLLAMA_API_KEY``), so our own raw requests carry it too."""
    return os.environ.get("OLLAMA_API_KEY") or None


def _iso(when: dt.datetime | None) -> str | None:
    """A server's timestamp as ISO 8601 in UTC, the form ModelInfo keeps."""
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _ollama_options(opts: Options) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, field in OLLAMA_OPTIONS.items():
        value = getattr(opts, field)
        if field == "stop":
            value = list(value) or None
        if value is not None:
            out[name] = value
    return out


def _logprob_args(opts: Options) -> dict[str, Any]:
    """Ollama's request fields for ``Options.logprobs`` (left out when not asked: older servers refuse them)."""
    if opts.logprobs is None:
        return {}
    return {"logprobs": True, "top_logprobs": opts.logprobs}


def _logprobs(part: Any) -> tuple[TokenLogprob, ...]:
    """The logprobs an Ollama stream line carries, as the core's TokenLogprob."""
    out = []
    for lp in getattr(part, "logprobs", None) or ():
        top = tuple((t.token, float(t.logprob), tuple(t.token.encode())) for t in lp.top_logprobs or ())
        out.append(TokenLogprob(lp.token, float(lp.logprob), tuple(lp.token.encode()), top))
    return tuple(out)


def _wire_message(m: Message) -> dict[str, Any]:
    """One message as Ollama's chat takes it: an assistant's calls with their arguments as objects, a tool message
    naming its tool (Ollama matches a result to its call by the tool's name and the order, not by an id)."""
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.tool_calls:
        out["tool_calls"] = [{"function": {"name": c.name, "arguments": _arguments(c)}} for c in m.tool_calls]
    if m.role == "tool" and m.name:
        out["tool_name"] = m.name
    return out


def _arguments(call: ToolCall) -> dict[str, Any]:
    """A call's arguments as the object Ollama carries (a model's text that was not one is kept under ``raw``)."""
    return {"raw": call.raw} if call.raw else dict(call.arguments)


def _tool_name(choice: str | dict[str, Any] | None, tools: Sequence[dict[str, Any]]) -> str | None:
    """The tool a named ``tool_choice`` forces, checked against the tools sent; None for the other choices."""
    if choice is None or choice in ("auto", "none", "required"):
        return None
    function = choice.get("function") if isinstance(choice, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(choice, dict) or choice.get("type") != "function" or not isinstance(name, str):
        raise InvalidOptions(
            f"tool_choice {choice!r:.80} is not one a model takes",
            hint='use "auto", "none", "required" or {"type": "function", "function": {"name": ...}}',
        )
    names = [t.get("function", {}).get("name") for t in tools]
    if name not in names:
        raise InvalidOptions(
            f"tool_choice names {name!r}, which is not among the tools sent",
            hint=f"the tools are: {', '.join(map(str, names)) or 'none'}",
        )
    return name


def _forced(tools: Sequence[dict[str, Any]], name: str | None) -> tuple[str, dict[str, Any]]:
    """What forces a call where Ollama's API has no tool_choice: a system line naming the tool(s), and ``format``
    (Ollama's structured output) holding the answer to the call's JSON: the arguments of the named tool, or
    ``{"name", "arguments"}`` of any of them for "required"."""
    functions = [t["function"] for t in tools if name is None or t["function"]["name"] == name]

    def about(f: dict[str, Any]) -> str:
        return f"{f['name']}: {f.get('description') or 'no description'}"

    params = [f.get("parameters") or {"type": "object", "properties": {}} for f in functions]
    if name is not None:
        line = f"Call the tool {about(functions[0])}. Answer with its arguments as a JSON object."
        return line, params[0]
    line = "Call one of these tools, answering with a JSON object holding its name and arguments:\n" + "\n".join(
        about(f) for f in functions
    )
    choices = [
        {
            "type": "object",
            "properties": {"name": {"const": f["name"]}, "arguments": p},
            "required": ["name", "arguments"],
        }
        for f, p in zip(functions, params, strict=True)
    ]
    return line, choices[0] if len(choices) == 1 else {"anyOf": choices}


def _forced_call(text: str, name: str | None) -> ToolCall:
    """The call a forced answer (JSON under ``format``) stands for."""
    call_id = f"call_{uuid.uuid4().hex[:24]}"
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
    if name is not None:
        return ToolCall.parse(call_id, name, value if isinstance(value, dict) else text)
    if isinstance(value, dict) and isinstance(value.get("name"), str):
        return ToolCall.parse(call_id, value["name"], value.get("arguments") or {})
    raise GenerationError(f"the model's forced tool call is not the JSON its format asked for: {text[:200]!r}")


def _calls(message: Any) -> tuple[ToolCall, ...]:
    """The tool calls on one line of Ollama's answer, with ids (the official client keeps none)."""
    out = []
    for call in getattr(message, "tool_calls", None) or ():
        function = call.function
        out.append(ToolCall.parse(f"call_{uuid.uuid4().hex[:24]}", function.name, dict(function.arguments or {})))
    return tuple(out)


def _error_text(resp: httpx.Response) -> str:
    """The ``error`` of an Ollama error body, else the body itself."""
    try:
        doc = resp.json()
    except ValueError:
        return resp.text
    err = doc.get("error") if isinstance(doc, dict) else None
    return str(err if err is not None else doc)


class OllamaBackend(Backend):
    """Talks to an Ollama server; every call has explicit timeouts, so a hung server cannot hang us."""

    kind = "ollama"
    IMPLEMENTS_EMBED = True
    IMPLEMENTS_TOOLS = True

    @classmethod
    def from_config(cls, config: cfgmod.Config) -> OllamaBackend:
        """The Ollama server the config (or OLLAMA_HOST) points at."""
        return cls(config)

    @classmethod
    def from_endpoint(cls, config: cfgmod.Config, endpoint: Endpoint) -> OllamaBackend:
        """Another Ollama server, named in ``[[endpoints]]``: its own address, key, headers and timeouts."""
        backend = cls(config, url=endpoint.url, name=endpoint.name)
        backend.endpoint = endpoint
        backend.connect_timeout = endpoint.connect_timeout
        backend.read_timeout = endpoint.read_timeout
        return backend

    def __init__(self, config: cfgmod.Config | None = None, url: str | None = None, name: str | None = None):
        super().__init__(name)
        self.config = config or cfgmod.load_config()
        self.url = url or cfgmod.ollama_url(self.config.ollama_url)
        self.connect_timeout = self.config.ollama_connect_timeout
        self.read_timeout = self.config.ollama_read_timeout

    @property
    def address(self) -> str | None:
        """The server's address."""
        return self.url

    @property
    def label(self) -> str:
        """How errors name this server: the default one by its address, a named endpoint by its name too."""
        return f"endpoint {self.name} (Ollama at {self.url})" if self.endpoint else f"Ollama at {self.url}"

    def _headers(self) -> dict[str, str]:
        """An endpoint's headers and key; the default server's key comes from OLLAMA_API_KEY."""
        if self.endpoint is not None:
            return self.endpoint.request_headers()
        key = _api_key()
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _client(self, read_timeout: float | None = None) -> Any:
        import ollama

        timeout = httpx.Timeout(read_timeout or self.read_timeout, connect=self.connect_timeout)
        headers = self._headers()
        client = ollama.AsyncClient(host=self.url, timeout=timeout, headers=headers)
        if "Authorization" not in headers:
            # the official client adds OLLAMA_API_KEY to every server it talks to; the default server's key must
            # not go to an endpoint that was given none
            client._client.headers.pop("authorization", None)
        return client

    def _error(self, exc: BaseException, what: str, spec: ModelSpec | None = None) -> LLMSpellError:
        import ollama

        if isinstance(exc, LLMSpellError):
            return exc
        if isinstance(exc, ollama.ResponseError):
            return self._http_error(exc.status_code, str(exc.error), what, spec)
        if isinstance(exc, httpx.HTTPStatusError):
            return self._http_error(exc.response.status_code, _error_text(exc.response), what, spec)
        where = f"[[endpoints]] {self.name}" if self.endpoint else "[providers.ollama]"
        if isinstance(exc, (ConnectionError, httpx.ConnectError)):
            tls = tls_problem(exc)
            if tls:
                return BackendUnavailable(
                    f"{self.label}: the TLS handshake failed ({what}): {tls}",
                    hint="check the url's scheme (http or https) and that this machine trusts the server's "
                    "certificate (SSL_CERT_FILE names extra CA certificates)",
                )
            if self.endpoint is not None:
                return BackendUnavailable(
                    f"{self.label} is not reachable ({what})", hint=f"check the server is up and the url in {where}"
                )
            return BackendUnavailable(
                f"Ollama is not reachable at {self.url} ({what})",
                hint="start it with `ollama serve`, or set OLLAMA_HOST to where it runs",
            )
        if isinstance(exc, httpx.ConnectTimeout):
            return BackendUnavailable(
                f"{self.label} did not accept a connection within {self.connect_timeout:g} s ({what})",
                hint=f"check that the server is up and the address ({where}, OLLAMA_HOST) is right",
            )
        if isinstance(exc, httpx.TimeoutException):
            return BackendUnavailable(
                f"{self.label} did not answer in time ({what})",
                hint=f"the server may be overloaded or hung; read_timeout in {where} sets how long to wait",
            )
        if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError)):
            return BackendUnavailable(
                f"the connection to {self.label} was cut while {what}",
                hint="the server stopped or crashed; check it and try again",
            )
        if isinstance(exc, httpx.HTTPError):
            return BackendUnavailable(f"the connection to {self.label} failed while {what}: {exc}")
        return GenerationError(f"{self.label}: {type(exc).__name__}: {exc}")

    def _http_error(self, status: int, text: str, what: str, spec: ModelSpec | None) -> LLMSpellError:
        """An error status from the server as the core error a user can act on."""
        if status == 404 and spec is not None:
            return ModelNotFound(
                f"{self.label} has no model {spec.tag}",
                hint=f"pull it: llmspell model pull {spec.tag}@{self.name}",
            )
        if status == -1:  # the official client's code for an error line in a stream
            return GenerationError(f"{self.label} failed while {what}: {text}")
        if status == 400:
            # the server understood us and refused this request (a bad option, a model that cannot chat): say why
            return InvalidOptions(f"{self.label} refused the request while {what}: {text}")
        if status in (401, 403):
            if self.endpoint is not None:
                hint = self.endpoint.key_hint()
            else:
                have = "the key in OLLAMA_API_KEY was not accepted" if _api_key() else "no key was sent"
                hint = f"{have}; set OLLAMA_API_KEY to the server's API key (sent as 'Authorization: Bearer KEY')"
            return BackendUnavailable(f"{self.label} refused access ({status}) while {what}: {text}", hint=hint)
        if status == 429:
            return BackendUnavailable(
                f"{self.label} is rate-limiting requests (429) while {what}: {text}", hint="wait a little and retry"
            )
        return BackendUnavailable(f"{self.label} answered {status} while {what}: {text}")

    async def _port_open(self) -> bool:
        """A bare TCP connect: answers 'nobody listens' in about a millisecond, before any HTTP client is built."""
        url = httpx.URL(self.url)
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(url.host, port), self.connect_timeout)
        except (OSError, TimeoutError):
            return False
        writer.close()
        return True

    async def status(self) -> BackendStatus:
        """Reachable? version, model count, loaded models; never raises."""
        timeout = httpx.Timeout(min(5.0, self.read_timeout), connect=self.connect_timeout)
        if not await self._port_open():
            err = self._error(ConnectionError("connection refused"), "checking its status")
            return BackendStatus(self.name, False, error=err.message, address=self.url, hint=err.hint)
        try:
            async with httpx.AsyncClient(timeout=timeout, headers=self._headers()) as http:
                resp = await http.get(f"{self.url}/api/version")
                resp.raise_for_status()
                version = resp.json().get("version")
            models = await self.list_models()
            loaded = await self.loaded()
        except Exception as exc:  # any failure is a status, not a crash
            err = self._error(exc, "checking its status")
            return BackendStatus(self.name, False, error=err.message, address=self.url, hint=err.hint)
        return BackendStatus(
            self.name,
            True,
            version=version,
            device="server",
            model_count=len(models),
            loaded=tuple(loaded),
            address=self.url,
        )

    async def list_models(self) -> list[ModelInfo]:
        """The server's models (``/api/tags``); a server that does not answer within a few seconds is reported."""
        try:
            async with self._client(self._list_timeout()) as client:
                resp = await client.list()
            running = set(await self.loaded())
        except httpx.TimeoutException as exc:
            if isinstance(exc, httpx.ConnectTimeout):
                raise self._error(exc, "listing models") from None
            raise BackendUnavailable(
                f"{self.label} did not answer within {self._list_timeout():g} s (listing models)",
                hint="the server may be hung or overloaded; check it, or turn it off with enabled = false in "
                + (f"[[endpoints]] {self.name}" if self.endpoint else "[providers.ollama]"),
            ) from None
        except Exception as exc:
            raise self._error(exc, "listing models") from None
        out = []
        for m in resp.models:
            if not self.offers(m.model or ""):
                continue
            d = m.details
            out.append(
                ModelInfo(
                    name=m.model or "",
                    backend=self.name,
                    location=self.url,
                    source="server",
                    size_bytes=m.size,
                    quantization=d.quantization_level if d else None,
                    family=d.family if d else None,
                    parameters=d.parameter_size if d else None,
                    loaded=m.model in running,
                    sha256=(m.digest or None),
                )
            )
        return out

    def _list_timeout(self) -> float:
        return min(_LIST_TIMEOUT, self.read_timeout)

    def _tag(self, spec: ModelSpec) -> str:
        return spec.tag if spec.variant else f"{spec.name}:latest"

    def _require(self, spec: ModelSpec) -> None:
        """Refuse a model an endpoint's filter leaves out, before any request is made for it (a shared server's
        other models are not to be run, pulled or deleted from here)."""
        if self.endpoint is not None and not (self.offers(spec.tag) or self.offers(self._tag(spec))):
            raise ModelNotFound(
                f"{self.label} does not offer {spec.tag}: its models filter is {', '.join(self.endpoint.models)}",
                hint=f"add it to models in [[endpoints]] {self.name}, or pick one of `llmspell model list "
                f"--backend {self.name}`",
            )

    async def has_model(self, spec: ModelSpec) -> bool:
        """Whether the server has the model already."""
        if self.endpoint is not None and not (self.offers(spec.tag) or self.offers(self._tag(spec))):
            return False
        tag = self._tag(spec)
        try:
            return any(m.name == tag for m in await self.list_models())
        except LLMSpellError:
            return False

    async def info(self, spec: ModelSpec) -> ModelInfo:
        """``/api/show`` mapped to ModelInfo."""
        self._require(spec)
        try:
            async with self._client(15.0) as client:
                r = await client.show(self._tag(spec))
        except Exception as exc:
            raise self._error(exc, "showing the model", spec) from None
        d = r.details
        mi = r.modelinfo or {}
        arch = mi.get("general.architecture")
        return ModelInfo(
            name=self._tag(spec),
            backend=self.name,
            location=self.url,
            source="server",
            quantization=d.quantization_level if d else None,
            family=d.family if d else None,
            parameters=d.parameter_size if d else None,
            context_length=mi.get(f"{arch}.context_length"),
            chat_template=r.template,
            has_chat_template=bool(r.template),
            license=r.license,
            loaded=self._tag(spec) in await self.loaded(),
            extra={"capabilities": list(r.capabilities or []), "architecture": arch or ""},
        )

    async def pull(self, spec: ModelSpec) -> AsyncGenerator[PullProgress, None]:
        """``/api/pull`` with its progress stream; closing this iterator cancels the pull on the server."""
        self._require(spec)
        client = self._client()
        stream = None
        done = False
        try:
            stream = await client.pull(self._tag(spec), stream=True)
            async for p in stream:
                done = p.status == "success"
                yield PullProgress(
                    p.status or "", completed=p.completed or 0, total=p.total or 0, digest=p.digest, done=done
                )
        except (GeneratorExit, asyncio.CancelledError):
            raise
        except Exception as exc:
            raise self._error(exc, "pulling", spec) from None
        finally:
            if stream is not None:
                await stream.aclose()
            await client.close()
        if not done:
            raise BackendUnavailable(f"{self.label} ended the pull of {spec.tag} without saying it succeeded")

    async def delete(self, spec: ModelSpec) -> None:
        """``/api/delete``."""
        self._require(spec)
        try:
            async with self._client(30.0) as client:
                await client.delete(self._tag(spec))
        except Exception as exc:
            raise self._error(exc, "deleting", spec) from None

    async def loaded(self) -> list[str]:
        """Names of the models in the server's memory (``/api/ps``)."""
        return [m.name for m in await self.ps()]

    async def running(self) -> list[RunningModel]:
        """Each model in the server's memory, with the seconds left before the server unloads it."""
        now = dt.datetime.now(dt.UTC)
        out = []
        for m in await self.ps():
            left = None
            if m.expires_at:
                with contextlib.suppress(ValueError):
                    left = (dt.datetime.fromisoformat(m.expires_at.replace("Z", "+00:00")) - now).total_seconds()
            out.append(RunningModel(m.name, self.name, expires_in=max(left, 0.0) if left is not None else None))
        return out

    async def ps(self) -> list[ModelInfo]:
        """``/api/ps``: each model in memory with its size there and when the server will unload it."""
        try:
            async with self._client(self._list_timeout()) as client:
                r = await client.ps()
        except Exception as exc:
            raise self._error(exc, "listing loaded models") from None
        out = []
        for m in r.models:
            d = m.details
            out.append(
                ModelInfo(
                    name=m.model or m.name or "",
                    backend=self.name,
                    location=self.url,
                    source="server",
                    size_bytes=m.size,
                    quantization=d.quantization_level if d else None,
                    family=d.family if d else None,
                    parameters=d.parameter_size if d else None,
                    context_length=m.context_length,
                    sha256=m.digest or None,
                    loaded=True,
                    extra={"size_vram": m.size_vram} if m.size_vram is not None else {},
                    expires_at=_iso(m.expires_at),
                )
            )
        return out

    async def unload(self, spec: ModelSpec) -> bool:
        """A generate request with keep_alive 0, as Ollama documents."""
        self._require(spec)
        was = self._tag(spec) in await self.loaded()
        try:
            async with self._client(30.0) as client:
                await client.generate(self._tag(spec), prompt="", keep_alive=0)
        except Exception as exc:
            raise self._error(exc, "unloading", spec) from None
        return was

    async def _stream(
        self, spec: ModelSpec, client: Any, call: Any, forced: str | bool | None = False
    ) -> AsyncGenerator[Chunk, None]:
        """The answer's chunks; tool calls (which Ollama sends on a line of their own) on the last. ``forced`` (a
        tool's name, or None for any tool) reads the whole answer as that forced call's JSON instead of text."""
        stream = None
        calls: list[ToolCall] = []
        held: list[str] = []
        try:
            stream = await call
            async for part in stream:
                message = getattr(part, "message", None)
                text = message.content if message is not None else getattr(part, "response", "")
                calls.extend(_calls(message))
                if forced is not False:
                    held.append(text or "")
                    text = ""
                    if part.done:
                        calls.append(_forced_call("".join(held), forced if isinstance(forced, str) else None))
                if part.done:
                    yield Chunk(
                        text=text or "",
                        done=True,
                        tool_calls=tuple(calls),
                        model=spec.tag,
                        logprobs=_logprobs(part),
                        stats=Stats(
                            prompt_tokens=part.prompt_eval_count or 0,
                            prompt_eval_tokens=part.prompt_eval_count or 0,
                            generated_tokens=part.eval_count or 0,
                            load_time=(part.load_duration or 0) / _NS,
                            prompt_eval_time=(part.prompt_eval_duration or 0) / _NS,
                            generation_time=(part.eval_duration or 0) / _NS,
                            # Ollama reports no first-token time; prompt evaluation is what precedes the first token
                            time_to_first_token=(part.prompt_eval_duration or 0) / _NS,
                            total_time=(part.total_duration or 0) / _NS,
                            stop_reason="length" if part.done_reason == "length" else "stop",
                        ),
                    )
                    return
                if text:
                    yield Chunk(text=text, model=spec.tag, logprobs=_logprobs(part))
        except (GeneratorExit, asyncio.CancelledError):
            raise
        except Exception as exc:
            raise self._error(exc, "generating", spec) from None
        finally:
            try:
                if stream is not None and hasattr(stream, "aclose"):
                    await stream.aclose()
            finally:
                await client.close()

    async def chat(
        self,
        spec: ModelSpec,
        messages: Sequence[Message],
        options: Options | None = None,
        *,
        tools: Sequence[dict[str, Any]] | None = None,
        tool_choice: str | dict[str, Any] | None = None,
    ) -> AsyncGenerator[Chunk, None]:
        """``/api/chat`` streaming; closing this stream closes the HTTP response, which cancels on the server.

        ``tools`` (the OpenAI shape, which is Ollama's) go to the server as they are with ``tool_choice`` None or
        "auto", and not at all with "none"; the calls the model makes arrive on the last chunk. Ollama's API has no
        tool_choice, so "required" or a named tool is asked for with Ollama's own ``format``: the answer is held
        to the call's JSON (the tool's arguments, or a name and arguments), and read back as the call."""
        self._require(spec)
        tools = list(tools or ())
        name = _tool_name(tool_choice, tools)
        # the config's [options] under the request's, as the embedded engine takes them: a comparison of the two
        # backends is on equal terms (max_tokens = 4 stopped one at 4 tokens and let the other write 25)
        opts = self.config.options.merged(options)
        wire = [_wire_message(Message.coerce(m)) for m in messages]
        fmt: Any = opts.format
        forced: str | bool | None = False
        if tool_choice not in (None, "auto", "none"):
            if not tools:
                raise InvalidOptions(f"tool_choice {tool_choice!r:.80} was given without any tools", hint="send tools")
            if fmt is not None:
                raise InvalidOptions(
                    "a forced tool call and a format cannot go together over Ollama's API (the call is its format)",
                    hint='use tool_choice "auto", or leave format out',
                )
            line, fmt = _forced(tools, name)
            wire.append({"role": "system", "content": line})
            forced = name
        client = self._client()
        extra: dict[str, Any] = {"tools": tools} if tools and forced is False and tool_choice != "none" else {}
        call = client.chat(
            self._tag(spec),
            messages=wire,
            stream=True,
            options=_ollama_options(opts),
            format=fmt,
            keep_alive=self.config.keep_alive,
            **_logprob_args(opts),
            **extra,
        )
        # leaving ``async for`` does not close the inner generator; without aclosing the HTTP response would stay
        # open (the server generating on) until garbage collection closed it from another task
        async with aclosing(self._stream(spec, client, call, forced)) as stream:
            async for chunk in stream:
                yield chunk

    async def embed(
        self,
        spec: ModelSpec,
        texts: Sequence[str],
        *,
        truncate: bool = True,
        options: Options | None = None,
    ) -> Embeddings:
        """``/api/embed``: the server's vectors (L2-normalised by Ollama), one per text."""
        self._require(spec)
        if not texts:
            raise InvalidOptions("there is nothing to embed", hint="send at least one text")
        # the config's [options] under the request's, as the embedded engine takes them: a comparison of the two
        # backends is on equal terms (max_tokens = 4 stopped one at 4 tokens and let the other write 25)
        opts = self.config.options.merged(options)
        try:
            async with self._client() as client:
                resp = await client.embed(
                    self._tag(spec),
                    input=list(texts),
                    truncate=truncate,
                    options=_ollama_options(opts) or None,
                    keep_alive=self.config.keep_alive,
                )
        except Exception as exc:
            raise self._error(exc, "embedding", spec) from None
        return Embeddings(
            [[float(x) for x in v] for v in resp.embeddings],
            spec.tag,
            prompt_tokens=resp.prompt_eval_count or 0,
            load_time=(resp.load_duration or 0) / _NS,
            total_time=(resp.total_duration or 0) / _NS,
        )

    async def complete(
        self, spec: ModelSpec, prompt: str, options: Options | None = None
    ) -> AsyncGenerator[Chunk, None]:
        """``/api/generate`` with raw=True (no template)."""
        self._require(spec)
        # the config's [options] under the request's, as the embedded engine takes them: a comparison of the two
        # backends is on equal terms (max_tokens = 4 stopped one at 4 tokens and let the other write 25)
        opts = self.config.options.merged(options)
        client = self._client()
        call = client.generate(
            self._tag(spec),
            prompt=prompt,
            raw=True,
            stream=True,
            options=_ollama_options(opts),
            format=opts.format,
            keep_alive=self.config.keep_alive,
            **_logprob_args(opts),
        )
        async with aclosing(self._stream(spec, client, call)) as stream:  # closed at once, as in chat()
            async for chunk in stream:
                yield chunk
