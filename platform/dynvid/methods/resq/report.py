"""Frame quantization vs ResQ vs Dynamic-ResQ (Sec. 5, Fig. 5 / Fig. 7): the job's report and the
benchmark's rows.

:func:`compare` evaluates one checkpoint over every frame of the val videos with a keyframe every
T frames, PTQ-calibrated on the same c training frames for every configuration:

- ``float``: the network in floating point (BOPs at 32 × 32 bits);
- for a static configuration such as ``W8A8->W4A4``: ``frame W8A8->W4A4`` (frame quantization:
  keyframes at W8A8, the other frames at W4A4 on their own) and ``ResQ W8A8->W4A4`` (residuals
  at W4A4): the same BOPs by construction;
- for a pool such as ``W8A8->W8A{0,4,8}``: ``Dynamic-ResQ W8A8->W8A{0,4,8}`` (policy cost included);
- with ``periods``: the ResQ (or Dynamic-ResQ) row of a configuration at other keyframe periods
  (``… T=<T>``), each PTQ-calibrated on clips of that T: the mIoU–BOPs curves of Fig. 5, which
  sweeps T. :func:`curve_value` reads such a curve at a given BOPs.

Rows hold mIoU, per-class IoU, GBOPs per frame (avg / min / max), GMACs per frame and the period T.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence

import torch
from torch import nn

from dynvid.config import ExperimentConfig
from dynvid.engine.checkpoint import load_checkpoint
from dynvid.engine.storage import fetch_checkpoint
from dynvid.methods.resq import IGNORE_INDEX, num_outputs
from dynvid.methods.resq.evaluation import bit_width_maps, evaluate_videos, quantized_copy, save_bit_width_figure
from dynvid.methods.resq.layers import parse_bits
from dynvid.methods.resq.wrap import quant_layers
from dynvid.tables import format_table
from dynvid.task import Stage

__all__ = ["compare", "comparison_table", "curve_value", "job_report", "load_model", "row_name", "slug"]


def slug(name: str) -> str:
    """A metric-safe name: ``"ResQ W8A8->W4A4"`` → ``"ResQ_W8A8_W4A4"``."""
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_")


def row_name(scheme: str, bits: str) -> str:
    return {"frame": "frame", "resq": "ResQ", "dynamic": "Dynamic-ResQ"}[scheme] + f" {bits.replace(' ', '')}"


def load_model(task, cfg: ExperimentConfig, checkpoint: str) -> nn.Module:
    """The network of a ``float`` or ``qat`` checkpoint (local path or URI), in eval mode."""

    ckpt = load_checkpoint(fetch_checkpoint(checkpoint))
    stage_name = ckpt["metadata"]["stage"]
    trained = ckpt["config"].get("resq", {})
    if trained.get("network", cfg.resq.network) != cfg.resq.network:
        raise ValueError(f"ResQ checkpoint {checkpoint} holds resq.network={trained['network']!r} "
                         f"(config: {cfg.resq.network!r}): run with its settings")
    stage = next((s for s in task.stages if s.name == stage_name), None)
    if stage is None:  # a QAT checkpoint read by a task configured without QAT: rebuild its wrapping

        stage = Stage(stage_name)
    if stage_name == "qat":
        cfg = _with_bits(cfg, trained.get("bits", cfg.resq.bits))
    model = task.build_model(cfg, task.num_classes_from_state(ckpt["model"]), stage)
    model.load_state_dict(ckpt["model"])
    return model.eval()


def _with_bits(cfg: ExperimentConfig, bits: str) -> ExperimentConfig:
    import dataclasses

    return dataclasses.replace(cfg, resq=dataclasses.replace(cfg.resq, bits=bits))


def _with_period(cfg: ExperimentConfig, period: int) -> ExperimentConfig:
    import dataclasses

    return dataclasses.replace(cfg, resq=dataclasses.replace(cfg.resq, period=period))


def curve_value(points: Sequence[tuple[float, float]], x: float) -> float | None:
    """The piecewise-linear curve through ``(x, y)`` points (e.g. GBOPs, mIoU of one configuration
    over several T) read at ``x``; None outside the points' x range (no extrapolation). Points at
    the same x are averaged."""
    by_x: dict[float, list[float]] = {}
    for px, py in points:
        by_x.setdefault(float(px), []).append(float(py))
    xs = sorted(by_x)
    if not xs or x < xs[0] or x > xs[-1]:
        return None
    ys = [sum(by_x[v]) / len(by_x[v]) for v in xs]
    for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
        if x0 <= x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return ys[0]  # a single point, at exactly its x


def compare(task, cfg: ExperimentConfig, checkpoint: str, bits: Sequence[str], say=print,
            maps_dir: str | None = None, taus: Sequence[float] = (),
            periods: dict[str, Sequence[int]] | None = None) -> dict:
    """Rows of Fig. 5 / Fig. 7 (see the module docstring) and, with ``maps_dir``, the bit-width
    map figure of the first pool configuration; ``taus``: more Dynamic-ResQ rows at these
    thresholds (``… τ=<tau>``) besides ``resq.tau``'s; ``periods``: configuration (one of
    ``bits``) → more keyframe periods T to run its ResQ / Dynamic-ResQ row at (``… T=<T>``; a
    pool needs T >= 2). Returns ``{"rows", "maps"}``."""

    c = cfg.resq
    periods = dict(periods or {})
    unknown = [spec for spec in periods if spec not in bits]
    if unknown:
        raise ValueError(f"periods for {unknown}: not among the compared configurations {list(bits)}")
    for spec, ts in periods.items():
        if any(int(t) < (2 if parse_bits(spec)[2] else 1) for t in ts):
            raise ValueError(f"periods of {spec}: T >= 1 (a Dynamic-ResQ pool: T >= 2), got {list(ts)}")
    stage = task.stages[-1]

    def val_loader(period: int):
        _, val = task.datasets(stage.config(_with_period(cfg, period)), stage)  # folder windows: multiples of T
        return val, torch.utils.data.DataLoader(val, batch_size=max(1, cfg.data.batch_size),
                                                collate_fn=val.collate_fn)

    val, loader = val_loader(c.period)
    model = load_model(task, cfg, checkpoint)
    n = num_outputs(model)
    calibration = task.calibration(cfg)
    rows: dict[str, dict] = {}

    def run(name: str, net: nn.Module, scheme: str, config: str, period: int = c.period, data=loader) -> None:
        r = evaluate_videos(net, data, scheme, period, n, IGNORE_INDEX)
        r.update(bits=config, scheme=scheme, period=period)
        rows[name] = r
        say(f"[dynvid] {name}: mIoU {r['mIoU']:.4f}, {r['gbops_avg']:.2f} GBOPs/frame "
            f"(min {r['gbops_min']:.2f}, max {r['gbops_max']:.2f})")

    def sweep(spec: str, name: str) -> None:  # Fig. 5's curve: the configuration at other T
        for t in periods.get(spec, ()):
            t = int(t)
            if t == c.period:
                continue
            q_t = quantized_copy(model, spec, task.calibration(_with_period(cfg, t)), t, c.per_channel, c.tau,
                                 c.calib_candidates)
            run(f"{name} T={t}", q_t, "resq", spec, t, val_loader(t)[1])

    run("float", model, "float", "W32A32")
    maps = None
    for spec in bits:
        pool = parse_bits(spec)[2]
        q = quantized_copy(model, spec, calibration, c.period, c.per_channel, c.tau, c.calib_candidates)
        if pool is None:
            run(row_name("frame", spec), q, "frame", spec)
            run(row_name("resq", spec), q, "resq", spec)
            sweep(spec, row_name("resq", spec))
            continue
        run(row_name("dynamic", spec), q, "resq", spec)
        sweep(spec, row_name("dynamic", spec))
        for tau in taus:
            for layer in quant_layers(q):
                layer.tau = tau
            run(f"{row_name('dynamic', spec)} τ={tau:g}", q, "resq", spec)
            rows[f"{row_name('dynamic', spec)} τ={tau:g}"]["tau"] = tau
        for layer in quant_layers(q):
            layer.tau = c.tau
        if maps_dir and maps is None:
            video = val[0]["frames"][:max(2, c.map_frames)]
            figure = bit_width_maps(q, c.map_layer, video)
            os.makedirs(maps_dir, exist_ok=True)
            maps = save_bit_width_figure(video, figure, pool, os.path.join(maps_dir, f"bit_width_maps_{slug(spec)}.png"))
            shares = {b: float(sum((m == b).mean() for m in figure[1:]) / max(1, len(figure) - 1)) for b in pool}
            rows[row_name("dynamic", spec)]["map_bit_shares"] = {str(b): v for b, v in shares.items()}
            say(f"[dynvid] bit-width maps of {c.map_layer} ({spec}): {maps}; pixel shares "
                + ", ".join(f"A{b} {v:.2f}" for b, v in shares.items()))
    return {"rows": rows, "maps": maps}


def _shares(r: dict) -> str:
    shares = r.get("bit_shares")
    return " ".join(f"A{b} {v:.2f}" for b, v in shares.items()) if shares else "-"


def comparison_table(rows: dict[str, dict], markdown: bool = False) -> str:
    header = ["scheme", "T", "mIoU", "GBOPs avg", "min", "max", "GMACs/frame", "residual pixels by bits",
              "exactly 0"]
    body = [[name, str(r.get("period", "")), f"{r['mIoU']:.4f}", f"{r['gbops_avg']:.2f}", f"{r['gbops_min']:.2f}",
             f"{r['gbops_max']:.2f}", f"{r['gmacs_avg']:.3f}", _shares(r),
             f"{r['zero_residual_share']:.3f}" if "zero_residual_share" in r else "-"] for name, r in rows.items()]
    return format_table(header, body, markdown)


def job_report(task, cfg: ExperimentConfig, stages: list, out_dir: str) -> dict:
    """The last stage's network at every ``resq.report_bits`` configuration, and a bit-width map."""
    ckpts = [s.checkpoint_path for s in stages if s.checkpoint_path]
    if not ckpts:
        return {"metrics": {}, "table": "", "markdown": "", "artifacts": []}
    result = compare(task, cfg, ckpts[-1], cfg.resq.report_bits, maps_dir=out_dir)
    rows = result["rows"]
    metrics = {}
    for name, r in rows.items():
        metrics[f"{slug(name)}_mIoU"] = r["mIoU"]
        metrics[f"{slug(name)}_gbops_avg"] = r["gbops_avg"]
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "resq_report.json")
    with open(path, "w") as f:
        json.dump({"rows": rows, "period": cfg.resq.period, "tau": cfg.resq.tau, "checkpoint": ckpts[-1]}, f,
                  indent=2)
    videos = int(rows["float"]["videos"])
    how = "PTQ" if stages[-1].stage != "qat" else f"QAT at {cfg.resq.bits}, PTQ elsewhere"
    title = f"Frame quantization vs ResQ vs Dynamic-ResQ, {how}, T={cfg.resq.period}, {videos} val videos, every frame"
    artifacts = [path] + ([result["maps"]] if result["maps"] else [])
    return {"metrics": metrics, "table": f"{title}\n{comparison_table(rows)}",
            "markdown": f"### ResQ (Fig. 5 / Fig. 7)\n\n{comparison_table(rows, True)}", "artifacts": artifacts}
