"""The backend status bar every screen shows: one line per backend, fed by the app's single status refresh."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.text import Text
from textual.widgets import Static

from llmspell.types import BackendStatus

if TYPE_CHECKING:
    from textual.app import App


def hold_status_checks(app: App[object], remote: bool) -> contextlib.AbstractContextManager[None]:
    """The app's hold on its status checks while answers stream from a named endpoint (see
    ``LLMSpellApp.remote_answers``); nothing to hold in an app without status checks."""
    hold = getattr(app, "remote_answers", None)
    return hold(remote) if callable(hold) and remote else contextlib.nullcontext()


def describe_status(status: BackendStatus, *, loaded: bool = True) -> Text:
    """One backend as one line: ready or not reachable (and why), version, device, models, loaded models (left
    out with ``loaded=False``: the arena's blind rounds must not say which models answer), and a server's round
    trip when it was measured."""
    line = Text(no_wrap=False)
    if status.ready:
        line.append("● ", style="bold green")
        line.append(status.backend, style="bold")
        line.append(" ready")
        facts = [status.version or "", status.device or ""]
        facts.append(f"{status.model_count} model{'s' if status.model_count != 1 else ''}")
        # a server reached over the network (it has a round trip) that names no loaded model says nothing about
        # what it holds in memory: "none loaded" would be a guess
        if loaded and (status.loaded or status.latency is None):
            facts.append(f"loaded: {', '.join(status.loaded)}" if status.loaded else "none loaded")
        if status.latency is not None:
            facts.append(f"{status.latency * 1000:.0f} ms round trip")
        line.append(" · " + " · ".join(f for f in facts if f), style="dim")
    else:
        line.append("● ", style="bold red")
        line.append(status.backend, style="bold")
        reason = status.error or "no reason given"
        # A backend's own message often opens with "<Backend> is not reachable": keep only what follows,
        # so the line does not say it twice.
        said = f"{status.backend} is not reachable "
        # an endpoint's messages open with "endpoint NAME (ADDRESS)": the name is shown already, the address and
        # what happened follow it
        endpoint = re.match(rf"endpoint {re.escape(status.backend)} (\([^)]*\)) (.+)", reason, re.DOTALL)
        if reason.lower().startswith(said.lower()):
            line.append(" not reachable ")
            line.append(reason[len(said) :], style="italic")
        elif endpoint is not None:
            line.append(f" {endpoint[1]} ", style="dim")
            line.append(endpoint[2], style="italic")
        else:
            line.append(" not reachable: ")
            line.append(reason, style="italic")
    return line


def describe_statuses(statuses: Sequence[BackendStatus] | None, *, loaded: bool = True) -> Text:
    """Every backend, one per line; a placeholder before the first check has answered."""
    if statuses is None:
        return Text("checking backends…", style="dim")
    if not statuses:
        from llmspell.config import config_path

        return Text(f"no backend is enabled (see {config_path()})", style="bold red")
    return Text("\n").join(describe_status(s, loaded=loaded) for s in statuses)


class BackendStatusBar(Static):
    """Each backend's state, kept current by watching ``app.backend_statuses`` (the app refreshes it)."""

    DEFAULT_CSS = """
    BackendStatusBar {
        height: auto;
        max-height: 4;
        padding: 0 1;
        background: $boost;
    }
    """

    def __init__(self, *, id: str | None = None, classes: str | None = None, show_loaded: bool = True) -> None:
        #: whether the line names the models loaded now (not on the arena screen: it would name a round's models)
        self.show_loaded = show_loaded
        self._text = describe_statuses(None)
        super().__init__(self._text, id=id, classes=classes)

    def on_mount(self) -> None:
        if hasattr(self.app, "backend_statuses"):
            self.watch(self.app, "backend_statuses", self._show, init=True)

    def _show(self, statuses: tuple[BackendStatus, ...] | None) -> None:
        self._text = describe_statuses(statuses, loaded=self.show_loaded)
        self.update(self._text)
        # what to do about a backend that is down (the key to set, the url to check) is on the mouse's hover: the
        # bar itself keeps to one line per backend
        advice = [f"{s.backend}: {s.hint}" for s in statuses or () if not s.ready and getattr(s, "hint", None)]
        self.tooltip = "\n".join(advice) or None

    @property
    def text(self) -> str:
        """What the bar shows now, as plain text (for tests and screen readers)."""
        return self._text.plain
