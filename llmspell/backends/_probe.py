"""A model file is loaded once in a short-lived child process before this process loads it.

llama.cpp answers some malformed files with a GGML_ASSERT, which aborts the whole process (SIGABRT): in the TUI,
`llmspell serve` or a kernel that is every open conversation and every client gone at once. The header check
(ggufcheck) refuses every such value we know of; this catches the ones we do not know yet. A child loads the file
the way a worker will and evaluates one token (some asserts fire only when the first graph is built); if it dies
by a signal, the file is refused with the signal and the assert llama.cpp printed, and this process never loads it.

Measured on this 2-core machine (BENCHMARKS.md, "Crash isolation"): about 0.4 s once per file version (a Python
start and the import of llama_cpp; the load itself warms the page cache the real load then reads from). Running
every engine worker of the long-lived faces in a child process instead would cost a hop per token and a second
copy of each loaded model's state; the probe costs nothing after the first load.

Verdicts are kept per file version (resolved path, size, modification time): in memory for this process and in
``$LLMSPELL_HOME/engine_checks.json`` for the next ones. Only a crash is held against a file; a clean failure in
the child (llama.cpp refusing the file) is left to the real load, which says why in its own words.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from llmspell.errors import ModelFileCorrupt

#: the child: load as a worker does (small context, one thread, CPU), then evaluate one token
_CHILD = """
import sys
from llama_cpp import Llama
model = Llama(model_path=sys.argv[1], n_ctx=64, n_batch=64, n_threads=1, n_gpu_layers=0, verbose=True)
model.eval([model.token_bos() if model.token_bos() >= 0 else 0])
"""
#: seconds the child may take: a start, the import, and reading the file once (about 100 MB/s at worst)
_BASE_TIMEOUT = 60.0
_PER_GB = 10.0
_lock = threading.Lock()
_known: dict[str, str] = {}


def _key(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"


def _verdicts_file() -> Path:
    from llmspell.config import home

    return home() / "engine_checks.json"


def _load_verdicts() -> dict[str, str]:
    try:
        data = json.loads(_verdicts_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _save_verdict(key: str, verdict: str) -> None:
    """Remember a verdict for the next processes; a home that cannot be written only costs a probe next time."""
    from llmspell.files import write_whole

    try:
        data = _load_verdicts()
        data[key] = verdict
        target = _verdicts_file()
        target.parent.mkdir(parents=True, exist_ok=True)
        write_whole(target, lambda f: json.dump(data, f, indent=1))
    except OSError:
        pass


def _assert_line(stderr: str) -> str:
    """The line of llama.cpp's output that says what it asserted (or its last words)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in reversed(lines):
        if "GGML_ASSERT" in line or "failed" in line.lower() or "error" in line.lower():
            return line[-300:]
    return lines[-1][-300:] if lines else ""


def _crash_message(path: Path, verdict: str) -> ModelFileCorrupt:
    return ModelFileCorrupt(
        f"{path.name} crashed the engine when loaded ({verdict}); llmspell did not load it in this process",
        hint="the file is damaged or was made by a tool llama.cpp does not support; download or convert it again",
    )


def check_loads(path: Path) -> None:
    """Load ``path`` once in a child process unless this version of it was checked before; raise ModelFileCorrupt
    naming the signal and llama.cpp's assert when the child crashed."""
    key = _key(path)
    with _lock:
        verdict = _known.get(key)
    if verdict is None:
        verdict = _load_verdicts().get(key)
        if verdict is None:
            verdict = _probe(path)
            _save_verdict(key, verdict)
        with _lock:
            _known[key] = verdict
    if verdict != "ok":
        raise _crash_message(path, verdict)


def _probe(path: Path) -> str:
    """ "ok" unless the child died by a signal; then the signal and llama.cpp's last words ("SIGABRT: ...").

    Only a crash counts: a clean failure in the child (llama.cpp refusing the file, an embedding-only model that
    does not decode) is the real load's to report, in its own words."""
    size_gb = path.stat().st_size / 1024**3
    limit = _BASE_TIMEOUT + _PER_GB * size_gb
    try:
        done = subprocess.run(
            [sys.executable, "-P", "-c", _CHILD, str(path)],
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=limit,
            check=False,
        )
    except subprocess.TimeoutExpired:
        # a file the engine cannot load in this time would hang the real load too: say so instead of waiting
        raise ModelFileCorrupt(
            f"loading {path.name} did not finish within {limit:.0f} s in a test load",
            hint="the file may be damaged, or the disk very slow; try again, or check the file",
        ) from None
    except OSError:
        return "ok"  # no child could be started (out of processes): the real load goes ahead as it always did
    if done.returncode >= 0:
        return "ok"
    try:
        name = signal.Signals(-done.returncode).name
    except ValueError:
        name = f"signal {-done.returncode}"
    detail = _assert_line(done.stderr.decode(errors="replace"))
    return f"{name}: {detail}" if detail else name
