"""Pretrained weights (issue 22): torchvision's by name through torchvision's own cache layout,
a file or a checkpoint folder, the classifier left out when the class count differs, and a
clear error before training when the weights are neither cached nor downloadable."""

from __future__ import annotations

import pytest
import torch
import torchvision

from dynvid.backbones import build_backbone
from dynvid.backbones.pretrained import PretrainedError, cache_path, check_pretrained, load_pretrained
from dynvid.config import ExperimentConfig, apply_overrides
from dynvid.engine.preflight import check_inputs

NAME = "R2Plus1D_18_Weights.KINETICS400_V1"


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty torchvision cache (TORCH_HOME) and no network: downloads fail at once."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))

    def offline(*args, **kwargs):
        raise OSError("network is unreachable (test)")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return tmp_path / "torch-home"


def _cache_torchvisions_own(torch_home) -> torch.nn.Module:
    """torchvision's constructor writes the state dict, where torchvision would download it."""
    torch.manual_seed(3)
    theirs = torchvision.models.video.r2plus1d_18(weights=None)  # 400 classes, as the Kinetics weights
    path = cache_path(NAME)
    assert path.parent == torch_home / "hub" / "checkpoints" and path.name == "r2plus1d_18-91a641e6.pth"
    path.parent.mkdir(parents=True)
    torch.save(theirs.state_dict(), path)
    return theirs.eval()


def test_weights_by_name_load_from_torchvisions_cache(torch_home):
    theirs = _cache_torchvisions_own(torch_home)
    check_pretrained(NAME)  # cached: no download needed
    ours = build_backbone("r2plus1d_18", num_classes=400)
    report = load_pretrained(ours, NAME)
    assert report["skipped"] == [] and "fc.weight" in report["loaded"]
    x = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), theirs(x), atol=1e-5, rtol=1e-5)


def test_another_class_count_keeps_everything_but_the_classifier(torch_home):
    theirs = _cache_torchvisions_own(torch_home)
    ours = build_backbone("r2plus1d_18", num_classes=12)
    head_before = ours.fc.weight.clone()
    report = load_pretrained(ours, NAME)
    assert sorted(report["skipped"]) == ["fc.bias", "fc.weight"]
    assert torch.equal(ours.fc.weight, head_before)
    x = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():  # the features are the pretrained network's
        torch.testing.assert_close(ours.eval().features(x), torch.flatten(theirs.avgpool(
            theirs.layer4(theirs.layer3(theirs.layer2(theirs.layer1(theirs.stem(x)))))), 1), atol=1e-5, rtol=1e-5)


def test_weights_of_another_network_are_refused_by_name(torch_home):
    _cache_torchvisions_own(torch_home)
    with pytest.raises(PretrainedError, match=r"do not fit R2Plus1D: .*shape: .*width 1\.0"):
        load_pretrained(build_backbone("r2plus1d_18", num_classes=400, width_mult=0.5), NAME)


def test_a_file_or_a_checkpoint_folder(tmp_path):
    net = build_backbone("mobilenet_v2", num_classes=5)
    torch.save(net.state_dict(), tmp_path / "weights.pt")
    other = build_backbone("mobilenet_v2", num_classes=5)
    load_pretrained(other, str(tmp_path / "weights.pt"))
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), other.state_dict().values()))
    (tmp_path / "ckpt").mkdir()
    torch.save(net.state_dict(), tmp_path / "ckpt" / "model.pt")
    load_pretrained(build_backbone("mobilenet_v2", num_classes=5), str(tmp_path / "ckpt"))
    with pytest.raises(PretrainedError, match="no such file"):
        check_pretrained(str(tmp_path / "nowhere.pt"))
    with pytest.raises(PretrainedError, match="fetched by the engine"):  # the loader reads local files only
        load_pretrained(other, "s3://bucket/ckpt")


def test_offline_and_uncached_fails_before_training_naming_weights_url_and_cache(torch_home, tmp_path):
    cfg = apply_overrides(ExperimentConfig(), [f"model.pretrained={NAME}", "model.width_mult=0.25",
                                               f"train.storage_path={tmp_path / 'runs'}"])
    with pytest.raises(PretrainedError) as err:
        check_inputs(cfg, "vared")
    message = str(err.value)
    assert NAME in message and "https://download.pytorch.org/models/r2plus1d_18-91a641e6.pth" in message
    assert str(torch_home / "hub" / "checkpoints" / "r2plus1d_18-91a641e6.pth") in message
    with pytest.raises(PretrainedError, match="not a torchvision weights name"):
        check_pretrained("R2Plus1D_18_Weights.NOPE")


def _saved(tmp_path, name: str, net: torch.nn.Module) -> str:
    path = tmp_path / f"{name}.pt"
    torch.save(net.state_dict(), path)
    return str(path)


