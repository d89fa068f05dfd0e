"""Which kinds of backend exist and how one is made: the hub asks here, so a new kind never touches the hub.

A kind is a :class:`~llmspell.backends.base.Backend` subclass named in the ``llmspell.backends`` entry-point
group (as llm and harlequin find their plugins): a package that declares

    [project.entry-points."llmspell.backends"]
    mykind = "my_package.module:MyBackend"

is picked up once installed, and its models are written ``NAME@mykind``. The class builds itself from the
config with ``from_config``. The two kinds llmspell ships are declared the same way in its own pyproject.toml;
the table below is only for a source tree run without installed metadata.
"""

from __future__ import annotations

import functools
import importlib
import logging
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from llmspell.errors import BackendUnavailable

if TYPE_CHECKING:
    from llmspell.backends.base import Backend
    from llmspell.config import Config

log = logging.getLogger(__name__)

#: the entry-point group a backend kind registers under
GROUP = "llmspell.backends"
#: the kinds llmspell ships, by the class that implements each
BUILTIN = {
    "llamacpp": "llmspell.backends.llamacpp:LlamaCppBackend",
    "ollama": "llmspell.backends.ollama:OllamaBackend",
    "openai": "llmspell.backends.openai:OpenAIBackend",
}
#: kinds that are only ever a named endpoint (there is no default OpenAI server to reach without one)
ENDPOINT_ONLY = frozenset({"openai"})


@functools.cache
def kinds() -> dict[str, str]:
    """Every known backend kind and where its class lives ("module:Class"), built-ins first (read once: the
    installed packages do not change while a process runs)."""
    found = dict(BUILTIN)
    for ep in entry_points(group=GROUP):
        found.setdefault(ep.name, ep.value)
    return found


def backend_class(kind: str) -> type[Backend]:
    """The class of a backend kind; a clear error when none is registered or it cannot be imported."""
    target = kinds().get(kind)
    if target is None:
        raise BackendUnavailable(f"no backend kind {kind!r} is installed", hint=f"known kinds: {', '.join(kinds())}")
    module_name, _, attr = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise BackendUnavailable(
            f"the backend kind {kind!r} cannot be loaded from {target}: {exc}",
            hint="reinstall the package that provides it",
        ) from None
    from llmspell.backends.base import Backend

    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise BackendUnavailable(f"{target} (backend kind {kind!r}) is not a llmspell Backend class")
    return cls


def enabled_kinds(config: Config) -> list[str]:
    """The kinds a hub starts with: the embedded engine always, Ollama unless the config turns it off, and every
    installed plugin kind."""
    out = []
    for kind in kinds():
        if (kind == "ollama" and not config.ollama_enabled) or kind in ENDPOINT_ONLY:
            continue
        out.append(kind)
    return out


def create_backends(config: Config) -> list[Backend]:
    """One backend of each enabled kind, built from the config, then one per enabled ``[[endpoints]]`` entry
    under its own name; a plugin that fails to load is logged and left out (the built-in kinds still work)."""
    out = []
    for kind in enabled_kinds(config):
        try:
            out.append(backend_class(kind).from_config(config))
        except BackendUnavailable as exc:
            if kind in BUILTIN:
                raise
            log.warning("%s", exc)
    for endpoint in config.endpoints:
        if endpoint.enabled:
            out.append(backend_class(endpoint.kind).from_endpoint(config, endpoint))
    return out
