"""The ResQ Task on the embedded segmentation data (no Ray): the float stage's step and
evaluation (BOPs of the protocol through a whole DDRNet), the QAT stage from a float
checkpoint, the report with its bit-width map, and bad configurations. Expected values are
worked out apart from the code under test: mIoU and BOPs of a constructed one-layer network
by hand, and DDRNet's MACs and policy cost from its convolutions' shapes seen by hooks."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from dynvid.engine.checkpoint import save_checkpoint
from dynvid.engine.task import get_task
from dynvid.engine.trainer import StageResult
from dynvid.methods.resq.presets import job_config


def _cfg(*overrides):
    return job_config(None, True, None, list(overrides))


def _loader(ds, batch=4):
    return torch.utils.data.DataLoader(ds, batch_size=batch, collate_fn=ds.collate_fn)


def _conv_costs(model, frame: torch.Tensor) -> tuple[float, float]:
    """``(MACs, Σ input elements)`` per sample over every convolution of a float ``model`` on one
    ``frame (3, H, W)``, from the shapes its convolutions see (forward hooks)."""
    totals = [0.0, 0.0]

    def hook(conv, inputs, output):
        kh, kw = conv.kernel_size
        totals[0] += output[0].numel() * conv.in_channels // conv.groups * kh * kw
        totals[1] += inputs[0][0].numel()

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    try:
        with torch.no_grad():
            model.eval()(frame[None])
    finally:
        for h in handles:
            h.remove()
    return totals[0], totals[1]


def _static_video_batch(val, frames: int = 6):
    """One val video's first frame repeated ``frames`` times: every residual is exactly zero."""
    item = val[0]
    video = item["frames"][:1].repeat(frames, 1, 1, 1)[None]
    labels = item["labels"][:1].repeat(frames, 1, 1)[None]
    return [(video, labels, {"valid": torch.ones(1, frames, dtype=torch.bool)})]


def _setup(*overrides):
    cfg = _cfg(*overrides)
    task = get_task("resq", cfg)
    stage = task.stages[0]
    train, val = task.datasets(stage.config(cfg), stage)
    torch.manual_seed(0)
    return cfg, task, stage, train, val, task.build_model(cfg, val.num_classes, stage)


def test_float_step_and_the_protocols_bops_through_the_network():
    cfg, task, stage, train, val, model = _setup()
    assert [s.name for s in task.stages] == ["float"] and val.num_classes == 7
    frames, labels, meta = next(iter(_loader(train)))
    assert frames.shape == (4, 1, 3, 64, 64) and labels.shape == (4, 1, 64, 64)
    loss, logs = task.training_step(model, (frames, labels, meta), stage)
    loss.backward()
    assert torch.isfinite(loss) and model.conv1[0].weight.grad.abs().sum() > 0
    out = task.evaluate(model, _loader(val), stage)
    assert out["num_samples"] == 2
    # W8A8->W4A4 with T = 3 over 6-frame videos: keyframes 0 and 3 at 8x8 bits, the rest at 4x4
    macs = out["gflops_avg"]
    assert macs == pytest.approx(_conv_costs(model, val[0]["frames"][0])[0] / 1e9)  # every conv, counted apart
    assert out["gbops_float"] == pytest.approx(macs * 32 * 32)
    assert out["gbops_avg"] == pytest.approx(macs * (2 * 64 + 4 * 16) / 6)
    assert out["gbops_max"] == pytest.approx(macs * 64) and out["gbops_min"] == pytest.approx(macs * 16)


def test_w32a32_resq_scores_exactly_the_float_network():
    cfg, task, stage, train, val, model = _setup("resq.bits=W32A32->W32A32")
    out = task.evaluate(model.eval(), _loader(val), stage)
    assert out["mIoU"] == pytest.approx(out["mIoU_float"], abs=1e-9)
    assert out["gbops_avg"] == pytest.approx(out["gbops_float"])


