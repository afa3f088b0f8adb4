import contextlib
import json

import pytest
import torch
from torch import serialization

from dynvid.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


def test_save_load_round_trip(tmp_path):
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    save_checkpoint(tmp_path / "c", model, {"a": 1}, {"epoch": 3}, train_state={"optimizer": opt.state_dict()})
    got = load_checkpoint(tmp_path / "c")
    assert got["config"] == {"a": 1}
    assert got["metadata"]["epoch"] == 3 and got["metadata"]["format"] == "dynvid-checkpoint/1"
    assert torch.equal(got["model"]["weight"], model.weight)
    assert got["train_state"]["optimizer"]["state"][0]["momentum_buffer"].shape == (3, 4)
    assert not [p for p in (tmp_path / "c").iterdir() if p.name.startswith(".")]  # no temp files left


def test_incomplete_or_missing_checkpoint_is_refused(tmp_path):
    model = torch.nn.Linear(2, 2)
    save_checkpoint(tmp_path / "c", model, {}, {"epoch": 0})
    (tmp_path / "c" / "metadata.json").unlink()  # as if the write was interrupted
    with pytest.raises(CheckpointError, match="incomplete checkpoint"):
        load_checkpoint(tmp_path / "c")
    with pytest.raises(CheckpointError, match="checkpoint not found: .*nope"):
        load_checkpoint(tmp_path / "nope")
    save_checkpoint(tmp_path / "d", model, {}, {"epoch": 0})
    (tmp_path / "d" / "model.pt").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="unreadable checkpoint"):
        load_checkpoint(tmp_path / "d")


def test_ddp_wrapper_is_unwrapped(tmp_path):
    class Wrapper(torch.nn.Module):
        def __init__(self, module):
            super().__init__()
            self.module = module

    inner = torch.nn.Linear(2, 2)
    save_checkpoint(tmp_path / "c", Wrapper(inner), {}, {"epoch": 0})
    assert set(load_checkpoint(tmp_path / "c")["model"]) == {"weight", "bias"}
    assert json.loads((tmp_path / "c" / "config.json").read_text()) == {}


# ---- checkpoints written on a GPU, read on a CPU-only machine (issue 20) -----------------------

@contextlib.contextmanager
def _saved_as_on_cuda():
    """``torch.save`` inside this block records every CPU storage as living on ``cuda:0``, as
    a save on a GPU machine does: the bytes are the same, only the location tag differs, and
    the tag is what ``torch.load`` acts on. A file written so is, for the loader, a checkpoint
    trained on a GPU (a CPU-only machine cannot make one any other way)."""

    def tag(storage):
        return "cuda:0" if storage.device.type == "cpu" else None

    serialization.register_package(1, tag, lambda obj, location: None)  # ahead of the "cpu" tagger (10)
    try:
        yield
    finally:
        serialization._package_registry[:] = [e for e in serialization._package_registry if e[1] is not tag]


def test_a_checkpoint_written_on_a_gpu_loads_on_a_cpu_only_machine(tmp_path):
    """Weights and optimizer state tagged ``cuda:0`` load to the CPU through
    :func:`load_checkpoint` (its ``map_location``), which the worker uses to resume and for
    ``--init-from``; the same file through a bare ``torch.load`` fails here, which shows the
    file really is one a GPU run writes."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    with _saved_as_on_cuda():
        save_checkpoint(tmp_path / "c", model, {}, {"epoch": 0}, train_state={"optimizer": opt.state_dict()})
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(tmp_path / "c" / "model.pt", weights_only=True)
    got = load_checkpoint(tmp_path / "c")
    assert all(t.device.type == "cpu" for t in got["model"].values())
    fresh = torch.nn.Linear(4, 3)
    fresh.load_state_dict(got["model"])
    x = torch.randn(5, 4)
    torch.testing.assert_close(fresh(x), model(x))
    resumed = torch.optim.Adam(fresh.parameters(), lr=0.1)
    resumed.load_state_dict(got["train_state"]["optimizer"])
    assert resumed.state[fresh.weight]["exp_avg"].device.type == "cpu"


def test_an_lfs_policy_exported_on_a_gpu_loads_on_a_cpu_only_machine(tmp_path):
    """:func:`~dynvid.methods.lfs.policy.load_policy` maps a GPU learner's Q-network to the CPU."""
    from dynvid.methods.lfs.policy import EXPORT_FORMAT, QNetwork, load_policy

    torch.manual_seed(0)
    qnet = QNetwork(state_channels=4, grid=2, history=3).eval()
    with _saved_as_on_cuda():
        torch.save({"format": EXPORT_FORMAT, "kwargs": dict(qnet.kwargs), "state_dict": qnet.state_dict(),
                    "metadata": {}}, tmp_path / "policy.pt")
    loaded = load_policy(str(tmp_path / "policy.pt"))
    obs = torch.randn(2, 4 * 4 * 2 * 2 + 3)
    torch.testing.assert_close(loaded(obs), qnet(obs))
