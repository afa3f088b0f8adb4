"""LiteEval's feature cache: coarse and fine features computed once, with Ray Data.

The paper trains its RNNs and gate on features of CNNs finetuned beforehand (Sec. 4.1), the
practical path for long untrimmed videos: the CNNs are frozen, so their features never
change while the RNNs train. :func:`build_feature_cache` has the engine run, with Ray Data
(:func:`dynvid.engine.extract.map_to_parquet`; this module imports no Ray),

    ray.data.from_items(video indices)
      .map_batches(ExtractFeatures, concurrency=data.decoders)   decode + both CNNs, per video
      .write_parquet(<cache>/rows)                              shards, local folder or s3://

over the train and val videos together (one execution: one pool of actors to start, each
building both CNNs once), then writes ``manifest.json`` last (its presence marks a complete
cache). A cache is addressed by a hash of the two CNNs' weights and of every
setting that changes the features (dataset, steps, snippet, sizes), so every stage and every
sweep trial that uses the same CNNs reads the same cache, and a rerun finds it done.

Each row holds one video: ``split``, ``id`` (its index in the split), ``label``, and per step
the coarse and fine features and the two CNNs' own class scores (the UNIFORM, UNIFORM+CF,
UNIFORM-K and SEQ-K baselines of Table 1 and Fig. 2 are computed from those). The features of
training videos come from the evaluation view (centre clip, centre crop): with frozen CNNs,
caching trades the training augmentation for speed, as the authors' feature-based training does.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time

import numpy as np
import pyarrow as pa
import torch

from dynvid.config import ExperimentConfig, from_dict, to_dict
from dynvid.data.datasets import build_clip_dataset
from dynvid.atomic import atomic_write_bytes
from dynvid.engine.checkpoint import load_checkpoint
from dynvid.engine.extract import map_to_parquet
from dynvid.engine.ingest import localize_dataset
from dynvid.engine.storage import fetch_checkpoint, ray_storage
from dynvid.methods.liteeval import LiteEvalTask
from dynvid.metrics.cost import CostMeter

__all__ = ["CachedFeatures", "ExtractFeatures", "FeatureCache", "build_feature_cache", "cache_key", "load_split",
           "step_macs"]

MANIFEST = "manifest.json"
COLUMNS = ("coarse", "fine", "coarse_logits", "fine_logits")
ROWS = "rows"
#: the layout's version, part of the cache key: 2 is one ``rows`` folder with a ``split`` column
#: (1 had a folder per split), so a cache of another layout is never read as this one
CACHE_FORMAT = 2


def _cnn_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if k.startswith(("coarse.net.", "fine.net."))}


def cache_key(cfg: ExperimentConfig, model: torch.nn.Module) -> str:
    """Hash of the CNN weights and of the settings that change the features."""
    h = hashlib.sha256(f"liteeval-feature-cache/{CACHE_FORMAT}".encode())
    for name, tensor in sorted(_cnn_state(model).items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    d, le = cfg.data, cfg.liteeval
    settings = {k: v for k, v in to_dict(d).items() if k not in ("batch_size", "loader_workers", "ingest", "decoders",
                                                                  "cpus_per_decoder", "flip_prob")}
    settings.update({k: getattr(le, k) for k in ("coarse_backbone", "coarse_width", "coarse_size", "fine_backbone",
                                                  "fine_width", "steps", "snippet_len")})
    h.update(json.dumps(settings, sort_keys=True).encode())
    return h.hexdigest()[:16]


def step_macs(model: torch.nn.Module, cfg: ExperimentConfig) -> dict[str, float]:
    """MACs of one time step, measured with the cost meter: each CNN's features, and its head."""

    d, le = cfg.data, cfg.liteeval
    shape = (1, 3, le.snippet_len, d.crop_size, d.crop_size) if model.fine.net.takes_clips else (1, 3, d.crop_size, d.crop_size)
    p = next(model.parameters())
    x = torch.zeros(shape, device=p.device, dtype=p.dtype)  # where the model is: it may have been built on a GPU
    out = {}
    with torch.no_grad():
        for name in ("coarse", "fine"):
            extractor = getattr(model, name)
            net = extractor.net
            xin = extractor.prepare(x)
            with CostMeter(net, batch_size=1) as meter:
                feats = net.forward_features(xin)
            out[f"{name}_macs"] = float(meter.per_sample_macs[0])
            with CostMeter(net, batch_size=1) as meter:
                net.forward_head(feats)
            out[f"{name}_head_macs"] = float(meter.per_sample_macs[0])
    return out