def test_qat_stage_starts_from_the_float_checkpoint_and_trains_the_scales(tmp_path):
    cfg, task, stage, train, val, model = _setup("resq.qat_epochs=1")
    assert [s.name for s in task.stages] == ["float", "qat"]
    qat = task.stages[1]
    assert "optim.lr=0.0005" in qat.overrides
    net = task.build_model(cfg, val.num_classes, qat)
    missing, unexpected = net.load_state_dict(model.state_dict(), strict=False)
    assert not unexpected and missing and all("qat_scale" in k or "qat_bits" in k for k in missing)
    train, _ = task.datasets(qat.config(cfg), qat)
    batch = next(iter(_loader(train, 2)))
    assert batch[0].shape[1] == cfg.resq.period  # clips of T frames: one keyframe, then residuals
    net.train()
    loss, _ = task.training_step(net, batch, qat)
    loss.backward()
    layer = net.conv1[0]
    assert not torch.isnan(layer.qat_scale["residual"]) and layer.qat_scale["residual"].grad is not None
    assert layer.qat_scale["key"].grad is not None and layer.qat_ready
    out = task.evaluate(net, _loader(val), qat)
    macs = _conv_costs(model, val[0]["frames"][0])[0] / 1e9  # W8A8->W4A4, T = 3, 6 frames: 2 keyframes
    assert out["gbops_avg"] == pytest.approx(macs * (2 * 64 + 4 * 16) / 6)
    assert out["gbops_float"] == pytest.approx(macs * 32 * 32)


def test_report_compares_schemes_at_equal_bops_and_saves_bit_width_maps(tmp_path):
    cfg, task, stage, train, val, model = _setup("resq.report_bits=['W8A8->W4A4', 'W8A8->W8A{0,4,8}']",
                                                 "resq.map_frames=4")
    ckpt = save_checkpoint(tmp_path / "ckpt", model, {"resq": {"network": "ddrnet23_slim"}},
                           {"method": "resq", "stage": "float"})
    out = task.report(cfg, [StageResult("float", "r", {}, str(ckpt))], str(tmp_path / "report"))
    rows = {k.split("_mIoU")[0]: v for k, v in out["metrics"].items() if k.endswith("_mIoU")}
    assert set(rows) == {"float", "frame_W8A8_W4A4", "ResQ_W8A8_W4A4", "Dynamic_ResQ_W8A8_W8A_0_4_8"}
    m = out["metrics"]
    macs, inputs = _conv_costs(model, val[0]["frames"][0])
    keyframe, policy = macs * 64 / 1e9, 3 * inputs * 64 / 1e9  # W8A8; a pool of 3 error maps at 8x8 bits
    assert m["frame_W8A8_W4A4_gbops_avg"] == pytest.approx(macs * (2 * 64 + 4 * 16) / 6 / 1e9)
    assert m["ResQ_W8A8_W4A4_gbops_avg"] == pytest.approx(m["frame_W8A8_W4A4_gbops_avg"])
    # Dynamic-ResQ: keyframes in full at W8A8; a residual frame at least the policy, at most all at 8 bits
    dyn = m["Dynamic_ResQ_W8A8_W8A_0_4_8_gbops_avg"]
    assert (2 * keyframe + 4 * policy) / 6 * (1 - 1e-6) <= dyn <= (2 * keyframe + 4 * (keyframe + policy)) / 6 * (1 + 1e-6)
    png = [p for p in out["artifacts"] if p.endswith(".png")]
    assert len(png) == 1
    with Image.open(png[0]) as im:
        assert im.size == (4 * (64 + 4), 2 * 64 + 12)
    assert "ResQ W8A8->W4A4" in out["table"]


@pytest.mark.parametrize("override,match", [
    ("resq.bits=W8->W4", "paper's notation"),
    ("resq.scheme=fast", "resq.scheme"),
    ("resq.period=0", "resq.period"),
    ("resq.network=unet", "resq.network"),
])
def test_bad_configurations_are_named(override, match):
    cfg = _cfg(override)
    with pytest.raises(ValueError, match=match):
        task = get_task("resq", cfg)
        task.build_model(cfg, 7)
    with pytest.raises(ValueError, match="frame quantization has no residuals"):
        get_task("resq", _cfg("resq.scheme=frame", "resq.bits=W8A8->W8A{0,4,8}"))


def test_dynamic_evaluation_reports_the_share_of_pixels_at_each_bit_width():
    cfg, task, stage, train, val, model = _setup("resq.bits=W8A8->W8A{0,4,8}")
    from dynvid.methods.resq.evaluation import evaluate_videos, quantized_copy

    q = quantized_copy(model, cfg.resq.bits, task.calibration(cfg), 3, candidates=4)
    out = evaluate_videos(q, _loader(val), "resq", 3, 7)
    shares = out["bit_shares"]
    assert set(shares) == {"0", "4", "8"} and sum(shares.values()) == pytest.approx(1.0)
    fl = evaluate_videos(model, _loader(val), "float", 3, 7)
    assert "bit_shares" not in fl and "zero_residual_share" not in fl
    assert 0 <= out["zero_residual_share"] <= shares["0"]  # an exactly-zero residual pixel always gets 0 bits
    # keyframes (2 of 6 frames) cost W8A8 in full; a residual frame between the policy alone and all at 8 bits
    macs, inputs = _conv_costs(model, val[0]["frames"][0])
    keyframe, policy = macs * 64 / 1e9, 3 * inputs * 64 / 1e9
    assert (2 * keyframe + 4 * policy) / 6 * (1 - 1e-6) <= out["gbops_avg"]
    assert out["gbops_avg"] <= (2 * keyframe + 4 * (keyframe + policy)) / 6 * (1 + 1e-6)


