"""What this machine has (cores, RAM, VRAM, disk) and whether a model fits in it."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psutil

from llmspell.types import human_bytes as human_bytes  # the faces have always found it here

GIB = 1024**3


@functools.cache
def physical_cores() -> int:
    """Physical CPU cores usable by this process (llama.cpp runs best with one thread per core)."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        affinity = os.cpu_count() or 1
    physical = psutil.cpu_count(logical=False) or affinity
    logical = psutil.cpu_count(logical=True) or affinity
    # an affinity mask (containers, taskset) limits us further; scale physical cores by the same share
    share = affinity / logical if logical else 1.0
    return max(1, min(affinity, round(physical * share)))


@dataclass(frozen=True)
class GPU:
    """One visible GPU."""

    name: str
    total_bytes: int
    free_bytes: int


@functools.cache
def gpus() -> tuple[GPU, ...]:
    """GPUs nvidia-smi can see (empty without one); cached because it spawns a process."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return ()
    try:
        out = subprocess.run(
            [exe, "--query-gpu=name,memory.total,memory.free", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    found = []
    for line in out.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            found.append(GPU(parts[0], int(parts[1]) * 1024**2, int(parts[2]) * 1024**2))
    return tuple(found)


@dataclass(frozen=True)
class MachineInfo:
    """A snapshot of the resources that decide whether a model fits."""

    cores: int
    ram_total: int
    ram_available: int
    disk_free: int
    disk_path: Path
    gpus: tuple[GPU, ...]

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form, as `model status --json` and `model available --json` print it."""
        return {
            "ram_total": self.ram_total,
            "ram_available": self.ram_available,
            "disk_free": self.disk_free,
            "disk_path": str(self.disk_path),
            "cores": self.cores,
            "gpus": [{"name": g.name, "total_bytes": g.total_bytes, "free_bytes": g.free_bytes} for g in self.gpus],
        }

    @property
    def vram_free(self) -> int:
        """Free memory on the largest GPU (0 without one)."""
        return max((g.free_bytes for g in self.gpus), default=0)


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def machine_info(disk_path: Path | None = None) -> MachineInfo:
    """Measure RAM, disk (where models go) and GPUs now."""
    from llmspell import config

    where = _existing_parent(disk_path or config.models_dir())
    vm = psutil.virtual_memory()
    return MachineInfo(
        cores=physical_cores(),
        ram_total=vm.total,
        ram_available=vm.available,
        disk_free=shutil.disk_usage(where).free,
        disk_path=where,
        gpus=gpus(),
    )


@dataclass(frozen=True)
class Fit:
    """Whether a model fits, and the reason in words."""

    fits: bool
    reason: str


def check_fit(ram_needed: int, download_bytes: int, machine: MachineInfo, *, on_disk: bool) -> Fit:
    """Say whether a model needing ``ram_needed`` bytes (and ``download_bytes`` if not on disk) fits here."""
    problems = []
    in_vram = bool(machine.gpus) and ram_needed <= machine.vram_free
    if not in_vram and ram_needed > machine.ram_total:
        problems.append(f"needs {human_bytes(ram_needed)} RAM, machine has {human_bytes(machine.ram_total)}")
    if not on_disk and download_bytes > machine.disk_free:
        problems.append(f"needs {human_bytes(download_bytes)} disk, {human_bytes(machine.disk_free)} free")
    if problems:
        return Fit(False, "too big: " + "; ".join(problems))
    where = "in VRAM" if in_vram else "in RAM"
    if not in_vram and ram_needed > machine.ram_available:
        return Fit(True, f"fits {where} after freeing memory ({human_bytes(machine.ram_available)} available now)")
    return Fit(True, f"fits {where}")
