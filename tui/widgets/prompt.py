"""The prompt of the chat and arena screens, and what a screen with one does with Enter and Escape."""

from __future__ import annotations

from textual import events
from textual.message import Message
from textual.widgets import TextArea


class PromptArea(TextArea):
    """The prompt: Enter sends, Escape stops, Shift+Enter or Ctrl+J starts a new line, pasted text keeps its lines.

    Enter and Escape are read here, in the order of the keys typed before them, not as screen bindings: a screen
    (or priority) binding is handled before the characters still queued for the prompt, so a fast typist's (or
    an SSH connection's) "Why is the sky blue?<Enter>" sent "Why is the sky " and left the rest behind.
    """

    class Send(Message):
        """Enter: the text typed before it, already taken out of the prompt."""

        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    class Stop(Message):
        """Escape, in order with the Enter before it (so it stops the prompt just sent)."""

    DEFAULT_CSS = """
    PromptArea {
        height: auto;
        min-height: 3;
        max-height: 8;
        border: round $accent 50%;
    }
    PromptArea:focus {
        border: round $accent;
    }
    """

    async def _on_key(self, event: events.Key) -> None:
        if event.key in ("shift+enter", "ctrl+j", "enter", "escape"):
            event.stop()
            event.prevent_default()
            if event.key == "enter":
                # taken now: what is typed after this Enter is the next prompt, not part of this one
                text = self.text
                if text.strip():
                    self.clear()
                self.post_message(self.Send(text))
            elif event.key == "escape":
                self.post_message(self.Stop())
            else:
                self.insert("\n")
            return
        await super()._on_key(event)


class SendsPrompts:
    """A screen with a :class:`PromptArea`: Enter sends (a refused prompt goes back into the input, before what
    was typed since), Escape cancels. The screen says what sending and cancelling mean."""

    @property
    def prompt(self) -> PromptArea:
        """The prompt input."""
        raise NotImplementedError

    def submit(self, text: str) -> bool:
        """Act on ``text`` (already taken out of the prompt); False, with a note why, when refused."""
        raise NotImplementedError

    def action_cancel(self) -> None:
        """What Escape in the prompt does."""
        raise NotImplementedError

    def empty_enter(self) -> None:
        """Enter on an empty prompt (nothing, unless the screen has a use for it)."""

    def send(self, text: str) -> bool:
        """Act on ``text`` as if typed and sent; the prompt input is cleared when it was taken."""
        started = self.submit(text)
        if started:
            self.prompt.clear()
        return started

    def on_prompt_area_send(self, event: PromptArea.Send) -> None:
        event.stop()
        if not event.text.strip():
            self.empty_enter()
            return
        if not self.submit(event.text):
            self.prompt.text = event.text + self.prompt.text
            self.prompt.move_cursor(self.prompt.document.end)

    def on_prompt_area_stop(self, event: PromptArea.Stop) -> None:
        event.stop()
        self.action_cancel()
