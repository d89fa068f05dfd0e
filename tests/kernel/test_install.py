"""Installing the kernel spec: `llmspell kernel install`, `python -m llmspell_kernel install`, --default-model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from jupyter_client.kernelspec import KernelSpecManager
from kernel_session import kernel_env, start_kernel

from llmspell.cli.main import main


def _spec(prefix: Path) -> dict:
    return json.loads((prefix / "share" / "jupyter" / "kernels" / "llmspell" / "kernel.json").read_text())


def test_llmspell_kernel_install_registers_the_spec_with_jupyter(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["kernel", "install", "--prefix", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "installed kernel spec 'llmspell' (LLMSpell (local LLM))" in out
    listed = subprocess.run(
        [sys.executable, "-m", "jupyter", "kernelspec", "list", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "JUPYTER_PATH": str(tmp_path / "share" / "jupyter")},
    )
    found = json.loads(listed.stdout)["kernelspecs"]["llmspell"]
    assert Path(found["resource_dir"]) == tmp_path / "share" / "jupyter" / "kernels" / "llmspell"
    spec = KernelSpecManager(kernel_dirs=[str(tmp_path / "share" / "jupyter" / "kernels")]).get_kernel_spec("llmspell")
    assert spec.display_name == found["spec"]["display_name"] == "LLMSpell (local LLM)" and spec.language == "markdown"
    assert spec.argv[1:] == ["-m", "llmspell_kernel", "-f", "{connection_file}"]
    assert spec.interrupt_mode == "signal" and "env" not in _spec(tmp_path)


def test_python_m_llmspell_kernel_install_records_the_default_model(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "llmspell_kernel",
            "install",
            "--prefix",
            str(tmp_path),
            "--default-model",
            "gemma3:270m",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert _spec(tmp_path)["env"] == {"LLMSPELL_KERNEL_MODEL": "gemma3:270m"}
    # installing again replaces the spec (here: drops the default model)
    assert main(["kernel", "install", "--prefix", str(tmp_path)]) == 0
    assert "env" not in _spec(tmp_path)


def test_a_bad_default_model_or_two_places_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["kernel", "install", "--prefix", str(tmp_path), "--default-model", "no such model"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: model spec 'no such model' contains whitespace") and "Traceback" not in err
    assert not (tmp_path / "share").exists()
    with pytest.raises(SystemExit) as exc:
        main(["kernel", "install", "--prefix", str(tmp_path), "--user"])
    assert exc.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_a_kernel_from_a_spec_with_a_default_model_starts_on_that_model(tmp_path: Path, shared_models: Path) -> None:
    assert main(["kernel", "install", "--prefix", str(tmp_path / "prefix"), "--default-model", "gemma3:270m"]) == 0
    ks = start_kernel(tmp_path / "prefix", kernel_env(tmp_path, shared_models))
    try:
        assert ks.run("%model").result["text/plain"] == "gemma3:270m"
        ran = ks.run("%set max_tokens=4 temperature=0\nThe sky is")
        assert ran.status == "ok"
        assert ran.of("execute_result")[0]["metadata"]["llmspell"]["model"] == "gemma3:270m"
    finally:
        ks.close()
