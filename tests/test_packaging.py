"""The src layout must never shadow the standard library's ``platform`` module."""

import subprocess
import sys
from pathlib import Path

import dynvid

REPO = Path(__file__).resolve().parents[1]


def test_import_platform_is_stdlib_in_installed_env():
    # From the repo root (where a `platform/` folder exists) and from elsewhere.
    for cwd in (REPO, REPO / "tests"):
        out = subprocess.run(
            [sys.executable, "-c", "import platform, dynvid; print(platform.__file__); print(platform.python_version())"],
            cwd=cwd, capture_output=True, text=True, check=True,
        ).stdout.splitlines()
        assert "site-packages" not in out[0] and not out[0].startswith(str(REPO)), out[0]
        assert out[1] == ".".join(map(str, sys.version_info[:3]))
    assert not (REPO / "platform" / "__init__.py").exists()


def test_package_lives_in_platform_dir():
    assert Path(dynvid.__file__).resolve().parent == REPO / "platform" / "dynvid"


def test_no_module_imports_torchvision():
    offenders = [str(p) for p in (REPO / "platform").rglob("*.py") if "import torchvision" in p.read_text()
                 or "from torchvision" in p.read_text()]
    assert offenders == []
