"""LiteEval's configuration: the ``liteeval`` section of :class:`dynvid.config.ExperimentConfig`
(``--set liteeval.KEY=VALUE``). A leaf module: the central config imports it, and it imports
nothing of dynvid."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LiteEvalConfig"]


@dataclass
class LiteEvalConfig:
    """LiteEval (Wu et al., coarse-to-fine, Sec. 3–4). Used by ``method="liteeval"``.

    A video is ``steps`` time steps of ``snippet_len`` frames (``data.clip_len`` must be
    ``steps × snippet_len``); the fine CNN sees a step at ``data.crop_size``, the coarse CNN
    at ``coarse_size``.
    """

    coarse_backbone: str = "mobilenet_v2"
    """Coarse CNN (Sec. 4.1: MobileNetV2), any name in ``dynvid.backbones``."""
    coarse_width: float = 1.0
    """Width multiplier of the coarse CNN."""
    coarse_size: int = 112
    """Side of the downsampled coarse input (Sec. 4.1: 112)."""
    fine_backbone: str = "resnet101"
    """Fine CNN (Sec. 4.1: ResNet-101 at 224); a 3-D network (e.g. ``r2plus1d_18``) runs on
    snippets, as SlowFast in Sec. 4.2.2."""
    fine_width: float = 1.0
    """Width multiplier of the fine CNN."""
    steps: int = 25
    """Time steps T per video (Sec. 4.2.1: 25 frames; test videos sampled at 1 fps)."""
    snippet_len: int = 1
    """Frames per time step: 1 for 2-D backbones, 8 for a SlowFast-like 3-D snippet (Sec. 4.2.2)."""
    rnn: str = "lstm"
    """``lstm`` (the paper's default) or ``gru`` (Sec. 4.3, Table 6)."""
    coarse_hidden: int = 512
    """D^c, cRNN hidden units (512 on FCVID, 1,024 on Kinetics, 64 on ActivityNet, Sec. 4.1)."""
    fine_hidden: int = 2048
    """D^f, fRNN hidden units (2,048 on FCVID and Kinetics, Sec. 4.1 / Table 9); > D^c."""
    gamma: float = 0.05
    """γ of Eq. 7: the target fraction of steps that read fine features (0.05, Table 7)."""
    usage_weight: float = 2.0
    """λ of Eq. 7: weight of the fine-feature usage term (2, Sec. 4.1)."""
    tau_start: float = 5.0
    """Gumbel-softmax temperature at global step 0 (Eq. 9; annealed "from a high value")."""
    tau_end: float = 0.5
    """Temperature floor, reached after ``anneal_steps`` (Jang et al.'s 0.5)."""
    anneal_steps: int | None = None
    """Global steps of the exponential anneal; None = the whole LiteEval stage."""
    cnn_epochs: int | None = None
    """Epochs finetuning the two CNNs as step classifiers (stage ``cnns``); None = ``optim.epochs``."""
    rnn_epochs: int | None = None
    """Epochs of the RNN stages (``lstm`` baseline and ``liteeval``); None = ``optim.epochs``."""
    rnn_lr: float = 1e-4
    """Adam learning rate of the RNN stages (Sec. 4.1: fixed 1e-4)."""
    rnn_batch_size: int | None = None
    """Videos per step in the RNN stages; None = ``data.batch_size`` (the paper: 128–512)."""
    features: str = "cache"
    """``cache``: extract coarse and fine features once with Ray Data and train the RNNs on
    them; ``pixels``: train end to end from frames (the CNNs frozen)."""
    feature_cache: str | None = None
    """Where the cache lives (set by the driver before the RNN stages); None = under
    ``train.storage_path``."""
    budgets: tuple[int, ...] = (1, 2, 3, 4, 6)
    """Online budgets K (fine-feature reads) evaluated in the report (Sec. 4.2.1, Fig. 2)."""
    budget: int | None = None
    """Inference-time knob: emit the prediction at the K-th fine read (online, Sec. 4.2.1);
    None = offline (the whole video)."""
    coarse_pretrained: str | None = None
    """Weights the coarse CNN starts from when the first stage starts fresh: a torchvision
    weights name (the paper's: ``MobileNet_V2_Weights.IMAGENET1K_V2``, ImageNet; from
    torchvision's cache or downloaded), or a file / checkpoint folder / ``s3://`` URI with
    torchvision's keys. None = from scratch (``dynvid.backbones.pretrained``)."""
    fine_pretrained: str | None = None
    """Weights the fine CNN starts from when the first stage starts fresh: a torchvision weights
    name (the paper's: ``ResNet101_Weights.IMAGENET1K_V2``, ImageNet; from torchvision's
    cache or downloaded), or a file / checkpoint folder / ``s3://`` URI with torchvision's
    keys. None = from scratch (``dynvid.backbones.pretrained``)."""
