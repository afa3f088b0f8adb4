"""The main job's configuration layer: the paper configuration per backbone and bad arguments
(the end-to-end smoke run is in tests/engine/test_trainer.py, on the shared Ray cluster)."""

import pytest
import vared_kinetics  # jobs/ is on pytest's pythonpath (pyproject.toml)

from dynvid.config import ExperimentConfig, apply_overrides


@pytest.mark.parametrize("backbone,crop,base_lr", [("r2plus1d_18", 112, 0.18), ("i3d", 224, 1.8), ("x3d_m", 224, 1.8)])
def test_paper_configuration(backbone, crop, base_lr):
    cfg = apply_overrides(ExperimentConfig(), vared_kinetics.paper_config(backbone, "kinetics:/data/k400", 8))
    assert cfg.model.backbone == backbone and cfg.model.width_mult == 1.0
    assert cfg.data.dataset == "kinetics:/data/k400"
    assert (cfg.data.clip_len, cfg.data.crop_size) == (16, crop)
    assert (cfg.data.num_test_clips, cfg.data.num_test_crops) == (10, 3)  # K-LeftCenterRight, K = 10
    assert cfg.optim.optimizer == "sgd" and cfg.optim.nesterov and cfg.optim.epochs == 120
    assert cfg.optim.lr == pytest.approx(base_lr * 12 * 8 / 1152)  # linear scaling from 1152 clips
    assert cfg.vared.finetune_epochs == 40 and cfg.vared.efficiency_weight == 0.8 and cfg.vared.search_space == 2
    assert (cfg.data.stride == 5) == (backbone == "x3d_m")


def test_unknown_backbone_is_a_clear_error(capsys):
    assert vared_kinetics.main(["--data", "kinetics:/nowhere", "--backbone", "resnet50"]) == 2
    assert "resnet50" in capsys.readouterr().err


def test_bad_override_is_a_clear_error(capsys):
    assert vared_kinetics.main(["--set", "vared.search_spac=3"]) == 2
    assert "search_spac" in capsys.readouterr().err
