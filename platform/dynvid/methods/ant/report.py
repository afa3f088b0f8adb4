"""Table 1 / Fig. 4 comparisons of ANT (Sec. 4): the job's report and the benchmark's rows.

:func:`compare` evaluates, over every frame of the val videos, with AP@[.5:.95], AP50,
amortized GMACs per frame, parameters and amortized single-core latency:

- ``D0 (static)``: the standalone network of stage 0, all ratios 6 (Table 1's D0), trained
  ``optim.epochs``: the paper's baseline, kept for reference;
- ``D0 (ANT weights)``: the stage-2 network's own backbone, neck and head at full width on
  every frame — the like-for-like D0 (issue 23): the same weights, epochs and BatchNorm
  statistics as ANT, which differs from it only by choosing widths and reusing key frames;
- ``NAS <budget>``: static subnets found by :func:`.nas.nas_search` under backbone-MAC
  budgets (Fig. 4's "D0 w/ NAS"), on the same stage-2 weights, each width normalized with
  the per-ratio BatchNorm statistics that ANT's widths use (not recalibrated per subnet:
  ANT's per-frame configurations cannot be, so neither are the baselines');
- ``ANT τ=<threshold>``: the stage-2 network with adaptive key frames at each threshold;
- ``ANT forced <ratios>`` and ``static <ratios> (gates' subnet)`` (with ``fusion_check``): ANT
  with every non-key frame forced to the widths its gates chose most often at
  ``ant.key_threshold`` (key frames, fusions and gates as ANT's), and that subnet as a static
  network: what the key frames, fusions and gates add at fixed widths, in AP and in
  milliseconds (:func:`fusion_effect`). The static one is a point of the static front, as the NAS rows
  are (``jobs/bench_ant.py``'s front targets count it);
- ``non-temporal``: the non-temporal dynamic network (Fig. 4's "NonTemp DN"), when given.

Every row runs the same code on an inference copy of its network with every BatchNorm folded
(:func:`~dynvid.backbones.fuse.fold_batchnorm`: stem, MBConv blocks at each width with that
width's statistics, BiFPN, head per level; issue 23) and, by default (``ant.channels_last``),
every weight in channels-last layout (:func:`~.model.inference_copy`): the fusions' key sides are
projected once per key frame (:meth:`~.model.ANTDetector.project_keys`), and nothing is
folded, laid out or compiled for one row and not for another. Parameters are counted on the
unfolded network.

Parameters: a static network counts the backbone up to its last MBConv stage (the sliced
weights of a subnet), the BiFPN and the head; ANT counts everything it may run (the whole
supernet, fusion modules and gates).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import torch
from torch.nn import functional as F

from dynvid.config import ExperimentConfig
from dynvid.engine.checkpoint import load_checkpoint
from dynvid.engine.storage import fetch_checkpoint
from dynvid.methods.ant import build_detector
from dynvid.methods.ant.evaluation import (FULL, AntMode, NonTemporalMode, StaticMode, amortized_latency, evaluate_modes,
                                          replay_modes)
from dynvid.methods.ant.model import ELASTIC, ANTDetector, inference_copy
from dynvid.methods.ant.nas import backbone_macs, nas_search
from dynvid.tables import format_table

__all__ = ["ARCHITECTURE", "SAME_WEIGHTS_D0", "compare", "comparison_table", "detector_params", "fusion_effect",
           "fusion_summary", "job_report", "load_model"]

SAME_WEIGHTS_D0 = "D0 (ANT weights)"
"""The like-for-like D0 row: ANT's own network at full width on every frame."""

ARCHITECTURE = ("image_size", "width_mult", "fpn_channels", "fpn_layers", "head_repeats")
"""``ant`` keys that shape the detector's weights: a checkpoint fixes them."""


