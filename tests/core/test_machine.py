"""Machine facts and the fits / too big verdicts that `model available` and `model status` print."""

from __future__ import annotations

from pathlib import Path

from llmspell.machine import GIB, GPU, MachineInfo, check_fit, human_bytes, machine_info, physical_cores


def _machine(ram: float = 16, avail: float = 12, disk: float = 100, gpus: tuple[GPU, ...] = ()) -> MachineInfo:
    return MachineInfo(
        cores=4,
        ram_total=int(ram * GIB),
        ram_available=int(avail * GIB),
        disk_free=int(disk * GIB),
        disk_path=Path("/"),
        gpus=gpus,
    )


def test_this_machine_is_measured(tmp_path: Path) -> None:
    m = machine_info(tmp_path / "not" / "yet")
    assert m.ram_total >= m.ram_available > 0 and m.disk_free > 0 and m.cores == physical_cores() >= 1
    assert m.disk_path == tmp_path, "free disk is measured on the nearest existing folder"


def test_fit_verdicts_say_why() -> None:
    assert check_fit(int(2 * GIB), int(1 * GIB), _machine(), on_disk=False).reason == "fits in RAM"
    too_big = check_fit(int(40 * GIB), int(30 * GIB), _machine(disk=10), on_disk=False)
    assert not too_big.fits
    assert "needs 42.9 GB RAM, machine has 17.2 GB" in too_big.reason and "disk" in too_big.reason
    assert check_fit(int(4 * GIB), int(30 * GIB), _machine(disk=10), on_disk=True).fits, "on disk needs no room"
    tight = check_fit(int(14 * GIB), 0, _machine(avail=8), on_disk=True)
    assert tight.fits and "after freeing memory" in tight.reason
    gpu = _machine(ram=8, gpus=(GPU("H100", int(80 * GIB), int(70 * GIB)),))
    assert check_fit(int(20 * GIB), 0, gpu, on_disk=True).reason == "fits in VRAM"


def test_human_bytes() -> None:
    assert [human_bytes(n) for n in (None, 512, 98_362_432, 4.1e9)] == ["-", "512 B", "98.4 MB", "4.1 GB"]
