"""The ANT detector (Sec. 3.2, Fig. 2): an EfficientNet-B0 width supernet, BiFPN and head, with
per-stage fusion modules and dynamic gates for non-key frames.

- **Key frame**: the whole network at full width; the stage-level features (the outputs of
  the MBConv1 stage and of the first five MBConv6 stages, the inputs of the six elastic
  stages) are stored.
- **Non-key frame**: the stem (frozen in stage 2) and the MBConv1 stage run; before each
  elastic stage ``s`` the fusion module merges the stored key-frame features with the
  current ones, the gate scores the widths of stage ``s`` from the fused map, and stage
  ``s`` runs on the fused map at the chosen width. Samples are grouped by their choice and
  each group runs only its width (real skipping); in training the output of a group is
  multiplied by its straight-through one-hot entry, so the Gumbel-softmax gradient reaches
  the gate while only the chosen width is computed.
- The neck and head are shared by all frames (P3, P4, P5 = the outputs of features 3, 5, 7);
  the backbone's 1×1 head conv (features 8) feeds no level and is never run.
- ``temporal=False`` is the non-temporal dynamic baseline of Fig. 4 ([18]): no fusion
  modules and no key frames; each stage's gate reads the current frame's features only.
- ``width_mult=1.1`` is D0+ (Table 1): every backbone channel 1.1× wider.

All training forwards go through ``forward(frames, run=fn)`` (``fn(module, frames)``), so a
whole sandwich step or clip is one call of the (DDP-wrapped) module.

Choices: the gate of stage ``s`` reads the fused input of that stage (the paper: "fused
stage-level features … decide the stage width"); the neck reads each stage's output.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
from torch import nn

from dynvid.backbones.efficientnet import RATIOS, EfficientNetSupernet
from dynvid.backbones.fuse import fold_batchnorm
from dynvid.detection.efficientdet import BiFPN, EfficientDetHead
from dynvid.methods.ant.modules import (DynamicGate, FusionModule, ProjectedKeys, bn_buffers, fresh_updates,
                                        recalibrate_bn)

__all__ = ["ANTDetector", "inference_copy", "row_groups"]

ELASTIC = range(2, 8)  # features[2..7]: the six MBConv6 stages
NECK_LEVELS = (3, 5, 7)


class ANTDetector(nn.Module):
    """Args:
        num_classes: object classes.
        fpn_channels, fpn_layers, head_repeats: EfficientDet sizes (D0: 64, 3, 3; D0+ ×1.1).
        levels: pyramid levels (P3–P7).
    """

    def __init__(self, num_classes: int, fpn_channels: int = 64, fpn_layers: int = 3, head_repeats: int = 3,
                 levels: int = 5, width_mult: float = 1.0, temporal: bool = True) -> None:
        super().__init__()
        # no stochastic depth: the paper's recipe states none, and in-place distillation compares
        # the subnets with the largest one on the same sample, which random dropped blocks would blur
        self.backbone = EfficientNetSupernet(num_classes=1, width_mult=width_mult, stochastic_depth_prob=0.0)
        widths = [self.backbone.features[i][0].cin for i in ELASTIC]  # channels entering each elastic stage
        self.temporal = temporal
        self.fusions = nn.ModuleList(FusionModule(c) for c in widths) if temporal else None
        self.gates = nn.ModuleList(DynamicGate(c) for c in widths)
        self.stem_frozen = False
        for i in ELASTIC:
            for block in self.backbone.features[i]:
                block.add_width_statistics()
        outs = [self.backbone.features[i][-1].cout for i in NECK_LEVELS]
        self.neck = BiFPN(outs, fpn_channels, fpn_layers, levels)
        self.head = EfficientDetHead(fpn_channels, num_classes, repeats=head_repeats, levels=levels)

    def forward(self, frames: torch.Tensor, ratios: Sequence[int] | None = None,
                run: Callable[[ANTDetector, torch.Tensor], object] | None = None):
        """``(cls, box)`` of the subnet ``ratios`` (None: the full network) — the registered
        model's signature — or, with ``run``, whatever ``run(self, frames)`` returns."""
        if run is not None:
            return run(self, frames)
        cls, box, _ = self.forward_static(frames, ratios)
        return cls, box

    def freeze_stem(self) -> None:
        """Stage 2 (Sec. 3.2): the stem's weights get no gradient and its BatchNorm keeps its
        statistics, so the key-frame rule's features do not drift."""
        self.stem_frozen = True
        for p in self.backbone.features[0].parameters():
            p.requires_grad_(False)
        self.backbone.features[0].eval()

    def train(self, mode: bool = True) -> ANTDetector:
        super().train(mode)
        if self.stem_frozen:
            self.backbone.features[0].eval()
        return self

    def _elastic_blocks(self):
        return [block for i in ELASTIC for block in self.backbone.features[i]]

    @property
    def width_stats_ready(self) -> bool:
        """Whether the elastic blocks normalize with per-ratio statistics (stage 2 onwards)."""
        return self._elastic_blocks()[0].stats_ready()

    @torch.no_grad()
    def calibrate_width_statistics(self, batches) -> None:
        """Stage 2's start: for each ratio r, recalibrate BatchNorm on ``batches`` (frames) with
        the subnet (r, …, r) and keep each elastic block's statistics as ratio r's; from then on
        every width normalizes with its own statistics (the supernet's shared ones fit no width:
        measured on the embedded run, the full network scored AP 0.26 with them, 0.53
        recalibrated). The other BatchNorms keep the full network's recalibrated statistics."""

        was = self.training
        for block in self._elastic_blocks():
            block.set_width_stats_ready(False)
        for r in sorted(RATIOS):  # the full width last: the shared BatchNorms keep its statistics
            self._calibrate_uniform(r, batches)
            for block in self._elastic_blocks():
                block.store_width_statistics(r)
        for block in self._elastic_blocks():
            block.set_width_stats_ready(True)
        self.train(was)

    def _calibrate_uniform(self, r: int, batches) -> None:
        """Recalibrate every BatchNorm on ``batches`` with the subnet (r, …, r): ratio r's
        per-width statistics of every elastic block, and the shared BatchNorms'."""
        device = next(self.parameters()).device
        recalibrate_bn(self, lambda x: self.forward_static(x.to(device), (r,) * 6), batches)

    def width_update_counts(self) -> torch.Tensor:
        """``(6, len(RATIOS))``: per elastic stage and ratio, the batches' worth of samples that
        updated its statistics in training since the last refresh (the blocks' ``width_updates``;
        the blocks of a stage share its ratio, so its first block's), on the model's device."""
        return torch.tensor([self.backbone.features[i][0].width_updates for i in ELASTIC],
                            device=next(self.parameters()).device)

    @torch.no_grad()
    def refresh_stale_width_statistics(self, batches, counts: torch.Tensor | None = None,
                                       min_updates: int | None = None) -> dict[int, list[int]]:
        """Stage 2, at each epoch's end: recalibrate the per-ratio statistics that this epoch's
        training left stale, keep every other statistic, and reset the blocks' update counts.

        Why: a ratio's statistics move in stage 2 only when a frame runs that ratio, while the
        shared weights move for all ratios. Once the gates settle on a subnet, the other ratios'
        statistics describe weights from epochs ago (issue 23, stop 42: the static subnet
        (1,6,4,3,1,4) of the stage-2 weights scored AP 0.357 with them, 0.531 recalibrated,
        and the NAS search, which scores subnets with these statistics, picked it).

        A ratio of an elastic stage is stale when this epoch's training updated its statistics
        with fewer than ``min_updates`` batches' worth of samples (``counts``, by default
        :meth:`width_update_counts`; under DDP the task passes rank 0's, so that every rank
        refreshes the same ratios: a forward on 2 rows of a batch of 8 counts 0.25). By
        default ``min_updates`` is the number of full-batch updates after which most of a
        running average at the blocks' BatchNorm momentum comes from this epoch
        (:func:`~.modules.fresh_updates`: 7 at PyTorch's 0.1), a sample budget here: the
        gates' rare picks update a ratio from a sample or two at a time, each such update
        moving the average as far as a full batch would, and such statistics are neither the
        current weights' nor those of whole frame batches (stop 43: counted by forwards, every
        ratio but stage 6's 2–5 passed as fresh, and the static subnets narrowing stage 4 to
        ratios 3–5 lost 2.5–2.9 AP points, to ratio 1 none). When in the epoch the updates came
        is not looked at: a ratio run often early and then dropped counts as fresh.

        Each stale ratio ``r`` is recalibrated as at stage 2's start (the subnet (r, …, r) on
        ``batches``, in full precision; ``batches`` may be a function that returns them, called
        only when a ratio is stale; a list either way: it is run once per stale ratio), and the
        new statistics are kept only in the stages where ``r`` was stale; the statistics of the
        ratios trained with enough samples, and the shared BatchNorms (stem, fusions, gates,
        neck, head), stay as training left them. So ANT's network changes only where its gates
        ran a ratio rarely this epoch (the stage's evaluation, after the hook, sees the refreshed
        statistics). Returns ``{stage index: [ratios refreshed]}`` (stages with none left out);
        the train/eval mode is kept. Raises ``ValueError`` before
        :meth:`calibrate_width_statistics` (no per-ratio statistics)."""

        if not self.width_stats_ready:
            raise ValueError("refresh_stale_width_statistics: the elastic blocks have no per-ratio statistics yet "
                             "(calibrate_width_statistics first)")
        stages = [list(self.backbone.features[i]) for i in ELASTIC]
        if min_updates is None:
            min_updates = fresh_updates(stages[0][0].block[0][1].momentum)
        counts = (self.width_update_counts() if counts is None else counts).tolist()
        stale = {s: [r for r, n in zip(RATIOS, counts[s]) if n < min_updates] for s in range(len(stages))}
        stale = {s: rs for s, rs in stale.items() if rs}
        if stale:
            was, saved = self.training, bn_buffers(self)
            batches = batches() if callable(batches) else batches
            for r in sorted({r for rs in stale.values() for r in rs}):
                k = RATIOS.index(r)  # calibrating (r, …, r) writes ratio r's statistics only
                kept = [(b, b.width_mean[:, k].clone(), b.width_var[:, k].clone())
                        for s, blocks in enumerate(stages) if r not in stale.get(s, ()) for b in blocks]
                self._calibrate_uniform(r, batches)
                for b, mean, var in kept:
                    b.width_mean[:, k] = mean
                    b.width_var[:, k] = var
            self.load_state_dict(saved, strict=False)  # the shared BatchNorms as training left them
            self.train(was)
        for block in self._elastic_blocks():
            block.width_updates = [0.0] * len(RATIOS)
        return stale

    def stem(self, frames: torch.Tensor) -> torch.Tensor:
        """The stem conv's output: the key-frame rule's features (Sec. 3.3)."""
        return self.backbone.features[0](frames)

    def detect(self, stage_outputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.neck([stage_outputs[i] for i in NECK_LEVELS])
        self.last_sizes = [tuple(f.shape[-2:]) for f in feats]
        return self.head(feats)

    def forward_static(self, frames: torch.Tensor, ratios: Sequence[int] | None = None,
                       stem: torch.Tensor | None = None):
        """A fixed subnet on every frame: ``(cls, box, stage outputs)``; ``stem``: the frames'
        stem output when already computed (the key-frame rule ran it)."""
        outs = self._from_stem(self.stem(frames) if stem is None else stem, ratios)
        cls, box = self.detect(outs)
        return cls, box, outs

    def _from_stem(self, stem: torch.Tensor, ratios: Sequence[int] | None) -> list[torch.Tensor]:
        return [stem] + self.backbone.stage_features(stem, ratios, upto=ELASTIC[-1] + 1, start=1)

    def key_features(self, outs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """What a key frame stores in training: the input of each elastic stage."""
        return [outs[i - 1] for i in ELASTIC]

    def project_keys(self, key: Sequence[torch.Tensor]) -> ProjectedKeys:
        """What a key frame stores at inference: each stage fusion's key side, computed once
        (:meth:`FusionModule.project_key`); eval mode, temporal detector only."""
        if not self.temporal:
            raise ValueError("the non-temporal detector stores no key frames")
        return ProjectedKeys(f.project_key(k) for f, k in zip(self.fusions, key))

    def forward_nonkey(self, frames: torch.Tensor, key: Sequence[torch.Tensor] | None, tau: float | None = None,
                       details: bool = False, stem: torch.Tensor | None = None, force: Sequence[int] | None = None):
        """A non-key frame: fusion + gate per elastic stage. Returns ``(cls, box, choices)``,
        ``choices`` ``(B, 6)`` the ratio each sample ran in each stage; with ``details`` also
        ``{"fused": [6 fused maps], "onehots": [6 (B, 6) choices]}`` (stage-2 training).
        ``key``: the key frame's :meth:`key_features`, or at inference its
        :meth:`project_keys` (the same result with the key side computed once per key
        frame); ignored (may be None) by the non-temporal network. ``force``: one ratio per
        elastic stage that every sample runs instead of its gate's choice; the gates still run
        (a replay of recorded choices at another resolution costs what the gates cost)."""
        if force is not None and (len(force) != len(ELASTIC) or any(int(r) not in RATIOS for r in force)):
            raise ValueError(f"force takes one ratio in {RATIOS} per elastic stage ({len(ELASTIC)}), got {force}")
        f = self.backbone.features
        x = f[1](self.stem(frames) if stem is None else stem)
        outs = [None, x]
        hosts, fused_maps, onehots = [], [], []
        for s, i in enumerate(ELASTIC):
            if not self.temporal:
                fused = x
            elif isinstance(key, ProjectedKeys):
                fused = self.fusions[s].fuse(key[s], x)
            else:
                fused = self.fusions[s](key[s], x)
            scores = self.gates[s](fused)
            if tau is None and not details:  # inference: the argmax is the choice, no one-hot needed
                onehot, choice = None, scores.argmax(1)
            else:
                onehot = DynamicGate.decide(scores, tau)
                choice = onehot.argmax(1)
            if force is not None:
                choice = torch.full_like(choice, RATIOS.index(int(force[s])))
            host = choice.tolist()  # the stage's one read: which rows run which width
            x = self._run_stage(i, fused, choice, onehot if tau is not None else None, host)
            hosts.append(host)
            fused_maps.append(fused)
            onehots.append(onehot)
            outs.append(x)
        cls, box = self.detect(outs)
        choices = torch.tensor([[RATIOS[h[b]] for h in hosts] for b in range(len(hosts[0]))], dtype=torch.long)
        if details:
            return cls, box, choices, {"fused": fused_maps, "onehots": onehots}
        return cls, box, choices

    def _run_stage(self, i: int, x: torch.Tensor, choice: torch.Tensor, onehot: torch.Tensor | None,
                   host: list[int] | None = None) -> torch.Tensor:
        """Stage ``i`` with a width per sample: each group of samples runs only its width.
        ``host``: ``choice`` already read to the host (else it is read here)."""
        groups = row_groups(choice, choice.tolist() if host is None else host)
        if len(groups) == 1:  # every sample agrees: no gathering and scattering
            (k, _, _), = groups
            return self._run_group(i, x, k, onehot, None, None, len(x))
        out = None
        for k, rows, rows_host in groups:
            y = self._run_group(i, x.index_select(0, rows), k, onehot, rows, rows_host, len(x))
            if out is None:
                out = y.new_zeros(len(x), *y.shape[1:])
            out = out.index_copy(0, rows, y)
        return out

    def _run_group(self, i: int, y: torch.Tensor, k: int, onehot: torch.Tensor | None, rows: torch.Tensor | None,
                   rows_host: torch.Tensor | None, batch: int) -> torch.Tensor:
        """Stage ``i`` at ratio index ``k`` on the rows ``rows`` (None: all) of a batch of ``batch``;
        the cost goes to ``rows_host`` (the same rows, on the host: no read back)."""
        for block in self.backbone.features[i]:
            y = block(y, block.cin * RATIOS[k], rows_host, batch)
        if onehot is not None:  # straight-through: value 1, gradient to the gate's scores
            y = y * (onehot if rows is None else onehot.index_select(0, rows))[:, k].view(-1, 1, 1, 1)
        return y


def row_groups(labels: torch.Tensor, host: list) -> list[tuple[object, torch.Tensor | None, torch.Tensor | None]]:
    """The rows of each distinct value of ``labels`` (B,), ascending values and rows:
    ``[(value, rows on labels' device, rows on the host)]``; ``host`` is ``labels.tolist()``,
    already read, so nothing more is: the device rows are slices of one stable sort, cut at the
    counts the host knows. A single group gets ``None`` rows (the whole batch)."""
    values = sorted(set(host))
    if len(values) == 1:
        return [(values[0], None, None)]
    order = torch.argsort(labels, stable=True)
    out, start = [], 0
    for v in values:
        rows_host = [b for b, h in enumerate(host) if h == v]
        out.append((v, order[start:start + len(rows_host)], torch.tensor(rows_host, dtype=torch.long)))
        start += len(rows_host)
    return out


def inference_copy(model: ANTDetector, channels_last: bool = True) -> ANTDetector:
    """The network as it runs at inference (``report.compare`` times every row on one, stage
    2's latency table is measured on one): a deep copy with every BatchNorm folded, then, with
    ``channels_last`` (``ant.channels_last``), every 4-D weight and buffer in channels-last
    layout, so each convolution's output, and the elementwise operations after it, stay
    channels-last. ``model`` is left as it is."""
    m = fold_batchnorm(copy.deepcopy(model))
    return m.to(memory_format=torch.channels_last) if channels_last else m
