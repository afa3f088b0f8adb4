"""The ResQ Task on the embedded segmentation data (no Ray): the float stage's step and
evaluation (BOPs of the protocol through a whole DDRNet), the QAT stage from a float
checkpoint, the report with its bit-width map, and bad configurations."""

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
    assert 0 <= out["mIoU"] <= 1 and 0 <= out["mIoU_float"] <= 1 and out["num_samples"] == 2
    # W8A8->W4A4 with T = 3 over 6-frame videos: keyframes 0 and 3 at 8x8 bits, the rest at 4x4
    macs = out["gflops_avg"]
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
    assert 0 <= out["mIoU"] <= 1 and out["gbops_avg"] < out["gbops_float"]


def test_report_compares_schemes_at_equal_bops_and_saves_bit_width_maps(tmp_path):
    cfg, task, stage, train, val, model = _setup("resq.report_bits=['W8A8->W4A4', 'W8A8->W8A{0,4,8}']",
                                                 "resq.map_frames=4")
    ckpt = save_checkpoint(tmp_path / "ckpt", model, {"resq": {"network": "ddrnet23_slim"}},
                           {"method": "resq", "stage": "float"})
    out = task.report(cfg, [StageResult("float", "r", {}, str(ckpt))], str(tmp_path / "report"))
    rows = {k.split("_mIoU")[0]: v for k, v in out["metrics"].items() if k.endswith("_mIoU")}
    assert set(rows) == {"float", "frame_W8A8_W4A4", "ResQ_W8A8_W4A4", "Dynamic_ResQ_W8A8_W8A_0_4_8"}
    m = out["metrics"]
    assert m["frame_W8A8_W4A4_gbops_avg"] == pytest.approx(m["ResQ_W8A8_W4A4_gbops_avg"])
    assert m["Dynamic_ResQ_W8A8_W8A_0_4_8_gbops_avg"] < m["float_gbops_avg"]
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
    assert "bit_shares" not in fl
    # keyframes (2 of 6 frames) cost W8A8 in full; a residual frame costs at most that plus the policy
    macs = fl["gmacs_avg"]
    assert macs * 64 * 2 / 6 <= out["gbops_avg"] <= macs * 64 * 1.05
    if shares["0"] > 0:  # skipped pixels make the average frame cheaper than static W8A8
        assert out["gbops_avg"] < macs * 64


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
    assert 0 <= out["mIoU"] <= 1 and out["num_samples"] == 4


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
    q = quantized_copy(net, "W8A8->W8A{0,4,8}", task.calibration(cfg), 3, candidates=4)
    out = evaluate_videos(q, _loader(val), "resq", 3, 7)
    assert 0 <= out["mIoU"] <= 1 and sum(out["bit_shares"].values()) == pytest.approx(1.0)
