"""Benchmark: ResQ — frame quantization vs ResQ vs Dynamic-ResQ, PTQ (Sec. 5, Fig. 5 / Fig. 7).

    python jobs/bench_resq.py [--smoke-test] [--out FILE.json] [--checkpoint CKPT] [--taus 0.003 0.03]
                              [--set key=value ...]

On the embedded synthetic segmentation scenes with fixed seeds and the segmentation job's
laptop configuration (``jobs/resq_segmentation.py``): the float DDRNet-23-slim is trained (or,
with that job's ``train.storage_path`` given by ``--set``, found done and not retrained), then
every configuration is PTQ-calibrated on the same c = 64 training frames (r = 20) and run over
every frame of the val videos with a keyframe every T = 3 frames: mIoU and GBOPs per frame
(avg / min / max) of

- frame quantization and ResQ at ``W8A8->W4A4`` and ``W4A4->W3A3`` (the same keyframes at the
  first bits, so the same BOPs);
- static ResQ ``W8A8->W8A8`` and Dynamic-ResQ ``W8A8->W8A{0,4,8}`` (τ = 0.0003, policy cost
  counted); its bit-width maps at ``resq.map_layer`` are saved as a PNG next to ``--out``.

Targets (issue "ResQ"): at each of the two static configurations ResQ's mIoU is above frame
quantization's at equal or lower BOPs; Dynamic-ResQ spends ≥ 30% fewer BOPs than static ResQ
``W8A8->W8A8`` at a mIoU at most 0.5 points lower (0.005 on the 0–1 scale).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import torch

from dynvid.engine.jobs import bench_config, bench_parser, print_targets
from dynvid.methods.resq.presets import EMBEDDED, SMOKE

BENCH = ["train.mlflow_tracking_uri=null", "train.log_every=10", "resq.qat_epochs=0", "resq.period=3"]
STATIC = ("W8A8->W4A4", "W4A4->W3A3")
DYNAMIC, REFERENCE = "W8A8->W8A{0,4,8}", "W8A8->W8A8"


def targets_from_rows(rows: dict) -> tuple[list[dict], dict]:
    """The issue's targets and a summary from the benchmark's rows (see the module docstring)."""
    from dynvid.methods.resq.report import row_name

    targets, summary = [], {}
    for bits in STATIC:
        frame, resq = rows[row_name("frame", bits)], rows[row_name("resq", bits)]
        gain = resq["mIoU"] - frame["mIoU"]
        cheaper = resq["gbops_avg"] <= frame["gbops_avg"] * (1 + 1e-9)
        summary[f"resq_minus_frame_mIoU {bits}"] = gain
        summary[f"resq_over_frame_gbops {bits}"] = resq["gbops_avg"] / frame["gbops_avg"]
        targets.append({"name": f"ResQ_minus_frame_mIoU_{bits}", "value": gain, "target": 0.0, "direction": "max",
                        "met": gain > 0 and cheaper})
    dyn, ref = rows[row_name("dynamic", DYNAMIC)], rows[row_name("resq", REFERENCE)]
    saving = 1 - dyn["gbops_avg"] / ref["gbops_avg"]
    drop = ref["mIoU"] - dyn["mIoU"]
    summary.update({"dynamic_bops_saving_vs_resq_w8a8": saving, "dynamic_mIoU_drop_vs_resq_w8a8": drop})
    targets += [
        {"name": f"Dynamic_ResQ_BOPs_saving_vs_ResQ_{REFERENCE}", "value": saving, "target": 0.30, "direction": "max",
         "met": saving >= 0.30},
        {"name": f"Dynamic_ResQ_mIoU_drop_vs_ResQ_{REFERENCE}", "value": drop, "target": 0.005, "direction": "min",
         "met": drop <= 0.005},
    ]
    return targets, summary


def main(argv: list[str] | None = None) -> int:
    p = bench_parser(__doc__.splitlines()[0])
    p.add_argument("--checkpoint", metavar="CKPT", help="a trained float (or QAT) checkpoint folder or URI "
                   "(default: train the float stage, or find the job's done under its train.storage_path)")
    p.add_argument("--taus", type=float, nargs="*", default=[0.003, 0.03],
                   help="more Dynamic-ResQ thresholds to run besides resq.tau (the targets read resq.tau's row)")
    args = p.parse_args(argv)
    from dynvid.engine.trainer import fit
    from dynvid.methods.resq import ResQTask
    from dynvid.methods.resq.report import compare, comparison_table

    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory(prefix="bench-resq-") as tmp:
        cfg = bench_config(EMBEDDED + BENCH, SMOKE, args, tmp)
        c = cfg.resq
        checkpoint, stage_time = args.checkpoint, None
        if checkpoint is None:
            result = fit(cfg, method="resq", register=False, report=False)
            checkpoint, stage_time = result.stages[-1].checkpoint_path, result.stages[-1].metrics.get("stage_time_s")
        taus = [t for t in args.taus if t != c.tau]
        out = compare(ResQTask(cfg), cfg, checkpoint, [*STATIC, REFERENCE, DYNAMIC], maps_dir=tmp, taus=taus)
        maps = None
        if out["maps"] and args.out:
            maps = str(Path(args.out).with_name(Path(args.out).stem + "_bit_width_maps.png"))
            shutil.copyfile(out["maps"], maps)
    rows = out["rows"]
    print(f"\nResQ benchmark: {c.network} at {cfg.data.synthetic_height}×{cfg.data.synthetic_width}, PTQ "
          f"(c={c.calib_samples}, r={c.calib_candidates}), T={c.period}, τ={c.tau:g}, "
          f"{int(rows['float']['videos'])} val videos, every frame")
    print(comparison_table(rows))
    targets, summary = targets_from_rows(rows)
    print_targets(targets)
    if maps:
        print(f"bit-width maps (Fig. 6) of {c.map_layer}: {maps}")
    result_json = {
        "benchmark": "resq",
        "config": {"network": c.network, "height": cfg.data.synthetic_height, "width": cfg.data.synthetic_width,
                   "period": c.period, "tau": c.tau, "calib_samples": c.calib_samples,
                   "calib_candidates": c.calib_candidates, "per_channel": c.per_channel, "epochs": cfg.optim.epochs,
                   "seed": cfg.train.seed, "smoke_test": args.smoke_test,
                   "train_videos": cfg.data.synthetic_train_videos, "val_videos": cfg.data.synthetic_val_videos,
                   "frames_per_video": cfg.data.synthetic_frames, "map_layer": c.map_layer, "taus": taus},
        "results": {"rows": rows, "summary": summary, "bit_width_maps": maps,
                    "checkpoint": checkpoint, "float_stage_time_s": stage_time},
        "targets": targets,
    }
    if args.out:
        Path(args.out).write_text(json.dumps(result_json, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
