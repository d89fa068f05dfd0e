"""Benchmark: the llmspell Jupyter kernel as a notebook client sees it, against the raw engine and plain ipykernel.

Run: .venv/bin/python bench/kernel.py [--repeats 5] [--tokens 128]
Prints, in one run on smollm2:135m:
- generation tokens/s seen by a client over iopub (first streamed token to the final result) over raw
  llama-cpp-python measured in this process on the same prompts (target >= 0.95);
- the round trip of a trivial cell (%status, and %echo) against ipykernel's own `pass` cell (ms);
- interrupt latency: ms from the interrupt (SIGINT as the kernel spec asks, and an interrupt_request message)
  to the execute_reply, while an answer streams.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path
from queue import Empty
from typing import Any

os.environ.setdefault("LLMSPELL_HOME", tempfile.mkdtemp(prefix="llmspell-bench-"))
os.environ.setdefault("OLLAMA_HOST", "http://127.0.0.1:9")
sys.path.insert(0, str(Path(__file__).parent))

from engine import PROMPT, cpu_name, raw_engine
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager

from llmspell.backends.llamacpp import LlamaCppBackend, gguf_info
from llmspell.machine import physical_cores
from llmspell.spec import parse_spec
from llmspell.types import Message
from llmspell_kernel.install import install

SPEC = "smollm2:135m"
OPTIONS = "temperature=0 top_k=40 top_p=0.95 min_p=0.05 repeat_penalty=1.0"


class Client:
    """A started kernel and a client that runs cells and timestamps what arrives on iopub."""

    def __init__(self, km: KernelManager) -> None:
        self.km = km
        self.kc = km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=120)

    def run(self, code: str, timeout: float = 600) -> tuple[float, list[tuple]]:
        """(sent, [(arrival, msg_type, content)]) of one cell, waiting for its idle status and reply."""
        sent = time.perf_counter()
        msg_id = self.kc.execute(code)
        outputs: list[tuple] = []
        while True:
            msg = self.kc.get_iopub_msg(timeout=timeout)
            now = time.perf_counter()
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind = msg["msg_type"]
            if kind == "status" and msg["content"]["execution_state"] == "idle":
                break
            if kind not in ("status", "execute_input"):
                outputs.append((now, kind, msg["content"]))
        while True:
            try:
                reply = self.kc.get_shell_msg(timeout=timeout)
            except Empty:
                raise RuntimeError(f"no reply to {code!r}") from None
            if reply["parent_header"].get("msg_id") == msg_id:
                return sent, outputs

    def round_trip(self, code: str) -> float:
        """Seconds from execute_request to execute_reply (the shell channel only)."""
        while True:  # drop the outputs of earlier cells so they do not pile up (get_msgs() would block)
            try:
                self.kc.get_iopub_msg(timeout=0.001)
            except Empty:
                break
        sent = time.perf_counter()
        msg_id = self.kc.execute(code)
        while True:
            reply = self.kc.get_shell_msg(timeout=120)
            if reply["parent_header"].get("msg_id") == msg_id:
                return time.perf_counter() - sent

    def close(self) -> None:
        """Stop the channels and the kernel."""
        self.kc.stop_channels()
        self.km.shutdown_kernel()


def start(kernel_name: str, kernel_dirs: list[str] | None = None) -> Client:
    """Start a kernel by spec name (ours from the temporary prefix, python3 from the virtualenv)."""
    ksm = KernelSpecManager(kernel_dirs=kernel_dirs) if kernel_dirs else KernelSpecManager()
    km = KernelManager(kernel_name=kernel_name, kernel_spec_manager=ksm)
    km.start_kernel()
    return Client(km)


def kernel_answer(client: Client, prompt: str, n_tokens: int) -> tuple[float, float, int]:
    """Client-side TTFT and tokens/s of one answer: first streamed token to the final result over iopub."""
    sent, outputs = client.run(f"%reset\n%set {OPTIONS} max_tokens={n_tokens}\n{prompt}")
    first = next(t for t, kind, c in outputs if kind == "update_display_data" and c["data"]["text/plain"])
    end, _, result = next(o for o in outputs if o[1] == "execute_result")
    n = result["metadata"]["llmspell"]["stats"]["generated_tokens"]
    return first - sent, (n - 1) / (end - first), n


def interrupt_latency(client: Client, how: str) -> tuple[float, float]:
    """(ms to the execute_reply, ms to the display marked interrupted) after an interrupt mid-answer."""
    client.run(f"%reset\n%set {OPTIONS} max_tokens=4000")
    fired: list[float] = []
    marked: list[float] = []

    def on_output(kind: str, content: dict[str, Any]) -> None:
        if kind == "update_display_data":
            if "[interrupted]" in content["data"]["text/plain"]:
                marked.append(time.perf_counter())
            elif len(fired) == 0 and len(content["data"]["text/plain"]) > 40:
                fired.append(time.perf_counter())
                if how == "signal":
                    threading.Thread(target=client.km.interrupt_kernel).start()
                else:
                    msg = client.kc.session.msg("interrupt_request", {})
                    client.kc.control_channel.send(msg)

    msg_id = client.kc.execute("Write a very long story about a lighthouse keeper, in many chapters.")
    while True:
        msg = client.kc.get_iopub_msg(timeout=600)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            break
        on_output(msg["msg_type"], msg["content"])
    while True:
        reply = client.kc.get_shell_msg(timeout=600)
        if reply["parent_header"].get("msg_id") == msg_id:
            replied = time.perf_counter()
            break
    assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "Interrupted", reply["content"]
    assert fired and marked
    # the reply is read after the idle status; the marker's arrival is the tighter bound, both are printed
    return (replied - fired[0]) * 1000, (marked[0] - fired[0]) * 1000


def main() -> None:
    """Run every measure once against one llmspell kernel and print the results."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--trivial", type=int, default=30, help="round trips of each trivial cell")
    args = ap.parse_args()
    import llama_cpp

    prefix = Path(tempfile.mkdtemp(prefix="llmspell-bench-jupyter-"))
    install(prefix=str(prefix))
    kernel_dirs = [str(prefix / "share" / "jupyter" / "kernels")]
    backend = LlamaCppBackend()
    model = backend.resolve(parse_spec(SPEC))
    path = backend.ensure_file(model)
    info = gguf_info(path)
    threads = backend.threads()

    def rendered(prompt: str) -> tuple[str, bool]:
        text, add_bos, _ = backend.render_chat(model, info, [Message("user", prompt)])
        return text, add_bos

    print(
        f"# bench/kernel.py  {date.today()}  {platform.machine()} {cpu_name()}  {os.cpu_count()} logical cores, "
        f"{physical_cores()} threads  llama-cpp-python {llama_cpp.__version__}  Python {sys.version.split()[0]}"
    )
    print(f"# {SPEC}, temperature 0, {args.tokens} new tokens, {args.repeats} repeats, medians\n")

    ours = start("llmspell", kernel_dirs)
    try:
        # both engines loaded and warm before anything is timed
        raw_engine(path, *rendered(PROMPT), True, 4, threads, backend.config.num_ctx)
        kernel_answer(ours, PROMPT, 4)
        raw_runs, kernel_runs = [], []
        for i in range(args.repeats):
            prompt = f"Story number {i + 1}. {PROMPT}"
            order = ("raw", "kernel") if i % 2 == 0 else ("kernel", "raw")
            for who in order:
                if who == "raw":
                    raw_runs.append(
                        raw_engine(path, *rendered(prompt), True, args.tokens, threads, backend.config.num_ctx)
                    )
                else:
                    kernel_runs.append(kernel_answer(ours, prompt, args.tokens))
        raw_tps = statistics.median(r[1] for r in raw_runs)
        our_tps = statistics.median(r[1] for r in kernel_runs)
        raw_ttft = statistics.median(r[0] for r in raw_runs) * 1000
        our_ttft = statistics.median(r[0] for r in kernel_runs) * 1000
        print("## streaming over iopub")
        print(
            f"generation tok/s: raw {raw_tps:.1f}  kernel client {our_tps:.1f}  ratio {our_tps / raw_tps:.3f}  "
            f"(target >= 0.95)  [tokens: raw {statistics.median(r[2] for r in raw_runs):.0f}, "
            f"kernel {statistics.median(r[2] for r in kernel_runs):.0f}]"
        )
        print(
            f"time to first token: raw {raw_ttft:.1f} ms  kernel client {our_ttft:.1f} ms (from execute_request, "
            f"the %reset and %set in the same cell included)  difference {our_ttft - raw_ttft:+.1f} ms\n"
        )

        plain = start("python3")
        try:
            for c in (plain, ours):
                c.round_trip("pass" if c is plain else "%echo warm")
            samples: dict[str, list[float]] = {"pass": [], "%status": [], "%echo": []}
            for _ in range(args.trivial):
                samples["pass"].append(plain.round_trip("pass"))
                samples["%status"].append(ours.round_trip("%status"))
                samples["%echo"].append(ours.round_trip("%echo hi"))
        finally:
            plain.close()
        med = {k: statistics.median(v) * 1000 for k, v in samples.items()}
        print("## trivial cell round trip (execute_request to execute_reply)")
        print(
            f"ipykernel `pass` {med['pass']:.2f} ms  llmspell `%status` {med['%status']:.2f} ms "
            f"(+{med['%status'] - med['pass']:.2f} ms)  llmspell `%echo hi` {med['%echo']:.2f} ms "
            f"(+{med['%echo'] - med['pass']:.2f} ms)\n"
        )

        lat: dict[str, list[tuple[float, float]]] = {"signal": [], "message": []}
        for _ in range(args.repeats):
            for how in ("signal", "message"):
                lat[how].append(interrupt_latency(ours, how))
        print("## interrupt while an answer streams")
        for how, runs in lat.items():
            label = "SIGINT (the kernel spec's interrupt_mode)" if how == "signal" else "interrupt_request message"
            print(
                f"{label}: reply after {statistics.median(r[0] for r in runs):.1f} ms, partial answer marked "
                f"interrupted after {statistics.median(r[1] for r in runs):.1f} ms "
                f"(max {max(r[0] for r in runs):.1f} ms)"
            )
        record = {
            "raw_tps": raw_tps,
            "kernel_tps": our_tps,
            "ratio": our_tps / raw_tps,
            "trivial_ms": med,
            "interrupt_ms": {k: statistics.median(r[0] for r in v) for k, v in lat.items()},
        }
        print("\n" + json.dumps(record))
    finally:
        ours.close()


if __name__ == "__main__":
    main()
