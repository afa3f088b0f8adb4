"""ANT's configuration: the ``ant`` section of :class:`dynvid.config.ExperimentConfig`
(``--set ant.KEY=VALUE``). A leaf module: the central config imports it, and it imports
nothing of dynvid."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AntConfig"]


@dataclass
class AntConfig:
    """ANT (Adapt Network across Time, Sec. 3–4). Used by ``method="ant"``: stages ``static``
    (the standalone network), ``supernet`` (Sec. 3.1) and ``gates`` (Sec. 3.2)."""

    image_size: int = 512
    """Input resolution (EfficientDet-D0: 512)."""
    width_mult: float = 1.0
    """Backbone channel multiplier (Table 1's D0+: 1.1)."""
    fpn_channels: int = 64
    """BiFPN width (D0: 64)."""
    fpn_layers: int = 3
    """BiFPN layers (D0: 3)."""
    head_repeats: int = 3
    """Conv repeats of the class and box nets (D0: 3)."""
    sandwich_random: int = 2
    """Random subnets per sandwich step, besides the largest and the smallest (Sec. 3.1)."""
    kd_weight: float = 1.0
    """Weight of the in-place distillation loss of the non-largest subnets (stage 1)."""
    supernet_epochs: int = 0
    """Epochs of stage 1 (0: ``optim.epochs``, the paper's "same settings as the standalone network")."""
    gate_epochs: int = 8
    """Epochs of stage 2 (Sec. 4.1: 8)."""
    gate_lr: float = 0.002
    """Learning rate of stage 2 (Sec. 4.1: 0.002)."""
    gate_lr_mult: float = 1.0
    """Learning-rate multiplier of the gates' parameters in stage 2 (1 = the paper's one rate).
    The gates are small heads that start undecided while the rest of the network is trained:
    at one rate the width cost was still falling when the schedule ended (issue 23)."""
    fusion_lr_mult: float = 1.0
    """Learning-rate multiplier of the fusion modules' parameters in stage 2 (1 = the paper's
    one rate). The fusions start as the identity (their last BatchNorm's scale at zero) and,
    under Adam, move at most about the learning rate per step: after the embedded preset's 8
    epochs at 0.0005 that scale had reached 0.02–0.09 in every stage, the bound of its steps,
    and ANT forced to a static subnet's widths scored what that subnet scores (issue 23)."""
    key_every: int = 3
    """Stage 2's fixed schedule: one key frame in this many (Sec. 3.2: 1/3)."""
    key_stride_max: int = 1
    """Stage 2's clips take every s-th frame, s drawn per clip in 1 … this, so that the fusion
    learns at the key-frame distances adaptive inference meets (1, 2s frames back); 1 = the
    paper's consecutive frames. Training only."""
    gumbel_tau: float = 1.0
    """Gumbel-softmax temperature of the gates in stage 2."""
    fusion_kd_weight: float = 1.0
    """Weight of stage 2's KD loss between fused and golden stage features (Sec. 3.2)."""
    cost_weight: float = 0.1
    """Weight of stage 2's cost term (our choice: the paper states no cost objective; see ``training``)."""
    cost_target: float | None = None
    """Stage 2's cost term as a budget: ``cost_weight × relu(cost − cost_target)`` per non-key
    frame, the cost being the frame's elastic stages as a fraction of the full network's
    (our choice, see ``training``); None = the linear ``cost_weight × cost``."""
    gate_prior: str | None = None
    """How stage 2's gates start (our choice; the paper's gates start random). None: random.
    ``"nas"``: at stage 2's start, the static subnet with the best AP on ``ant.nas_videos``
    training videos within ``[0.9, 1] × ant.cost_target`` of the cost table is searched
    (``ant.nas_search``, as the NAS baselines are, under the stage-2 cost instead of
    MACs; within ``[1, 1/0.9]`` × the cheapest subnet's cost where even that one costs more
    than the target on the hardware), and each gate's output bias is set so that its softmax puts
    ``ant.gate_prior_weight`` on that subnet's ratio, the rest spread evenly; the gates'
    weights stay random, so their choices can still follow the input (on the embedded scenes
    they did not: one subnet on every non-key frame). Why (issue 23): a
    straight-through Gumbel gate runs one width, so the detection loss tells its scores only
    whether scaling the chosen width's output helps, never whether another width would
    detect better, while the cost term pushes every stage toward its cheapest width; the
    random gates of the stop-32 run settled on ratio 1 in stages 4–6, 5 AP points below the
    NAS subnet of the same weights at similar milliseconds. ``"nas"`` needs ``ant.cost_target``.
    ``"1,6,2,1,1,1"`` (one ratio per elastic stage): the gates start at that subnet, biased as
    for ``"nas"``, without a search — to compare stage-2 settings from one start: the
    latency table moves by a few percent between measurements, which moves the subnets the
    search window holds (issue 23, stop 42: two searches on one supernet's tables started at
    (1, 6, 2, 1, 1, 1) and (1, 6, 1, 2, 1, 1))."""
    gate_prior_weight: float = 0.8
    """The softmax probability the gate prior (searched or named) gives its subnet's ratio in each stage."""
    cost_metric: str = "latency"
    """Stage 2's cost table: ``latency`` (measured single-core latency per stage and ratio) or ``macs``."""
    temporal: bool = True
    """False: the non-temporal dynamic baseline (Fig. 4): gates on the current frame only, no fusion."""
    key_threshold: float = 0.3
    """Adaptive key frames (Sec. 3.3): a frame whose normalized L1 stem deviation from the last
    key frame exceeds this becomes a key frame. Inference only."""
    recalib_batches: int = 8
    """Training batches that recompute a subnet's BatchNorm statistics before it is evaluated."""
    nas_budgets: tuple[float, ...] = (0.5, 0.65, 0.8)
    """Static NAS baselines (Fig. 4): backbone-MAC budgets as fractions of the full backbone's."""
    nas_candidates: int = 12
    """Subnets scored in full within each budget by the NAS search (best AP on the search videos wins)."""
    nas_search: str = "sensitivity"
    """How the NAS baselines and the ``"nas"`` gate prior search (``dynvid.methods.ant.nas``):
    ``"sensitivity"`` ranks every configuration within the budget by per-stage AP drops (31
    subnets scored once) and scores the ``nas_candidates`` best ranked; ``"random"`` scores
    ``nas_candidates`` random ones (before issue 23's stop 34)."""
    nas_videos: int = 24
    """Training videos the NAS search (and the ``"nas"`` gate prior) scores candidates on (never
    the val videos). 24 (issue 23, stop 42; before: 8): some mixed subnets fail on a few videos
    under the per-ratio statistics, and 8 videos did not show it: on the fades scenes the 0.5
    budget's pick (1, 6, 4, 3, 1, 4) scored 0.580 on the 8 search videos and 0.357 on val
    (0.24–0.54 by 8-video group); searched on 24, six picks scored on val within 2 points of
    their search AP. The search takes about three times as long. A stored run from before
    the change resumes only with ``ant.nas_videos=8`` (the run's identity hashes its config)."""
    eval_frames: int | None = None
    """Frames per val video in the evaluation (None = all)."""
    latency_videos: int = 8
    """Val videos whose frames time the amortized single-core latency (``torch.set_num_threads(1)``).
    8 (issue 23; before: 2): ANT's key frames and widths follow the content, and on the first 2
    embedded val videos its key frames were 10% of the frames against 13% over all 32."""
    latency_rounds: int = 5
    """Timing rounds over all compared networks, which take turns on each latency video; each
    network reports its median round (``report._time_rows``)."""
    channels_last: bool = True
    """The memory layout of the inference copies every compared row runs (``report.compare``)
    and stage 2's latency table is timed on: after BatchNorm folding, channels-last weights, so
    every convolution runs channels-last (oneDNN's native layout on a CPU) whatever the layout
    of the frames. The embedded scenes' frames are channels-last already (decoded height ×
    width × channels), and a convolution follows its input's layout, so on them this changes
    nothing measurable (issue 23: D0 24.3 ms either way over 8 val videos); on NCHW frames
    (192², one core) D0 took 33 ms as it was and 26 ms converted. False: the weights' own layout."""
    score_threshold: float = 0.05
    """Detections below this score are dropped before NMS."""
    nms_iou: float = 0.5
    """Per-class NMS IoU (EfficientDet: 0.5)."""
    max_detections: int = 100
    """Detections kept per frame."""
    backbone_pretrained: str | None = None
    """Weights the EfficientNet-B0 backbone starts from when the first stage starts fresh: a
    torchvision weights name (the paper's: ``EfficientNet_B0_Weights.IMAGENET1K_V1``,
    ImageNet; from torchvision's cache or downloaded), or a file / checkpoint folder /
    ``s3://`` URI with torchvision's keys. None = from scratch
    (``dynvid.backbones.pretrained``)."""

    def post_processing(self) -> dict:
        """The detection post-processing these settings ask for, as keyword arguments of
        :func:`~.evaluation.evaluate_modes` (training's validation, the gate prior's search and
        ``report.compare`` all score with it)."""
        return dict(score_threshold=self.score_threshold, nms_iou=self.nms_iou, max_detections=self.max_detections)
