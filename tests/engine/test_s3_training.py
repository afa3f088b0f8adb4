"""Training with everything on S3 (moto's server over HTTP): dataset, Ray storage, checkpoints, --init-from."""

from dynvid.config import ExperimentConfig, apply_overrides
from dynvid.data.synth_writer import write_synthetic
from dynvid.data.synthetic import SceneConfig
from dynvid.engine.checkpoint import load_checkpoint
from dynvid.engine.storage import fetch_checkpoint, upload_dir

from test_trainer import TINY


def test_dataset_storage_and_init_from_on_s3(ray_cluster, s3_server, tmp_path):
    from dynvid.engine.trainer import fit

    write_synthetic("actions", tmp_path / "k", 20, cfg=SceneConfig(height=36, width=48, num_frames=16))
    upload_dir(tmp_path / "k", s3_server.uri("datasets", "k"))
    cfg = apply_overrides(ExperimentConfig(), TINY + [
        f"data.dataset=kinetics:{s3_server.uri('datasets', 'k')}",
        f"train.storage_path={s3_server.uri('runs')}",
        "train.name=on-s3", "optim.epochs=1", "train.final_test=false",
    ])
    result = fit(cfg, method="static")
    uri = result.stages[0].checkpoint_path
    assert uri.startswith(f"s3://{s3_server.bucket}/runs/on-s3-base/checkpoint_")
    keys = [o["Key"] for o in s3_server.client().list_objects_v2(Bucket=s3_server.bucket, Prefix="runs/")["Contents"]]
    assert any(k.endswith("/model.pt") for k in keys) and any(k.endswith("/metadata.json") for k in keys)
    ckpt = load_checkpoint(fetch_checkpoint(uri))
    assert ckpt["metadata"]["run_name"] == "on-s3-base"
    assert result.metrics["val_num_samples"] == 4  # the val split of the 20 uploaded videos

    # a new run starting from that S3 checkpoint
    again = fit(apply_overrides(cfg, ["train.name=from-s3"]), method="static", init_from=uri)
    assert again.stages[0].checkpoint_path.startswith(f"s3://{s3_server.bucket}/runs/from-s3-base/")


def test_missing_bucket_fails_before_training(ray_cluster, s3_server, tmp_path):
    import pytest

    from dynvid.engine.storage import StorageError
    from dynvid.engine.trainer import fit

    cfg = apply_overrides(ExperimentConfig(), TINY + ["train.storage_path=s3://no-such-bucket-here/runs"])
    with pytest.raises(StorageError, match=r"s3://no-such-bucket-here/runs"):
        fit(cfg, method="static")
