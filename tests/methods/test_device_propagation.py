"""Every method's network keeps to the device of its inputs (issue 20: "tensors take their
device from their inputs").

A CPU-only machine has no CUDA device, but it has a second real device: ``meta``, whose
tensors carry shape, dtype and device and no data. A model moved to ``meta`` and fed ``meta``
inputs runs its whole forward; a tensor made inside it without ``device=`` lands on the CPU,
and the first op that combines it with a ``meta`` tensor raises ("Tensor on device meta is not
on the expected device cpu!") the way it would raise with ``cuda``. So a forward that ends
with every output on ``meta`` creates nothing on a fixed device on that path.

What ``meta`` cannot run: reads of values to the host (``.item()``, ``.tolist()``, ``.cpu()``,
``bool(t)``) and ops whose output shape depends on the data (``nonzero``, boolean masks,
``bincount``). Paths that need them are left out, and each test says which paths it covers:
VA-RED²'s gate-decided hard path (it reads one decision code per layer) runs with forced
decisions instead; LiteEval's real-skipping inference and ResQ's quantized modes (the
quantizer reads its scale's sign back) are not covered here; LFS picks its rows with
``nonzero``, which the test lets ``meta`` answer as "every row" (all frames run f0), a
PyTorch switch made for exactly this kind of shape propagation.
"""

from __future__ import annotations

import pytest
import torch
import torch.fx.experimental._config as fx_config

from dynvid.config import ExperimentConfig, apply_overrides
from dynvid.engine.task import get_task
from dynvid.methods.lfs.model import F0, F1, InterleavedDetector
from dynvid.methods.liteeval.presets import EMBEDDED, SMOKE
from dynvid.methods.resq.presets import job_config
from dynvid.methods.vared.convert import force_policy
from dynvid.metrics.cost import CostMeter

META = torch.device("meta")
CLIP = ["model.width_mult=0.125", "data.clip_len=8", "data.crop_size=32"]


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (tuple, list)):
        for item in obj:
            yield from _tensors(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _tensors(item)


def _assert_on_meta(out) -> None:
    found = list(_tensors(out))
    assert found, "the forward returned no tensor"
    assert all(t.device == META for t in found), [t.device for t in found]


def _clip_models():
    """``(label, model)`` of the static network and of each VA-RED² stage (small widths)."""
    cfg = apply_overrides(ExperimentConfig(), CLIP)
    for method in ("static", "vared"):
        task = get_task(method, cfg)
        for stage in task.stages:
            torch.manual_seed(0)
            yield f"{method}/{stage.name}", task.build_model(stage.config(cfg), 5, stage)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_static_and_vared_networks_run_on_the_inputs_device(mode):
    """Static backbone and VA-RED² (base, dynamic, finetune): training mode runs the soft
    Eq. 3.5 mix with the gates; evaluation mode runs the static network and, for the dynamic
    stages, the hard path with forced decisions ("all" and choice 1: sub-convolutions,
    grouping, cheap operations), under the cost meter as evaluation runs them."""
    x = torch.randn(2, 3, 8, 32, 32, device=META)
    for label, model in _clip_models():
        model = getattr(model.to(META), mode)()
        if mode == "train" or "base" in label:
            _assert_on_meta(model(x))
            continue
        for policy in ("all", 1):
            with force_policy(model, policy), torch.no_grad(), CostMeter(model) as meter:
                _assert_on_meta(model(x))
            assert meter.per_sample_macs.shape == (2,), label  # the meter's counts stay on the host


def _liteeval_cfg():
    return apply_overrides(ExperimentConfig(),
                           EMBEDDED + SMOKE + ["liteeval.coarse_hidden=8", "liteeval.fine_hidden=16"])


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_liteeval_networks_run_on_the_inputs_device(mode):
    """LiteEval's stages: the two frame CNNs (``cnns``), the LSTM baseline (``lstm``) in both
    modes, and the full model (``liteeval``) in training mode (Gumbel gate, every row's fine
    update mixed by B_t). Its evaluation-mode forward skips rows by ``nonzero`` and scatters
    per-row costs on the host: not runnable on ``meta``."""
    cfg = _liteeval_cfg()
    task = get_task("liteeval", cfg)
    for stage in task.stages:
        if mode == "eval" and stage.name == "liteeval":
            continue
        c = stage.config(cfg)
        torch.manual_seed(0)
        model = getattr(task.build_model(c, 5, stage).to(META), mode)()
        x = torch.randn(2, 3, c.data.clip_len, c.data.crop_size, c.data.crop_size, device=META)
        _assert_on_meta(model(x))


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_resq_float_network_runs_on_the_inputs_device(mode):
    """ResQ's float segmentation network (DDRNet), the network of the float stage and of the
    ``float`` scheme of the evaluation; the quantized modes read their scales back to check
    them (``quantize``) and are not covered here."""
    cfg = job_config(None, True, None, [])
    task = get_task("resq", cfg)
    stage = task.stages[0]
    torch.manual_seed(0)
    model = getattr(task.build_model(cfg, 5, stage).to(META), mode)()
    logits = model(torch.rand(2, 3, 32, 32, device=META))
    _assert_on_meta(logits)
    assert logits.shape[:2] == (2, 5)


def _detector() -> InterleavedDetector:
    torch.manual_seed(0)
    return InterleavedDetector(3, f0_size=64, f1_size=32, memory_input=32, state_channels=16, groups=4,
                               num_levels=2)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_lfs_detector_runs_on_the_inputs_device(mode):
    """The interleaved detector unrolled over a clip (f0 on every frame: ``meta`` answers
    ``nonzero`` as "every row"), memory, SSDLite head and anchors; the schedule given on the
    host, as the training step and the evaluation loop keep it, is taken to the frames'
    device by the model itself (it picks the rows and drives the f1 skip rule)."""
    model = getattr(_detector().to(META), mode)()
    frames = torch.randn(2, 3, 3, 64, 64, device=META)
    with fx_config.patch(meta_nonzero_assume_all_nonzero=True):
        _assert_on_meta(model(frames, torch.full((3,), F0, device=META)))
        _assert_on_meta(model(frames, torch.full((3,), F0)))  # host schedule
        _assert_on_meta(model.step(frames[:, 0], F0))
        assert model.anchors([(2, 2), (1, 1)]).device == META  # decoded against the head's outputs


def test_lfs_extract_takes_host_actions_to_the_frames_device():
    """A batch that mixes f0 and f1 rows with the actions on the host and the frames on another
    device: the rows ``index_select`` the frames on the frames' device (before, host rows
    indexed device frames)."""
    model = _detector().eval().to(META)
    with fx_config.patch(meta_nonzero_assume_all_nonzero=True):
        out = model.extract(torch.randn(2, 3, 64, 64, device=META), torch.tensor([F0, F1]))
    assert out.device == META and out.shape[0] == 2
