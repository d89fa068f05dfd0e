"""Helpers for kernel tests: start a real llmspell kernel through jupyter_client and run cells on it."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from queue import Empty
from typing import Any

from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager

#: seconds a cell may take on the shared 2-core machine (real model; generous, never asserted as a speed)
CELL_TIMEOUT = 240


@dataclass
class Ran:
    """One executed cell: its execute_reply content and every iopub output message it caused, in order."""

    reply: dict[str, Any]
    outputs: list[dict[str, Any]] = field(default_factory=list)
    #: every iopub message seen while the cell ran, whatever request caused it, in the order the kernel sent them
    iopub: list[dict[str, Any]] = field(default_factory=list)

    @property
    def status(self) -> str:
        """The reply's status: ok, error or abort."""
        return str(self.reply["status"])

    def of(self, msg_type: str) -> list[dict[str, Any]]:
        """The contents of the outputs of one message type."""
        return [m["content"] for m in self.outputs if m["msg_type"] == msg_type]

    @property
    def stdout(self) -> str:
        """Everything the cell wrote to stdout."""
        return "".join(c["text"] for c in self.of("stream") if c["name"] == "stdout")

    @property
    def result(self) -> dict[str, Any]:
        """The data of the cell's execute_result (Out[n])."""
        results = self.of("execute_result")
        assert len(results) == 1, f"expected one execute_result, got {self.outputs}"
        return results[0]["data"]

    @property
    def shown(self) -> str:
        """The plain text of every display_data and execute_result, joined (what a reader sees)."""
        return "\n".join(
            c["data"].get("text/plain", "")
            for m in self.outputs
            if m["msg_type"] in ("display_data", "execute_result")
            for c in [m["content"]]
        )

    @property
    def markdown(self) -> str:
        """The Markdown of every display_data and execute_result, joined."""
        return "\n".join(
            m["content"]["data"].get("text/markdown", "")
            for m in self.outputs
            if m["msg_type"] in ("display_data", "execute_result")
        )

    @property
    def left(self) -> list[str]:
        """The types of the outputs a notebook keeps: those after the last clear_output, updates folded in."""
        kinds = [m["msg_type"] for m in self.outputs]
        start = len(kinds) - kinds[::-1].index("clear_output") if "clear_output" in kinds else 0
        return [k for k in kinds[start:] if k != "update_display_data"]

    @property
    def error(self) -> str:
        """The error's one-line-per-part message, as shown in the cell."""
        errors = self.of("error")
        assert len(errors) == 1, f"expected one error output, got {self.outputs}"
        return "\n".join(errors[0]["traceback"])


class KernelSession:
    """A started kernel and its client, with a helper that runs one cell and collects what it sent."""

    def __init__(self, km: KernelManager) -> None:
        self.km = km
        self.kc = km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)

    def run(self, code: str, timeout: float = CELL_TIMEOUT, on_output: Any = None, on_other: Any = None) -> Ran:
        """Execute ``code`` and wait for its reply and the kernel's idle status; ``on_output(msg)`` sees each output,
        ``on_other(msg)`` each iopub message of another request (a control request's status, say)."""
        msg_id = self.kc.execute(code)
        outputs: list[dict[str, Any]] = []
        seen: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                msg = self.kc.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
            except Empty:
                raise AssertionError(f"no idle status within {timeout} s for {code!r}; got {outputs}") from None
            seen.append(msg)
            if msg["parent_header"].get("msg_id") != msg_id:
                if on_other is not None:
                    on_other(msg)
                continue
            kind = msg["msg_type"]
            if kind == "status":
                if msg["content"]["execution_state"] == "idle":
                    break
                continue
            if kind == "execute_input":
                continue
            msg["received"] = time.monotonic()
            outputs.append(msg)
            if on_output is not None:
                on_output(msg)
        # wait_for_ready repeats kernel_info requests until one is answered, so on a busy machine the late replies
        # to the extra ones can still be queued ahead of this cell's reply
        while True:
            reply = self.kc.get_shell_msg(timeout=timeout)
            if reply["parent_header"].get("msg_id") == msg_id:
                break
            assert reply["msg_type"] == "kernel_info_reply", f"unexpected shell message {reply['msg_type']}"
        return Ran(reply["content"], outputs, seen)

    def control(self, msg_type: str, content: dict[str, Any] | None = None) -> str:
        """Send a request on the control channel (as a frontend's stop button or a busy-time query does); its id."""
        msg = self.kc.session.msg(msg_type, content or {})
        self.kc.control_channel.send(msg)
        return str(msg["header"]["msg_id"])

    def control_reply(self, msg_id: str, timeout: float = 60) -> dict[str, Any]:
        """The control channel's reply to ``msg_id`` (other replies before it are skipped)."""
        while True:
            msg = self.kc.get_control_msg(timeout=timeout)
            if msg["parent_header"].get("msg_id") == msg_id:
                return msg

    def close(self) -> None:
        """Stop the channels and shut the kernel down."""
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=False)


def kernel_env(home: Path, models: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a test kernel: temporary home, the shared models, no reachable Ollama."""
    env = dict(os.environ)
    env.update(
        {
            "LLMSPELL_HOME": str(home / "llmspell"),
            "LLMSPELL_MODELS": str(models),
            "HF_HUB_CACHE": str(home / "hf-cache"),
            "HF_HOME": str(home / "hf-home"),
            "OLLAMA_MODELS": str(home / "ollama-models"),
            "OLLAMA_HOST": "http://127.0.0.1:9",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "PYTHONUNBUFFERED": "1",
            # every token is its own display update, so tests that count pieces do not depend on the machine's speed
            "LLMSPELL_KERNEL_UPDATE_MS": "0",
        }
    )
    env.update(extra or {})
    return env


def start_kernel(prefix: Path, env: dict[str, str]) -> KernelSession:
    """Start the kernel spec installed under ``prefix`` with ``env``."""
    ksm = KernelSpecManager(kernel_dirs=[str(prefix / "share" / "jupyter" / "kernels")])
    km = KernelManager(kernel_name="llmspell", kernel_spec_manager=ksm)
    km.start_kernel(env={**env, "JUPYTER_PATH": str(prefix / "share" / "jupyter")})
    try:
        return KernelSession(km)
    except BaseException:
        km.shutdown_kernel(now=True)
        raise