def load_model(task, cfg: ExperimentConfig, checkpoint: str, temporal: bool | None = None,
               gates: bool = False) -> ANTDetector:
    """The detector of a checkpoint (local path or URI) in eval mode; a checkpoint of another
    architecture than ``cfg.ant`` is refused. ``temporal``: build the (non-)temporal network
    (a static or supernet checkpoint has no fusion weights: they stay untrained and unused).
    ``gates``: the rows need the trained gates (and fusions) of that network: a checkpoint
    without them is refused rather than measured with random ones."""

    ckpt = load_checkpoint(fetch_checkpoint(checkpoint))
    trained = ckpt["config"].get("ant", {})
    differ = [f"ant.{k}={trained[k]!r} (config: {getattr(cfg.ant, k)!r})" for k in ARCHITECTURE
              if k in trained and float(trained[k]) != float(getattr(cfg.ant, k))]
    if differ:
        raise ValueError(f"ANT checkpoint {checkpoint} was trained with {', '.join(differ)}: run with its settings")
    if temporal is None:
        temporal = bool(trained.get("temporal", cfg.ant.temporal))
    model = build_detector(cfg, task.num_classes_from_state(ckpt["model"]), temporal=temporal)
    missing = model.load_state_dict(ckpt["model"], strict=False).missing_keys
    if gates and any(k.startswith(("gates.", "fusions.")) for k in missing):
        kind = "temporal (fusion + gates)" if temporal else "non-temporal gates"
        raise ValueError(f"ANT checkpoint {checkpoint} holds no trained {kind} stage (ant.temporal="
                         f"{trained.get('temporal')!r}, {len(missing)} weights missing, e.g. {missing[0]}): pass "
                         "the stage-2 checkpoint of that network")
    return model.eval()


def detector_params(model: ANTDetector, ratios: Sequence[int] | None = None) -> int:
    """Parameters of the static network ``ratios`` (sliced), or with None of everything the
    dynamic network may run."""
    count = lambda mods: sum(p.numel() for m in mods for p in m.parameters())  # noqa: E731
    shared = count([model.neck, model.head])
    if ratios is None:
        dynamic = [model.gates] + ([model.fusions] if model.temporal else [])
        return shared + count(model.backbone.features[:ELASTIC[-1] + 1]) + count(dynamic)
    return shared + count(model.backbone.subnet(ratios).features[:ELASTIC[-1] + 1])


def _loader(dataset, cfg: ExperimentConfig):
    return torch.utils.data.DataLoader(dataset, batch_size=max(1, cfg.data.batch_size), collate_fn=dataset.collate_fn)


def _row(model: ANTDetector, mode, loader, gt, cfg, params: int, timed: list | None, say) -> dict:
    """Evaluate ``mode``; the row is timed later, interleaved with the others."""
    r = evaluate_modes(model, loader, gt, [mode], **cfg.ant.post_processing())[mode.name]
    r["params_m"] = params / 1e6
    if timed is not None:
        timed.append((mode.name, model, mode))
    say(f"[dynvid] {mode.name}: AP {r['AP']:.4f} AP50 {r['AP50']:.4f} {r['gmacs_avg']:.4f} GMACs/frame")
    return r


