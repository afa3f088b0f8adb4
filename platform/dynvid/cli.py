"""``dynvid`` command line.

    dynvid data synth --task actions|detection|segmentation --out DIR --videos N
    dynvid data inspect PATH            counts, classes, durations, unreadable files, duplicates
    dynvid cost MODEL --input 3x16x112x112
    dynvid train [--config FILE] [--set key=value ...]
    dynvid models list [NAME] [--tracking-uri URI] [--json]
    dynvid models promote NAME VERSION --alias ALIAS [--tracking-uri URI]
    dynvid sweep run SEARCH_SPACE.yaml [--set key=value ...] [--storage-path P] [--tracking-uri URI]
    dynvid sweep show RUN [--all]       the Pareto front of a finished sweep (name or folder)

``models`` talks to the MLflow registry at ``--tracking-uri``, else ``$MLFLOW_TRACKING_URI``,
else ``sqlite:///runs/mlflow.db`` (relative to the current folder).

Errors in user input (missing paths, bad annotations, unknown names) print one line
naming the culprit and exit with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from dynvid.config import ConfigError, ExperimentConfig, apply_overrides, load_config
from dynvid.data.errors import DatasetError
from dynvid.data.synth_writer import write_synthetic
from dynvid.data.synthetic import DEFAULT_SENSOR_NOISE, SceneConfig
from dynvid.data.video_io import VideoDecodeError, read_clip
from dynvid.engine.jobs import exit_on_bad_input
from dynvid.engine.storage import StorageError
from dynvid.engine.sweep_report import front_table, load_report, summary
from dynvid.engine.tracking import TrackingError, redact_uri
from dynvid.task import method_names, presets

__all__ = ["main"]


def _parse_shape(text: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(x) for x in text.lower().replace("×", "x").split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a shape like 3x16x112x112, got {text!r}") from None
    if not dims or any(d <= 0 for d in dims):
        raise argparse.ArgumentTypeError(f"shape dims must be positive, got {text!r}")
    return dims


def _parse_size(text: str) -> tuple[int, int]:
    dims = _parse_shape(text)
    if len(dims) != 2:
        raise argparse.ArgumentTypeError(f"expected HxW, got {text!r}")
    return dims  # type: ignore[return-value]


# ---- data synth ---------------------------------------------------------------------------

def cmd_data_synth(args: argparse.Namespace) -> int:
    height, width = args.size
    noise_std, shot_noise = DEFAULT_SENSOR_NOISE.get(args.task, (0.0, 0.0))  # as synthetic:<task> renders
    noise_std = noise_std if args.noise_std is None else args.noise_std
    shot_noise = shot_noise if args.shot_noise is None else args.shot_noise
    scene = SceneConfig(height=height, width=width, num_frames=args.frames, fps=args.fps,
                        noise_std=noise_std, shot_noise=shot_noise)
    t0 = time.perf_counter()

    def progress(done: int, total: int) -> None:
        if done == total or done % max(1, total // 20) == 0:
            rate = done / max(time.perf_counter() - t0, 1e-9)
            print(f"\r[dynvid] {args.task}: {done}/{total} videos ({rate:.1f}/s)", end="", flush=True)

    written = write_synthetic(args.task, args.out, args.videos, seed=args.seed, cfg=scene,
                              val_fraction=args.val_fraction, progress=progress)
    print(f"\n[dynvid] wrote {args.task} dataset to {args.out} in {time.perf_counter() - t0:.1f}s")
    print(json.dumps(written, indent=2, default=str))
    return 0


# ---- data inspect -------------------------------------------------------------------------

def _inspect_kinetics(root: Path, decode: bool, train_split: str) -> dict:
    from dynvid.data.kinetics import KineticsDataset, find_annotation  # imports torch

    folder = root.parent if root.is_file() else root
    if root.is_file():
        annotations = [root]
    else:
        annotations = sorted(p for p in root.iterdir() if p.suffix == ".csv" or p.name.endswith("_list.txt"))
        # a split given both as CSV and as list file is reported once (the CSV)
        stems = {p.stem for p in annotations if p.suffix == ".csv"}
        annotations = [p for p in annotations if p.suffix == ".csv" or p.name[: -len("_list.txt")] not in stems]
    if not annotations:
        raise DatasetError(f"{root}: no Kinetics CSV ({{split}}.csv) or list file ({{split}}_list.txt) found")
    # Class indices of every split come from the training split, as in training.
    train_annotation = find_annotation(folder, train_split)
    report: dict = {"path": str(root), "format": "kinetics", "splits": {}}
    for ann in annotations:
        # Building the dataset probes every video (missing and unreadable ones are recorded).
        ds = KineticsDataset(ann, max_bad_fraction=1.0, train_annotation=train_annotation)
        unreadable = dict(ds.unreadable_videos)
        durations = []
        per_class = [0] * ds.num_classes
        for i, rec in enumerate(ds.records):
            info = ds.info(i)
            if decode:
                try:
                    read_clip(rec.path, [0, max(0, info.num_frames - 1)], info=info)
                except VideoDecodeError as exc:
                    unreadable[rec.path] = exc.reason
                    continue
                if (i + 1) % 200 == 0:
                    print(f"\r[dynvid] {ann.name}: decoded {i + 1}/{len(ds.records)}", end="", file=sys.stderr, flush=True)
            durations.append(info.duration)
            per_class[rec.label] += 1
        split = ann.stem[: -len("_list")] if ann.name.endswith("_list.txt") else ann.stem
        report["splits"][split] = {
            "annotation": str(ann),
            "videos_listed": len(ds.records) + len(ds.missing_videos) + len(ds.unreadable_videos),
            "videos_found": len(ds.records) + len(ds.unreadable_videos),
            "missing": len(ds.missing_videos),
            "missing_examples": ds.missing_videos[:10],
            "duplicates": len(ds.duplicates),
            "duplicate_examples": [{"line": d.line, "repeats_line": d.first_line, "video": d.video}
                                   for d in ds.duplicates[:10]],
            "readable": len(durations),
            "unreadable": unreadable,
            "num_classes": ds.num_classes,
            "videos_per_class": dict(zip(ds.classes, per_class)),
            "duration_s": _stats(durations),
        }
    return report


def _stats(values: list[float]) -> dict:
    if not values:
        return {"count": 0}
    return {"count": len(values), "min": round(min(values), 3), "mean": round(statistics.fmean(values), 3),
            "median": round(statistics.median(values), 3), "max": round(max(values), 3)}


def _inspect_detection(root: Path) -> dict:
    from dynvid.data.coco_vid import CocoVideoDetection  # imports torch

    report: dict = {"path": str(root), "format": "coco-vid", "splits": {}}
    for ann in sorted((root / "annotations").glob("*.json")):
        ds = CocoVideoDetection(ann, max_bad_fraction=1.0)
        gt = ds.to_coco_gt()
        bad = ds.verify_images()
        lengths = [v.get("length", 0) for v in ds.videos]
        report["splits"][ann.stem] = {
            "annotation": str(ann), "videos": len(ds.videos), "images": len(gt["images"]),
            "boxes": len(gt["annotations"]), "categories": [c["name"] for c in ds.categories],
            "frames_per_video": _stats([float(n) for n in lengths]), "unreadable": bad,
        }
    return report


def _inspect_segmentation(root: Path) -> dict:
    from dynvid.data.segmentation import VideoSegmentation  # imports torch

    report: dict = {"path": str(root), "format": "video-segmentation", "splits": {}}
    for lst in sorted(root.glob("*_videos.txt")):
        split = lst.name[: -len("_videos.txt")]
        ds = VideoSegmentation(root, split=split, mode="test", max_bad_fraction=1.0)
        report["splits"][split] = {"videos": len(ds.videos), "frames": len(ds), "classes": ds.classes}
    return report


def cmd_data_inspect(args: argparse.Namespace) -> int:
    root = Path(args.path)
    if not root.exists():
        raise DatasetError(f"dataset path not found: {root}")
    if root.is_dir() and (root / "annotations").is_dir():
        report = _inspect_detection(root)
    elif root.is_dir() and (root / "labels").is_dir():
        report = _inspect_segmentation(root)
    else:
        report = _inspect_kinetics(root, args.decode, args.train_split)
    print(json.dumps(report, indent=2))
    bad = sum(len(s.get("unreadable", {})) for s in report["splits"].values())
    if bad:
        print(f"[dynvid] {bad} unreadable file(s), listed under 'unreadable'", file=sys.stderr)
    dups = sum(s.get("duplicates", 0) for s in report["splits"].values())
    if dups:
        print(f"[dynvid] {dups} duplicate annotation row(s), dropped in training; examples under "
              f"'duplicate_examples'", file=sys.stderr)
    return 0


# ---- cost ---------------------------------------------------------------------------------

def cmd_cost(args: argparse.Namespace) -> int:
    from dynvid.backbones import build_backbone  # imports torch
    from dynvid.metrics.cost import model_cost  # imports torch

    model = build_backbone(args.model, num_classes=args.num_classes, width_mult=args.width_mult)
    cost = model_cost(model, args.input, batch_size=args.batch_size)
    shape = "x".join(map(str, args.input))
    print(f"{args.model} (width {args.width_mult:g}, {args.num_classes} classes) at {shape}: "
          f"{cost['gflops']:.3f} GFLOPs (= GMACs) per clip, {cost['params'] / 1e6:.2f} M params")
    if args.json:
        print(json.dumps({"model": args.model, "input": list(args.input), **cost}))
    return 0


# ---- train --------------------------------------------------------------------------------

def cmd_train(args: argparse.Namespace) -> int:
    return exit_on_bad_input("dynvid train", lambda: _train(args))


def _train(args: argparse.Namespace) -> int:
    from dynvid.engine.trainer import fit  # imports Ray, torch

    named = presets(args.method)
    preset = "smoke" if args.smoke_test else (args.preset or ("embedded" if "embedded" in named else "none"))
    if preset != "none" and preset not in named:
        raise ValueError(f"--preset {preset}: {args.method} has presets {', '.join(sorted(named)) or 'none'}")
    base = apply_overrides(ExperimentConfig(), named.get(preset, []))
    overrides = args.overrides + ([f"train.mlflow_tracking_uri={args.tracking_uri}"] if args.tracking_uri else [])
    cfg = load_config(ExperimentConfig, args.config, overrides, base=base)
    print(f"[dynvid] train {args.method} (preset {preset})", flush=True)
    result = fit(cfg, method=args.method, init_from=args.init_from)
    print(json.dumps({"run_name": result.run_name, "metrics": result.metrics}, indent=2, default=str))
    return 0


# ---- models (MLflow registry) -------------------------------------------------------------

def _registry_uri(args: argparse.Namespace) -> str:
    from dynvid.engine.registry import default_tracking_uri  # imports torch

    return args.tracking_uri or default_tracking_uri()


def cmd_models_list(args: argparse.Namespace) -> int:
    from dynvid.engine.registry import list_models  # imports torch

    uri = _registry_uri(args)
    rows = list_models(uri, args.name)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"[dynvid] no registered models at {redact_uri(uri)}")
        return 0
    header = ("NAME", "VERSION", "ALIASES", "ACCURACY", "GFLOPS", "CREATED", "RUN")
    table = [header] + [
        (r["name"], str(r["version"]), ",".join(r["aliases"]) or "-",
         f"{r['metrics']['accuracy']:.4f}" if "accuracy" in r["metrics"] else "-",
         f"{r['metrics']['gflops']:.3f}" if "gflops" in r["metrics"] else "-",
         r["created"], r["run_id"] or "-")
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return 0


def cmd_models_promote(args: argparse.Namespace) -> int:
    from dynvid.engine.registry import list_models, promote  # imports torch

    uri = _registry_uri(args)
    before = [r["version"] for r in list_models(uri, args.name) if args.alias in r["aliases"]]
    promote(uri, args.name, args.version, args.alias)
    moved = f" (was version {before[0]})" if before and before[0] != args.version else ""
    print(f"[dynvid] {args.name}@{args.alias} -> version {args.version}{moved}")
    return 0


# ---- sweeps (Ray Tune) ----------------------------------------------------------------------

def cmd_sweep_run(args: argparse.Namespace) -> int:
    from dynvid.engine.sweep import run_sweep  # imports torch
    from dynvid.engine.sweep_spec import load_spec  # imports torch

    spec = load_spec(args.spec, args.overrides)
    uri = args.tracking_uri if args.tracking_uri else "default"
    result = run_sweep(spec, storage_path=args.storage_path, tracking_uri=None if args.no_tracking else uri,
                       smoke_test=args.smoke_test, seed=args.seed)
    return 0 if any(t.error is None for t in result.trials) else 1


def cmd_sweep_show(args: argparse.Namespace) -> int:
    from dynvid.engine.sweep import sweep_dir  # imports torch

    path = Path(args.run)
    if not path.exists():
        path = Path(sweep_dir(args.storage_path)) / args.run
        if not path.exists():
            known = sorted(p.name for p in Path(sweep_dir(args.storage_path)).glob("*") if p.is_dir())
            raise FileNotFoundError(f"no sweep {args.run!r} (a folder, or a name under {sweep_dir(args.storage_path)}: "
                                    f"{', '.join(known) if known else 'none yet'})")
    data = load_report(path)
    print(f"sweep {data['name']}: {summary(data)}")
    print(front_table(data, only_front=not args.all))
    report = Path(data["path"]) / "report"
    print(f"report: {report / 'report.html'} · {report / 'front.png'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dynvid", description="Input-adaptive video networks on Ray.")
    sub = p.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="datasets").add_subparsers(dest="data_command", required=True)
    s = data.add_parser("synth", help="write the synthetic dataset to disk in real formats")
    s.add_argument("--task", choices=["actions", "detection", "segmentation"], default="actions")
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--videos", type=int, default=100, help="number of videos (all splits)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--size", type=_parse_size, default=(128, 171), metavar="HxW", help="frame size (default 128x171)")
    s.add_argument("--frames", type=int, default=64, help="frames per video")
    s.add_argument("--fps", type=float, default=25.0)
    s.add_argument("--val-fraction", type=float, default=0.2)
    s.add_argument("--noise-std", type=float, default=None, metavar="SIGMA",
                   help="sensor read noise in grey levels (default: as synthetic:<task>, 2.0 for segmentation, else 0)")
    s.add_argument("--shot-noise", type=float, default=None, metavar="GAIN",
                   help="sensor shot noise gain, variance GAIN*v (default: 0.03 for segmentation, else 0)")
    s.set_defaults(func=cmd_data_synth)

    i = data.add_parser("inspect", help="counts, classes, durations, unreadable files and duplicate rows of a dataset")
    i.add_argument("path", help="Kinetics-style folder / CSV / list file, COCO-VID folder, or segmentation folder")
    i.add_argument("--decode", action="store_true", help="also decode the first and last frame of every video")
    i.add_argument("--train-split", default="train", metavar="SPLIT",
                   help="Kinetics: the split whose labels define every split's class indices, as data.train_split "
                        "(default train; classes.txt wins when present)")
    i.set_defaults(func=cmd_data_inspect)

    c = sub.add_parser("cost", help="GFLOPs (MACs) and parameters of a backbone")
    c.add_argument("model", help="backbone name, e.g. r2plus1d_18")
    c.add_argument("--input", type=_parse_shape, default=(3, 16, 112, 112), metavar="CxTxHxW")
    c.add_argument("--width-mult", type=float, default=1.0)
    c.add_argument("--num-classes", type=int, default=400)
    c.add_argument("--batch-size", type=int, default=1)
    c.add_argument("--json", action="store_true", help="also print a JSON line")
    c.set_defaults(func=cmd_cost)

    t = sub.add_parser("train", help="train a method with Ray Train")
    t.add_argument("--method", default="static", choices=method_names(),
                   help="the method to train, all its stages (default static)")
    t.add_argument("--preset", help="the method's named base configuration (default: embedded, the laptop run on "
                   "the embedded data, where the method has one; none: the config defaults)")
    t.add_argument("--smoke-test", action="store_true", help="the method's smoke preset: a tiny run of every stage")
    t.add_argument("--config")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    t.add_argument("--init-from", metavar="URI", help="checkpoint (directory or s3://) the first stage starts from")
    t.add_argument("--tracking-uri", metavar="URI", help="MLflow tracking URI (default sqlite:///runs/mlflow.db)")
    t.set_defaults(func=cmd_train)

    models = sub.add_parser("models", help="MLflow model registry: list versions, move aliases").add_subparsers(
        dest="models_command", required=True)
    uri_help = "MLflow tracking/registry URI (default: $MLFLOW_TRACKING_URI, else sqlite:///runs/mlflow.db)"
    ml = models.add_parser("list", help="registered versions with their aliases and metrics")
    ml.add_argument("name", nargs="?", help="one registered model (default: all)")
    ml.add_argument("--tracking-uri", help=uri_help)
    ml.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ml.set_defaults(func=cmd_models_list)
    mp = models.add_parser("promote", help="point an alias (e.g. production) at a version")
    mp.add_argument("name", help="registered model name")
    mp.add_argument("version", type=int, help="version number")
    mp.add_argument("--alias", required=True, help="alias to set or move, e.g. production")
    mp.add_argument("--tracking-uri", help=uri_help)
    mp.set_defaults(func=cmd_models_promote)

    sweep = sub.add_parser("sweep", help="Ray Tune sweeps: accuracy-efficiency Pareto fronts").add_subparsers(
        dest="sweep_command", required=True)
    sr = sweep.add_parser("run", help="run a sweep from a search_spaces/*.yaml file")
    sr.add_argument("spec", help="sweep file, e.g. search_spaces/vared.yaml")
    sr.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a key of the sweep file, e.g. budget.num_samples=4 or init_from=URI")
    sr.add_argument("--storage-path", help="where sweeps go (<storage>/sweeps/NAME; default: train.storage_path)")
    sr.add_argument("--tracking-uri", help="MLflow tracking URI (default: the config's, sqlite:///runs/mlflow.db)")
    sr.add_argument("--no-tracking", action="store_true", help="do not log to MLflow")
    sr.add_argument("--smoke-test", action="store_true", help="the method's tiny smoke budget")
    sr.add_argument("--seed", type=int, default=0, help="seed of the random / optuna search")
    sr.set_defaults(func=cmd_sweep_run)
    ss = sweep.add_parser("show", help="the Pareto front of a finished sweep as a table")
    ss.add_argument("run", help="sweep name (under <storage>/sweeps) or its folder")
    ss.add_argument("--storage-path", default="runs", help="storage path the sweep ran with (default: runs)")
    ss.add_argument("--all", action="store_true", help="every trial, not just the front")
    ss.set_defaults(func=cmd_sweep_show)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (DatasetError, ConfigError, FileNotFoundError, TrackingError, StorageError) as exc:
        print(f"dynvid: error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # unknown backbone/method names and similar user errors
        print(f"dynvid: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
