"""Evaluation of ANT and its baselines over whole videos (Sec. 4, Table 1, Fig. 4).

A *mode* says how each frame of a video runs:

- :class:`StaticMode`: one fixed subnet on every frame — the full network (EfficientDet-D0)
  or a static NAS subnet.
- :class:`AntMode`: adaptive key frames (Sec. 3.3). The stem runs on every frame; a frame
  whose normalized L1 stem deviation from the last key frame's exceeds ``threshold`` (and
  the first frame) is a key frame: the whole network, then each fusion's key-side
  projection, stored (:meth:`ANTDetector.project_keys`). Other frames run fusion + gates
  (:meth:`ANTDetector.forward_nonkey`) from the stored projections, the stem reused.
  ``threshold=None`` with ``key_every`` gives the fixed schedule of training.
- :class:`NonTemporalMode`: the non-temporal dynamic network, gates on every frame.
- :class:`ReplayMode`: the key frames and per-stage widths another run chose, replayed on
  one video (issue 23: ANT's choices at 192² timed at the paper's 512², where the input
  that chose them does not exist). Everything else runs as in the mode that chose them
  (stem, key-frame deviation, fusion, gates), only the decisions are the recorded ones.

:func:`run_videos` runs a batch of videos frame by frame; videos decide independently, and
each sub-batch (key / non-key rows, and inside a stage each width) runs only its own path.
MACs per frame come from the cost meter over what ran (stem, key-frame rule, fusion, gates,
the chosen widths, neck and head). :func:`evaluate_modes` scores every valid frame with
COCO AP@[.5:.95] (UA-DETRAC's metric) and AP50, and reports amortized GMACs per frame
(avg/min/max over frames), the fraction of key frames and the mean chosen ratio.
:func:`amortized_latency` times a mode on single videos with batch 1 on one CPU core
(``torch.set_num_threads(1)``, Table 1's protocol).

Choice: the key-frame deviation costs ``3 · |stem|`` elementwise operations; it is not a
MAC and is not counted (as the paper's GMAC column does not count it).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from dynvid.backbones.efficientnet import RATIOS
from dynvid.detection.efficientdet import cached_retina_anchors
from dynvid.detection.ssdlite import postprocess
from dynvid.task import unwrap_model
from dynvid.methods.ant.model import ANTDetector, row_groups
from dynvid.methods.ant.modules import ProjectedKeys, stem_deviation, stem_scale
from dynvid.metrics.cost import CostMeter
from dynvid.metrics.detection import coco_evaluate, gather_from_ranks, gt_subset, video_detection_rows

__all__ = ["AntMode", "NonTemporalMode", "ReplayMode", "StaticMode", "amortized_latency", "evaluate_modes",
           "replay_modes", "run_videos"]

FULL = (max(RATIOS),) * 6


@dataclass(frozen=True)
class StaticMode:
    """A fixed subnet ``ratios`` on every frame."""

    ratios: tuple[int, ...] = FULL
    name: str = "static"


@dataclass(frozen=True)
class AntMode:
    """ANT: adaptive key frames at ``threshold`` (or every ``key_every`` frames when None).
    ``force``: every non-key frame runs this subnet instead of its gates' choice (the gates
    still run; key frames and fusions as ANT's): against ``StaticMode(force)`` on the same
    weights it measures what the fusion adds at fixed widths (issue 23)."""

    threshold: float | None = 0.3
    key_every: int = 3
    name: str = "ANT"
    force: tuple[int, ...] | None = None


@dataclass(frozen=True)
class NonTemporalMode:
    """The non-temporal dynamic network: gates on the current frame only."""

    name: str = "non-temporal"


@dataclass(frozen=True)
class ReplayMode:
    """Recorded decisions of one video: ``keys[t]`` (a key frame), ``ratios[t]`` (the six
    stage ratios a non-key frame ran); ``temporal``: ANT (key frames + fusion) or the
    non-temporal network (``keys`` all False)."""

    keys: tuple[bool, ...]
    ratios: tuple[tuple[int, ...], ...]
    temporal: bool = True
    name: str = "replay"


@torch.no_grad()
def replay_modes(model: ANTDetector, videos: Sequence[torch.Tensor], mode, name: str | None = None) -> list:
    """One :class:`ReplayMode` per video of ``videos`` (each ``(T, 3, S, S)``): the decisions
    ``mode`` (an :class:`AntMode` or :class:`NonTemporalMode`) takes on it, batch 1."""
    unwrap_model(model).eval()
    out = []
    for v in videos:
        run = run_videos(model, v[None], mode, count=False)
        out.append(ReplayMode(tuple(run["keys"][0].tolist()), tuple(tuple(r) for r in run["ratios"][0].tolist()),
                              temporal=isinstance(mode, AntMode), name=name or mode.name))
    return out


def _metered(model: ANTDetector, count: bool, batch: int, fn):
    if not count:
        return fn(), None
    with CostMeter(model, batch_size=batch) as meter:
        out = fn()
    return out, meter.per_sample_macs


def _scatter(rows: torch.Tensor, values: Sequence[torch.Tensor], into: list[torch.Tensor | None], batch: int) -> None:
    for k, v in enumerate(values):
        if into[k] is None:
            into[k] = v.new_zeros(batch, *v.shape[1:])
        into[k] = into[k].index_copy(0, rows, v)


@torch.no_grad()
def run_videos(model: ANTDetector, frames: torch.Tensor, mode, *, count: bool = True, post: dict | None = None):
    """Run ``mode`` over videos ``frames (B, T, 3, S, S)`` in order. Returns ``{"dets": [B][T]
    detections (normalized xyxy) or None without ``post``, "macs": (B, T), "keys": (B, T) bool,
    "ratios": (B, T, 6)}``; ``count=False`` skips the cost meter (latency runs)."""
    m = unwrap_model(model)
    replay = isinstance(mode, ReplayMode)
    if replay and frames.shape[1] > len(mode.keys):
        raise ValueError(f"replay {mode.name!r} recorded {len(mode.keys)} frames, the videos have {frames.shape[1]}")
    if replay and frames.shape[0] != 1:
        raise ValueError(f"replay {mode.name!r} holds one video's decisions: run it on one video (batch 1), "
                         f"got {frames.shape[0]}")
    if isinstance(mode, (AntMode, NonTemporalMode, ReplayMode)):
        needed = mode.temporal if replay else isinstance(mode, AntMode)
        if m.temporal != needed:
            kind = lambda temporal: "temporal" if temporal else "non-temporal"  # noqa: E731
            raise ValueError(f"mode {mode.name!r} needs a {kind(needed)} ANT detector (ant.temporal="
                             f"{str(needed).lower()}); this one is {kind(m.temporal)}")
    B, T = frames.shape[:2]
    macs = torch.zeros(B, T, dtype=torch.float64)
    keys = torch.zeros(B, T, dtype=torch.bool)
    ratios = torch.full((B, T, 6), max(RATIOS), dtype=torch.long)
    dets: list[list[dict]] = [[] for _ in range(B)]
    key_feats: list[torch.Tensor | None] = [None] * 6
    key_stem: torch.Tensor | None = None
    key_scale: torch.Tensor | None = None  # the deviation's denominator, once per key frame
    anchors = None
    for t in range(T):
        x = frames[:, t]
        if isinstance(mode, StaticMode):
            (cls, box, _), cost = _metered(m, count, B, lambda: m.forward_static(x, mode.ratios))
            ratios[:, t] = torch.tensor(mode.ratios)
            keys[:, t] = True
        elif isinstance(mode, NonTemporalMode) or (replay and not mode.temporal):
            force = mode.ratios[t] if replay else None
            (cls, box, choice), cost = _metered(m, count, B, lambda: m.forward_nonkey(x, None, force=force))
            ratios[:, t] = choice
        else:
            stem, cost = _metered(m, count, B, lambda: m.stem(x))
            force = mode.ratios[t] if replay else mode.force
            if key_stem is None:
                flags, flags_dev = [True] * B, None
            elif replay:  # the deviation is computed and read as ANT does; the recorded decision is taken
                (stem_deviation(stem, key_stem, scale=key_scale) > 0).tolist()
                flags, flags_dev = [bool(mode.keys[t])] * B, None
            elif mode.threshold is None:
                flags, flags_dev = [t % mode.key_every == 0] * B, None
            else:
                flags_dev = stem_deviation(stem, key_stem, scale=key_scale) > mode.threshold
                flags = flags_dev.tolist()  # the frame's one read: which videos take a key frame
            is_key = torch.tensor(flags, dtype=torch.bool)
            cls_parts: list[torch.Tensor | None] = [None, None]
            for flag, r, rows in reversed(row_groups(flags_dev, flags)):  # key frames first
                whole = r is None  # no gathering and scattering when every video agrees
                n = B if whole else len(rows)
                xs, ss = (x, stem) if whole else (x.index_select(0, r), stem.index_select(0, r))
                if flag:
                    def key_frame():  # at inference, the key side of every fusion's projection, once
                        c, b, outs = m.forward_static(xs, stem=ss)
                        key = m.key_features(outs)
                        return c, b, (key if m.training else m.project_keys(key))
                    (c, b, projected), sub = _metered(m, count, n, key_frame)
                    if whole:
                        key_feats, key_stem, key_scale = list(projected), stem, stem_scale(stem)
                    else:
                        _scatter(r, projected, key_feats, B)
                        key_stem = key_stem.index_copy(0, r, ss)
                        key_scale = key_scale.index_copy(0, r, stem_scale(ss))
                else:
                    kf = key_feats if whole else [k.index_select(0, r) for k in key_feats]
                    kf = kf if m.training else ProjectedKeys(kf)  # a training-mode model fuses raw keys
                    (c, b, choice), sub = _metered(m, count, n, lambda: m.forward_nonkey(xs, kf, stem=ss, force=force))
                    if whole:
                        ratios[:, t] = choice
                    else:
                        ratios[rows, t] = choice
                if whole:
                    cls_parts = [c, b]
                else:
                    _scatter(r, [c, b], cls_parts, B)
                if count:
                    cost = cost + sub if whole else cost.index_add(0, rows, sub)
            cls, box = cls_parts
            keys[:, t] = is_key
        if count:
            macs[:, t] = cost
        if post is not None:
            if anchors is None:
                anchors = cached_retina_anchors(m.last_sizes, tuple(x.shape[-2:]), x.device)
            for b, d in enumerate(postprocess(cls, box, anchors, **post, device="cpu")):  # one read per frame
                dets[b].append(d)
    return {"dets": dets if post is not None else None, "macs": macs, "keys": keys, "ratios": ratios}


def _gather(rows: dict, stats: dict, seen: set) -> tuple[dict, dict, set]:
    """Under ``torch.distributed`` every rank gets all ranks' detections, frame statistics and
    seen image ids."""
    gathered = gather_from_ranks((rows, stats, seen))
    if gathered is None:
        return rows, stats, seen
    rows = {k: [r for g in gathered for r in g[0][k]] for k in rows}
    stats = {k: {s: torch.cat([g[1][k][s] for g in gathered]) for s in stats[k]} for k in stats}
    return rows, stats, set().union(*(g[2] for g in gathered))


@torch.no_grad()
def evaluate_modes(model: ANTDetector, loader: Iterable, gt: dict, modes: Sequence, *, score_threshold: float = 0.05,
                   nms_iou: float = 0.5, max_detections: int = 100, only_seen: bool = False) -> dict[str, dict[str, float]]:
    """Per mode: AP (@[.5:.95]), AP50, GMACs per frame (``gmacs_avg/min/max``), fraction of key
    frames and mean chosen expansion ratio over every valid frame of ``loader``'s videos (items
    ``(frames, targets)``, targets as :func:`dynvid.data.detection.collate`). Under
    ``torch.distributed`` the ranks' results are scored together. ``only_seen``: score against
    the ground truth of the frames ``loader`` holds only (a subset of ``gt``'s videos)."""
    m = unwrap_model(model)
    was = m.training
    m.eval()
    post = dict(score_threshold=score_threshold, iou_threshold=nms_iou, max_detections=max_detections)
    rows: dict[str, list] = {md.name: [] for md in modes}
    stats: dict[str, dict[str, list]] = {md.name: {"macs": [], "keys": [], "ratios": []} for md in modes}
    videos, seen = 0, set()
    try:
        for frames, targets in loader:
            videos += len(targets)
            # the targets' per-frame fields on the host once per batch, not read frame by frame
            targets = [{k: target[k].cpu() for k in ("valid", "image_ids", "orig_sizes")} for target in targets]
            seen.update(i for tg in targets for i, ok in zip(tg["image_ids"].tolist(), tg["valid"].tolist()) if ok)
            for md in modes:
                out = run_videos(m, frames, md, post=post)
                for b, target in enumerate(targets):
                    rows[md.name].extend(video_detection_rows(out["dets"][b], target))
                    valid = target["valid"]
                    for k in ("macs", "keys", "ratios"):
                        stats[md.name][k].append(out[k][b][valid])
    finally:
        m.train(was)
    stats = {k: {s: torch.cat(v) for s, v in st.items()} for k, st in stats.items()}
    rows, stats, seen = _gather(rows, stats, seen)
    if only_seen:
        gt = gt_subset(gt, seen)
    result = {}
    for md in modes:
        ap = coco_evaluate(gt, rows[md.name])
        st = stats[md.name]
        g = st["macs"] / 1e9
        result[md.name] = {"AP": ap["AP"], "AP50": ap["AP50"], "AP75": ap["AP75"], "gmacs_avg": float(g.mean()),
                           "gmacs_min": float(g.min()), "gmacs_max": float(g.max()),
                           "key_fraction": float(st["keys"].float().mean()),
                           "mean_ratio": float(st["ratios"].float().mean()),
                           "frames": float(len(g)), "videos": float(videos),
                           **choice_distribution(st["ratios"], st["keys"])}
    return result


def choice_distribution(ratios: torch.Tensor, keys: torch.Tensor) -> dict:
    """How the gates chose on non-key frames (``ratios (N, 6)``, ``keys (N,)``):
    ``ratio_share`` — per elastic stage, the share of non-key frames that ran each ratio of
    ``RATIOS``; ``configs`` — how many distinct configurations ran and the share of the most
    common one (1.0: the gates ignore their input) and that configuration (``top``);
    ``mean_ratio_nonkey`` per stage."""
    chosen = ratios[~keys]
    if len(chosen) == 0:
        return {"ratio_share": None, "configs": {"distinct": 0, "top_share": None, "top": None},
                "mean_ratio_nonkey": None}
    index = {r: k for k, r in enumerate(RATIOS)}
    share = torch.zeros(chosen.shape[1], len(RATIOS), dtype=torch.float64)
    for s in range(chosen.shape[1]):
        for k, n in zip(*torch.unique(chosen[:, s], return_counts=True)):
            share[s, index[int(k)]] = float(n) / len(chosen)
    configs, counts = torch.unique(chosen, dim=0, return_counts=True)
    return {"ratio_share": [[round(v, 4) for v in row] for row in share.tolist()],
            "configs": {"distinct": int(len(counts)), "top_share": float(counts.max()) / len(chosen),
                        "top": configs[int(counts.argmax())].tolist()},
            "mean_ratio_nonkey": [round(v, 3) for v in chosen.float().mean(0).tolist()]}


@torch.no_grad()
def amortized_latency(model: ANTDetector, videos: Sequence[torch.Tensor], mode, threads: int = 1,
                      warmup: int = 3) -> dict[str, float]:
    """Amortized latency (ms per frame) of ``mode`` over ``videos`` (each ``(T, 3, S, S)``),
    frame by frame with batch 1 on ``threads`` intra-op threads (Table 1: one CPU core);
    ``warmup`` frames of the first video run first, untimed. ``mode`` may be a list, one mode
    per video (:func:`replay_modes`)."""
    m = unwrap_model(model).eval()
    modes = list(mode) if isinstance(mode, (list, tuple)) else [mode] * len(videos)
    if len(modes) != len(videos):
        raise ValueError(f"{len(modes)} modes for {len(videos)} videos")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        run_videos(m, videos[0][None, :warmup], modes[0], count=False)
        total, frames = 0.0, 0
        for v, mv in zip(videos, modes):
            t0 = time.perf_counter()
            run_videos(m, v[None], mv, count=False)
            total += time.perf_counter() - t0
            frames += len(v)
    finally:
        torch.set_num_threads(before)
    return {"latency_ms": 1000.0 * total / max(frames, 1), "frames": float(frames), "threads": float(threads)}