def _time_rows(rows: dict, timed: list, videos, rounds: int, say, key: str = "latency_ms") -> None:
    """Amortized single-core latency of every row over ``videos``, measured in ``rounds``
    rounds and reported as the median round. Within a round the rows take turns on each video
    (rows A, B, C on video 1, then on video 2, …), so that a slow spell of the machine, seconds
    long on a shared host, falls on every row alike rather than on the row that happened to
    run then; a row's round is its time over all its frames. A row's ``mode`` may be one per
    video (a replay). Stored as ``rows[name][key]`` and ``rows[name][key + "_rounds"]``."""
    samples: dict[str, list[float]] = {name: [] for name, _, _ in timed}
    for _ in range(rounds):
        spent = {name: [0.0, 0.0] for name, _, _ in timed}  # ms × frames, frames
        for v, video in enumerate(videos):
            for name, model, mode in timed:
                r = amortized_latency(model, [video], mode[v] if isinstance(mode, (list, tuple)) else mode)
                spent[name][0] += r["latency_ms"] * r["frames"]
                spent[name][1] += r["frames"]
        for name, (ms, frames) in spent.items():
            samples[name].append(ms / max(frames, 1.0))
    size = "×".join(str(n) for n in videos[0].shape[-2:])
    for name, values in samples.items():
        rows[name][key] = sorted(values)[len(values) // 2]
        rows[name][f"{key}_rounds"] = values
        say(f"[dynvid] {name}: {rows[name][key]:.1f} ms/frame on 1 core at {size} (rounds: "
            f"{', '.join(f'{v:.1f}' for v in values)})")


def _replay(rows: dict, timed: list, videos, size: int, key_threshold: float, rounds: int, say) -> None:
    """Issue 23's check at the paper's resolution: every timed row except ANT's other
    thresholds, on the latency videos resized to ``size × size``; the static rows run as they
    are, the dynamic rows replay the key frames and widths they chose at the native size
    (:class:`~.evaluation.ReplayMode`). Stored as ``rows[name]["latency_ms_<size>"]``."""
    big = [F.interpolate(v, size=(size, size), mode="bilinear", align_corners=False) for v in videos]
    replayed = []
    for name, model, mode in timed:
        if isinstance(mode, AntMode) and mode.threshold != key_threshold:
            continue
        replayed.append((name, model, mode if isinstance(mode, StaticMode) else replay_modes(model, videos, mode, name)))
    say(f"[dynvid] replaying {len(replayed)} rows' choices at {size}×{size} on 1 core ({rounds} rounds)")
    _time_rows(rows, replayed, big, rounds, say, key=f"latency_ms_{size}")


def compare(task, cfg: ExperimentConfig, checkpoints: dict[str, str], thresholds: Sequence[float] | None = None,
            nas: bool = True, latency: bool = True, say=print, replay_size: int | None = None,
            fusion_check: bool = True) -> dict:
    """Rows of Table 1 / Fig. 4 (see the module docstring). ``checkpoints``: ``static``,
    ``gates`` and optionally ``nontemporal`` (stage checkpoints; missing ones skip their rows;
    the NAS subnets and the like-for-like D0 come from ``gates``). ``replay_size``: also time
    the rows at that resolution, the dynamic ones replaying their choices (:func:`_replay`).
    ``fusion_check``: also the two rows of :func:`fusion_effect` at the gates' most common
    subnet of ANT at ``ant.key_threshold``, evaluated and timed as the others. Returns
    ``{"rows": {name: metrics}, "nas": search results, "fusion": that measurement or None}``."""

    c = cfg.ant
    stage = task.stages[-1]
    _, val = task.datasets(stage.config(cfg), stage)
    gt, loader = task.val_gt, _loader(val, cfg)
    lat_videos = [val[i][0] for i in range(min(c.latency_videos, len(val)))] if latency else []
    timed: list | None = [] if latency else None
    rows: dict[str, dict] = {}
    fusion, fusion_rows = None, None
    if checkpoints.get("static"):
        m = load_model(task, cfg, checkpoints["static"], temporal=False)
        rows["D0 (static)"] = _row(inference_copy(m, c.channels_last), StaticMode(FULL, "D0 (static)"), loader, gt,
                                   cfg, detector_params(m, FULL), timed, say)
    searched = []
    if nas and checkpoints.get("supernet") and not checkpoints.get("gates"):
        raise ValueError("the NAS rows are searched on the gates stage's weights (issue 23): pass its checkpoint "
                         "as 'gates'; a supernet checkpoint alone gives none")
    if checkpoints.get("gates"):
        m = load_model(task, cfg, checkpoints["gates"], temporal=True, gates=True)
        if not m.width_stats_ready:  # a checkpoint from before the per-ratio statistics
            m.calibrate_width_statistics(task.recalibration_batches(cfg))
        plain, m = m, inference_copy(m, c.channels_last)
        rows[SAME_WEIGHTS_D0] = _row(m, StaticMode(FULL, SAME_WEIGHTS_D0), loader, gt, cfg,
                                     detector_params(plain, FULL), timed, say)
        if nas:
            search_loader, search_gt = task.search_videos(cfg)
            post = cfg.ant.post_processing()

            def score(ratios):
                found = evaluate_modes(m, search_loader, search_gt, [StaticMode(ratios)], only_seen=True, **post)
                return found["static"]["AP"]

            searched = nas_search(c.nas_budgets, c.nas_candidates,
                                  lambda r: backbone_macs(r, c.image_size, c.width_mult), score, seed=cfg.train.seed,
                                  say=say, search=c.nas_search)
            for s in searched:
                ratios = tuple(s["ratios"])
                name = f"NAS {s['budget']:g} {''.join(map(str, ratios))}"
                rows[name] = _row(m, StaticMode(ratios, name), loader, gt, cfg, detector_params(plain, ratios), timed,
                                  say)
                rows[name]["ratios"] = list(ratios)
        params = detector_params(plain)
        for th in (thresholds if thresholds is not None else [c.key_threshold]):
            name = f"ANT τ={th:g}"
            rows[name] = _row(m, AntMode(th, name=name), loader, gt, cfg, params, timed, say)
            rows[name]["threshold"] = th
        main = rows.get(f"ANT τ={c.key_threshold:g}")
        if fusion_check and main is not None and main["configs"]["top"] is not None:
            top = tuple(main["configs"]["top"])
            tag = "".join(map(str, top))
            fusion_rows = (f"ANT forced {tag}", f"static {tag} (gates' subnet)")
            rows[fusion_rows[0]] = _row(m, AntMode(c.key_threshold, name=fusion_rows[0], force=top), loader, gt, cfg,
                                        params, timed, say)
            rows[fusion_rows[1]] = _row(m, StaticMode(top, fusion_rows[1]), loader, gt, cfg,
                                        detector_params(plain, top), timed, say)
            rows[fusion_rows[1]]["ratios"] = list(top)
    if checkpoints.get("nontemporal"):
        m = load_model(task, cfg, checkpoints["nontemporal"], temporal=False, gates=True)
        rows["non-temporal"] = _row(inference_copy(m, c.channels_last), NonTemporalMode(), loader, gt, cfg,
                                    detector_params(m), timed, say)
    if timed:
        _time_rows(rows, timed, lat_videos, c.latency_rounds, say)
        if replay_size:
            _replay(rows, timed, lat_videos, replay_size, c.key_threshold, c.latency_rounds, say)
    if fusion_rows:
        fusion = fusion_effect(rows[fusion_rows[0]], rows[fusion_rows[1]], list(top), c.key_threshold)
        say(f"[dynvid] at the gates' most common subnet {top}: {fusion_summary(fusion)}")
    return {"rows": rows, "nas": searched, "fusion": fusion}


def fusion_effect(forced: dict, static: dict, ratios: list[int], threshold: float) -> dict:
    """What ANT's key frames, fusions and gates add at fixed widths (issue 23), from two rows
    of :func:`compare`: ANT at ``threshold`` with every non-key frame forced to ``ratios`` and
    the static subnet ``ratios`` on the same weights and per-width statistics: the AP added,
    both rows' GMACs and, where both rows were timed, their milliseconds and the milliseconds
    added (``ms_added``; on the README's r2 weights at 192², 3.1–3.3 ms over static subnets of
    14.7–16.4 ms)."""
    out = {"ratios": list(ratios), "threshold": threshold, "ant_forced_AP": forced["AP"], "static_AP": static["AP"],
           "AP_added": forced["AP"] - static["AP"], "ant_forced_gmacs": forced["gmacs_avg"],
           "static_gmacs": static["gmacs_avg"]}
    if "latency_ms" in forced and "latency_ms" in static:
        out.update(ant_forced_ms=forced["latency_ms"], static_ms=static["latency_ms"],
                   ms_added=forced["latency_ms"] - static["latency_ms"])
    return out


def fusion_summary(fusion: dict) -> str:
    """One line of :func:`fusion_effect`'s result: both rows' AP (and milliseconds when timed)
    and what the forced ANT adds over the static subnet."""
    ms = "ms_added" in fusion
    return (f"ANT forced to it {fusion['ant_forced_AP']:.4f} AP" + (f", {fusion['ant_forced_ms']:.1f} ms" if ms else "")
            + f"; the static subnet {fusion['static_AP']:.4f}" + (f", {fusion['static_ms']:.1f} ms" if ms else "")
            + f" (AP {fusion['AP_added']:+.4f}" + (f", {fusion['ms_added']:+.1f} ms)" if ms else ")"))


def comparison_table(rows: dict[str, dict], markdown: bool = False) -> str:
    header = ["network", "AP", "AP50", "GMACs avg", "min", "max", "params (M)", "latency ms (1 core)", "key frames",
              "mean ratio"]
    body = [[name, f"{r['AP']:.4f}", f"{r['AP50']:.4f}", f"{r['gmacs_avg']:.4f}", f"{r['gmacs_min']:.4f}",
             f"{r['gmacs_max']:.4f}", f"{r['params_m']:.2f}",
             f"{r['latency_ms']:.1f}" if "latency_ms" in r else "-", f"{r['key_fraction']:.3f}",
             f"{r['mean_ratio']:.2f}"] for name, r in rows.items()]
    return format_table(header, body, markdown)


def job_report(task, cfg: ExperimentConfig, stages: list, out_dir: str) -> dict:
    """Table 1 for the job: the standalone network and the like-for-like D0 vs ANT at
    ``ant.key_threshold``; the speed-up and AP drop are against the like-for-like D0."""
    ckpts = {s.stage: s.checkpoint_path for s in stages if s.checkpoint_path}
    if "gates" not in ckpts or not cfg.ant.temporal:
        return {"metrics": {}, "table": "", "markdown": "", "artifacts": []}
    result = compare(task, cfg, {"static": ckpts.get("static"), "gates": ckpts["gates"]}, nas=False,
                     fusion_check=False)
    rows = result["rows"]
    metrics = {}
    for name, key in (("D0 (static)", "static"), (SAME_WEIGHTS_D0, "d0"), (f"ANT τ={cfg.ant.key_threshold:g}", "ant")):
        if name in rows:
            metrics.update({f"{key}_{k}": v for k, v in rows[name].items() if isinstance(v, float)})
    # since issue 23 the speed-up and AP drop are against the like-for-like D0; the *_vs_static
    # pair keeps the earlier definition (the stage-0 network) for comparisons with older runs
    if "d0_latency_ms" in metrics and "ant_latency_ms" in metrics:
        metrics["latency_speedup"] = metrics["d0_latency_ms"] / metrics["ant_latency_ms"]
        metrics["AP_drop"] = metrics["d0_AP"] - metrics["ant_AP"]
    if "static_latency_ms" in metrics and "ant_latency_ms" in metrics:
        metrics["latency_speedup_vs_static"] = metrics["static_latency_ms"] / metrics["ant_latency_ms"]
        metrics["AP_drop_vs_static"] = metrics["static_AP"] - metrics["ant_AP"]
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "ant_report.json")
    with open(path, "w") as f:
        json.dump({"rows": rows, "key_threshold": cfg.ant.key_threshold}, f, indent=2)
    n = int(next(iter(rows.values()))["videos"]) if rows else 0
    table = f"ANT vs D0, {n} val videos, every frame (Table 1)\n{comparison_table(rows)}"
    return {"metrics": metrics, "table": table, "markdown": f"### ANT (Table 1)\n\n{comparison_table(rows, True)}",
            "artifacts": [path]}
