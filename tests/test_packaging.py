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


def test_torch_and_torchvision_are_the_matched_pair():
    """torchvision's C++ operators are built against one torch release: the installed pair must
    match (the Makefile installs torch 2.14.1 + torchvision 0.29.1) and its operators load."""
    import torch
    import torchvision

    minor = int(torch.__version__.split(".")[1])
    assert torchvision.__version__.split("+")[0].split(".")[:2] == ["0", str(minor + 15)], \
        (torch.__version__, torchvision.__version__)
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 0.9]])
    assert torchvision.ops.nms(boxes, torch.tensor([0.9, 0.8]), 0.5).tolist() == [0]
