"""Benchmark: decode + augment throughput of the Kinetics loader, in clips/s per core.

    python jobs/bench_data.py [--smoke-test] [--out FILE.json]

Writes synthetic Kinetics-format mp4s (default: 10 s, 25 fps, 256-pixel short side, like
Kinetics after the usual short-side-256 preprocessing), then times ``KineticsDataset``
train-mode items — 8-frame clips at stride 8, TSN scale jitter + crop to 112 + flip — in a
single process with one decoder thread and one torch thread, i.e. per core.
Target: >= 15 clips/s per core. Also reported: the probe of one video on one thread, and
building the dataset with an empty and with a filled probe cache.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from dynvid.data.clips import ClipSpec
from dynvid.data.kinetics import KineticsDataset
from dynvid.data.synth_writer import write_synthetic
from dynvid.data.synthetic import SceneConfig
from dynvid.data.video_io import probe_videos

TARGET_CLIPS_PER_CORE = 15.0


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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke-test", action="store_true", help="tiny run that only checks the benchmark works")
    p.add_argument("--out", help="write the JSON result here")
    p.add_argument("--videos", type=int, default=12)
    p.add_argument("--clips", type=int, default=150)
    args = p.parse_args(argv)
    config = {"videos": args.videos, "seconds": 10.0, "fps": 25.0, "short_side": 256, "clips": args.clips,
              "clip_len": 8, "stride": 8, "crop": 112, "threads": 1}
    if args.smoke_test:
        config.update(videos=2, seconds=2.0, short_side=128, clips=6)
    with tempfile.TemporaryDirectory(prefix="dynvid-bench-data-") as tmp:
        res = run(config["videos"], config["seconds"], config["fps"], config["short_side"], config["clips"], Path(tmp))
    value = res["clips_per_s_per_core"]
    report = {
        "benchmark": "data_kinetics_decode_augment",
        "config": config,
        "results": res,
        "targets": [{"name": "clips_per_s_per_core", "value": value, "target": TARGET_CLIPS_PER_CORE,
                     "direction": "max", "met": value >= TARGET_CLIPS_PER_CORE}],
    }
    print(f"{'metric':<28}{'value':>12}")
    for key in ("clips_per_s_per_core", "ms_per_clip", "probe_ms_per_video", "load_s", "load_cached_s",
                "dataset_write_s"):
        print(f"{key:<28}{res[key]:>12.2f}")
    t = report["targets"][0]
    print(f"target: {t['name']} >= {t['target']}: {'met' if t['met'] else 'MISSED'} ({value:.2f})")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
