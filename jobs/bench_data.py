"""Benchmark: training clips/s per core of the data pipeline — the Kinetics loader and the
embedded synthetic actions.

    python jobs/bench_data.py [--smoke-test] [--section all|kinetics|synthetic] [--out FILE.json]

Kinetics: writes synthetic Kinetics-format mp4s (default: 10 s, 25 fps, 256-pixel short side,
like Kinetics after the usual short-side-256 preprocessing), then times ``KineticsDataset``
train-mode items — 8-frame clips at stride 8, TSN scale jitter + crop to 112 + flip — in a
single process with one decoder thread and one torch thread, i.e. per core.
Target: >= 15 clips/s per core. Also reported: the probe of one video on one thread, and
building the dataset with an empty and with a filled probe cache.

Synthetic (``synthetic:actions``, rendered on the fly): train-mode items of the VA-RED² job's
data at the paper's clip size (``paper_config``: 16 frames at stride 4, TSN crop to 112 from
the 128x171, 48-frame scenes) and at the laptop size (the ``embedded`` preset: 8x48² from
54x72 scenes), one process, one torch thread. The rate is the median over blocks of clips
(robust to neighbours on a shared machine); the milliseconds per clip are split into rendering
the clip's frames and the transform. Target: >= 30 clips/s per core at paper size, so that
about 12 loader workers feed the 338 clips/s a plain PyTorch loop trains full-width
R(2+1)D-18 at on one H200 (issue 20).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from dynvid.config import ExperimentConfig, apply_overrides
from dynvid.data.clips import ClipSpec
from dynvid.data.datasets import build_clip_dataset
from dynvid.data.kinetics import KineticsDataset
from dynvid.data.sampling import random_clip_indices
from dynvid.data.synth_writer import write_synthetic
from dynvid.data.synthetic import SceneConfig
from dynvid.data.video_io import probe_videos
from dynvid.methods.vared.presets import EMBEDDED, paper_config

TARGET_CLIPS_PER_CORE = 15.0
TARGET_SYNTHETIC_PAPER_CLIPS_PER_CORE = 30.0
SYNTHETIC_SIZES = {"paper": paper_config("r2plus1d_18", "synthetic:actions"), "laptop": EMBEDDED}


def run(videos: int, seconds: float, fps: float, short_side: int, clips: int, workdir: Path) -> dict:
    width = int(round(short_side * 4 / 3))
    scene = SceneConfig(height=short_side, width=width, num_frames=int(seconds * fps), fps=fps)
    t0 = time.perf_counter()
    write_synthetic("actions", workdir, videos, seed=0, cfg=scene, val_fraction=0.0)
    write_s = time.perf_counter() - t0
    spec = ClipSpec(clip_len=8, stride=8, crop_size=112, train_short_side=128)
    probe_cache = workdir / "probe-cache"  # not ~/.cache: these videos go with workdir
    t0 = time.perf_counter()
    ds = KineticsDataset(workdir / "train.csv", spec=spec, mode="train", probe_cache_dir=probe_cache)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    KineticsDataset(workdir / "train.csv", spec=spec, mode="train", probe_cache_dir=probe_cache)
    load_cached_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    probe_videos([r.path for r in ds.records], threads=1)  # no cache: the cost per video and core
    probe_s = time.perf_counter() - t0
    torch.set_num_threads(1)
    ds[0]  # warm up codecs and allocators
    t0 = time.perf_counter()
    for n in range(clips):
        ds.set_epoch(n // len(ds) + 1)
        clip, _ = ds[n % len(ds)]
    elapsed = time.perf_counter() - t0
    assert clip.shape == (3, 8, 112, 112)
    return {
        "clips": clips,
        "seconds": elapsed,
        "clips_per_s_per_core": clips / elapsed,
        "ms_per_clip": 1000 * elapsed / clips,
        "probe_ms_per_video": 1000 * probe_s / len(ds),
        "load_s": load_s,
        "load_cached_s": load_cached_s,
        "dataset_write_s": write_s,
        "bad_videos": len(ds.bad_videos),
    }


def run_synthetic(size: str, clips: int, block: int) -> dict:
    """Train-mode clips/s per core of ``synthetic:actions`` with the VA-RED² job's data at ``size``."""
    cfg = apply_overrides(ExperimentConfig(), SYNTHETIC_SIZES[size])
    d = cfg.data
    ds = build_clip_dataset(d, d.train_split, "train", seed=cfg.train.seed)
    torch.set_num_threads(1)
    ds[0]  # warm up allocators
    rates, n = [], 0
    while n < clips:
        k = min(block, clips - n)
        t0 = time.perf_counter()
        for j in range(n, n + k):
            ds.set_epoch(j // len(ds))
            clip, _ = ds[j % len(ds)]
        rates.append(k / (time.perf_counter() - t0))
        n += k
    assert clip.shape == (3, d.clip_len, d.crop_size, d.crop_size)
    # Where the time goes: the same items' rendering and transform, timed apart.
    render, transform = [], []
    for j in range(min(clips, 2 * block)):
        i = j % len(ds)
        rng = np.random.default_rng([ds.seed, ds.epoch, i])
        idx = random_clip_indices(ds.video_num_frames(i), d.clip_len, d.stride, rng)
        t0 = time.perf_counter()
        frames = torch.from_numpy(ds.read_frames(i, idx, d.train_short_side))
        t1 = time.perf_counter()
        ds.train_transform(frames, rng)
        render.append(t1 - t0)
        transform.append(time.perf_counter() - t1)
    return {
        "clips": clips,
        "clips_per_s_per_core": float(np.median(rates)),
        "clips_per_s_per_core_blocks": [round(r, 1) for r in rates],
        "ms_per_clip": 1000 / float(np.median(rates)),
        "render_ms_per_clip": 1000 * float(np.median(render)),
        "transform_ms_per_clip": 1000 * float(np.median(transform)),
        "clip_shape": list(clip.shape),
        "scene": [d.synthetic_frames, d.synthetic_height, d.synthetic_width],
        "clip_len": d.clip_len, "stride": d.stride, "crop": d.crop_size, "train_short_side": d.train_short_side,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke-test", action="store_true", help="tiny run that only checks the benchmark works")
    p.add_argument("--out", help="write the JSON result here")
    p.add_argument("--videos", type=int, default=12)
    p.add_argument("--clips", type=int, default=150)
    p.add_argument("--synthetic-clips", type=int, default=600, help="clips timed per synthetic size")
    p.add_argument("--section", choices=("all", "kinetics", "synthetic"), default="all")
    args = p.parse_args(argv)
    config = {"videos": args.videos, "seconds": 10.0, "fps": 25.0, "short_side": 256, "clips": args.clips,
              "clip_len": 8, "stride": 8, "crop": 112, "threads": 1}
    synthetic = {"sizes": list(SYNTHETIC_SIZES), "clips": args.synthetic_clips, "block": 50, "threads": 1}
    if args.smoke_test:
        config.update(videos=2, seconds=2.0, short_side=128, clips=6)
        synthetic.update(clips=6, block=3)
    res, targets = {}, []
    if args.section in ("all", "kinetics"):
        with tempfile.TemporaryDirectory(prefix="dynvid-bench-data-") as tmp:
            res = run(config["videos"], config["seconds"], config["fps"], config["short_side"], config["clips"],
                      Path(tmp))
        value = res["clips_per_s_per_core"]
        targets.append({"name": "clips_per_s_per_core", "value": value, "target": TARGET_CLIPS_PER_CORE,
                        "direction": "max", "met": value >= TARGET_CLIPS_PER_CORE})
    if args.section in ("all", "synthetic"):
        config["synthetic"] = synthetic
        res["synthetic"] = {size: run_synthetic(size, synthetic["clips"], synthetic["block"])
                            for size in SYNTHETIC_SIZES}
        value = res["synthetic"]["paper"]["clips_per_s_per_core"]
        targets.append({"name": "synthetic_paper_clips_per_s_per_core", "value": value,
                        "target": TARGET_SYNTHETIC_PAPER_CLIPS_PER_CORE, "direction": "max",
                        "met": value >= TARGET_SYNTHETIC_PAPER_CLIPS_PER_CORE})
    report = {"benchmark": "data_clips_per_core", "config": config, "results": res, "targets": targets}
    if "clips_per_s_per_core" in res:
        print(f"{'kinetics':<28}{'value':>12}")
        for key in ("clips_per_s_per_core", "ms_per_clip", "probe_ms_per_video", "load_s", "load_cached_s",
                    "dataset_write_s"):
            print(f"{key:<28}{res[key]:>12.2f}")
    if "synthetic" in res:
        print(f"{'synthetic:actions':<28}" + "".join(f"{size:>12}" for size in SYNTHETIC_SIZES))
        for key in ("clips_per_s_per_core", "ms_per_clip", "render_ms_per_clip", "transform_ms_per_clip"):
            print(f"{key:<28}" + "".join(f"{res['synthetic'][size][key]:>12.2f}" for size in SYNTHETIC_SIZES))
    for t in targets:
        print(f"target: {t['name']} >= {t['target']}: {'met' if t['met'] else 'MISSED'} ({t['value']:.2f})")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
