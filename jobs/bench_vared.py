"""Benchmark: VA-RED² against static R(2+1)D-18 — accuracy–cost like for like, and wall clock.

    python jobs/bench_vared.py [--smoke-test] [--out FILE.json] [--device cpu|cuda] [--speed-only]
                               [--eval-clips N] [--set key=value ...]

**Accuracy–cost** (skipped by ``--speed-only``), on the embedded synthetic data with fixed seeds
and the main job's laptop configuration (``dynvid.methods.vared.presets.EMBEDDED``):

- ``VA-RED²``: the method's stages (static ``base`` for E1 epochs → ``dynamic`` → efficiency
  ``finetune``); the model after each stage past the base is a row, the last one is VA-RED²;
- ``static, continued`` (control a, the main same-budget control): the *same* base checkpoint
  continued as a static network, one static run per VA-RED² stage past the base, each with
  that stage's optimiser settings (its epochs, learning rate and warm-up, a fresh optimiser
  and schedule as each VA-RED² stage has: ``Stage.config``), so both sides see the same
  epochs, steps and learning rates from the same weights; only the gates' learning-rate
  multiplier has no static counterpart;
- ``static, from scratch`` (control b): the static network trained from random weights for
  the total epochs of the VA-RED² stages, with the base's optimiser settings. Its validation
  clip-1 after every epoch (the engine's per-epoch metrics, on the runs' own ``val`` split:
  ``data.synthetic_val_videos``) is the static learning curve, to choose the base length
  where it levels off;
- ``static base``: the base checkpoint itself, for reference.

Every model is measured on the same ``--eval-clips`` val clips (default 1,920: the first N
clips of the synthetic val split, a superset of the clips the runs validate on every epoch;
no run selects a checkpoint on them, each run's last epoch is measured): GFLOPs avg/min/max
per clip from the cost meter (the executed path), clip-1, and the paired bootstrap 95%
interval of the clip-1 difference VA-RED² − control (same clips, 10,000 resamples:
``dynvid.metrics.bootstrap``).

**Speed**, the same implementation on both sides: each network is timed as its inference copy
(``dynvid.methods.vared.analysis.inference_copy``, as the job's report times them: the static
network's ``1×k×k`` convolutions on the frame-wise ``conv2d`` path the dynamic convolutions use,
``dynvid.backbones.frameconv.use_frame_convs``, and every BatchNorm after a convolution folded
into it on both sides, ``dynvid.backbones.fuse``): untrained full-width R(2+1)D-18 on 16×112²
clips (400 classes), the static network against the VA-RED² network (search space 3) forced
to each choice (``force_policy``: all; r=1/2, R=2; r=1/4, R=4); and the trained policy: the
trained laptop-width VA-RED² model against control (a) at their own size (its gates are
trained for that width and clip, so they are not transplanted to full width), on real val
clips. Batch 1 and 16, inference mode; the models are timed interleaved (one round times
each in turn) and each reports its median clips/s over the rounds. Per choice: GFLOPs per
clip (cost meter), static and dynamic clips/s, speed-up, GFLOPs ratio (static / dynamic),
speed fraction = speed-up / GFLOPs ratio, and time ratio (dynamic / static time).
``--device cpu`` (default): fp32 on 2 threads. ``--device cuda``: fp32 and fp16 (the models
and clips converted with ``.half()``, no autocast), ``torch.cuda.synchronize()`` around each
timed loop, warm-up batches first; training still follows the config (``--set
train.use_gpu=true`` to train on the GPU). ``--device cuda --smoke-test`` on a machine without
CUDA is a dry run: the GPU tables' code on CPU at tiny sizes, marked ``dry_run`` in the JSON
and the printed tables.

Targets (issue 19), each reported met or MISSED:

- average GFLOPs at least 25% below control (a), and the lower end of the 95% interval of the
  clip-1 difference VA-RED² − (a) at least −1 point;
- CPU: speed-up ≥ 0.8 × GFLOPs ratio at batch 1 and 16 for each forced cheaper choice and the
  trained policy; forced "all" time ≤ 1.05 × static time at batch 1 and 16;
- CUDA: at batch 16 fp16 the same (speed fraction ≥ 0.8, "all" ≤ 1.05 × static), and "all"
  within 10% of static at batch 1 (fp32 and fp16).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

from dynvid.backbones import build_backbone
from dynvid.config import ExperimentConfig, VaredConfig, apply_overrides
from dynvid.data.datasets import build_clip_dataset
from dynvid.engine.jobs import bench_config, bench_parser, bench_run_config, exit_on_bad_input, print_targets
from dynvid.engine.task import get_task
from dynvid.methods.vared import force_policy, make_dynamic
from dynvid.methods.vared.analysis import comparison_table, inference_copy, load_stage_model, policy_stats
from dynvid.methods.vared.presets import EMBEDDED, SMOKE  # the main job's configuration
from dynvid.metrics.bootstrap import paired_bootstrap_ci
from dynvid.metrics.cost import CostMeter
from dynvid.metrics.speed import compare_throughput
from dynvid.tables import format_table

TARGET_GFLOPS_REDUCTION = 0.25
TARGET_CLIP1_CI_LOW = -0.01
TARGET_SPEED_FRACTION = 0.8
TARGET_ALL_TIME = 1.05
TARGET_ALL_TIME_GPU_B1 = 1.10
CONFIDENCE, RESAMPLES = 0.95, 10000
EVAL_CLIPS, SMOKE_EVAL_CLIPS = 1920, 24
BENCH = ["train.mlflow_tracking_uri=null", "train.log_every=40"]
BATCHES = (1, 16)
#: forced decisions: key, ``force_policy`` argument, label (VaredConfig(search_space=3))
CHOICES = (("all", "all", "r=1, R=1"), ("half", 1, "r=1/2, R=2"), ("quarter", 2, "r=1/4, R=4"))
#: (width, clip (T, H, W)) of the forced-choice speed tables
FULL_SIZE, SMOKE_SIZE = (1.0, (16, 112, 112)), (0.25, (4, 16, 16))


# ---- accuracy–cost ------------------------------------------------------------------------

def train_models(cfg: ExperimentConfig) -> dict:
    """Train VA-RED² and both static controls; checkpoints, final metrics and the curve."""
    from dynvid.engine.trainer import EpochHistory, fit  # imports Ray

    stages = get_task("vared", cfg).stages
    dyn = fit(cfg, method="vared", register=False, report=False)  # checks the input before Ray starts
    by_stage = {s.stage: s for s in dyn.stages}
    # (a) the base continued as a static network, stage by stage with the stage's optimiser settings
    previous, continued = by_stage[stages[0].name].checkpoint_path, []
    for stage in stages[1:]:
        run = fit(stage.config(cfg), method="static", init_from=previous, register=False, report=False)
        previous = run.stages[-1].checkpoint_path
        continued.append((stage.name, stage.config(cfg).optim.epochs, run.stages[-1]))
    # (b) from scratch for the total epochs; its per-epoch validation is the learning curve
    epochs = [s.config(cfg).optim.epochs for s in stages]
    history = EpochHistory()
    scratch = fit(apply_overrides(cfg, [f"optim.epochs={sum(epochs)}"]), method="static", register=False,
                  report=False, train_callbacks=[history])
    curve = [{"epoch": int(m["epoch"]), "val_clip_top1": m.get("val_clip_top1"),
              "val_clip_top5": m.get("val_clip_top5")} for m in history.epochs() if "epoch" in m]
    return {"stages": stages, "epochs": epochs, "vared": by_stage, "continued": continued,
            "scratch": scratch.stages[-1], "curve": curve}


def load_model(cfg: ExperimentConfig, method: str, stage_name: str, checkpoint: str, num_classes: int) -> nn.Module:
    """The ``method`` network of ``stage_name`` with the weights of ``checkpoint``, in eval mode."""

    return load_stage_model(get_task(method, cfg), cfg, stage_name, checkpoint, num_classes)


@torch.no_grad()
def evaluate(models: dict[str, nn.Module], loader) -> dict[str, dict]:
    """``policy_stats`` of every model on the same batches, in one pass over ``loader`` (the
    clips are generated once for all models)."""

    parts: dict[str, list[dict]] = {name: [] for name in models}
    for clips, labels in loader:
        for name, model in models.items():
            parts[name].append(policy_stats(model, [(clips, labels)]))
    return {name: {"layers": p[0]["layers"], **{k: torch.cat([q[k] for q in p])
                                                for k in ("temporal", "channel", "macs", "labels", "correct")}}
            for name, p in parts.items()}


def accuracy_cost(cfg: ExperimentConfig, trained: dict, eval_clips: int) -> tuple[dict, dict]:
    """Rows (GFLOPs avg/min/max, clip-1, video-1) of every model on the same ``eval_clips``
    val clips, the paired bootstrap intervals against both controls, and the trained models
    for the speed tables."""

    data = apply_overrides(cfg, [f"data.synthetic_val_videos={eval_clips}"]).data \
        if cfg.data.dataset.startswith("synthetic") else cfg.data
    val = build_clip_dataset(data, data.val_split, "val", seed=cfg.train.seed)
    loader = torch.utils.data.DataLoader(val, batch_size=cfg.data.batch_size, num_workers=cfg.data.loader_workers)
    stages, epochs, vared = trained["stages"], trained["epochs"], trained["vared"]
    base, final = stages[0].name, stages[-1].name
    continued_stage = trained["continued"][-1][2]
    # name -> (method, stage, checkpoint, epochs, final metrics of its run)
    runs = {
        "static base": ("static", "base", vared[base].checkpoint_path, epochs[0], vared[base].metrics),
        "static, continued (a)": ("static", "base", continued_stage.checkpoint_path,
                                  f"{epochs[0]}+{'+'.join(str(e) for _, e, _ in trained['continued'])}",
                                  continued_stage.metrics),
        "static, from scratch (b)": ("static", "base", trained["scratch"].checkpoint_path, sum(epochs),
                                     trained["scratch"].metrics),
    }
    for i, stage in enumerate(stages[1:], 1):
        name = "VA-RED²" if stage.name == final else f"VA-RED² after {stage.name}"
        runs[name] = ("vared", stage.name, vared[stage.name].checkpoint_path, "+".join(map(str, epochs[:i + 1])),
                      vared[stage.name].metrics)
    models = {name: load_model(cfg, method, stage, ckpt, val.num_classes)
              for name, (method, stage, ckpt, _, _) in runs.items()}
    stats = evaluate(models, loader)
    rows = []
    for name, (_, _, _, ep, metrics) in runs.items():
        gflops = stats[name]["macs"] / 1e9
        rows.append({"model": name, "epochs": str(ep), "gflops_avg": float(gflops.mean()),
                     "gflops_min": float(gflops.min()), "gflops_max": float(gflops.max()),
                     "clip_top1": float(stats[name]["correct"].float().mean()),
                     "video_top1": metrics.get("test_video_top1"), "num_clips": len(gflops)})
    by = {r["model"]: r for r in rows}
    dyn = stats["VA-RED²"]["correct"]
    out = {"rows": rows, "eval_clips": len(val), "learning_curve": trained["curve"]}
    for key, control in (("continued", "static, continued (a)"), ("scratch", "static, from scratch (b)")):
        ci = paired_bootstrap_ci(dyn, stats[control]["correct"], CONFIDENCE, RESAMPLES, seed=cfg.train.seed)
        out[f"clip1_diff_vs_{key}"] = ci.as_dict()
        out[f"gflops_reduction_vs_{key}"] = 1 - by["VA-RED²"]["gflops_avg"] / by[control]["gflops_avg"]
    s = stats["VA-RED²"]
    out["policy"] = {"layers": s["layers"], "temporal_fraction": s["temporal"].mean(0).tolist(),
                     "channel_fraction": s["channel"].mean(0).tolist()}
    speed_clips = torch.stack([val[i][0] for i in range(min(16, len(val)))])
    return out, {"dynamic": models["VA-RED²"], "static": models["static, continued (a)"], "clips": speed_clips}


def print_accuracy(acc: dict, cfg: ExperimentConfig) -> None:
    print(f"\nVA-RED² benchmark: {cfg.model.backbone} w{cfg.model.width_mult:g}, {cfg.data.clip_len}x"
          f"{cfg.data.crop_size}², {acc['eval_clips']} val clips (same clips for every model)")
    print(comparison_table([{**r, "model": f"{r['model']} ({r['epochs']} ep.)"} for r in acc["rows"]]))
    for key, control in (("continued", "(a)"), ("scratch", "(b)")):
        ci = acc[f"clip1_diff_vs_{key}"]
        print(f"VA-RED² vs static {control}: GFLOPs {-acc[f'gflops_reduction_vs_{key}']:+.1%}, clip-1 "
              f"{ci['diff']:+.4f} ({ci['confidence']:.0%} paired bootstrap interval {ci['low']:+.4f} .. "
              f"{ci['high']:+.4f}, {ci['samples']} clips)")
    curve = " ".join(f"{c['epoch']}:{c['val_clip_top1']:.3f}" for c in acc["learning_curve"]
                     if c["val_clip_top1"] is not None)
    print(f"static from scratch, val clip-1 after each epoch (the runs' val split): {curve or '–'}")


# ---- speed ----------------------------------------------------------------------------------

def resolve_device(name: str, smoke: bool) -> tuple[torch.device, bool]:
    """``(device, dry_run)``: ``cuda`` without CUDA is a dry run on CPU under ``--smoke-test``
    and an error otherwise."""
    if name == "cpu":
        return torch.device("cpu"), False
    if torch.cuda.is_available():
        return torch.device("cuda"), False
    if smoke:
        return torch.device("cpu"), True
    raise ValueError("--device cuda: no CUDA device (torch.cuda.is_available() is False); "
                     "add --smoke-test for a dry run on CPU")


def timing_plan(device: torch.device, tiny: bool, batch: int) -> dict:
    """Rounds, warm-up batches, minimum time per measurement and clips per pass: one pass of
    16 clips at batch 16, repeated batch-1 forwards on 4 clips until the minimum time."""
    if tiny:
        return {"rounds": 2, "warmup": 1, "min_time_s": 0.0, "clips": batch}
    if device.type == "cuda":
        return {"rounds": 5, "warmup": 5, "min_time_s": 1.0, "clips": 16 if batch > 1 else 4}
    return {"rounds": 5 if batch == 1 else 3, "warmup": 1, "min_time_s": 2.0 if batch == 1 else 0.0,
            "clips": 16 if batch > 1 else 4}


def _convert(model: nn.Module, device: torch.device, dtype: str) -> nn.Module:
    """The inference copy both sides are timed as (one-frame convs on the 2-D path, BatchNorm
    folded: ``analysis.inference_copy``, as the job's report times them), on ``device`` in ``dtype``."""

    model = inference_copy(model).to(device)
    return model.half() if dtype == "fp16" else model


def _gflops(model: nn.Module, clips: torch.Tensor) -> torch.Tensor:
    with torch.no_grad(), CostMeter(model) as meter:
        model(clips)
    return meter.per_sample_macs / 1e9


def time_table(static: nn.Module, dynamic: nn.Module, entries: dict, clips: torch.Tensor, batch: int,
               plan: dict) -> dict[str, float]:
    """Median clips/s of ``static`` and of ``dynamic`` under each ``entries`` decision
    (key -> ``force_policy`` argument, None: its own gates), interleaved."""

    models = {"static": static, **{key: dynamic for key in entries}}
    setup = {key: (lambda p=policy: force_policy(dynamic, p)) for key, policy in entries.items()}
    return compare_throughput(models, clips[:plan["clips"]], rounds=plan["rounds"], batch_size=batch,
                              min_time_s=plan["min_time_s"], statistic="median", warmup=plan["warmup"],
                              setup=setup)


def speed_rows(speed: dict[str, float], static_gflops: float, gflops: dict[str, float], labels: dict) -> dict:
    rows = {}
    for key, g in gflops.items():
        ratio, speedup = static_gflops / g, speed[key] / speed["static"]
        rows[key] = {"label": labels[key], "gflops": g, "static_gflops": static_gflops, "gflops_ratio": ratio,
                     "static_clips_per_s": speed["static"], "dynamic_clips_per_s": speed[key], "speedup": speedup,
                     "speed_fraction": speedup / ratio, "time_ratio": speed["static"] / speed[key]}
    return rows


def speed_tables(device: torch.device, dtypes: tuple[str, ...], tiny: bool, trained: dict | None) -> dict:
    """The forced-choice tables (untrained, full width; tiny under a smoke test) and the trained
    policy's (its own size), for every dtype and batch size."""

    width, clip = SMOKE_SIZE if tiny else FULL_SIZE
    torch.manual_seed(0)
    static = build_backbone("r2plus1d_18", width_mult=width, num_classes=400).eval()
    dynamic = make_dynamic(build_backbone("r2plus1d_18", width_mult=width, num_classes=400), "r2plus1d_18",
                           VaredConfig(search_space=3), (3, *clip)).eval()
    dynamic.load_state_dict(static.state_dict(), strict=False)  # same weights; gates keep their init
    clips = torch.randn(max(BATCHES), 3, *clip)
    static_gflops = float(_gflops(static, clips[:1]))
    gflops = {}
    for key, policy, _ in CHOICES:
        with force_policy(dynamic, policy):
            gflops[key] = float(_gflops(dynamic, clips[:1]))
    labels = {key: label for key, _, label in CHOICES}
    out = {"forced": {"backbone": f"r2plus1d_18 w{width:g}", "clip": list(clip), "tables": []}}
    if trained is not None:
        t_static = trained["static"]
        t_dynamic, t_clips = trained["dynamic"], trained["clips"]
        t_static_gflops = float(_gflops(t_static, t_clips[:1]))
        t_gflops = float(_gflops(t_dynamic, t_clips).mean())  # the gates decide per clip
        out["trained"] = {"backbone": "trained VA-RED² vs static control (a), their own width",
                          "clip": list(t_clips.shape[2:]), "clips": len(t_clips), "tables": []}
    for dtype in dtypes:
        for batch in BATCHES:
            plan = timing_plan(device, tiny, batch)
            x = clips.to(device)
            x = x.half() if dtype == "fp16" else x
            speed = time_table(_convert(static, device, dtype), _convert(dynamic, device, dtype),
                               {key: policy for key, policy, _ in CHOICES}, x, batch, plan)
            out["forced"]["tables"].append({"dtype": dtype, "batch": batch, **plan,
                                            "rows": speed_rows(speed, static_gflops, gflops, labels)})
            if trained is not None:
                x = t_clips.to(device)
                x = x.half() if dtype == "fp16" else x
                t_plan = {**plan, "clips": max(plan["clips"], batch)}
                speed = time_table(_convert(t_static, device, dtype), _convert(t_dynamic, device, dtype),
                                   {"trained": None}, x, batch, t_plan)
                out["trained"]["tables"].append({"dtype": dtype, "batch": batch, **t_plan, "rows": speed_rows(
                    speed, t_static_gflops, {"trained": t_gflops}, {"trained": "trained policy"})})
    return out


def print_speed(speed: dict, device: torch.device, dry_run: bool) -> None:
    mark = "DRY RUN (no CUDA: the GPU tables' code on CPU at tiny sizes; the numbers mean nothing) — " \
        if dry_run else ""
    for kind in ("forced", "trained"):
        if kind not in speed:
            continue
        part = speed[kind]
        what = "untrained, forced choices" if kind == "forced" else "trained gates"
        print(f"\n{mark}Speed on {device.type}, {part['backbone']}, {'x'.join(map(str, part['clip']))} "
              f"({what}; both as inference copies: 2-D path, BN folded; median clips/s of interleaved rounds, "
              f"{torch.get_num_threads()} CPU threads):")
        lines = []
        for table in part["tables"]:
            for row in table["rows"].values():
                lines.append([table["dtype"], str(table["batch"]), row["label"], f"{row['gflops']:.3f}",
                              f"{row['gflops_ratio']:.2f}", f"{row['static_clips_per_s']:.2f}",
                              f"{row['dynamic_clips_per_s']:.2f}", f"{row['speedup']:.2f}",
                              f"{row['speed_fraction']:.2f}", f"{row['time_ratio']:.2f}"])
        print(format_table(["dtype", "batch", "choice", "GFLOPs", "GFLOPs ratio", "static clips/s",
                            "dynamic clips/s", "speed-up", "fraction", "time ratio"], lines))


# ---- targets ----------------------------------------------------------------------------------

def target(name: str, value: float, bound: float, direction: str) -> dict:
    met = value >= bound if direction == "max" else value <= bound
    return {"name": name, "value": value, "target": bound, "direction": direction, "met": bool(met)}


def accuracy_targets(acc: dict) -> list[dict]:
    return [target("gflops_reduction_vs_continued_static", acc["gflops_reduction_vs_continued"],
                   TARGET_GFLOPS_REDUCTION, "max"),
            target("clip1_diff_ci95_low_vs_continued_static", acc["clip1_diff_vs_continued"]["low"],
                   TARGET_CLIP1_CI_LOW, "max")]


def speed_targets(speed: dict, device: str) -> list[dict]:
    """The speed targets of the requested ``device`` (a dry run gets cuda's): CPU at every batch
    size; CUDA at batch-16 fp16 as on CPU, and "all" within 10% of static at batch 1."""
    out = []
    for kind in ("forced", "trained"):
        for table in speed.get(kind, {}).get("tables", []):
            where = f"{device}_{table['dtype']}_b{table['batch']}"
            main = device == "cpu" or (table["dtype"] == "fp16" and table["batch"] == 16)
            for key, row in table["rows"].items():
                if key == "all":
                    if main:
                        out.append(target(f"{where}_all_time_over_static", row["time_ratio"], TARGET_ALL_TIME, "min"))
                    if device == "cuda" and table["batch"] == 1:
                        out.append(target(f"{where}_all_time_over_static", row["time_ratio"],
                                          TARGET_ALL_TIME_GPU_B1, "min"))
                elif main:
                    out.append(target(f"{where}_{key}_speedup_over_gflops_ratio", row["speed_fraction"],
                                      TARGET_SPEED_FRACTION, "max"))
    return out


# ---- entry point --------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    p = bench_parser(__doc__.splitlines()[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="where the speed tables run (cuda: fp32 and fp16; without CUDA only with --smoke-test, "
                        "as a dry run on CPU)")
    p.add_argument("--speed-only", action="store_true",
                   help="skip training: the forced-choice speed tables only (no accuracy rows, no trained policy)")
    p.add_argument("--eval-clips", type=int, metavar="N",
                   help=f"synthetic val clips every model is measured on (default {EVAL_CLIPS}; smoke "
                        f"{SMOKE_EVAL_CLIPS}); a real dataset's val split is measured whole")
    args = p.parse_args(argv)
    # bad input (config, dataset, storage, a missing CUDA device) is found before Ray starts: one line, exit 2
    return exit_on_bad_input("bench_vared", lambda: run(args))


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(2)
    device, dry_run = resolve_device(args.device, args.smoke_test)
    dtypes = ("fp32", "fp16") if args.device == "cuda" else ("fp32",)
    eval_clips = args.eval_clips or (SMOKE_EVAL_CLIPS if args.smoke_test else EVAL_CLIPS)
    if eval_clips < 1:
        raise ValueError(f"--eval-clips must be >= 1, got {eval_clips}")
    acc, trained_models, epochs = None, None, None
    with tempfile.TemporaryDirectory(prefix="bench-vared-") as tmp:
        cfg = bench_config(EMBEDDED + BENCH, SMOKE, args, tmp)
        if not args.speed_only:
            trained = train_models(cfg)
            epochs = {"vared_stages": dict(zip((s.name for s in trained["stages"]), trained["epochs"])),
                      "continued": {name: e for name, e, _ in trained["continued"]},
                      "scratch": sum(trained["epochs"])}
            acc, trained_models = accuracy_cost(cfg, trained, eval_clips)
    speed = speed_tables(device, dtypes, args.smoke_test, trained_models)
    speed.update(device=device.type, requested_device=args.device, dry_run=dry_run, dtypes=list(dtypes),
                 statistic="median", fp16="model.half() and inputs.half() (no autocast)")
    if acc:
        print_accuracy(acc, cfg)
    print_speed(speed, device, dry_run)
    targets = (accuracy_targets(acc) if acc else []) + speed_targets(speed, args.device)
    print(("\nTargets (DRY RUN: not a measurement)" if dry_run else "\nTargets") + ":")
    print_targets(targets)
    report = {
        "benchmark": "vared",
        "config": {"backbone": cfg.model.backbone, "width_mult": cfg.model.width_mult,
                   "clip": [cfg.data.clip_len, cfg.data.crop_size, cfg.data.crop_size], "epochs": epochs,
                   "search_space": cfg.vared.search_space, "efficiency_weight": cfg.vared.efficiency_weight,
                   "seed": cfg.train.seed, **bench_run_config(args),
                   "threads": torch.get_num_threads(),
                   "device": args.device, "dry_run": dry_run, "speed_only": args.speed_only,
                   "eval_clips": None if args.speed_only else acc["eval_clips"],
                   "val_videos_per_epoch": cfg.data.synthetic_val_videos, "bootstrap_resamples": RESAMPLES,
                   "cudnn_benchmark": torch.backends.cudnn.benchmark},
        "results": {**(acc or {}), "speed": speed},
        "targets": targets,
    }
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
