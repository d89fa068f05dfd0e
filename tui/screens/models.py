"""The model screen: every model of every backend in one table; filter, sort, pull, info, delete, unload."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.css.query import NoMatches
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, Static
from textual.worker import Worker

from llmspell.errors import LLMSpellError
from llmspell.machine import human_bytes
from llmspell.types import BackendStatus, ModelInfo
from llmspell_tui.widgets.modals import ConfirmScreen, report_worker_failure
from llmspell_tui.widgets.models_modals import InfoScreen, PullScreen
from llmspell_tui.widgets.status import BackendStatusBar

if TYPE_CHECKING:
    from llmspell.hub import Hub

_UNITS = {"K": 1e3, "M": 1e6, "B": 1e9, "T": 1e12}


def parameter_count(text: str | None) -> float:
    """``135M`` / ``1.5B`` / ``8x7B`` as a number, for sorting; 0 when unknown."""
    if not text:
        return 0.0
    m = re.search(r"(?:(\d+)x)?(\d+(?:\.\d+)?)\s*([KMBT])", text.upper())
    if m is None:
        return 0.0
    return float(m[2]) * _UNITS[m[3]] * (int(m[1]) if m[1] else 1)


#: the table's columns: key, label, the cell's text, and the sort key
COLUMNS: tuple[tuple[str, str, Callable[[ModelInfo], str], Callable[[ModelInfo], Any]], ...] = (
    ("name", "Name", lambda m: m.name, lambda m: m.name.lower()),
    ("backend", "Backend", lambda m: m.backend, lambda m: (m.backend, m.name.lower())),
    ("size", "Size", lambda m: human_bytes(m.size_bytes), lambda m: m.size_bytes or 0),
    ("quant", "Quant", lambda m: m.quantization or "-", lambda m: (m.quantization or "").lower()),
    # a base model (for plain completion, not chat) is marked where the user picks a model
    (
        "family",
        "Family",
        lambda m: (m.family or "-") + (" · base" if m.base_model else ""),
        lambda m: (m.family or "").lower(),
    ),
    ("params", "Params", lambda m: m.parameters or "-", lambda m: parameter_count(m.parameters)),
    ("source", "Source", lambda m: m.source or "-", lambda m: (m.source or "", m.name.lower())),
    ("loaded", "Loaded", lambda m: "● yes" if m.loaded else "", lambda m: (not m.loaded, m.name.lower())),
)
_COLUMN_KEYS = [c[0] for c in COLUMNS]


def model_key(m: ModelInfo) -> str:
    """The spec that names this exact model on its backend (``name@backend``); also the table's row key."""
    return f"{m.name}@{m.backend}"


def matches(m: ModelInfo, words: list[str]) -> bool:
    """Whether every filter word occurs in the model's name, backend, family, quantization or parameters."""
    words_of = (m.name, m.backend, m.family, m.quantization, m.parameters, m.source, "base" if m.base_model else "")
    hay = " ".join(x or "" for x in words_of).lower()
    return all(w in hay for w in words)