class ExtractFeatures:
    """Ray Data ``map_batches`` class: ``{"id": item indices}`` -> one Arrow row per video.

    The items are the videos of ``splits`` one after the other (item ``i`` of ``splits =
    ["train", "val"]`` with 16 train videos: train video ``i`` for ``i < 16``, else val video
    ``i - 16``); each row keeps its ``split`` and its index in it."""

    def __init__(self, experiment: dict, checkpoint: str, splits: list[str], threads: int = 1):
        torch.set_num_threads(threads)
        cfg = from_dict(ExperimentConfig, experiment)
        data = localize_dataset(cfg.data)
        self.datasets = [(split, build_clip_dataset(data, split, "val", seed=cfg.train.seed)) for split in splits]
        self.by_split = dict(self.datasets)
        self.starts = np.cumsum([0] + [len(ds) for _, ds in self.datasets])
        task = LiteEvalTask(cfg)
        self.model = task.build_model(cfg, self.datasets[-1][1].num_classes, task.stage("lstm")).eval()
        state = load_checkpoint(fetch_checkpoint(checkpoint))["model"]
        missing = [k for k in _cnn_state(self.model) if k not in state]
        if missing:
            raise ValueError(f"checkpoint {checkpoint} has no CNN weights for {missing[:3]}…: "
                             "the feature cache needs the 'cnns' stage's checkpoint (or a later one)")
        self.model.load_state_dict(state, strict=False)
        self.le = cfg.liteeval

    def locate(self, item: int) -> tuple[str, int]:
        """``(split, index in it)`` of item ``item``."""
        k = int(np.searchsorted(self.starts, item, side="right")) - 1
        if not 0 <= k < len(self.datasets):
            raise IndexError(f"item {item} is outside the {int(self.starts[-1])} videos of the splits")
        return self.datasets[k][0], item - int(self.starts[k])

    def __call__(self, batch: dict) -> pa.Table:
        where = [self.locate(int(i)) for i in batch["id"]]
        videos, labels = zip(*(self.by_split[split][i] for split, i in where))
        video = torch.stack(videos)
        b = video.shape[0]
        with torch.no_grad():
            x = self.model.step_inputs(video).flatten(0, 1)  # (B·T, C, [S,] H, W)
            cols = {}
            for name in ("coarse", "fine"):
                ext = getattr(self.model, name)
                feats = ext.net.forward_features(ext.prepare(x))
                cols[name] = feats
                cols[f"{name}_logits"] = ext.net.forward_head(feats)
        arrays = {"split": pa.array([split for split, _ in where], pa.string()),
                  "id": pa.array([i for _, i in where], pa.int64()),
                  "label": pa.array([int(y) for y in labels], pa.int64())}
        for name in COLUMNS:
            flat = cols[name].reshape(b, -1).float().numpy()
            arrays[name] = pa.FixedSizeListArray.from_arrays(pa.array(flat.reshape(-1)), flat.shape[1])
        return pa.table(arrays)


@dataclasses.dataclass
class FeatureCache:
    """A built cache: its URI and manifest (``splits`` counts, dims, per-step MACs, classes)."""

    uri: str
    manifest: dict


def _fs_path(uri: str):
    path, fs = ray_storage(uri)
    return path, fs


def _read_manifest(uri: str) -> dict | None:
    path, fs = _fs_path(uri)
    target = f"{path.rstrip('/')}/{MANIFEST}"
    if fs is None:
        return json.loads(open(target).read()) if os.path.isfile(target) else None
    from pyarrow.fs import FileType

    if fs.get_file_info(target).type == FileType.NotFound:
        return None
    with fs.open_input_stream(target) as f:
        return json.loads(f.read().decode())


def _write_manifest(uri: str, manifest: dict) -> None:
    path, fs = _fs_path(uri)
    data = json.dumps(manifest, indent=2).encode()
    if fs is None:
        from pathlib import Path

        atomic_write_bytes(Path(path) / MANIFEST, data)
    else:  # one PUT: an S3 object appears whole or not at all
        with fs.open_output_stream(f"{path.rstrip('/')}/{MANIFEST}") as f:
            f.write(data)


def _clear(path: str, fs) -> None:
    """Remove a rows folder left by an extraction that did not finish."""
    if fs is None:
        import shutil

        shutil.rmtree(path, ignore_errors=True)
        return
    from pyarrow.fs import FileType

    if fs.get_file_info(path).type != FileType.NotFound:
        fs.delete_dir_contents(path, missing_dir_ok=True)


