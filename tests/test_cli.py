"""The ``dynvid`` command line, run in-process through ``main(argv)`` and once as a console script."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dynvid.cli import main

SMALL = ["--size", "48x64", "--frames", "20", "--fps", "10"]


def _json_tail(text: str) -> dict:
    return json.loads(text[text.index("{"):])


@pytest.fixture(scope="module")
def actions_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "k"
    assert main(["data", "synth", "--task", "actions", "--out", str(out), "--videos", "10", *SMALL]) == 0
    return out


def test_synth_actions_writes_kinetics_layout(actions_dir):
    assert (actions_dir / "train.csv").read_text().splitlines()[0] == "label,youtube_id,time_start,time_end,split"
    assert len(list((actions_dir / "videos").rglob("*.mp4"))) == 10


def test_inspect_counts_classes_durations(actions_dir, capsys):
    assert main(["data", "inspect", str(actions_dir)]) == 0
    report = json.loads(capsys.readouterr().out)
    train, val = report["splits"]["train"], report["splits"]["val"]
    assert train["videos_found"] + val["videos_found"] == 10
    assert train["readable"] == train["videos_found"] and train["unreadable"] == {}
    assert train["duration_s"]["mean"] == pytest.approx(2.0, abs=0.1)
    assert train["num_classes"] == 12 and sum(train["videos_per_class"].values()) == train["readable"]


def test_inspect_reports_unreadable(actions_dir, tmp_path, capsys):
    root = tmp_path / "k"
    shutil.copytree(actions_dir, root)
    victim = sorted((root / "videos" / "train").rglob("*.mp4"))[0]
    victim.write_bytes(b"not a video")
    assert main(["data", "inspect", str(root)]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert str(victim) in report["splits"]["train"]["unreadable"]
    assert "1 unreadable file" in captured.err


def test_inspect_reports_duplicates_and_train_classes(actions_dir, tmp_path, capsys):
    root = tmp_path / "k"
    shutil.copytree(actions_dir, root)
    (root / "classes.txt").unlink()  # class indices from train.csv, also for val
    lines = (root / "train.csv").read_text().splitlines()
    (root / "train.csv").write_text("\n".join(lines + [lines[2], lines[2], lines[1]]) + "\n")
    assert main(["data", "inspect", str(root)]) == 0
    captured = capsys.readouterr()
    train, val = (json.loads(captured.out)["splits"][s] for s in ("train", "val"))
    n = len(lines) - 1
    assert train["duplicates"] == 3 and train["videos_listed"] == train["readable"] == n
    assert [(d["line"], d["repeats_line"]) for d in train["duplicate_examples"]] == [(n + 2, 3), (n + 3, 3), (n + 4, 2)]
    assert train["duplicate_examples"][0]["video"] == lines[2].split(",")[1] + "_000000_000002"
    assert "3 duplicate annotation row(s)" in captured.err
    assert val["duplicates"] == 0 and val["num_classes"] == train["num_classes"]
    assert list(val["videos_per_class"]) == list(train["videos_per_class"])


def test_synth_detection_and_segmentation_inspect(tmp_path, capsys):
    det, seg = tmp_path / "det", tmp_path / "seg"
    assert main(["data", "synth", "--task", "detection", "--out", str(det), "--videos", "3", *SMALL]) == 0
    assert main(["data", "synth", "--task", "segmentation", "--out", str(seg), "--videos", "3", *SMALL]) == 0
    capsys.readouterr()
    assert main(["data", "inspect", str(det)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["format"] == "coco-vid"
    assert report["splits"]["train"]["images"] == 20 * report["splits"]["train"]["videos"]
    assert main(["data", "inspect", str(seg)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["format"] == "video-segmentation" and report["splits"]["train"]["classes"][0] == "background"


def test_synth_segmentation_writes_the_noisy_frames_resq_trains_on(tmp_path):
    """``synthetic:segmentation`` renders sensor noise by default (ResQ's residuals are not exactly
    zero where the renderer repeated a pixel); ``data synth`` writes the same frames, and
    ``--noise-std 0 --shot-noise 0`` the noise-free ones."""
    import numpy as np
    from PIL import Image

    from dynvid.data.synthetic import DEFAULT_SENSOR_NOISE, SceneConfig, SyntheticVideoSource

    noisy, clean = tmp_path / "noisy", tmp_path / "clean"
    assert main(["data", "synth", "--task", "segmentation", "--out", str(noisy), "--videos", "2", *SMALL]) == 0
    assert main(["data", "synth", "--task", "segmentation", "--out", str(clean), "--videos", "2", *SMALL,
                 "--noise-std", "0", "--shot-noise", "0"]) == 0

    def frames(root):
        (video,) = sorted((root / "frames" / "train").iterdir())
        return np.stack([np.asarray(Image.open(f)) for f in sorted(video.glob("*.png"))]).astype(np.int16)

    std, shot = DEFAULT_SENSOR_NOISE["segmentation"]
    scene = SceneConfig(height=48, width=64, num_frames=20, fps=10, noise_std=std, shot_noise=shot)
    expected = SyntheticVideoSource(1, seed=0, cfg=scene, split="train").get(0)
    np.testing.assert_array_equal(frames(noisy), expected.frames)
    zero_share = lambda f: float((np.diff(f, axis=0) == 0).mean())  # noqa: E731
    assert zero_share(frames(clean)) > 0.3 > 0.1 > zero_share(frames(noisy))


def test_cost_prints_published_figure(capsys):
    assert main(["cost", "r2plus1d_18", "--input", "3x16x112x112", "--json"]) == 0
    out = capsys.readouterr().out
    assert "40.519 GFLOPs" in out
    assert _json_tail(out)["macs"] == pytest.approx(40.519e9, rel=1e-3)


def test_user_errors_exit_2_with_one_line(tmp_path, capsys):
    assert main(["data", "inspect", str(tmp_path / "missing")]) == 2
    assert "dataset path not found" in capsys.readouterr().err
    assert main(["cost", "resnet9000"]) == 2
    assert "unknown backbone 'resnet9000'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["cost", "r2plus1d_18", "--input", "3xAx112"])


def test_console_script_installed():
    exe = Path(sys.executable).parent / "dynvid"
    out = subprocess.run([str(exe), "cost", "r2plus1d_18", "--input", "3x8x64x64", "--width-mult", "0.25"],
                         capture_output=True, text=True, check=True).stdout
    assert "GFLOPs" in out


@pytest.mark.parametrize("method,args,expect", [
    ("liteeval", [], "embedded"), ("ant", ["--smoke-test"], "smoke"), ("static", [], "none"),
    ("resq", ["--preset", "none"], "none")])
def test_train_applies_the_methods_preset_under_the_users_settings(monkeypatch, capsys, method, args, expect):
    """``dynvid train --method M`` covers every method, starting from its preset (embedded by
    default, smoke under --smoke-test); --set still wins. fit itself is stood in for: the
    engine's training is tested with the engine."""
    import dynvid.engine.trainer as trainer
    from dynvid.config import ExperimentConfig, apply_overrides
    from dynvid.task import presets

    seen = {}

    class Result:
        run_name, metrics = "r", {"val_gflops_avg": 1.0}

    def fake_fit(cfg, method, init_from=None):
        seen.update(cfg=cfg, method=method)
        return Result()

    monkeypatch.setattr(trainer, "fit", fake_fit)
    assert main(["train", "--method", method, *args, "--set", "train.seed=7"]) == 0
    want = apply_overrides(ExperimentConfig(), presets(method).get(expect, []) + ["train.seed=7"])
    assert seen["method"] == method and seen["cfg"] == want
    assert f"preset {expect}" in capsys.readouterr().out


def test_train_refuses_an_unknown_method_or_preset(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--method", "nope"])
    assert exc.value.code == 2 and "invalid choice: 'nope'" in capsys.readouterr().err
    assert main(["train", "--method", "vared", "--preset", "paper"]) == 2
    assert capsys.readouterr().err.strip() == "dynvid train: error: --preset paper: vared has presets embedded, smoke"
