"""Installing the kernel spec: `llmspell kernel install`, `python -m llmspell_kernel install`, --default-model."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from jupyter_client.kernelspec import KernelSpecManager
from kernel_session import kernel_env, start_kernel

from llmspell.cli.main import main, parse_args
from llmspell.errors import LLMSpellError
from llmspell_kernel.install import build_parser, install

ROOT = Path(__file__).resolve().parents[2]


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
    assert spec.argv[1:] == ["-P", "-m", "llmspell_kernel", "-f", "{connection_file}"]
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


def _listed(env: dict[str, str], python: str = sys.executable) -> dict:
    """What `jupyter kernelspec list --json` reports for "llmspell", run by ``python`` with ``env``."""
    # `jupyter kernelspec` is this module behind a script whose shebang names our own .venv's Python; run the
    # module itself so that the Python asked about (and its sys.prefix) is the one that lists
    done = subprocess.run(
        [python, "-m", "jupyter_client.kernelspecapp", "list", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["kernelspecs"]["llmspell"]


def _clean_env(tmp_path: Path) -> dict[str, str]:
    """An environment whose Jupyter user folder and home are fresh, so no real kernel spec can answer instead."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTER")}
    env.update({"HOME": str(tmp_path / "home"), "JUPYTER_DATA_DIR": str(tmp_path / "data")})
    (tmp_path / "home").mkdir(exist_ok=True)
    return env


def test_install_user_goes_to_the_jupyter_user_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _clean_env(tmp_path)
    for name in ("JUPYTER_PATH", "JUPYTER_DATA_DIR", "HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", env["HOME"])
    monkeypatch.setenv("JUPYTER_DATA_DIR", env["JUPYTER_DATA_DIR"])
    assert main(["kernel", "install", "--user"]) == 0
    where = tmp_path / "data" / "kernels" / "llmspell"
    assert f" in {where}" in capsys.readouterr().out
    found = _listed(env)
    assert Path(found["resource_dir"]) == where and found["spec"]["display_name"] == "LLMSpell (local LLM)"


def test_install_sys_prefix_goes_into_the_running_pythons_prefix(tmp_path: Path) -> None:
    # a real virtualenv whose sys.prefix is in tmp_path, seeing this environment's packages (llmspell included)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # .pth lines that start with "import" run, and addsitedir reads this environment's own .pth files (editables)
    site = sysconfig.get_paths()["purelib"]
    (Path(purelib) / "llmspell-test.pth").write_text(f"import site; site.addsitedir({site!r})\n")
    env = _clean_env(tmp_path)
    where = venv / "share" / "jupyter" / "kernels" / "llmspell"
    for command in (["-m", "llmspell_kernel", "install"], ["-m", "llmspell.cli.main", "kernel", "install"]):
        done = subprocess.run([python, *command, "--sys-prefix"], capture_output=True, text=True, timeout=120, env=env)
        assert done.returncode == 0, done.stderr
        assert f" in {where}" in done.stdout
        found = _listed(env, python)
        assert Path(found["resource_dir"]) == where
        assert found["spec"]["argv"][0] == python, "the kernel runs on the Python it was installed from"
        (where / "kernel.json").unlink()


@pytest.mark.parametrize("entry", ["python -m llmspell_kernel", "llmspell kernel"])
def test_an_install_that_cannot_write_is_one_clear_error(tmp_path: Path, entry: str) -> None:
    not_a_folder = tmp_path / "a-file"
    not_a_folder.write_text("")
    command = (
        [sys.executable, "-m", "llmspell_kernel"]
        if entry.startswith("python")
        else [
            sys.executable,
            "-m",
            "llmspell.cli.main",
            "kernel",
        ]
    )
    done = subprocess.run(
        [*command, "install", "--prefix", str(not_a_folder)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1
    assert done.stderr.startswith(f"error: cannot write the kernel spec to {not_a_folder}")
    assert "Not a directory" in done.stderr and "--user" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout and "internal error" not in done.stderr


@pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="needs Linux's /sys, where even root may not mkdir")
def test_an_install_without_permission_suggests_user_or_sys_prefix(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["kernel", "install", "--prefix", "/sys/llmspell-test"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cannot write the kernel spec to /sys/llmspell-test")
    assert "use --user (your own Jupyter folder) or --sys-prefix (this virtualenv)" in err


def test_install_refuses_both_a_prefix_and_sys_prefix(tmp_path: Path) -> None:
    with pytest.raises(LLMSpellError, match="choose one of --prefix and --sys-prefix"):
        install(prefix=str(tmp_path), sys_prefix=True)
    assert not (tmp_path / "share").exists()


def test_the_readme_install_commands_parse_with_the_real_parsers() -> None:
    section = (ROOT / "README.md").read_text().split("## Jupyter kernel", 1)[1].split("\n## ", 1)[0]
    lines = [line.split("#")[0].strip() for line in section.splitlines()]
    python_m = [shlex.split(line) for line in lines if line.startswith("python -m llmspell_kernel ")]
    llmspell = [shlex.split(line) for line in lines if line.startswith("llmspell kernel ")]
    assert python_m and llmspell
    for words in python_m:
        assert words[3] == "install"
        build_parser().parse_args(words[4:])
    for words in llmspell:
        assert parse_args(words[1:]).kernel_command == "install"
