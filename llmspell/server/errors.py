"""How the server words and numbers an error: the HTTP status of each core error, and the body in the
dialect of the API that was called (OpenAI's object under /v1, Ollama's string elsewhere)."""

from __future__ import annotations

from typing import Any

from llmspell import errors as E
from llmspell.session import error_text as core_error_text


class QueueFull(Exception):
    """Too many requests are waiting for one model."""


class ServerStopping(E.BackendUnavailable):
    """The server is shutting down: an answer still streaming ends with this as its last line."""


class ClientGone(Exception):
    """The client hung up before its answer was ready."""


class ApiError(E.InvalidOptions):
    """A request the server refuses, with the status, and the parameter and code OpenAI's error object names."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        param: str | None = None,
        code: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.param = param
        self.code = code or ("invalid_value" if param and status == 400 else None)


def unsupported(message: str, param: str, hint: str | None = None) -> ApiError:
    """A parameter the server understands and cannot honour: 400 with OpenAI's code for it."""
    return ApiError(message, param=param, code="unsupported_parameter", hint=hint)


_STATUS = {
    E.ModelNotFound: 404,
    E.ModelFileMissing: 404,
    E.InvalidSpec: 400,
    E.InvalidOptions: 400,
    E.NoChatTemplate: 400,
    # the request's own doing: a prompt longer than its context, a model file (named by path) that is damaged
    E.PromptTooLong: 400,
    E.ModelFileCorrupt: 400,
    E.BackendUnavailable: 503,
    E.Cancelled: 499,
    E.InsufficientResources: 507,
    E.DownloadError: 502,
}


def error_status(exc: BaseException) -> int:
    """The HTTP status for a core error (Ollama's codes where it has one: 404 for an unknown model)."""
    if isinstance(exc, ApiError):
        return exc.status
    for kind, status in _STATUS.items():
        if isinstance(exc, kind):
            return status
    return 500


def error_text(exc: BaseException) -> str:
    """One line a user can act on: the message, then the hint."""
    if isinstance(exc, E.LLMSpellError):
        return core_error_text(exc)
    if isinstance(exc, QueueFull):
        return str(exc)
    return f"internal error: {type(exc).__name__}: {exc}"


def error_fields(exc: BaseException) -> tuple[str | None, str | None]:
    """The ``param`` and ``code`` of OpenAI's error object for an error: what was wrong, in a word."""
    if isinstance(exc, ApiError):
        return exc.param, exc.code
    if isinstance(exc, (E.ModelNotFound, E.ModelFileMissing)):
        return "model", "model_not_found"
    if isinstance(exc, E.InvalidSpec):
        return "model", "invalid_model"
    if isinstance(exc, E.PromptTooLong):
        return "messages", "context_length_exceeded"
    if isinstance(exc, QueueFull):
        return None, "server_busy"
    return None, None


def error_body(
    path: str, message: str, status: int, *, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """An error in the dialect of the API that was called: OpenAI's object under /v1, Ollama's string elsewhere."""
    if path.startswith("/v1/") or path == "/v1":
        kind = (
            "invalid_request_error"
            if status in (400, 404, 405, 413, 422)
            else "authentication_error"
            if status == 401
            else "permission_error"
            if status == 403
            else "server_error"
        )
        return {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return {"error": message}