def test_dynamic_resq_on_a_static_video_costs_keyframes_and_the_policy_only():
    """A video of one repeated frame: every residual at every layer is exactly zero, so the policy
    gives every pixel 0 bits (Eq. 11: no gain at all) and a residual frame costs only its error maps
    (3 per input element, at 8 x 8 bits); the outputs repeat the keyframe's."""
    from dynvid.methods.resq.evaluation import evaluate_videos, quantized_copy

    cfg, task, stage, train, val, model = _setup("resq.bits=W8A8->W8A{0,4,8}")
    q = quantized_copy(model, cfg.resq.bits, task.calibration(cfg), 3, candidates=4)
    video = _static_video_batch(val)
    out = evaluate_videos(q, video, "resq", 3, 7)
    macs, inputs = _conv_costs(model, video[0][0][0, 0])
    keyframe, policy = macs * 8 * 8, 3 * inputs * 8 * 8  # BOPs per frame
    assert out["bit_shares"] == {"0": 1.0, "4": 0.0, "8": 0.0} and out["zero_residual_share"] == 1.0
    assert out["gbops_avg"] == pytest.approx((2 * keyframe + 4 * policy) / 6 / 1e9)
    assert out["gbops_max"] == pytest.approx(keyframe / 1e9) and out["gbops_min"] == pytest.approx(policy / 1e9)
    keyframes_only = evaluate_videos(q, video, "resq", 1, 7)  # every frame a W8A8 keyframe
    assert out["mIoU"] == keyframes_only["mIoU"]
    assert keyframes_only["gbops_avg"] == pytest.approx(keyframe / 1e9)


def test_miou_and_bops_of_a_constructed_prediction_known_by_hand():
    """A 1x1 convolution with weights 10·I predicts the channel that is on: frames that are one-hot
    maps of a chosen prediction give a confusion matrix, mIoU and BOPs worked out by hand."""
    from dynvid.methods.resq.evaluation import evaluate_videos, quantized_copy

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(10 * torch.eye(3).view(3, 3, 1, 1))
    pred = torch.tensor([0, 0, 1, 1, 2, 2]).repeat(4, 1)  # (4, 6): columns 0-1 class 0, 2-3 class 1, 4-5 class 2
    label = torch.tensor([0, 0, 0, 2, 2, 2]).repeat(4, 1)
    label[0] = 255  # the first row is not labelled
    frames = torch.zeros(2, 4, 3, 4, 6)
    labels = label.repeat(2, 4, 1, 1)
    preds = pred.repeat(2, 4, 1, 1)
    preds[1, 2] = 0  # video 1, frame 2 (a residual frame): everything predicted as class 0
    labels[1, 3] = 255  # video 1, frame 3: tail padding, not scored
    valid = torch.ones(2, 4, dtype=torch.bool)
    valid[1, 3] = False
    for c in range(3):
        frames[:, :, c] = (preds == c).float()
    batch = [(frames, labels, {"valid": valid})]
    # 7 scored frames of 3 labelled rows. Six like the first: class 0 gets 2 of its 3 pixels per row,
    # class 2 pixels go 1 to class 1 and 2 to class 2. The seventh predicts 0 everywhere.
    tp0, pred0, lab0 = 6 * 6 + 9, 6 * 6 + 18, 7 * 9
    tp2, pred2, lab2 = 6 * 6, 6 * 6, 7 * 9
    pred1 = 6 * 6  # no pixel is labelled 1: IoU 0
    expected = (tp0 / (pred0 + lab0 - tp0) + 0 / pred1 + tp2 / (pred2 + lab2 - tp2)) / 3
    assert expected == pytest.approx((45 / 72 + 36 / 63) / 3)
    macs = 4 * 6 * 3 * 3  # per frame: 24 output pixels x 3 outputs x 3 inputs
    fl = evaluate_videos(net, batch, "float", 3, 3)
    assert fl["mIoU"] == pytest.approx(expected) and fl["frames"] == 7
    assert fl["gbops_avg"] == pytest.approx(macs * 32 * 32 / 1e9)
    calibration = [frames.transpose(0, 1)[:3]]  # one clip of T = 3 frames, (T, B, 3, H, W)
    static = quantized_copy(net, "W8A8->W8A4", calibration, 3)
    # T = 3: keyframes at t = 0, 3; scored: video 0 has 2 keyframes and 2 residual frames, video 1 one and two
    for scheme in ("frame", "resq"):
        r = evaluate_videos(static, batch, scheme, 3, 3)
        assert r["mIoU"] == pytest.approx(expected), scheme  # one-hot inputs survive 4 bits
        assert r["gbops_avg"] == pytest.approx(macs * (3 * 64 + 4 * 32) / 7 / 1e9)
        assert r["gbops_min"] == pytest.approx(macs * 32 / 1e9) and r["gbops_max"] == pytest.approx(macs * 64 / 1e9)
    dynamic = quantized_copy(net, "W8A8->W8A{0,4,8}", calibration, 3)
    d = evaluate_videos(dynamic, batch, "resq", 3, 3)
    assert d["mIoU"] == pytest.approx(expected)
    # residuals are zero (0 bits) except in video 1's frame 2, whose 16 changed pixels of 24 (columns
    # 2-5, every row) need 8 bits; the policy: 3 error maps of 3 x 24 elements at 8 x 8 bits per residual
    policy = 3 * 3 * 24 * 64
    changed = macs * 8 * (16 * 8) / 24  # W8 x the mean bits over the layer's pixels
    total = 3 * macs * 64 + 4 * policy + changed
    assert d["gbops_avg"] == pytest.approx(total / 7 / 1e9)
    assert d["bit_shares"] == pytest.approx({"0": (4 * 24 - 16) / (4 * 24), "4": 0.0, "8": 16 / (4 * 24)})
    assert d["zero_residual_share"] == pytest.approx((4 * 24 - 16) / (4 * 24))