def _same(module: torch.nn.Module, state: dict, prefix: str = "") -> bool:
    own = module.state_dict()
    return all(torch.equal(own[k[len(prefix):]], v) for k, v in state.items()
               if k.startswith(prefix) and k[len(prefix):] in own)


def test_each_method_loads_its_extractors_own_weights_when_a_stage_starts_fresh(tmp_path):
    """The Task hooks the engine's worker calls on a fresh stage: LFS's two trunks from
    MobileNetV2 weights (torchvision's constructor at f0's and f1's widths), ANT's backbone
    from EfficientNet-B0's, VA-RED²'s static base from R(2+1)D-18's; each Task also lists the
    settings the driver checks before training."""
    from dynvid.engine.task import get_task, presets

    torch.manual_seed(0)
    mnv2_14 = torchvision.models.mobilenet_v2(width_mult=1.4)
    mnv2_035 = torchvision.models.mobilenet_v2(width_mult=0.35)
    b0 = torchvision.models.efficientnet_b0()
    r21d = build_backbone("r2plus1d_18", num_classes=400, width_mult=0.25)
    cfg = apply_overrides(ExperimentConfig(), presets("lfs")["embedded"] + [
        "lfs.f0_width=1.4", "lfs.f1_width=0.35", f"lfs.f0_pretrained={_saved(tmp_path, 'f0', mnv2_14)}",
        f"lfs.f1_pretrained={_saved(tmp_path, 'f1', mnv2_035)}"])
    lfs = get_task("lfs", cfg)
    assert set(lfs.pretrained_specs(cfg)) == {"lfs.f0_pretrained", "lfs.f1_pretrained"}
    model = lfs.build_model(cfg, 3, lfs.stages[0])
    lines = lfs.load_pretrained(model, cfg, lfs.stages[0])
    assert len(lines) == 2 and "lfs.f0_pretrained=" in lines[0]
    assert _same(model.extractors[0], mnv2_14.state_dict(), "features.")
    assert _same(model.extractors[1], mnv2_035.state_dict(), "features.")

    cfg = apply_overrides(ExperimentConfig(), presets("ant")["smoke"] + [
        f"ant.backbone_pretrained={_saved(tmp_path, 'b0', b0)}"])
    ant = get_task("ant", cfg)
    model = ant.build_model(cfg, 3, ant.stages[0])
    assert "classifier left out" in ant.load_pretrained(model, cfg, ant.stages[0])[0]
    assert _same(model.backbone, {k: v for k, v in b0.state_dict().items() if not k.startswith("classifier")})

    cfg = apply_overrides(ExperimentConfig(), presets("vared")["embedded"] + [
        f"model.pretrained={_saved(tmp_path, 'r21d', r21d)}"])
    vared = get_task("vared", cfg)
    base = vared.build_model(cfg, 12, vared.stages[0])
    assert vared.load_pretrained(base, cfg, vared.stages[0])[0].endswith("classifier left out (2 tensors))")
    assert _same(base, {k: v for k, v in r21d.state_dict().items() if not k.startswith("fc.")})
    plain = ExperimentConfig()  # nothing set: nothing loaded, nothing to check
    before = {k: v.clone() for k, v in base.state_dict().items()}
    assert get_task("vared", plain).load_pretrained(base, plain, vared.stages[0]) == []
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())
    assert get_task("static", plain).pretrained_specs(plain) == {}


def test_relative_files_become_absolute_and_unread_settings_are_refused(tmp_path, monkeypatch):
    """A worker runs in another folder: the driver makes a weights file's path absolute; a
    setting the method does not read (model.pretrained for LFS) is refused, naming its own."""
    from dynvid.config import ConfigError
    from dynvid.engine.preflight import resolve_local_paths
    from dynvid.engine.task import get_task

    monkeypatch.chdir(tmp_path)
    cfg = apply_overrides(ExperimentConfig(), ["model.pretrained=weights/r.pt", "lfs.f0_pretrained=f0.pt",
                                               f"ant.backbone_pretrained={NAME}"])
    out, _ = resolve_local_paths(cfg)
    assert out.model.pretrained == str(tmp_path / "weights" / "r.pt")
    assert out.lfs.f0_pretrained == str(tmp_path / "f0.pt") and out.ant.backbone_pretrained == NAME
    from dynvid.engine.preflight import check_pretrained_weights

    lfs_cfg = apply_overrides(ExperimentConfig(), ["model.pretrained=r.pt"])
    with pytest.raises(ConfigError, match=r"model\.pretrained: method 'lfs' does not load .* lfs\.f0_pretrained"):
        check_pretrained_weights(get_task("lfs", lfs_cfg), lfs_cfg)
