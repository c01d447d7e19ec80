"""ocsight as users install it: a wheel built without warnings, and a command found on PATH."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from ocsight import __version__

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("wheel")
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir", "-w", str(out),
                        str(ROOT)], capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    (built,) = out.glob("ocsight-*.whl")
    return built, p.stdout + p.stderr


def test_the_wheel_builds_without_deprecation_warnings(wheel):
    _built, output = wheel
    assert "deprecated" not in output.lower() and "Warning" not in output


def test_a_fresh_environment_puts_the_ocsight_command_on_path(wheel, tmp_path: Path):
    """As `pipx install` does: an environment of its own, its `bin` on PATH, then a new shell finds
    `ocsight` by name. Its dependencies come from the test environment (a `.pth` file), so the test
    installs nothing from the network; that environment may hold an ocsight itself, which the fresh
    one must not take for its own (`--ignore-installed`)."""
    built, _ = wheel
    env_dir = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True, timeout=120)
    site = next((env_dir / "lib").glob("python3*/site-packages"))
    (site / "test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(env_dir / "bin" / "python"), "install",
                    "--no-deps", "--ignore-installed", "--no-cache-dir", "--quiet", str(built)], check=True, timeout=300)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = f"{env_dir / 'bin'}:/usr/bin:/bin"
    p = subprocess.run(["sh", "-c", "command -v ocsight && ocsight --version"], capture_output=True, text=True,
                       env=env, timeout=60, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    where, version = p.stdout.splitlines()
    assert Path(where) == env_dir / "bin" / "ocsight" and __version__ in version
