"""Fixtures of the kernel tests: the kernel spec in a temporary prefix and one real kernel per module."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# the helpers module sits next to this file; tests/ (on the path) has its own conftest, so import it by name
sys.path.insert(0, str(Path(__file__).parent))

from kernel_session import KernelSession, kernel_env, start_kernel

from llmspell_kernel.install import install


@pytest.fixture(scope="module")
def spec_prefix(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A temporary prefix with the llmspell kernel spec installed (as `llmspell kernel install --prefix` does)."""
    prefix = tmp_path_factory.mktemp("jupyter-prefix")
    install(prefix=str(prefix))
    return prefix


@pytest.fixture(scope="module")
def kernel_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The LLMSPELL_HOME (and caches) of the module's kernel."""
    return tmp_path_factory.mktemp("kernel-home")


@pytest.fixture(scope="module")
def session(spec_prefix: Path, kernel_home: Path, shared_models: Path) -> Iterator[KernelSession]:
    """One real kernel for the module (start-ups are kept few on 2 cores); shut down afterwards."""
    ks = start_kernel(spec_prefix, kernel_env(kernel_home, shared_models))
    try:
        yield ks
    finally:
        ks.close()
