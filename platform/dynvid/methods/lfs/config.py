"""Looking Fast and Slow's configuration: the ``lfs`` section of :class:`dynvid.config.ExperimentConfig`
(``--set lfs.KEY=VALUE``). A leaf module: the central config imports it, and it imports
nothing of dynvid."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LFSConfig"]


@dataclass
class LFSConfig:
    """Looking Fast and Slow (Liu et al., 2019, Sec. 3–4). Used by ``method="lfs"``.

    Frames are read at ``f0_size``; f1 sees them resized to ``f1_size``. The two sizes must
    keep f0's stride-32 grid equal to f1's stride-16 grid (``f0_size = 2 * f1_size``).
    """

    f0_width: float = 1.4
    """Width multiplier of f0, the accurate MobileNetV2 (Sec. 3.1: 1.4)."""
    f1_width: float = 0.35
    """Width multiplier of f1, the fast MobileNetV2 with its last stride removed (Sec. 3.1: 0.35)."""
    f0_size: int = 320
    """f0's input resolution (Sec. 3.1: 320×320)."""
    f1_size: int = 160
    """f1's input resolution (Sec. 3.1: 160×160)."""
    memory_input: int = 1024
    """Channels of each extractor's input projection into the memory (Table 1: 1024)."""
    state_channels: int = 320
    """LSTM state channels (Sec. 3.2: 320; the memory outputs twice this)."""
    groups: int = 4
    """State groups G of the speed-optimized LSTM (Sec. 3.2: 4)."""
    state_clip: float | None = 6.0
    """The cell state is clipped to ``[-state_clip, state_clip]`` (Sec. 3.2); None: no clipping."""
    skip_f1_update: bool = True
    """Keep the last f0 state when f1 runs (Sec. 3.2); False is the ablation."""
    num_levels: int = 4
    """SSD feature maps: the memory's grid and ``num_levels - 1`` extra layers (Sec. 3.1)."""
    focal: bool = False
    """Classification loss: False = SSD's sigmoid loss with 3:1 hard-negative mining (Sec. 3.3,
    "similar to the standard SSD"); True = focal loss over all anchors."""
    unroll: int = 6
    """Steps the LSTM is unrolled in training (Sec. 3.3: 6); ``data.clip_len`` must equal it."""
    image_fraction: float = 0.25
    """Share of training items that are one frame turned into a clip of shifted crops
    (Sec. 3.3's image data; the paper gives no ratio)."""
    tau: int = 9
    """Inference knob: the fixed policy runs f0, then f1 ``tau`` times (Sec. 3.1; Sec. 4: 9)."""
    taus: tuple[int, ...] = (1, 4, 9, 19)
    """Interleave ratios evaluated in the report (the mAP-vs-τ curve of Fig. 6)."""
    policy: str | None = None
    """Inference knob: a learned interleaving policy (the ``policy.pt`` file a policy job or
    sweep exports) used instead of the fixed τ; None = fixed policy."""
    trigger: float | None = None
    """Inference knob: the label-free change trigger (``methods/lfs/trigger.py``, ours, not the paper's)
    used instead of the fixed τ: f0 on the frame after the memory output changed, between two
    f1 frames, by more than the ``trigger`` quantile (in (0, 1)) of that change on the policy
    videos (``lfs.policy_split``, ``lfs.policy_videos``), fitted on the model being evaluated
    (0.95 fires after the top 5% of the f1-to-f1 steps of a run with f1 after the first frame;
    where the trigger acts the rate differs, as its f0 runs refresh the memory). Measured to
    gain over the fixed schedule at small budgets where scenes cut (``data.synthetic_cuts``;
    README). None = fixed policy. Not with ``lfs.policy``."""
    calibration_videos: int = 32
    """Training-split videos (the first ones) on which each evaluation first fits the
    detector's per-extractor score calibration (Platt scaling, ``lfs.calibration``: f0's and
    f1's scores on one scale, which mAP over all frames ranks together); 0 keeps the raw
    scores (also for a checkpoint that holds one). A checkpoint saved without a calibration
    is fitted when a report or benchmark loads it. An inference knob: each evaluation refits
    it."""
    score_threshold: float = 0.05
    """Detections below this (raw) score are dropped before NMS; the score calibration maps
    the scores of the detections kept."""
    nms_iou: float = 0.6
    """IoU threshold of the per-class NMS."""
    max_detections: int = 100
    """Detections kept per frame (COCO evaluates at most 100)."""
    eval_frames: int | None = None
    """Frames per val video in the evaluation (None = all); the paper scores every frame."""
    latency_fps: float | None = 30.0
    """Camera rate at which frames arrive in the sync/async latency runs (Sec. 3.5; our
    choice: a phone camera's 30 fps, the paper's setting of real-time detection). A frame's
    latency runs from its arrival to its detections. None: back to back."""
    latency_videos: int = 10
    """Val videos the sync/async latency runs cover (each frame after a video's first counts)."""
    gamma: float = 0.2
    """Speed reward γ of Eq. 2 for the adaptive policy (Sec. 4.3 sweeps 0.1–1.5)."""
    reward: str = "eq2"
    """The policy's accuracy reward: ``eq2`` (the paper's Eq. 2, ``min_i L(D^i) − L(D^a)``) or
    ``absolute`` (``−L(D^a)``; our variant, not the paper's). Both add ``γ`` when f1 runs and
    rank the two actions on one frame alike; Eq. 2's ``min_i L(D^i)`` is lower after a run of
    f0 refreshed the memory, so it takes back the credit a refresh earns on the frames after
    it, which ``absolute`` leaves in the return."""
    reward_horizon: int = 1
    """Frames each reward's losses cover (ours, issue 23): ``H > 1`` replaces each ``L(D^i)`` of
    the reward by branch ``i``'s mean loss over the frame and the ``H − 1`` frames after it,
    each branch carried on with f1 from the state it leaves (``evaluation.horizon_losses``), so
    a refresh is credited with what it buys on the frames after it; the benchmark's oracle
    looks as far. 1: the paper's Eq. 2, one frame. Under ``skip_f1_update`` each env step
    runs the memory and head twice whatever ``H`` (the frames after the choice are one batch);
    the ablation runs them ``H`` times."""
    min_f0_gap: int = 1
    """Frames a learned policy waits after an f0 run before it may run f0 again (ours, issue
    23): with ``m > 1`` an f0 chosen on the ``m − 1`` frames after an f0 run is refused and f1
    runs instead, in the policy's environment (the DQN learns under the rule: such a step
    runs, and is rewarded, as f1; the action history shows what ran) and wherever the learned
    policy runs (``evaluation.LearnedPolicy``). The DQN policies of the embedded scenes bunch
    their f0 runs where the loss gap stays large (README, LFS); 1: the paper's policy, no gap."""
    history: int = 20
    """Length of the action history η in the policy's observation (Eq. 1: 20)."""
    policy_videos: int | None = 64
    """Videos the policy's environment samples episodes from (their extractor features are
    cached by each env runner); None = the whole split."""
    policy_split: str | None = None
    """The split those videos come from; None = ``data.train_split``, the detector's own
    training videos, on which its losses are those of scenes it has fitted. The embedded
    preset uses ``test``: synthetic videos neither the detector's training nor its
    validation saw (issue 23)."""
    episode_len: int = 24
    """Frames per policy-training episode (Algorithm 1 samples ``I_1 … I_k``)."""
    dqn_iterations: int = 20
    """RLlib DQN training iterations (each samples ``dqn_steps_per_iteration`` env steps)."""
    dqn_steps_per_iteration: int = 1000
    """Env steps sampled per iteration, at least."""
    dqn_env_runners: int = 2
    """RLlib env runners sampling in parallel (Ray actors)."""
    dqn_cpus_per_runner: float = 0.5
    """CPUs each env runner reserves."""
    dqn_learner_gpus: float = 0.0
    """GPUs of the DQN learner (RLlib's local learner, in the process that trains the policy);
    0 trains the Q-network on the CPU, which its size suits. Policy sweeps reserve no GPU for
    it and refuse a value above 0."""
    dqn_lr: float = 5e-4
    """Adam learning rate of the Q-network."""
    dqn_discount: float = 0.9
    """Discount of the Q-learning target (the paper does not give it; ≈10-frame horizon)."""
    dqn_epsilon_steps: int = 10000
    """Env steps over which ε decays linearly from 1 to 0.05."""
    dqn_replay_capacity: int = 20000
    """Replay buffer size in env steps (an observation is 4·S·g² + 20 floats)."""
    dqn_batch_size: int = 32
    """Transitions per DQN update."""
    dqn_training_intensity: float | None = None
    """Replayed / sampled env steps (RLlib's ``training_intensity``): updates per env step ×
    ``dqn_batch_size``; None = one update per sampling round (2 runners × 4 steps: 1 update
    per 8 env steps)."""
    dqn_target_update: int = 500
    """Env steps between target-network syncs (double Q, [34])."""
    dqn_learning_starts: int = 1000
    """Env steps collected before the first update."""
    f0_pretrained: str | None = None
    """Weights f0's MobileNetV2 trunk starts from when the first stage starts fresh: a
    torchvision weights name (the paper's: ``MobileNet_V2_Weights.IMAGENET1K_V2``, ImageNet;
    from torchvision's cache or downloaded), or a file / checkpoint folder / ``s3://`` URI
    with torchvision's keys. None = from scratch (``dynvid.backbones.pretrained``)."""
    f1_pretrained: str | None = None
    """Weights f1's MobileNetV2 trunk starts from when the first stage starts fresh: a
    torchvision weights name (the paper's: ``MobileNet_V2_Weights.IMAGENET1K_V2``, ImageNet;
    from torchvision's cache or downloaded), or a file / checkpoint folder / ``s3://`` URI
    with torchvision's keys. None = from scratch (``dynvid.backbones.pretrained``)."""
