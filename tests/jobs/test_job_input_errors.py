"""Bad input to the main job fails on the driver before Ray starts: exit status 2 and one line
on stderr naming the file, line or setting (issue 18, item 1), for a Kinetics-style folder
written by ``dynvid data synth``'s writer and then broken the way real folders are."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import vared_kinetics  # jobs/ is on pytest's pythonpath (pyproject.toml)

from dynvid.data.synth_writer import write_synthetic
from dynvid.data.synthetic import SceneConfig

REPO = Path(__file__).resolve().parents[2]


class RayWouldStart(Exception):
    """Raised by the test's stand-in for ``init_ray``: the job got past every driver-side check."""


@pytest.fixture(scope="module")
def kinetics_folder(tmp_path_factory):
    """A valid Kinetics-style folder: 8 train and 2 val videos, ``train.csv`` / ``val.csv``."""
    root = tmp_path_factory.mktemp("k") / "k400"
    write_synthetic("actions", root, 10, cfg=SceneConfig(height=36, width=48, num_frames=16))
    return root


@pytest.fixture
def folder(kinetics_folder, tmp_path):
    """A fresh copy of the folder, for a test to break."""
    return Path(shutil.copytree(kinetics_folder, tmp_path / "k400"))


@pytest.fixture
def no_ray(monkeypatch):
    """Ray must not start: the stand-in for ``init_ray`` raises instead."""
    import ray

    from dynvid.engine import trainer

    def refuse(*args, **kwargs):
        raise RayWouldStart

    monkeypatch.setattr(trainer, "init_ray", refuse)
    started = ray.is_initialized()
    yield
    assert ray.is_initialized() == started


def run_job(data: str, tmp_path: Path, *extra: str) -> list[str]:
    return ["--data", data, "--set", f"train.storage_path={tmp_path}/runs", "--set", "train.mlflow_tracking_uri=null",
            "--set", "data.batch_size=2", *extra]


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("vared_kinetics: error: ")
    return lines[0]


def rewrite_line(path: Path, number: int, edit) -> None:
    lines = path.read_text().splitlines()
    lines[number - 1] = edit(lines[number - 1])
    path.write_text("\n".join(lines) + "\n")


def test_a_valid_folder_passes_every_check(folder, tmp_path, no_ray):
    with pytest.raises(RayWouldStart):
        vared_kinetics.main(run_job(f"kinetics:{folder}", tmp_path))


def test_missing_folder(tmp_path, no_ray, capsys):
    assert vared_kinetics.main(run_job(f"kinetics:{tmp_path}/nowhere/k400", tmp_path)) == 2
    assert f"{tmp_path}/nowhere/k400" in one_error_line(capsys)


def test_bad_csv_header(folder, tmp_path, no_ray, capsys):
    rewrite_line(folder / "train.csv", 1, lambda line: line.replace("label", "lable"))
    assert vared_kinetics.main(run_job(f"kinetics:{folder}", tmp_path)) == 2
    line = one_error_line(capsys)
    assert f"{folder}/train.csv:1" in line and "label" in line


def test_short_row(folder, tmp_path, no_ray, capsys):
    rewrite_line(folder / "train.csv", 3, lambda line: ",".join(line.split(",")[:-1]))  # no split: one field short
    assert vared_kinetics.main(run_job(f"kinetics:{folder}", tmp_path)) == 2
    assert f"{folder}/train.csv:3" in one_error_line(capsys)


def test_empty_split(folder, tmp_path, no_ray, capsys):
    (folder / "val.csv").write_text((folder / "val.csv").read_text().splitlines()[0] + "\n")  # the header only
    assert vared_kinetics.main(run_job(f"kinetics:{folder}", tmp_path)) == 2
    assert f"{folder}/val.csv" in one_error_line(capsys)


@pytest.mark.parametrize("classes_txt", [True, False])
def test_a_val_class_absent_from_train(folder, tmp_path, no_ray, capsys, classes_txt):
    """The class list is the training split's: a val label outside it is named before anything
    trains (it used to train all three stages and fail loading the checkpoint)."""
    if not classes_txt:
        (folder / "classes.txt").unlink(missing_ok=True)
    rewrite_line(folder / "val.csv", 2, lambda line: "juggling" + line[line.index(","):])
    assert vared_kinetics.main(run_job(f"kinetics:{folder}", tmp_path)) == 2
    line = one_error_line(capsys)
    assert f"{folder}/val.csv:2" in line and "'juggling'" in line


