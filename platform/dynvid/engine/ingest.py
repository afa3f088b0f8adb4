"""Ray Data ingest: decode and augment clips on CPU workers, stream batches to the trainers.

Selected with ``data.ingest=ray_data`` (default ``torch``: a DataLoader in each training
worker). The pipeline, built by the driver and handed to ``TorchTrainer(datasets=...)``:

    ray.data.from_items(indices)                   video indices (block order randomized per epoch)
      .map_batches(DecodeClips, concurrency=N)     actors on CPU nodes: decode + TSN augmentation
    get_dataset_shard("train").iter_torch_batches  each training worker's share, streamed

so decoding scales out over CPU nodes while the GPUs train. The decode actors build the
same :class:`~dynvid.data.clips.VideoClipDataset` as the DataLoader path (identical
sampling and transforms); a dataset on S3 is mirrored to each decode node's cache.

Choice: augmentation randomness in this mode comes from each actor's own generator, so it
is random but not reproducible epoch by epoch as in the DataLoader path (Ray Data gives a
map function no epoch number). Validation and the final test keep the DataLoader path.
"""

from __future__ import annotations

import numpy as np

import dataclasses

from dynvid.config import DataConfig, from_dict, to_dict
from dynvid.data.datasets import build_clip_dataset
from dynvid.engine.storage import fetch_dataset, is_remote

__all__ = ["DecodeClips", "build_train_dataset", "to_clip_batch", "remote_dataset_uri", "localize_dataset"]


def remote_dataset_uri(data: DataConfig) -> str | None:
    """The ``s3://`` URI of the dataset (``kinetics:s3://…`` or a bare ``s3://…``), else None."""
    kind, _, arg = data.dataset.partition(":")
    uri = arg if kind == "kinetics" else data.dataset
    return uri if is_remote(uri) else None


def localize_dataset(data: DataConfig) -> DataConfig:
    """``data`` reading from this node's mirror of an S3 dataset (downloaded on first use,
    then only compared by size); unchanged for a local dataset."""
    uri = remote_dataset_uri(data)
    if uri is None:
        return data
    return dataclasses.replace(data, dataset=f"kinetics:{fetch_dataset(uri)}")


class DecodeClips:
    """Ray Data map_batches class: ``{"id": indices}`` -> ``{"clip": (B,C,T,H,W), "label": (B,)}``."""

    def __init__(self, data: dict, split: str, seed: int):
        cfg = localize_dataset(from_dict(DataConfig, data))
        self.dataset = build_clip_dataset(cfg, split, "train", seed=seed)
        self.rng = np.random.default_rng()

    def __call__(self, batch: dict) -> dict:
        clips, labels = [], []
        for i in batch["id"]:
            self.dataset.set_epoch(int(self.rng.integers(2**31)))
            clip, label = self.dataset[int(i)]
            clips.append(clip.numpy())
            labels.append(label)
        return {"clip": np.stack(clips), "label": np.asarray(labels, dtype=np.int64)}


def build_train_dataset(data: DataConfig, num_videos: int, seed: int, decoders: int, cpus_per_decoder: float = 1.0):
    """The streaming training dataset (see the module docstring)."""
    import ray.data

    # from_items builds the index blocks in the driver: a range() read task would need a CPU
    # of its own, which a small cluster whose CPUs hold the trainers and decoders lacks.
    blocks = max(1, min(num_videos, 4 * decoders))
    return (
        ray.data.from_items([{"id": i} for i in range(num_videos)], override_num_blocks=blocks)
        .randomize_block_order(seed=seed)
        .map_batches(
            DecodeClips,
            fn_constructor_kwargs={"data": to_dict(data), "split": data.train_split, "seed": seed},
            batch_size=max(1, data.batch_size // 2),
            concurrency=decoders,
            num_cpus=cpus_per_decoder,
        )
    )


def to_clip_batch(batch: dict) -> tuple:
    """Ray Data's dict batch -> the ``(clips, labels)`` tuple the Tasks take."""
    return batch["clip"], batch["label"]


class StreamedBatches:
    """A training worker's shard as an iterable of ``(clips, labels)`` with a known length
    (``len`` = full batches per worker per epoch, for the schedule and the ETA)."""

    def __init__(self, shard, batch_size: int, num_videos: int, world_size: int, shuffle_buffer: int = 64):
        self.shard = shard
        self.batch_size = batch_size
        self.steps = num_videos // (batch_size * world_size)
        self.shuffle_buffer = shuffle_buffer

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        batches = self.shard.iter_torch_batches(
            batch_size=self.batch_size, drop_last=True, local_shuffle_buffer_size=self.shuffle_buffer
        )
        for step, batch in enumerate(batches):
            if step >= self.steps:  # shards may differ by a batch; keep every worker in step
                break
            yield to_clip_batch(batch)
