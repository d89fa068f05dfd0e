"""Error types of the core: each carries a message a user can act on."""

from __future__ import annotations


class LLMSpellError(Exception):
    """Base of every error the core raises on purpose; faces print ``str(err)`` and exit non-zero."""

    #: a short machine-readable kind, used by the CLI's --json output and the server
    kind: str = "error"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message if not hint else f"{message}\n  {hint}")


class InvalidSpec(LLMSpellError):
    """A model spec that does not parse."""

    kind = "invalid_spec"


class ModelNotFound(LLMSpellError):
    """No backend knows the model asked for."""

    kind = "model_not_found"


class ModelFileMissing(LLMSpellError):
    """A model file that should exist does not."""

    kind = "model_file_missing"


class ModelFileCorrupt(LLMSpellError):
    """A model file exists but is not a valid GGUF (truncated, damaged or crafted)."""

    kind = "model_file_corrupt"


class NoChatTemplate(LLMSpellError):
    """A chat was asked of a model that carries no chat template."""

    kind = "no_chat_template"


class BackendUnavailable(LLMSpellError):
    """A backend cannot be used right now (server down, engine not installed)."""

    kind = "backend_unavailable"


class InsufficientResources(LLMSpellError):
    """Not enough memory or disk for what was asked."""

    kind = "insufficient_resources"


class DownloadError(LLMSpellError):
    """A pull failed: network, integrity or disk."""

    kind = "download_error"


class IntegrityError(DownloadError):
    """A downloaded file does not match the hash it must have."""

    kind = "integrity_error"


class CatalogError(LLMSpellError):
    """models.toml is malformed."""

    kind = "catalog_error"


class ConfigError(LLMSpellError):
    """config.toml is malformed."""

    kind = "config_error"


class InvalidOptions(LLMSpellError):
    """Generation options that cannot be honoured (unknown key, bad value, bad schema)."""

    kind = "invalid_options"


class GenerationError(LLMSpellError):
    """The engine failed while generating."""

    kind = "generation_error"


class PromptTooLong(GenerationError):
    """The prompt does not fit the context window (the request's fault, not the engine's)."""

    kind = "prompt_too_long"

    def __init__(
        self, message: str, *, hint: str | None = None, size: int | None = None, limit: int | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        #: how big the prompt was and what fits, in tokens (or characters, for the template's own budget)
        self.size, self.limit = size, limit


class Cancelled(LLMSpellError):
    """A generation or pull was cancelled by the user."""

    kind = "cancelled"


class ToolError(LLMSpellError):
    """A tool that cannot be defined, registered or run as asked (bad schema, unknown name, a path out of root)."""

    kind = "tool_error"