@pytest.mark.parametrize("damage", ["missing", "unreadable"])
def test_too_many_bad_files(folder, tmp_path, no_ray, capsys, damage):
    videos = sorted((folder / "videos" / "train").rglob("*.mp4"))
    for video in videos[:3]:  # 3 of 8 bad: 37.5% > max_bad_fraction 5%
        video.unlink() if damage == "missing" else video.write_bytes(b"not a video")
    assert vared_kinetics.main(run_job(f"kinetics:{folder}", tmp_path)) == 2
    line = one_error_line(capsys)
    assert f"{folder}/train.csv" in line and "max_bad_fraction" in line


def test_bad_fraction_out_of_range(folder, tmp_path, no_ray, capsys):
    assert vared_kinetics.main(run_job(f"kinetics:{folder}", tmp_path, "--set", "data.max_bad_fraction=1.5")) == 2
    line = one_error_line(capsys)
    assert "data.max_bad_fraction" in line and "1.5" in line


@pytest.mark.parametrize("setting", ["data.batch_size=0", "optim.epochs=0", "train.num_workers=0", "optim.lr=-0.1"])
def test_config_ranges(folder, tmp_path, no_ray, capsys, setting):
    assert vared_kinetics.main(run_job(f"kinetics:{folder}", tmp_path, "--set", setting)) == 2
    assert setting.split("=")[0] in one_error_line(capsys)


def test_fewer_videos_than_one_batch(folder, tmp_path, no_ray, capsys):
    assert vared_kinetics.main(run_job(f"kinetics:{folder}", tmp_path, "--set", "data.batch_size=64")) == 2
    line = one_error_line(capsys)
    assert "data.batch_size=64" in line and "8 training items" in line


def test_s3_dataset_with_a_bad_bucket_name(tmp_path, no_ray, capsys):
    """The driver does not download an S3 dataset (the workers mirror it): the URI's form is checked."""
    assert vared_kinetics.main(run_job("kinetics:s3://B/k400", tmp_path)) == 2
    assert "s3://B/k400" in one_error_line(capsys)


@pytest.mark.parametrize("damage", ["val_row", "bad_files"])
def test_the_job_process_prints_one_line(folder, tmp_path, damage):
    """The whole process, as a user runs it: the error line alone on stderr (no traceback, no
    log warning before it), exit status 2, no stage folder."""
    if damage == "val_row":
        rewrite_line(folder / "val.csv", 2, lambda line: line.replace(",", ";"))
        where = f"{folder}/val.csv:2"
    else:  # 3 of 8 unreadable: over the threshold, so no "videos skipped" warning either
        for video in sorted((folder / "videos" / "train").rglob("*.mp4"))[:3]:
            video.write_bytes(b"not a video")
        where = f"{folder}/train.csv: 3 of 8 videos"
    env = {**os.environ, "RAY_ADDRESS": "127.0.0.1:9"}  # were the checks to pass, no local cluster would start
    done = subprocess.run([sys.executable, str(REPO / "jobs" / "vared_kinetics.py"),
                           *run_job(f"kinetics:{folder}", tmp_path)], capture_output=True, text=True, timeout=600,
                          env=env)
    assert done.returncode == 2, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vared_kinetics: error: "), done.stderr[-3000:]
    assert where in lines[0]
    assert not list((tmp_path / "runs").glob("*-base"))  # no stage started


JOBS = ["vared_kinetics", "liteeval", "ant_detection", "lfs_interleaved", "resq_segmentation", "lfs_policy_dqn",
        "bench_vared", "bench_ant", "bench_lfs"]


@pytest.mark.parametrize("job", JOBS)
def test_every_training_job_reports_bad_input_in_one_line(job, tmp_path, no_ray, capsys):
    module = __import__(job)
    args = ["--set", f"train.storage_path={tmp_path}/runs", "--set", "train.mlflow_tracking_uri=null",
            "--set", "data.max_bad_fraction=1.5"]
    assert module.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"{job}: error: ") and "data.max_bad_fraction" in err[0], err