class ModelsScreen(Screen[None]):
    """Every model of every backend: filter as you type, sort by any column, act on the selected row."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "focus_filter", "Filter"),
        Binding("s", "sort_next", "Sort"),
        Binding("p", "pull", "Pull"),
        Binding("i", "info", "Info"),
        Binding("d,delete", "delete", "Delete"),
        # hidden twins of pull and delete: on the row of a backend that cannot do them (a remote OpenAI server),
        # the footer leaves them out and the key says why instead of doing nothing
        Binding("p", "refused('pull')", "Pull", show=False),
        Binding("d,delete", "refused('delete')", "Delete", show=False),
        Binding("u", "unload", "Unload"),
        Binding("r", "reload", "Refresh", show=False),
        Binding("escape", "leave_filter", "Table", show=False),
    ]

    #: the column the table is sorted by, and whether it is reversed
    sort_column: reactive[str] = reactive("backend", init=False)
    sort_reverse: reactive[bool] = reactive(False, init=False)

    def __init__(self, name: str | None = None, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        #: every model the backends listed, before filtering
        self.models: list[ModelInfo] = []
        #: backends that could not be listed (their status, with the reason)
        self.unlisted: list[BackendStatus] = []
        self._loaded_once = False

    @property
    def hub(self) -> Hub:
        """The app's hub."""
        return self.app.hub  # type: ignore[attr-defined,no-any-return]

    @property
    def table(self) -> DataTable[Text]:
        """The model table."""
        return self.query_one("#models-table", DataTable)

    @property
    def filter_input(self) -> Input:
        """The filter box."""
        return self.query_one("#models-filter", Input)

    def compose(self) -> ComposeResult:
        yield BackendStatusBar()
        with Horizontal(id="models-bar"):
            yield Input(placeholder="filter: name, backend, family, quant…  (/)", id="models-filter")
            yield Static("", id="models-count")
        yield DataTable(id="models-table", cursor_type="row", zebra_stripes=True)
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.reload()
        self.table.focus()
        if hasattr(self.app, "backend_statuses"):
            self.watch(self.app, "backend_statuses", self._statuses_changed, init=False)

    def on_screen_resume(self) -> None:
        if self._loaded_once:
            self.reload()

    def _statuses_changed(self, statuses: tuple[BackendStatus, ...] | None) -> None:
        # a backend came up, went down, loaded or counted models differently: list again
        self.reload()

    # ----- loading and showing -------------------------------------------------------------------------------------

    def reload(self) -> None:
        """List the models again, each backend in its own worker, so a slow backend never holds up the others."""
        statuses = {st.backend: st for st in getattr(self.app, "backend_statuses", None) or ()}
        # while an endpoint streams an answer its rows stay as they are: asking a server for its models can end
        # the answer it is streaming (llama-cpp-python's server does)
        busy = bool(getattr(self.app, "answering_remotely", False))
        for name, backend in self.hub.backends.items():
            status = statuses.get(name)
            if busy and backend.endpoint is not None:
                continue
            if status is not None and not status.ready:
                # known to be down: its models are gone until its status says it is back
                self._set_backend_models(name, [], status)
            else:
                self.list_backend(name)

    def list_backend(self, name: str) -> None:
        """List one backend's models in a worker (one at a time per backend)."""

        async def list_one() -> None:
            models, failed = await self.hub.list_all(name)
            self._set_backend_models(name, models, failed[0] if failed else None)

        # the function, not a coroutine: an exclusive worker replaced before it starts never awaits its coroutine
        # (a RuntimeWarning); Textual's stub infers Never for a coroutine function's result
        self.run_worker(
            list_one,  # type: ignore[arg-type]
            name=f"list {name}",
            group=f"models-{name}",
            exclusive=True,
            exit_on_error=False,
        )

    def _set_backend_models(self, name: str, models: list[ModelInfo], failed: BackendStatus | None) -> None:
        self.models = [m for m in self.models if m.backend != name] + models
        self.unlisted = [st for st in self.unlisted if st.backend != name] + ([failed] if failed else [])
        self._loaded_once = True
        self.show_models()

    def visible_models(self) -> list[ModelInfo]:
        """The models that pass the filter, in the chosen order."""
        words = self.filter_input.value.lower().split()
        shown = [m for m in self.models if matches(m, words)]
        key = dict((c[0], c[3]) for c in COLUMNS)[self.sort_column]
        return sorted(shown, key=key, reverse=self.sort_reverse)

    def show_models(self) -> None:
        """Rebuild the rows from ``models`` (filter and sort applied), keeping the selected model selected."""
        table = self.table
        selected = self.selected_key()
        table.clear(columns=True)
        for key, label, _, _ in COLUMNS:
            arrow = (" ▼" if self.sort_reverse else " ▲") if key == self.sort_column else ""
            table.add_column(Text(label + arrow, style="bold" if arrow else ""), key=key)
        shown = self.visible_models()
        for m in shown:
            cells = [Text(cell(m)) for _, _, cell, _ in COLUMNS]
            if m.loaded:
                cells[-1].stylize("bold green")
            table.add_row(*cells, key=model_key(m))
        keys = [model_key(m) for m in shown]
        if selected in keys:
            table.move_cursor(row=keys.index(selected), animate=False)
        count = f"{len(shown)} of {len(self.models)}" if len(shown) != len(self.models) else f"{len(shown)}"
        self.query_one("#models-count", Static).update(f"{count} models")
        self.refresh_bindings()

    def selected_key(self) -> str | None:
        """The ``name@backend`` of the selected row, or None when the table is empty."""
        table = self.table
        if table.row_count == 0 or table.cursor_row < 0:
            return None
        return str(table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value)

    def selected_model(self) -> ModelInfo | None:
        """The selected row's model."""
        key = self.selected_key()
        return next((m for m in self.models if model_key(m) == key), None)

    def row_names(self) -> list[str]:
        """The names in the table, top to bottom (for tests and the palette)."""
        return [str(self.table.get_row_at(i)[0]) for i in range(self.table.row_count)]

    # ----- filter and sort ---------------------------------------------------------------------------------------

    @on(Input.Changed, "#models-filter")
    def _filter_changed(self) -> None:
        self.show_models()

    @on(Input.Submitted, "#models-filter")
    def _filter_done(self) -> None:
        self.table.focus()

    def action_focus_filter(self) -> None:
        """Type to filter the table."""
        self.filter_input.focus()

    def action_leave_filter(self) -> None:
        """Back from the filter to the table."""
        self.table.focus()

    @on(DataTable.HeaderSelected, "#models-table")
    def _header_clicked(self, event: DataTable.HeaderSelected) -> None:
        self.sort_by(str(event.column_key.value))

    def sort_by(self, column: str) -> None:
        """Sort by ``column``; choosing the same column again reverses the order."""
        if column not in _COLUMN_KEYS:
            return
        if column == self.sort_column:
            self.sort_reverse = not self.sort_reverse
        else:
            self.sort_column, self.sort_reverse = column, False
        self.show_models()

    def action_sort_next(self) -> None:
        """Sort by the next column (wraps around)."""
        i = _COLUMN_KEYS.index(self.sort_column)
        self.sort_by(_COLUMN_KEYS[(i + 1) % len(_COLUMN_KEYS)])

    # ----- actions -----------------------------------------------------------------------------------------------

    def refusal(self, action: str, model: ModelInfo | None = None) -> str | None:
        """Why ``action`` (pull or delete) cannot be done on the selected row's backend, or None when it can."""
        if model is None:
            try:
                model = self.selected_model()
            except NoMatches:  # asked for the footer before the table is there
                return None
        if model is None:
            return None
        backend = self.hub.backends.get(model.backend)
        if backend is None:
            return None
        if action == "pull" and not backend.IMPLEMENTS_PULL:
            return (
                f"{backend.name} does not pull models: it serves the models its server was started with "
                "(to pull into this machine, select a local model's row)"
            )
        if action == "delete" and not backend.IMPLEMENTS_DELETE:
            return (
                f"{backend.name} does not delete models: they belong to its server "
                "(remove it there, or leave it out with the endpoint's models filter)"
            )
        return None

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Pull and delete are left out of the footer on a row whose backend cannot do them; their hidden twin
        (``refused``) takes the key there and says why."""
        if action in ("pull", "delete"):
            return self.refusal(action) is None
        if action == "refused":
            return bool(parameters) and self.refusal(str(parameters[0])) is not None
        return True

    def action_refused(self, action: str) -> None:
        """Say why the selected row's backend cannot ``action`` (pull or delete) its models."""
        reason = self.refusal(action)
        if reason is not None:
            self.notify(reason, severity="warning", title=f"cannot {action} here")

    @on(DataTable.RowHighlighted, "#models-table")
    def _row_highlighted(self) -> None:
        # the footer's pull and delete depend on the selected row's backend
        self.refresh_bindings()

    def _need_selection(self) -> ModelInfo | None:
        model = self.selected_model()
        if model is None:
            self.notify("no model is selected", severity="warning")
        return model

    def action_pull(self) -> None:
        """Open the pull dialog (catalog list, live progress, Escape stops); not on a backend that cannot pull."""
        if self.refusal("pull") is not None:  # the command palette reaches here without the key's check
            self.action_refused("pull")
            return
        present = {m.name for m in self.models if m.backend == "llamacpp"}
        self.app.push_screen(PullScreen(self.hub, present=present), self._pulled)

    def _pulled(self, spec: str | None) -> None:
        if spec:
            self.reload()
            self._refresh_status()

    def action_info(self) -> None:
        """Show the selected model's facts and chat template."""
        model = self._need_selection()
        if model is not None:
            self.app.push_screen(InfoScreen(self.hub, model_key(model)))

    @on(DataTable.RowSelected, "#models-table")
    def _row_chosen(self) -> None:
        self.action_info()

    def action_delete(self) -> None:
        """Delete the selected model's file, after a confirmation."""
        model = self._need_selection()
        if model is None:
            return
        if self.refusal("delete", model) is not None:
            self.action_refused("delete")
            return
        spec = model_key(model)
        detail = f"{model.location}\n{human_bytes(model.size_bytes)} will be freed." if model.location else ""

        def answered(yes: bool | None) -> None:
            if yes:
                self.delete_model(spec)

        self.app.push_screen(ConfirmScreen(f"Delete {spec}?", detail), answered)

    @work(group="model-actions", exit_on_error=False)
    async def delete_model(self, spec: str) -> None:
        """Delete through the hub; the core's refusal (a package's file, a missing one) is shown as it says."""
        try:
            await self.hub.delete(spec)
        except LLMSpellError as exc:
            self.notify(str(exc), severity="error", title=f"cannot delete {spec}")
            return
        except OSError as exc:
            self.notify(f"cannot delete {spec}: {exc.strerror or exc}", severity="error", title="delete failed")
            return
        self.notify(f"deleted {spec}", title="deleted")
        self.reload()
        self._refresh_status()

    def action_unload(self) -> None:
        """Free the selected model's memory."""
        model = self._need_selection()
        if model is None:
            return
        if not model.loaded:
            self.notify(f"{model_key(model)} is not loaded", severity="warning")
            return
        self.unload_model(model_key(model))

    @work(group="model-actions", exit_on_error=False)
    async def unload_model(self, spec: str) -> None:
        """Unload through the hub."""
        try:
            done = await self.hub.unload(spec)
        except LLMSpellError as exc:
            self.notify(str(exc), severity="error", title=f"cannot unload {spec}")
            return
        self.notify(f"unloaded {spec}" if done else f"{spec} was not loaded", title="unload")
        self.reload()
        self._refresh_status()

    def action_reload(self) -> None:
        """List the models again and check the backends now."""
        self.reload()
        self._refresh_status()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        report_worker_failure(self, event)

    def _refresh_status(self) -> None:
        refresh = getattr(self.app, "refresh_status", None)
        if callable(refresh):
            refresh()

    def system_commands(self) -> Iterable[SystemCommand]:
        """This screen's actions for the command palette."""
        yield SystemCommand("Pull a model (p)", "Download a catalog model or a spec, with progress", self.action_pull)
        yield SystemCommand("Model info (i)", "Facts and chat template of the selected model", self.action_info)
        yield SystemCommand("Delete model (d)", "Delete the selected model's file, after asking", self.action_delete)
        yield SystemCommand("Unload model (u)", "Free the selected model's memory", self.action_unload)
        yield SystemCommand("Sort by next column (s)", "Change the table's order", self.action_sort_next)
        yield SystemCommand("Filter models (/)", "Type to narrow the table", self.action_focus_filter)
        yield SystemCommand("Refresh models (r)", "List every backend's models again", self.action_reload)
