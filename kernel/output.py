"""What a cell sends to the notebook: streams, Markdown displays that grow, the result, the error; and the
outputs kept so that replacing a streamed answer by its final form leaves the cell's other outputs in place."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any


class CellOutput:
    """The output side of the kernel (mixed into it before ipykernel's Kernel, which sends the messages)."""

    #: the running cell was sent with silent=True: nothing is shown
    _silent: bool
    #: outputs of the running cell that stay when the streamed answer is replaced by its final form
    _kept: list[tuple[str, dict[str, Any]]]
    execution_count: int
    iopub_socket: Any

    if TYPE_CHECKING:

        def send_response(self, stream: Any, msg_or_type: Any, content: Any = None) -> Any:
            """ipykernel's: send one message on a socket."""

    def _send(self, msg_type: str, content: dict[str, Any], *, keep: bool = True) -> None:
        if self._silent:
            return
        if keep:
            self._kept.append((msg_type, content))
        self.send_response(self.iopub_socket, msg_type, content)

    def _print(self, text: str) -> None:
        self._send("stream", {"name": "stdout", "text": text if text.endswith("\n") else text + "\n"})

    def _warn(self, text: str) -> None:
        self._send("stream", {"name": "stderr", "text": text + "\n"})

    def _markdown(
        self,
        md: str,
        plain: str | None = None,
        display_id: str | None = None,
        *,
        update: bool = False,
        keep: bool = True,
    ) -> None:
        content: dict[str, Any] = {
            "data": {"text/markdown": md, "text/plain": plain if plain is not None else md},
            "metadata": {},
            "transient": {},
        }
        if display_id:
            content["transient"] = {"display_id": display_id}
        self._send("update_display_data" if update else "display_data", content, keep=keep and not update)

    def _block(self, md: str, plain: str) -> dict[str, Any]:
        """A display that stays in the cell and can grow (see ``_regrow``); its content, kept for that."""
        import uuid

        content: dict[str, Any] = {
            "data": {"text/markdown": md, "text/plain": plain},
            "metadata": {},
            "transient": {"display_id": uuid.uuid4().hex},
        }
        self._send("display_data", content)
        return content

    def _regrow(self, content: dict[str, Any], md: str, plain: str) -> None:
        """Replace a ``_block``'s text: on the screen now, and in what is sent again when the answer is replaced."""
        content["data"] = {"text/markdown": md, "text/plain": plain}
        self._send("update_display_data", content, keep=False)

    def _display(self, data: dict[str, Any], metadata: dict[str, Any] | None = None) -> None:
        """One display_data with several representations (e.g. text/html and its text/plain fallback)."""
        self._send("display_data", {"data": data, "metadata": metadata or {}, "transient": {}})

    def _result(self, data: dict[str, Any], metadata: dict[str, Any] | None = None) -> None:
        self._send(
            "execute_result", {"execution_count": self.execution_count, "data": data, "metadata": metadata or {}}
        )

    def _error_reply(self, ename: str, message: str) -> dict[str, Any]:
        lines = message.splitlines() or [ename]
        tb = [f"\x1b[0;31m{ename}\x1b[0m: {lines[0]}", *lines[1:]]
        content = {"ename": ename, "evalue": message, "traceback": tb}
        self._send("error", content)
        return {"status": "error", "execution_count": self.execution_count, **content}

    def _drop_stream(self) -> None:
        """Remove the streamed display from the cell (clear_output waits for the next output: no flicker) and
        send the cell's other outputs again, so only the final form of the answer follows them."""
        if self._silent:
            return
        self.send_response(self.iopub_socket, "clear_output", {"wait": True})
        kept, self._kept = self._kept, []
        for msg_type, content in kept:
            self._send(msg_type, content)

    def _finish(self, md: str, plain: str, metadata: dict[str, Any]) -> None:
        """Replace the streamed display by the final result (Out[n]), keeping the cell's other outputs."""
        self._drop_stream()
        self._result({"text/markdown": md, "text/plain": plain}, metadata)
