import json

import pytest
import torch

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
