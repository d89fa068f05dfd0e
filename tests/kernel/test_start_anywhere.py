"""The kernel and every console script start whatever the current folder holds (issue 18): a folder named
``llmspell`` (the parent of a clone, say) must not shadow the installed package as an empty namespace package."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from kernel_session import KernelSession, kernel_env

from llmspell_kernel.install import install


@pytest.fixture
def crowded(tmp_path: Path) -> Path:
    """A working folder holding empty folders with the import names of llmspell and its faces."""
    here = tmp_path / "notebooks"
    for name in ("llmspell", "llmspell_kernel", "llmspell_tui"):
        (here / name).mkdir(parents=True)
    return here


def test_kernel_starts_and_answers_in_a_folder_holding_llmspell(
    crowded: Path, tmp_path: Path, shared_models: Path
) -> None:
    prefix = tmp_path / "prefix"
    install(prefix=str(prefix))
    ksm = KernelSpecManager(kernel_dirs=[str(prefix / "share" / "jupyter" / "kernels")])
    km = KernelManager(kernel_name="llmspell", kernel_spec_manager=ksm)
    env = kernel_env(tmp_path / "home", shared_models)
    km.start_kernel(env={**env, "JUPYTER_PATH": str(prefix / "share" / "jupyter")}, cwd=str(crowded))
    try:
        ks = KernelSession(km)
    except BaseException:
        km.shutdown_kernel(now=True)
        raise
    try:
        ran = ks.run("%models")
        assert ran.status == "ok", ran.outputs
        assert "smollm2:135m" in ran.shown + ran.markdown + ran.stdout
        # the kernel's own package was imported from the installation, not from the folder next to the notebook
        ran = ks.run("%status")
        assert ran.status == "ok", ran.outputs
    finally:
        ks.close()


def _scripts_dir() -> Path:
    return Path(sys.executable).parent


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["llmspell", "--version"], 0),
        (["llmspell", "model", "list", "--backend", "llamacpp", "--json"], 0),
        # the app is not started (no terminal here): a bad model name is refused by the core, which it imported
        (["llmspell-tui", "bad name!"], 2),
    ],
    ids=["llmspell-version", "llmspell-model-list", "llmspell-tui"],
)
def test_console_scripts_start_in_a_folder_holding_llmspell(
    crowded: Path, tmp_path: Path, argv: list[str], code: int
) -> None:
    script = _scripts_dir() / argv[0]
    assert script.is_file(), f"{script} is not installed"
    env = {**os.environ, "LLMSPELL_HOME": str(tmp_path / "home"), "OLLAMA_HOST": "http://127.0.0.1:9"}
    # a PYTHONPATH of "" or "." would put the folder first whatever the script does: the users' shells do not
    env.pop("PYTHONPATH", None)
    done = subprocess.run([str(script), *argv[1:]], cwd=crowded, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == code, done.stderr
    assert code == 0 or "a valid spec looks like" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr, done.stderr


def test_python_m_kernel_with_safe_path_ignores_the_folder(crowded: Path) -> None:
    """What the kernel spec runs (``python -P -m llmspell_kernel``) imports the installed packages."""
    code = "import llmspell, llmspell_kernel; print(llmspell.__file__); print(llmspell_kernel.__file__)"
    done = subprocess.run([sys.executable, "-P", "-c", code], cwd=crowded, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    files = done.stdout.split()
    assert len(files) == 2 and all(not Path(f).is_relative_to(crowded) for f in files), files