def build_feature_cache(cfg: ExperimentConfig, checkpoint: str, root: str | None = None) -> FeatureCache:
    """Extract (or find) the feature cache of ``checkpoint``'s CNNs under ``root`` (default
    ``<train.storage_path>/liteeval-features``); returns it. Runs on the driver; the work is
    done by Ray Data actors (``data.decoders`` of them, ``data.cpus_per_decoder`` CPUs each) that
    the engine runs (:func:`dynvid.engine.extract.map_to_parquet`)."""

    data = localize_dataset(cfg.data)
    datasets = {s: build_clip_dataset(data, s, "val") for s in (cfg.data.train_split, cfg.data.val_split)}
    splits = {s: len(ds) for s, ds in datasets.items()}
    num_classes = datasets[cfg.data.val_split].num_classes
    task = LiteEvalTask(cfg)
    model = task.build_model(cfg, num_classes, task.stage("lstm")).eval()
    model.load_state_dict(load_checkpoint(fetch_checkpoint(checkpoint))["model"], strict=False)
    key = cache_key(cfg, model)
    root = root or f"{cfg.train.storage_path.rstrip('/')}/liteeval-features"
    uri = f"{root.rstrip('/')}/{key}"
    found = _read_manifest(uri)
    if found is not None:
        print(f"[dynvid] liteeval: feature cache {uri} exists ({found['splits']}); reusing it", flush=True)
        return FeatureCache(uri, found)
    t0 = time.perf_counter()
    print(f"[dynvid] liteeval: extracting coarse + fine features of {sum(splits.values())} videos -> {uri}", flush=True)
    path, fs = _fs_path(uri)
    experiment = to_dict(cfg)
    rows = f"{path.rstrip('/')}/{ROWS}"
    _clear(rows, fs)  # shards of an interrupted attempt (no manifest yet)
    map_to_parquet(sum(splits.values()), ExtractFeatures,
                   {"experiment": experiment, "checkpoint": checkpoint, "splits": list(splits),
                    "threads": max(1, int(cfg.data.cpus_per_decoder))},
                   rows, fs, actors=cfg.data.decoders, cpus_per_actor=cfg.data.cpus_per_decoder, batch_size=8)
    le = cfg.liteeval
    manifest = {
        "format": CACHE_FORMAT, "checkpoint": checkpoint, "key": key, "splits": splits, "num_classes": num_classes,
        "steps": le.steps, "coarse_dim": model.coarse.net.num_features, "fine_dim": model.fine.net.num_features,
        **step_macs(model, cfg), "extract_time_s": time.perf_counter() - t0,
    }
    _write_manifest(uri, manifest)
    print(f"[dynvid] liteeval: feature cache written in {manifest['extract_time_s']:.0f}s", flush=True)
    return FeatureCache(uri, manifest)


def _cache_manifest(uri: str) -> dict:
    """The manifest of a cache this dynvid can read (present, of layout ``CACHE_FORMAT``)."""
    manifest = _read_manifest(uri)
    if manifest is None:
        raise FileNotFoundError(f"no feature cache at {uri} (missing {MANIFEST}): build it with build_feature_cache")
    layout = manifest.get("format", 1)  # no "format": layout 1, before the key recorded it
    if layout != CACHE_FORMAT:  # e.g. an older cache named by liteeval.feature_cache
        raise ValueError(f"feature cache {uri} has layout {layout} (a folder per split); this "
                         f"dynvid reads layout {CACHE_FORMAT}: build it again (build_feature_cache, or a job "
                         "without liteeval.feature_cache)")
    return manifest


def load_split(uri: str, split: str, manifest: dict | None = None) -> dict[str, np.ndarray]:
    """One split of a cache as arrays ``{"id", "label", "coarse" (N, T, Dc), "fine",
    "coarse_logits", "fine_logits"}``, in video order. ``manifest``: the cache's, already
    read and checked by ``_cache_manifest`` (default: read and checked here)."""
    import pyarrow.parquet as pq

    manifest = manifest or _cache_manifest(uri)
    if split not in manifest["splits"]:
        raise KeyError(f"feature cache {uri} has no split {split!r}; it has {', '.join(manifest['splits'])}")
    path, fs = _fs_path(uri)
    table = pq.read_table(f"{path.rstrip('/')}/{ROWS}", filesystem=fs, filters=[("split", "=", split)])
    if table.num_rows != manifest["splits"][split]:
        raise ValueError(f"feature cache {uri}: {table.num_rows} rows of split {split!r}, the manifest says "
                         f"{manifest['splits'][split]}")
    order = np.argsort(table.column("id").to_numpy())
    n, t = table.num_rows, manifest["steps"]
    out = {"id": table.column("id").to_numpy()[order], "label": table.column("label").to_numpy()[order]}
    for name in COLUMNS:
        col = table.column(name).combine_chunks()
        out[name] = np.asarray(col.flatten()).reshape(n, t, -1)[order]
    return out


class CachedFeatures(torch.utils.data.Dataset):
    """A cache split as a dataset of ``((coarse (T, Dc), fine (T, Df)), label)`` items."""

    def __init__(self, uri: str, split: str):
        self.uri, self.split = uri, split
        self.manifest = _cache_manifest(uri)
        arrays = load_split(uri, split, self.manifest)
        self.coarse = torch.from_numpy(arrays["coarse"].copy())
        self.fine = torch.from_numpy(arrays["fine"].copy())
        self.labels = torch.from_numpy(arrays["label"].copy())
        self.num_classes = int(self.manifest["num_classes"])

    def __len__(self) -> int:
        return len(self.labels)

    def set_epoch(self, epoch: int) -> None:  # the engine's hook; cached features have no augmentation
        pass

    def __getitem__(self, i: int):
        return (self.coarse[i], self.fine[i]), self.labels[i]