def test_folder_dataset_written_by_data_synth_trains_and_evaluates(tmp_path):
    """``--data video-seg:ROOT`` (the paper configuration) on folders ``dynvid data synth`` writes."""
    from dynvid.data.synth_writer import write_synthetic
    from dynvid.data.synthetic import SceneConfig

    root = tmp_path / "seg"
    write_synthetic("segmentation", root, 5, cfg=SceneConfig(height=48, width=64, num_frames=5), val_fraction=0.4)
    cfg = job_config(f"video-seg:{root}", True, None, ["resq.crop_size=32", "resq.eval_frames=3"])
    assert cfg.optim.optimizer == "sgd" and cfg.data.dataset == f"video-seg:{root}"
    task = get_task("resq", cfg)
    stage = task.stages[0]
    train, val = task.datasets(stage.config(cfg), stage)
    frames, labels, meta = next(iter(_loader(train, 2)))
    assert frames.shape == (2, 1, 3, 32, 32) and labels.shape == (2, 1, 32, 32)  # the training crop
    model = task.build_model(cfg, val.num_classes, stage)
    loss, _ = task.training_step(model, (frames, labels, meta), stage)
    assert torch.isfinite(loss)
    assert len(val) == 2 * 2  # 2 val videos of 5 frames in windows of 3 (the second padded)
    out = task.evaluate(model, _loader(val), stage)
    assert out["num_samples"] == 4


def test_a_qat_network_is_ptq_calibrated_for_a_dynamic_pool():
    """QAT scales belong to static ResQ: a pool configuration at the same fixed bits is calibrated."""
    from dynvid.methods.resq.evaluation import evaluate_videos, quantized_copy

    cfg, task, stage, train, val, model = _setup("resq.qat_epochs=1", "resq.bits=W8A8->W8A8")
    qat = task.stages[1]
    net = task.build_model(cfg, val.num_classes, qat)
    net.load_state_dict(model.state_dict(), strict=False)
    for layer in net.modules():
        if hasattr(layer, "qat_scale"):
            for p in layer.qat_scale.values():
                p.data.fill_(0.05)
    calibration = task.calibration(cfg)
    q = quantized_copy(net, "W8A8->W8A{0,4,8}", calibration, 3, candidates=4)
    ptq = quantized_copy(model, "W8A8->W8A{0,4,8}", calibration, 3, candidates=4)  # the float network, PTQ
    from dynvid.methods.resq.wrap import quant_layers

    for a, b in zip(quant_layers(q), quant_layers(ptq), strict=True):
        assert a.pool_scale == b.pool_scale and a.act_scale == b.act_scale  # not the QAT scales (0.05)
    out, ref = evaluate_videos(q, _loader(val), "resq", 3, 7), evaluate_videos(ptq, _loader(val), "resq", 3, 7)
    assert out["mIoU"] == ref["mIoU"] and out["gbops_avg"] == pytest.approx(ref["gbops_avg"])
