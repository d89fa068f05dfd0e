"""Benchmark: what loading each new model file once in a child process first (crash isolation) costs.

Run: .venv/bin/python bench/probe.py [--repeats 5]

In one run, for each bundled model: the child probe llmspell makes before a file version's first load
(llmspell.backends._probe._probe: a Python start, the import of llama_cpp, a load with a 64-token context and
one evaluated token) against the raw engine's own first load in a fresh process (the same start and import, then
``Llama(path)`` with llmspell's default context, as a worker loads it). Both run quiet and with one core kept
busy by a plain Python loop. The probe is paid once per file version (the verdict is remembered), so the number
that matters is its cost against that first load: printed as probe / raw load.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

os.environ.setdefault("LLMSPELL_HOME", tempfile.mkdtemp(prefix="llmspell-bench-"))

RAW_LOAD = """
import sys
from llama_cpp import Llama
Llama(model_path=sys.argv[1], n_ctx=4096, n_threads=2, verbose=False)
"""


def _spin() -> None:
    while True:
        pass


@contextmanager
def busy_core(on: bool) -> Iterator[None]:
    """One core kept busy by another process while the block runs (nothing when ``on`` is False)."""
    if not on:
        yield
        return
    proc = multiprocessing.Process(target=_spin, daemon=True)
    proc.start()
    try:
        yield
    finally:
        proc.terminate()
        proc.join()


def timed(run: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(run, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def model_files() -> dict[str, Path]:
    """The bundled models' files (gemma3's is assembled on first use)."""
    from llmspell.backends.llamacpp import LlamaCppBackend
    from llmspell.config import load_config
    from llmspell.spec import parse_spec

    backend = LlamaCppBackend(load_config())
    out = {}
    for spec in ("smollm2:135m", "gemma3:270m"):
        model = backend.resolve(parse_spec(spec))
        out[spec] = backend.ensure_file(model)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    from llmspell.backends import _probe

    print(f"# bench/probe.py, {date.today()}, {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    for spec, path in model_files().items():
        for busy in (False, True):
            probes, loads = [], []
            with busy_core(busy):
                for _ in range(args.repeats):  # interleaved, so a change in the machine's load hits both
                    started = time.perf_counter()
                    assert _probe._probe(path) == "ok"
                    probes.append(time.perf_counter() - started)
                    loads.append(timed([sys.executable, "-P", "-c", RAW_LOAD, str(path)]))
            probe, load = statistics.median(probes), statistics.median(loads)
            print(
                f"{spec:14} {'busy core' if busy else 'quiet':9}  probe {probe:.2f} s  raw first load "
                f"{load:.2f} s  probe/raw {probe / load:.2f}  (medians of {args.repeats})"
            )


if __name__ == "__main__":
    main()
