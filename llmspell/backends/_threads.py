"""How many threads the embedded engine uses now: the cores split among this process's generating models,
less the cores that other programs (another llmspell among them) keep busy.

ggml's threads spin at every barrier of the graph. When one of them is descheduled because another program
wants its core, the others wait a whole time slice, hundreds of times per token: on 2 cores with one busy,
smollm2 runs 131 tokens/s on 1 thread and 15 on 2 (bench/busy.py). So the engine must never run more threads
than there are free cores. Free cores are measured, not assumed: the machine's busy time from /proc/stat minus this
process's own CPU time is what the rest of the machine uses, read every tenth of a second while generating.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

#: a core counts as taken by other programs once they use more than this share of it: ggml's barriers stall
#: on a core that is busy even part of the time
BUSY_SHARE = 0.35
#: how long one reading of the machine's load covers while a model generates (/proc/stat counts in 10 ms ticks,
#: so on 2 cores a window this long is 20 ticks: fine enough, and short enough to follow a load that comes or goes)
WINDOW = 0.1
#: a window longer than this says little about now: the start of a generation also looks at what is running
STALE = 2.0
#: the interpreter's thread switch interval while a model generates. The engine's thread needs the GIL for a
#: moment between two tokens; with Python's default of 5 ms, a face drawing (a TUI frame is 4-8 ms of Python)
#: keeps it waiting that long per token
GIL_SWITCH = 0.001

_generating = 0
_generating_lock = threading.Lock()
_saved_switch = 0.0


def _generation_started() -> None:
    global _generating, _saved_switch
    with _generating_lock:
        _generating += 1
        if _generating == 1:
            _saved_switch = sys.getswitchinterval()
            sys.setswitchinterval(min(_saved_switch, GIL_SWITCH))


def _generation_ended() -> None:
    global _generating
    with _generating_lock:
        _generating -= 1
        if _generating == 0:
            sys.setswitchinterval(_saved_switch)


@dataclass(frozen=True)
class _Reading:
    wall: float
    #: CPU seconds the CPUs we may run on spent busy, every process together
    busy: float
    #: CPU seconds this process spent
    ours: float


class CpuLoad:
    """Measures how many cores the rest of the machine keeps busy (Linux; elsewhere it reports nothing)."""

    def __init__(self, root: Path = Path("/proc")) -> None:
        self._root = root
        try:
            self._cpus: set[int] | None = set(os.sched_getaffinity(0))
        except AttributeError:
            self._cpus = None
        self._hz = float(os.sysconf("SC_CLK_TCK")) if hasattr(os, "sysconf") else 100.0
        self._lock = threading.Lock()
        self._last = self._read()
        #: cores other programs used over the last window, and when that window ended (never, so far)
        self.others = 0.0
        self.measured_at = -math.inf

    @property
    def supported(self) -> bool:
        """Whether this system tells us its load (it does where /proc/stat exists)."""
        return self._last is not None

    @property
    def cpus(self) -> int:
        """Logical CPUs this process may run on."""
        return len(self._cpus) if self._cpus else (os.cpu_count() or 1)

    def _read(self) -> _Reading | None:
        try:
            text = (self._root / "stat").read_text()
        except OSError:
            return None
        busy = 0
        for line in text.splitlines():
            if not line.startswith("cpu"):
                break
            name, *fields = line.split()
            if name == "cpu" or (self._cpus is not None and int(name[3:]) not in self._cpus):
                continue
            # user nice system idle iowait irq softirq steal (guest time is already inside user): steal counts
            # as busy, since a hypervisor that takes the core stalls ggml's barriers just the same
            values = [int(v) for v in fields[:8]]
            busy += sum(values) - values[3] - values[4]
        t = os.times()
        return _Reading(time.monotonic(), busy / self._hz, t.user + t.system)

    def update(self, window: float = WINDOW) -> float:
        """Cores other programs use: measured anew once ``window`` seconds have passed since the last reading."""
        with self._lock:
            last = self._last
            if last is None:
                return 0.0
            now = time.monotonic()
            if now - last.wall < window:
                return self.others
            reading = self._read()
            if reading is None:
                return self.others
            span = reading.wall - last.wall
            others = (reading.busy - last.busy - (reading.ours - last.ours)) / span
            self._last = reading
            # a long window is an average over a past that may be gone: trust it only as far as what is
            # runnable at this moment agrees (a program that stopped a second ago is no load any more)
            if span > STALE:
                others = min(others, float(self.runnable_others()))
            self.others = min(float(self.cpus), max(0.0, others))
            self.measured_at = reading.wall
            return self.others

    def runnable_others(self) -> int:
        """Threads of other processes running or ready to run at this instant (a snapshot, so noisy)."""
        try:
            stat = (self._root / "stat").read_text()
            running = next(int(line.split()[1]) for line in stat.splitlines() if line.startswith("procs_running"))
        except (OSError, StopIteration, ValueError):
            return 0
        ours = 0
        try:
            for task in (self._root / "self" / "task").iterdir():
                try:
                    # the state follows the command name in parentheses, which may itself hold spaces
                    if (task / "stat").read_text().rsplit(")", 1)[1].split()[0] == "R":
                        ours += 1
                except (OSError, IndexError):
                    continue
        except OSError:
            ours = 1
        return max(0, running - max(ours, 1))

    def at_start(self) -> float:
        """Cores other programs use, as a generation is about to start: the last window when it is fresh,
        else what a new reading and the runnable threads right now say, whichever is busier (a generation
        started on too many threads stalls at once; one started on too few is corrected a tenth of a second on)."""
        with self._lock:
            fresh = self._last is not None and time.monotonic() - self.measured_at < WINDOW * 2
        if fresh:
            return self.others
        measured = self.update(window=0.02)
        return max(measured, float(self.runnable_others()))

    def for_status(self) -> float:
        """Cores other programs use, for a status line: "busy" only when the last stretch of time and this
        instant agree, so a one-instant snapshot never makes an idle machine look busy (at_start is the
        cautious one)."""
        measured = self.update(window=0.05)
        now = float(self.runnable_others())
        return min(measured, now) if self.measured_at > -math.inf else now


class ThreadBudget:
    """Splits the free cores among the models generating at the same moment, so neither side-by-side streams
    nor other programs running beside us oversubscribe the CPU.

    ``total`` is the most threads a model uses (one per physical core, or the config's ``threads``);
    ``adaptive`` lowers that while other programs keep cores busy. An explicit thread count on a request
    bypasses the budget altogether.
    """

    def __init__(self, total: int, *, adaptive: bool = True, load: CpuLoad | None = None) -> None:
        self.total = total
        self.load = load if load is not None else (CpuLoad() if adaptive else None)
        self.adaptive = adaptive and self.load is not None and self.load.supported
        self._active = 0
        self._lock = threading.Lock()
        #: threads per model at the last decision, and the cores others used then (for status lines)
        self.current = total
        self.others = 0.0
        #: cores held free for this process's own faces while they draw (see hold)
        self._held = 0
        self._on_boundary: list[Callable[[], None]] = []

    def enter(self) -> None:
        """A model starts generating: look at the machine now, before its prompt is read."""
        with self._lock:
            self._active += 1
        _generation_started()
        if self.adaptive:
            assert self.load is not None
            self.others = self.load.at_start()

    def leave(self) -> None:
        """A model stopped generating."""
        with self._lock:
            self._active -= 1
        _generation_ended()

    def hold(self, on_boundary: Callable[[], None]) -> bool:
        """Keep one core free of engine threads from the next token on, for a face of this process to draw in.

        Drawing during a decode that runs a thread on every core preempts one of them, and the others spin at
        the next barrier until it is back: a 4 ms screen update cost the engine 10 ms. ``on_boundary`` is called
        (from the engine's thread) once a generating model has passed a token boundary, so the face can start
        drawing when the decode in flight has ended. False, and nothing held, when no model generates.
        """
        with self._lock:
            if self._active == 0 or not self.adaptive or self.total < 2:
                return False
            self._held += 1
            self._on_boundary.append(on_boundary)
            return True

    def release(self) -> None:
        """The face has drawn: the core is the engine's again from the next token."""
        with self._lock:
            self._held = max(0, self._held - 1)

    def _room(self) -> int:
        """Cores not kept busy by other programs, by the last reading."""
        assert self.load is not None
        return max(1, self.load.cpus - math.floor(self.others + 1 - BUSY_SHARE))

    def free(self) -> int:
        """Threads the models of this process may use together now."""
        if not self.adaptive:
            return self.total
        assert self.load is not None
        self.others = self.load.update()
        return min(self.total, self._room())

    def share(self) -> int:
        """Threads each generating model should use now (called by each generating model between tokens)."""
        free = self.free()
        active = max(1, self._active)
        # what status lines report: the machine's verdict, not the moment a face draws
        self.current = max(1, free // active)
        n = self.current
        if self._held:
            # a face draws: leave it a core, unless the machine has more cores than the engine uses anyway
            n = max(1, min(free, self._room() - self._held) // active)
        if self._on_boundary:
            with self._lock:
                waiting, self._on_boundary = self._on_boundary, []
            for notify in waiting:
                notify()
        return n

    def describe(self) -> str:
        """What the engine runs on now and why, for status lines: '1 of 2 threads: cores busy elsewhere'."""
        unit = "thread" if self.total == 1 else "threads"
        if not self.adaptive:
            return f"{self.total} {unit}, as configured"
        if self.total == 1:
            return f"{self.total} {unit}"
        if self._active == 0:
            assert self.load is not None
            self.others = self.load.for_status()
            n = min(self.total, self._room())
        else:
            n = self.current
        if n >= self.total:
            return f"{self.total} {unit}"
        if self.others >= BUSY_SHARE:
            return f"{n} of {self.total} {unit}: cores busy elsewhere"
        return f"{n} of {self.total} {unit}: {self._active} models share them"
