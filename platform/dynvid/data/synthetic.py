"""Procedural synthetic videos: dynvid's embedded default dataset.

Every video is a small 2-D scene rendered with numpy only, deterministic from
``(seed, index)``: video ``i`` of a dataset with seed ``s`` is drawn from
``np.random.SeedSequence([s, i])`` (a video with cuts draws each later view from a child of
that sequence) and never touches global RNG state.

Scene model
-----------
- **Background**: a static procedural texture (value noise, stripes, gradient or checker,
  muted colours, fixed grain), varied per video. The camera shakes: each frame shows the
  texture and the sprites shifted by a small integer global offset (a bounded random walk,
  ``SceneConfig.camera_jitter``). Apart from that shake the background is static, so
  temporal redundancy depends on what the sprites do.
- **Sprites**: filled shapes from :data:`OBJECT_CLASSES`, saturated colours, two-tone
  (the half with local ``u > 0`` is darker) so that rotation is visible for every shape,
  including circles. Edges are anti-aliased; a pixel belongs to a sprite's mask when its
  coverage is at least 0.5.
- **The actor**: one large sprite (diameter 18-32 % of the short side, ``actor_size``)
  performs the clip's action, one of :data:`ACTION_CLASSES`, and is drawn on top. Its
  speed factor is log-uniform over ``speed_range`` (10x by default), so clips range from
  near-static to fast, as temporal redundancy does in real video. Translations wrap
  around (the centre re-enters at the opposite edge, so the actor is always at least half
  visible and never reverses direction; slow movers start where they need no wrap). Zooms
  are a saw-tooth in log-size (period >= 12 frames). ``bounce`` (a ball hopping on a floor,
  period 8-24 frames), ``circle`` (period 10-32) and ``blink`` (on/off, period 6-24) are
  periodic, so a 16-frame clip sees a turn, a curve or a toggle at every speed. Fast clips
  get a shorter period *and* a larger amplitude; slow clips the reverse.
- **Distractors**: 0 to ``max_distractors`` smaller sprites (6-12 %) that are either static
  or wobble in a small bounded random walk. They never translate steadily, rotate, zoom,
  blink or orbit, so they cannot mimic any action and the label stays learnable.
- **Transients** (off unless ``SceneConfig.transients`` is set): sprites of a distractor's
  size that enter the view during the video and cross it in a straight line (about half
  leave before the end): objects entering and leaving, for detection. They do translate
  steadily, so an action classifier trained on such scenes sees them too.
- **Cuts** (off unless ``SceneConfig.cuts`` is set): at frames drawn uniformly over the
  video, the camera cuts to another view: a new background, new distractors and transients
  and a new actor performing the same action, each view a whole scene of its own of which
  the video shows the frames up to the next cut. What a cut changes, no earlier frame
  predicts: for detection, an abrupt change of content that a fixed schedule meets late.
- **Fades** (off unless ``SceneConfig.fades`` is set): for a few frames at a time an object
  is drawn at a small fraction of its opacity, almost lost in the background (shadow, haze,
  glare), yet still labelled, and hiding nothing under it: one frame barely shows it,
  earlier ones usually did.
- **Sensor noise** (off unless ``SceneConfig.noise_std`` / ``shot_noise`` are set): a
  rendered frame repeats its background exactly wherever nothing moved, which no camera
  does. :func:`add_sensor_noise` adds Gaussian read noise and signal-dependent shot noise,
  independent per pixel, channel and frame, then rounds back to uint8 like a sensor's ADC.
  Frame ``t``'s noise is drawn from its own seed ``(seed, index, t)``, so any subset of
  frames can be made noisy on its own and matches the whole noisy video.

Annotations come out of the renderer itself: per-frame boxes (xyxy, the tight extent of an
object's in-frame mask pixels before occlusion, so a box always covers the object's mask
pixels), stable track ids, class masks after occlusion (an object fully hidden by others or
switched off by ``blink`` is not listed that frame; a faded one hides nothing), and
``motion``: the actor's mean displacement in px/frame, counting centre motion (unwrapped),
rotation as arc length at the actor's radius, radius change for zooms and the radius for
each blink toggle. Camera shake is not part of ``motion``.

Speed: each sprite is rendered for all frames at once inside its bounding window (one
(T, n, n) array per sprite, scattered into the frames through flat indices), and the
background is one slice copy per frame from a pre-made texture, upsampled without BLAS (whose
thread pool oversubscribes the cores when many loader processes render at once). A 64-frame
128x171 video takes about 10-20 ms on one core, a 250-frame 256x340 video about 0.25 s; with
cuts, each view renders only its own frames (a view's scene is drawn whole, which is cheap).
:func:`render_frames` renders only the frames a clip samples, without annotations, and gives
exactly those frames of :func:`generate_video`: the 12 distinct frames of a 16-frame clip of
a 48-frame 128x171 video take about 2.5 ms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "ACTION_CLASSES",
    "DEFAULT_SENSOR_NOISE",
    "OBJECT_CLASSES",
    "SPLITS",
    "SceneConfig",
    "SyntheticVideo",
    "SyntheticVideoSource",
    "add_sensor_noise",
    "generate_video",
    "render_frames",
]

ACTION_CLASSES: tuple[str, ...] = (
    "static",
    "move_left",
    "move_right",
    "move_up",
    "move_down",
    "rotate_cw",
    "rotate_ccw",
    "zoom_in",
    "zoom_out",
    "blink",
    "bounce",
    "circle",
)
"""Action labels; the index is the class label. Defined by the actor's motion pattern."""

OBJECT_CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "cross", "ring")
"""Sprite shapes. Detection category ``k + 1`` and mask value ``k + 1`` mean ``OBJECT_CLASSES[k]``."""

SPLITS: tuple[str, ...] = ("train", "val", "test")
"""Splits of :class:`SyntheticVideoSource`; each uses its own block of video indices."""

_SPLIT_INDEX_OFFSET = 1 << 40  # split k uses indices [k * 2**40, (k + 1) * 2**40)
_ZOOM_DIAMETER = (0.10, 0.40)  # zooming actors sweep this diameter range (fraction of the short side)
_NOISE_STREAM = 0x5E5  # keeps the noise seeds apart from the scene's SeedSequence([seed, index])

DEFAULT_SENSOR_NOISE: dict[str, tuple[float, float]] = {"segmentation": (2.0, 0.03)}
"""``(noise_std, shot_noise)`` of the synthetic data of each kind (``synthetic:<kind>``) when the
config leaves them unset; a kind not listed is rendered noise-free. Segmentation (ResQ) gets noise
so that its residuals are not exactly zero wherever the renderer repeated a pixel: about 2.8
grey levels of standard deviation at mid-grey, a well-lit consumer camera's 8-bit output."""


@dataclass(frozen=True)
class SceneConfig:
    """How synthetic scenes look and move. Sizes are fractions of ``min(height, width)``
    so a scene rendered larger looks the same, only sharper."""

    height: int = 128
    """Frame height in pixels."""
    width: int = 171
    """Frame width in pixels (128x171 is the C3D / R(2+1)D pre-crop size)."""
    num_frames: int = 64
    """Frames per video."""
    fps: float = 25.0
    """Nominal frame rate, written to files; motion is defined per frame."""
    max_distractors: int = 3
    """Each video has a uniform number of distractor sprites in ``[0, max_distractors]``."""
    actor_size: tuple[float, float] = (0.18, 0.32)
    """Range of the actor's diameter (circumscribed circle) as a fraction of the short side."""
    distractor_size: tuple[float, float] = (0.06, 0.12)
    """Range of a distractor's diameter as a fraction of the short side."""
    speed_range: tuple[float, float] = (0.4, 4.0)
    """Per-video speed factor, log-uniform in this range (10x: near-static to fast)."""
    base_speed: float = 0.012
    """Actor translation speed at speed factor 1, in short-sides per frame (1.5 px at 128)."""
    camera_jitter: float = 0.015
    """Largest camera-shake offset as a fraction of the short side (2 px at 128)."""
    distractor_wobble: float = 0.02
    """Largest wobble offset of a moving distractor, fraction of the short side."""
    noise_std: float = 0.0
    """Sensor read noise: standard deviation of a Gaussian added to every pixel, channel and
    frame, in grey levels of [0, 255] (0: noise-free)."""
    shot_noise: float = 0.0
    """Sensor shot noise gain: a pixel of value ``v`` gets variance ``shot_noise · v`` (grey
    levels²) on top of the read noise, Poisson-like (0: none)."""
    speed_changes: float = 0.0
    """Expected number of times the actor changes speed within a video (Poisson): the video's
    speed factor is multiplied, segment by segment, by a factor log-uniform in
    ``speed_change_range`` (then all rescaled to keep the video's mean speed), so a video
    holds slow and fast spells (issue 23: content whose redundancy varies over time). 0: one
    speed per video, as before (the same scenes, draw for draw)."""
    speed_change_range: tuple[float, float] = (0.25, 4.0)
    """Range of a segment's speed multiplier (log-uniform), before the rescaling."""
    transients: float = 0.0
    """Expected number of objects per video that enter the view during the video (Poisson):
    each is a sprite of a distractor's size that crosses the frame on a straight line from
    outside one edge to outside another, starting at a uniform frame of the video and
    crossing in ``transient_crossing`` of the video's length, so about half of them also
    leave before the video ends; it is labelled (boxes, masks) while any of it is in view
    (issue 23: objects entering and leaving). 0: none (the same scenes, draw for draw)."""
    transient_crossing: tuple[float, float] = (0.25, 0.75)
    """Range of a transient's crossing time (uniform), as a fraction of the video's frames."""
    cuts: float = 0.0
    """Expected number of cuts per video (Poisson, at most ``num_frames - 1``), each at a
    distinct frame drawn uniformly from frames 1 … T−1 (issue 23: content that changes all at
    once, as when a camera is switched or swung to another view). A cut starts a new view: the
    whole scene (background, camera shake, distractors, transients, actor) drawn afresh from
    the video's sequence's child ``spawn_key=(7, k)`` for the k-th view (not another video's
    sequence, whatever the index), with the video's action label, of which the video shows
    the frames from the cut to the next one. A view's objects get track ids after all earlier
    views' (the first view's actor stays 0); ``motion`` counts no displacement across a cut.
    0: one view (the same scenes, draw for draw)."""
    fades: float = 0.0
    """Expected number of fade spells per object (Poisson, drawn per object over the whole
    video, so an object of a short view or a brief transient shows fewer): for
    ``fade_frames`` consecutive frames from a uniform start (cut at the video's end;
    overlapping spells merge, keeping the fainter level) the object is drawn at a
    ``fade_level`` fraction of its opacity, almost blended into the background (an object
    passing through shadow, haze or glare), and still labelled (boxes, masks, ids), as a
    real annotator who saw it in the neighbouring frames would label it; it hides nothing
    under it. What a faded frame lacks, an earlier frame usually shows (issue 23: frames
    whose earlier frames carry what they lack, for ANT's key-frame fusion). 0: none (the
    same scenes, draw for draw)."""
    fade_frames: tuple[int, int] = (2, 8)
    """Range of a fade spell's length in frames (uniform integers, both ends included)."""
    fade_level: tuple[float, float] = (0.03, 0.15)
    """Range of the opacity during a spell (uniform; 1 = drawn as usual, 0 = not drawn)."""

    def __post_init__(self) -> None:
        if self.height < 16 or self.width < 16:
            raise ValueError(f"frames must be at least 16x16, got {self.height}x{self.width}")
        if self.num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {self.num_frames}")
        if self.fps <= 0:
            raise ValueError(f"fps must be > 0, got {self.fps}")
        if self.max_distractors < 0:
            raise ValueError(f"max_distractors must be >= 0, got {self.max_distractors}")
        if not self.speed_changes >= 0:
            raise ValueError(f"speed_changes must be >= 0, got {self.speed_changes}")
        if not self.transients >= 0:
            raise ValueError(f"transients must be >= 0, got {self.transients}")
        if not self.cuts >= 0:
            raise ValueError(f"cuts must be >= 0, got {self.cuts}")
        if not self.fades >= 0:
            raise ValueError(f"fades must be >= 0, got {self.fades}")
        lo, hi = self.fade_frames
        if not (isinstance(lo, (int, np.integer)) and isinstance(hi, (int, np.integer)) and 1 <= lo <= hi):
            raise ValueError(f"fade_frames must be integers with 1 <= low <= high, got {self.fade_frames}")
        if not 0 <= self.fade_level[0] <= self.fade_level[1] <= 1:
            raise ValueError(f"fade_level must satisfy 0 <= low <= high <= 1, got {self.fade_level}")
        for name in ("actor_size", "distractor_size", "speed_range", "speed_change_range", "transient_crossing"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ValueError(f"{name} must satisfy 0 < low <= high, got {(lo, hi)}")
        if not (self.noise_std >= 0 and self.shot_noise >= 0):
            raise ValueError(f"noise_std and shot_noise must be >= 0, got {self.noise_std}, {self.shot_noise}")
        if self.actor_size[1] > 0.5:
            raise ValueError(f"actor_size above 0.5 of the frame leaves no room to move: {self.actor_size}")


@dataclass
class SyntheticVideo:
    """One rendered video with its labels and annotations."""

    frames: np.ndarray
    """(T, H, W, 3) uint8 RGB."""
    label: int
    """Action class index into :data:`ACTION_CLASSES`."""
    boxes: list[np.ndarray]
    """Per frame, (N_t, 4) float32 xyxy pixel-edge boxes, clipped to the frame; visible objects only."""
    box_classes: list[np.ndarray]
    """Per frame, (N_t,) int64 index into :data:`OBJECT_CLASSES` (0-based)."""
    track_ids: list[np.ndarray]
    """Per frame, (N_t,) int64 object id, stable within the video (the actor is 0; after a cut,
    ``SceneConfig.cuts``, the new view's objects, its actor too, get ids after the earlier views')."""
    masks: np.ndarray
    """(T, H, W) uint8 class mask after occlusion: 0 background, k = ``OBJECT_CLASSES[k - 1]``."""
    motion: float
    """Mean actor displacement in px/frame (translation + rotation/zoom/blink equivalents)."""
    fps: float
    """Nominal frame rate."""

    @property
    def action(self) -> str:
        return ACTION_CLASSES[self.label]


# ----------------------------------------------------------------------------- shapes


def _shape_sdf(shape: int, u: np.ndarray, w: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Approximate signed distance (pixels, < 0 inside) of a shape with circumradius ``r``,
    in its local frame (u right, w down)."""
    name = OBJECT_CLASSES[shape]
    if name == "circle":
        return np.sqrt(u * u + w * w) - r
    if name == "square":
        return np.maximum(np.abs(u), np.abs(w)) - r * np.float32(0.7071)
    if name == "triangle":  # equilateral, a vertex pointing to -w; inradius r/2
        e1 = w
        e2 = -0.866 * u - 0.5 * w
        e3 = 0.866 * u - 0.5 * w
        return np.maximum(np.maximum(e1, e2), e3) - 0.5 * r
    if name == "diamond":  # rhombus, half-diagonals 0.6 r and r (not a rotated square)
        return (np.abs(u) / 0.6 + np.abs(w) - r) * np.float32(0.5145)
    if name == "cross":  # plus sign, arms 0.56 r wide
        au, aw = np.abs(u), np.abs(w)
        arm, length = 0.28 * r, 0.95 * r
        return np.minimum(np.maximum(au - length, aw - arm), np.maximum(au - arm, aw - length))
    if name == "ring":
        return np.abs(np.sqrt(u * u + w * w) - 0.775 * r) - 0.225 * r
    raise ValueError(f"unknown shape index {shape}")


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    i = int(h * 6.0) % 6
    f = h * 6.0 - math.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return np.array(rgb, np.float32) * 255.0


# ----------------------------------------------------------------------------- background


def _lerp_taps(n_out: int, n_grid: int, cell: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear interpolation of ``n_out`` positions from a coarse grid with spacing ``cell``:
    each position's two grid taps ``i0``, ``i0 + 1`` and their weights (the two non-zero
    entries of its row of the hat-function matrix ``max(0, 1 - |pos - j|)``)."""
    pos = np.arange(n_out, dtype=np.float32) / cell
    i0 = np.floor(pos)
    w0 = np.maximum(0.0, 1.0 - np.abs(pos - i0))
    w1 = np.maximum(0.0, 1.0 - np.abs(pos - (i0 + 1)))
    return i0.astype(np.int64), w0, w1


def _value_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Smooth (h, w) noise in [0, 1]: a random coarse grid, bilinearly upsampled.

    Two taps per output pixel, rows then columns, rather than a product with the dense
    hat-function matrices: no BLAS call, whose thread pool (one per loader process, as many
    threads as cores) oversubscribes the CPUs when many loader workers render at once."""
    gh, gw = int(h / cell) + 2, int(w / cell) + 2
    grid = rng.random((gh, gw), dtype=np.float32)
    r, a0, a1 = _lerp_taps(h, gh, cell)
    rows = a0[:, None] * grid[r] + a1[:, None] * grid[r + 1]  # (h, gw)
    c, b0, b1 = _lerp_taps(w, gw, cell)
    return rows[:, c] * b0 + rows[:, c + 1] * b1


def _background(rng: np.random.Generator, h: int, w: int, short: int) -> np.ndarray:
    """(h, w, 3) uint8 texture: noise, stripes, gradient or checker in two muted colours."""
    hue = rng.random()
    c0 = _hsv_to_rgb(hue, rng.uniform(0.1, 0.4), rng.uniform(0.2, 0.45))
    c1 = _hsv_to_rgb((hue + rng.uniform(0.1, 0.5)) % 1.0, rng.uniform(0.1, 0.4), rng.uniform(0.5, 0.8))
    y = np.arange(h, dtype=np.float32)[:, None]
    x = np.arange(w, dtype=np.float32)[None, :]
    kind = rng.integers(4)
    if kind == 0:  # two octaves of value noise
        t = 0.65 * _value_noise(rng, h, w, short * rng.uniform(0.15, 0.35))
        t += 0.35 * _value_noise(rng, h, w, short * rng.uniform(0.04, 0.08))
    elif kind == 1:  # soft stripes at a random angle and period
        phi = rng.uniform(0, math.pi)
        period = short * rng.uniform(0.06, 0.3)
        t = 0.5 + 0.5 * np.sin((x * math.cos(phi) + y * math.sin(phi)) * (2 * math.pi / period))
    elif kind == 2:  # linear gradient plus coarse noise
        phi = rng.uniform(0, 2 * math.pi)
        g = x * math.cos(phi) + y * math.sin(phi)
        t = 0.7 * (g - g.min()) / max(float(g.max() - g.min()), 1.0)
        t = t + 0.3 * _value_noise(rng, h, w, short * 0.2)
    else:  # smoothed checker
        period = short * rng.uniform(0.1, 0.3)
        t = 0.5 + 0.5 * np.tanh(3.0 * np.sin(x * (math.pi / period)) * np.sin(y * (math.pi / period)))
    t = np.broadcast_to(t, (h, w))[..., None]
    tex = c0 + t * (c1 - c0) + rng.normal(0.0, 4.0, size=(h, w, 3)).astype(np.float32)
    return np.clip(tex, 0, 255).astype(np.uint8)


def _camera_shake(rng: np.random.Generator, num_frames: int, limit: int) -> np.ndarray:
    """(T, 2) integer (dy, dx) offsets: a lazy random walk bounded to [-limit, limit]."""
    if limit == 0:
        return np.zeros((num_frames, 2), np.int64)
    steps = rng.choice(np.array([-1, 0, 0, 0, 1]), size=(num_frames, 2)).tolist()
    y, x = (int(v) for v in rng.integers(-limit, limit + 1, size=2))
    offsets = []
    for sy, sx in steps:  # sequential clipping; plain ints are ~10x faster than numpy here
        y, x = min(max(y + sy, -limit), limit), min(max(x + sx, -limit), limit)
        offsets.append((y, x))
    offsets = np.array(offsets, np.int64)
    return offsets


# ----------------------------------------------------------------------------- motion


@dataclass
class _Track:
    """Per-frame state of one sprite in world (unshaken) pixel coordinates."""

    shape: int
    color: np.ndarray  # (3,) float32 RGB
    cx: np.ndarray  # (T,) centre, possibly wrapped
    cy: np.ndarray
    radius: np.ndarray  # (T,) circumradius
    angle: np.ndarray  # (T,) radians; increasing = clockwise on screen (y points down)
    visible: np.ndarray  # (T,) 0/1
    path_length: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (T-1,) px per step
    opacity: np.ndarray | None = None  # (T,) float32 alpha multiplier (SceneConfig.fades); None: 1


def _actor_clock(rng: np.random.Generator, cfg: SceneConfig) -> np.ndarray:
    """(T,) the actor's motion time at each frame: ``0, 1, …, T−1`` at constant speed; with
    ``cfg.speed_changes``, a Poisson number of distinct change frames, uniform over the video,
    split it into segments, each advancing by its own multiplier (log-uniform in
    ``speed_change_range``) per frame, rescaled so that the clock still ends at ``T − 1``: the
    video's mean speed is the one drawn for it, only spread unevenly. Every motion pattern
    reads this clock, so a slow spell slows a translation, a rotation, a zoom, a blink or a
    bounce alike; the patterns' period limits (e.g. a zoom's saw-tooth of ≥ 12 frames) hold
    for the mean speed, a fast spell may run a period faster."""
    T = cfg.num_frames
    if cfg.speed_changes <= 0 or T < 2:
        return np.arange(T, dtype=np.float64)
    count = min(int(rng.poisson(cfg.speed_changes)), T - 2)
    changes = np.sort(rng.choice(np.arange(1, T - 1), size=count, replace=False))  # distinct change frames
    lo, hi = cfg.speed_change_range
    factors = np.exp(rng.uniform(math.log(lo), math.log(hi), size=count + 1))
    step = factors[np.searchsorted(changes, np.arange(T - 1), side="right")]  # frame i → i+1
    step = step / step.mean()  # the video's mean speed stays the one drawn for it
    return np.concatenate([[0.0], np.cumsum(step)])


def _actor_track(rng: np.random.Generator, label: int, cfg: SceneConfig, short: int, t: np.ndarray) -> _Track:
    """The actor's per-frame state for action ``label`` (see ACTION_CLASSES); ``t``: its motion
    time per frame (:func:`_actor_clock`)."""
    T, H, W = cfg.num_frames, cfg.height, cfg.width
    action = ACTION_CLASSES[label]
    # Appearance first, so it does not depend on the label (label-specific draws come later).
    shape, color = int(rng.integers(len(OBJECT_CLASSES))), _sprite_color(rng)
    lo, hi = cfg.speed_range
    speed = math.exp(rng.uniform(math.log(lo), math.log(hi)))
    v = speed * cfg.base_speed * short  # px/frame
    r0 = 0.5 * short * rng.uniform(*cfg.actor_size)
    radius = np.full(T, r0)
    angle = np.full(T, rng.uniform(0, 2 * math.pi))
    visible = np.ones(T)
    phase = rng.uniform(0, 1)
    centre_margin = r0  # keeps a non-translating actor fully in frame

    ux, uy = np.zeros(T), np.zeros(T)  # unwrapped centre (for ``motion``)
    if action in ("move_left", "move_right", "move_up", "move_down"):
        horizontal = action in ("move_left", "move_right")
        sign = -1.0 if action in ("move_left", "move_up") else 1.0
        length = W if horizontal else H
        other = H if horizontal else W
        travel = v * t[-1]
        if travel <= length - 2 * r0:  # fits without wrapping: start so it stays inside
            start = rng.uniform(r0, length - r0 - travel)
            if sign < 0:
                start = length - start
        else:
            start = rng.uniform(0, length)
        along = start + sign * v * t
        across = np.full(T, rng.uniform(r0, other - r0))
        ux, uy = (along, across) if horizontal else (across, along)
        wrapped = np.mod(along, length)
        cx, cy = (wrapped, across) if horizontal else (across, wrapped)
    else:
        if action in ("rotate_cw", "rotate_ccw"):
            omega = min(v / r0, 0.3)  # rim speed ~ v, capped at 17 deg/frame
            angle = angle + (omega if action == "rotate_cw" else -omega) * t
        elif action in ("zoom_in", "zoom_out"):
            r_lo, r_hi = (0.5 * short * d for d in _ZOOM_DIAMETER)
            span = math.log(r_hi / r_lo)
            rate = min(speed * 0.03, span / 12)  # log-radius per frame; saw-tooth period >= 12
            total = rate * t[-1]
            if total <= span:
                start = rng.uniform(0, span - total)
            else:
                start = rng.uniform(0, span)
            logr = np.mod(start + rate * t, span)
            if action == "zoom_out":
                logr = span - logr
            radius = r_lo * np.exp(logr)
            centre_margin = r_hi
        elif action == "blink":
            period = float(np.clip(9.6 / speed, 6, 24))
            visible = (np.mod(t / period + phase, 1.0) < 0.5).astype(np.float64)
        elif action == "bounce":  # ball bouncing on a floor: |sin| with its cusp at the floor
            period = float(np.clip(15.0 / math.sqrt(speed), 8, 24))
            amp = min(v * period / 2, 0.35 * short)
            floor = rng.uniform(r0 + amp, H - r0)
            ux = np.full(T, rng.uniform(r0, W - r0))
            uy = floor - amp * np.abs(np.sin(math.pi * (t / period + phase)))
        elif action == "circle":
            period = float(np.clip(20.0 / math.sqrt(speed), 10, 32))
            rad = min(v * period / math.pi, 0.25 * short)
            direction = rng.choice([-1.0, 1.0])
            a = 2 * math.pi * (direction * t / period + phase)
            m = r0 + rad
            cx0, cy0 = rng.uniform(m, W - m), rng.uniform(m, H - m)
            ux, uy = cx0 + rad * np.cos(a), cy0 + rad * np.sin(a)
        if action not in ("bounce", "circle"):
            m = min(centre_margin, 0.5 * min(H, W) - 1)
            ux = np.full(T, rng.uniform(m, W - m))
            uy = np.full(T, rng.uniform(m, H - m))
        cx, cy = ux, uy

    path = (
        np.hypot(np.diff(ux), np.diff(uy))
        + radius[:-1] * np.abs(np.diff(angle))
        + np.abs(np.diff(radius))
        + radius[:-1] * np.abs(np.diff(visible))
    )
    return _Track(shape, color, cx, cy, radius, angle, visible, path_length=path)


def _sprite_color(rng: np.random.Generator) -> np.ndarray:
    return _hsv_to_rgb(rng.random(), rng.uniform(0.6, 1.0), rng.uniform(0.75, 1.0))


def _distractor_track(rng: np.random.Generator, cfg: SceneConfig, short: int) -> _Track:
    """A smaller sprite that is static or wobbles in a bounded random walk (no steady motion)."""
    T, H, W = cfg.num_frames, cfg.height, cfg.width
    r = 0.5 * short * rng.uniform(*cfg.distractor_size)
    cx0, cy0 = rng.uniform(r, W - r), rng.uniform(r, H - r)
    cx, cy = np.full(T, cx0), np.full(T, cy0)
    if rng.random() < 0.5:
        limit = cfg.distractor_wobble * short
        steps = rng.normal(0.0, 0.15 * limit + 1e-6, size=(T, 2))
        # Pull back to the base point so the walk stays bounded and has no drift.
        walk = np.empty((T, 2))
        oy = ox = 0.0
        for i, (sy, sx) in enumerate(steps.tolist()):
            oy = min(max(0.85 * oy + sy, -limit), limit)
            ox = min(max(0.85 * ox + sx, -limit), limit)
            walk[i] = (ox, oy)
        cx, cy = cx0 + walk[:, 0], cy0 + walk[:, 1]
    return _Track(
        shape=int(rng.integers(len(OBJECT_CLASSES))),
        color=_sprite_color(rng),
        cx=cx, cy=cy,
        radius=np.full(T, r),
        angle=np.full(T, rng.uniform(0, 2 * math.pi)),
        visible=np.ones(T),
    )


def _transient_track(rng: np.random.Generator, cfg: SceneConfig, short: int) -> _Track:
    """A sprite of a distractor's size that enters the view and crosses it: a straight line
    from a point outside one edge to a point outside another (never the same edge), starting
    at a uniform frame and lasting ``cfg.transient_crossing`` of the video (so it may still be
    in view at the end); invisible before it starts and after it ends (it is outside the
    frame then)."""
    T, H, W = cfg.num_frames, cfg.height, cfg.width
    r = 0.5 * short * rng.uniform(*cfg.distractor_size)

    def outside(side: int) -> tuple[float, float]:  # a point just beyond edge ``side`` (left, right, top, bottom)
        m = r + 1.0
        if side < 2:
            return (-m if side == 0 else W + m), rng.uniform(r, H - r)
        return rng.uniform(r, W - r), (-m if side == 2 else H + m)

    enter = int(rng.integers(4))
    leave = int((enter + rng.integers(1, 4)) % 4)
    (x0, y0), (x1, y1) = outside(enter), outside(leave)
    start = float(rng.uniform(0, T - 1))
    duration = max(1.0, float(rng.uniform(*cfg.transient_crossing)) * T)
    u = (np.arange(T) - start) / duration  # 0 at the entry point, 1 at the exit point
    visible = ((u >= 0) & (u <= 1)).astype(np.float64)
    u = np.clip(u, 0.0, 1.0)
    return _Track(
        shape=int(rng.integers(len(OBJECT_CLASSES))),
        color=_sprite_color(rng),
        cx=x0 + (x1 - x0) * u, cy=y0 + (y1 - y0) * u,
        radius=np.full(T, r),
        angle=np.full(T, rng.uniform(0, 2 * math.pi)),
        visible=visible,
    )


# ----------------------------------------------------------------------------- rendering


def _sprite_cover(track: _Track, shake: np.ndarray, sel: np.ndarray, H: int, W: int):
    """Coverage of ``track`` in frames ``sel`` (the track's frame indices), all frames at once
    inside one (n, n) window per frame that follows the sprite.

    Returns ``(cover, u, xs, ys)``: cover (F, n, n) float32 in [0, 1] (0 outside the frame),
    u (F, n, n) the local coordinate that picks the dark half, and the window's frame columns
    xs (F, n) and rows ys (F, n). The window size comes from the whole track, so a frame's
    pixels do not depend on which other frames are drawn with it.
    """
    cx = (track.cx[sel] + shake[sel, 1]).astype(np.float32)
    cy = (track.cy[sel] + shake[sel, 0]).astype(np.float32)
    half = int(math.ceil(float(track.radius.max()))) + 1
    n = 2 * half + 1
    offs = np.arange(n)
    xs = (np.floor(cx).astype(np.int64) - half)[:, None] + offs  # (F, n) column of each window column
    ys = (np.floor(cy).astype(np.int64) - half)[:, None] + offs
    X = (xs + 0.5 - cx[:, None]).astype(np.float32)[:, None, :]  # pixel centres
    Y = (ys + 0.5 - cy[:, None]).astype(np.float32)[:, :, None]
    c = np.cos(track.angle[sel]).astype(np.float32)[:, None, None]
    s = np.sin(track.angle[sel]).astype(np.float32)[:, None, None]
    u = X * c + Y * s
    w = Y * c - X * s
    r = track.radius[sel].astype(np.float32)[:, None, None]
    sdf = _shape_sdf(track.shape, u, w, r)
    cover = np.clip(0.5 - sdf, 0.0, 1.0) * track.visible[sel].astype(np.float32)[:, None, None]
    inside = ((ys >= 0) & (ys < H))[:, :, None] & ((xs >= 0) & (xs < W))[:, None, :]
    cover *= inside
    return cover, u, xs, ys


def _opacity(track: _Track, sel: np.ndarray) -> np.ndarray | None:
    """The track's opacity at frames ``sel`` (None where it never fades)."""
    return None if track.opacity is None else track.opacity[sel]


def _fade_opacity(rng: np.random.Generator, cfg: SceneConfig) -> np.ndarray | None:
    """(T,) float32 opacity of one object with ``cfg.fades`` (see :class:`SceneConfig`): a
    Poisson number of spells, each ``fade_frames`` long from a uniform start (cut at the
    video's end) at a ``fade_level`` opacity; overlapping spells keep the fainter level.
    None when no spell was drawn."""
    T = cfg.num_frames
    n = int(rng.poisson(cfg.fades))
    if n == 0:
        return None
    opacity = np.ones(T, np.float32)
    for _ in range(n):
        start = int(rng.integers(T))
        length = int(rng.integers(cfg.fade_frames[0], cfg.fade_frames[1] + 1))
        level = np.float32(rng.uniform(*cfg.fade_level))
        opacity[start:start + length] = np.minimum(opacity[start:start + length], level)
    return opacity


def _blend_sprite(frames_flat: np.ndarray, track: _Track, cover: np.ndarray, u: np.ndarray, xs: np.ndarray,
                  ys: np.ndarray, H: int, W: int, opacity: np.ndarray | None = None) -> np.ndarray:
    """Alpha-blend a sprite's coverage into ``frames_flat`` ((F * H * W, 3) uint8, frame ``k``
    of the cover is frame ``k`` there), times ``opacity`` ((F,), the track's at those frames;
    None: 1). Returns the flat pixel indices of its mask (coverage >= 0.5, whatever the opacity)."""
    tt, yy, xx = np.nonzero(cover > 0)
    flat = (tt * H + ys[tt, yy]) * W + xs[tt, xx]
    covered = cover[tt, yy, xx]
    alpha = (covered if opacity is None else covered * opacity[tt])[:, None]
    dark = u[tt, yy, xx] > 0
    color = np.where(dark[:, None], track.color * np.float32(0.55), track.color)
    old = frames_flat[flat].astype(np.float32)
    frames_flat[flat] = (old + alpha * (color - old) + 0.5).astype(np.uint8)
    return flat[covered >= 0.5]  # a faded sprite keeps its mask: it is there, only hard to see


def _render_sprite(
    frames_flat: np.ndarray,
    inst_flat: np.ndarray,
    track: _Track,
    inst_id: int,
    shake: np.ndarray,
    sel: np.ndarray,
    H: int,
    W: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Alpha-blend ``track`` into frames ``sel`` at once (frame ``sel[k]`` is frame ``k`` of
    ``frames_flat``); write ``inst_id`` into the instance map.

    A faded sprite (``SceneConfig.fades``) claims in the instance map only the pixels no earlier
    sprite holds: what lies under it shows through and stays labelled (a faded sprite wholly
    over earlier ones then has no pixels of its own and is not listed that frame).

    Returns (boxes (F, 4) float32, has_pixels (F,) bool, mask_index (K,) flat pixel indices
    of the sprite's mask) so visibility after occlusion can be checked once all are drawn.
    """
    cover, u, xs, ys = _sprite_cover(track, shake, sel, H, W)
    opacity = _opacity(track, sel)
    mask_index = _blend_sprite(frames_flat, track, cover, u, xs, ys, H, W, opacity)
    if opacity is not None:
        faded = opacity[mask_index // (H * W)] < 1
        mask_index = mask_index[~faded | (inst_flat[mask_index] == 0)]
    inst_flat[mask_index] = inst_id

    n = cover.shape[1]
    ox, oy = xs[:, 0], ys[:, 0]
    m = cover >= 0.5
    rows, cols = m.any(axis=2), m.any(axis=1)  # (T, n)
    has = rows.any(axis=1)
    y1 = oy + rows.argmax(axis=1)
    y2 = oy + n - rows[:, ::-1].argmax(axis=1)
    x1 = ox + cols.argmax(axis=1)
    x2 = ox + n - cols[:, ::-1].argmax(axis=1)
    boxes = np.stack([x1, y1, x2, y2], axis=1).astype(np.float32)
    return boxes, has, mask_index


def add_sensor_noise(frames: np.ndarray, frame_ids, seed: int, index: int, noise_std: float,
                     shot_noise: float) -> np.ndarray:
    """Frames ``(n, H, W, 3)`` uint8 of video ``index`` (dataset ``seed``) with sensor noise:
    ``round(v + sqrt(noise_std² + shot_noise · v) · z)`` clipped to [0, 255], ``z`` standard
    normal per pixel and channel, drawn for frame ``frame_ids[k]`` from the seed
    ``(seed, index, frame_ids[k])`` alone. Returns a new array (the input when both are 0)."""
    if noise_std < 0 or shot_noise < 0:
        raise ValueError(f"noise_std and shot_noise must be >= 0, got {noise_std}, {shot_noise}")
    if noise_std == 0 and shot_noise == 0:
        return frames
    out = np.empty_like(frames)
    for k, t in enumerate(frame_ids):
        rng = np.random.default_rng([seed, index, _NOISE_STREAM, int(t)])
        v = frames[k].astype(np.float32)
        z = rng.standard_normal(v.shape, dtype=np.float32)
        noisy = v + np.sqrt(np.float32(noise_std) ** 2 + np.float32(shot_noise) * v) * z
        out[k] = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    return out


@dataclass
class _Scene:
    """Everything random about one video, drawn before any pixel is rendered."""

    label: int
    texture: np.ndarray  # (H + 2 jit, W + 2 jit, 3) uint8 background
    jit: int  # largest camera-shake offset, px
    shake: np.ndarray  # (T, 2) (dy, dx)
    tracks: list[_Track]  # drawing order: distractors, then the actor on top
    track_ids: list[int]  # the actor is 0


_CUT_STREAM = 6  # the child of a video's SeedSequence([seed, index]) that draws its cuts
_VIEW_STREAM = 7  # view k > 0 of a video is drawn from that sequence's child spawn_key=(7, k)
_FADE_STREAM = 8  # a view's fade spells (SceneConfig.fades) come from its sequence's child 8


def _child(ss: np.random.SeedSequence, k: int) -> np.random.SeedSequence:
    """Child ``k`` of ``ss``, as ``ss.spawn(k + 1)[k]`` gives it, whatever ``ss`` spawned before."""
    return np.random.SeedSequence(ss.entropy, spawn_key=ss.spawn_key + (k,))


def _draw_scene(index: int, seed: int, cfg: SceneConfig, label: int | None, view: int = 0) -> _Scene:
    """The scene of video ``index`` (see :func:`generate_video` for the arguments); ``view``
    k > 0: the scene of the video's k-th cut, drawn from the video's sequence's child
    ``spawn_key=(_VIEW_STREAM, k)`` (``SeedSequence([seed, index, k])`` would not do: numpy
    splits an index of 2**32 or more into two words, so that would be another video's scene)."""
    if index < 0 or seed < 0:
        raise ValueError(f"index and seed must be >= 0, got index={index} seed={seed}")
    num_classes = len(ACTION_CLASSES)
    ss = np.random.SeedSequence([seed, index], spawn_key=() if view == 0 else (_VIEW_STREAM, view))
    # a fifth stream for the speed changes, a sixth for the transients (child 6, drawn by _views,
    # for the cuts, 7 naming the views, 8 for the fades): a child's draws do not depend on how
    # many are spawned, so the first four are the same as before they existed
    rng_label, rng_scene, rng_actor, rng_distract, rng_clock, rng_transient = (
        np.random.default_rng(s) for s in ss.spawn(_CUT_STREAM))
    drawn = int(rng_label.integers(num_classes))
    label = drawn if label is None else int(label)
    if not 0 <= label < num_classes:
        raise ValueError(f"label must be in [0, {num_classes}), got {label}")

    T, H, W = cfg.num_frames, cfg.height, cfg.width
    short = min(H, W)
    jit = int(round(cfg.camera_jitter * short))
    texture = _background(rng_scene, H + 2 * jit, W + 2 * jit, short)
    shake = _camera_shake(rng_scene, T, jit)
    actor = _actor_track(rng_actor, label, cfg, short, _actor_clock(rng_clock, cfg))
    n_distract = int(rng_distract.integers(cfg.max_distractors + 1))
    distractors = [_distractor_track(rng_distract, cfg, short) for _ in range(n_distract)]
    n_transient = int(rng_transient.poisson(cfg.transients))  # its own stream: 0 draws nothing from the others
    transients = [_transient_track(rng_transient, cfg, short) for _ in range(n_transient)]
    sprites = distractors + transients  # drawn in this order, under the actor
    if cfg.fades > 0:  # child 8 (6 draws the cuts, 7 names the views): fades=0 draws nothing
        rng_fade = np.random.default_rng(_child(ss, _FADE_STREAM))
        for trk in [actor] + sprites:  # the actor's spells first: they do not move with the sprites' count
            trk.opacity = _fade_opacity(rng_fade, cfg)
    return _Scene(label, texture, jit, shake, sprites + [actor], list(range(1, len(sprites) + 1)) + [0])


def _views(index: int, seed: int, cfg: SceneConfig, label: int | None) -> list[tuple[int, int, _Scene]]:
    """The video's views as ``(first frame, end frame, scene)``, in order: one without cuts
    (``SceneConfig.cuts``); later views share the first one's action label."""
    first = _draw_scene(index, seed, cfg, label)
    T = cfg.num_frames
    if cfg.cuts == 0 or T < 2:
        return [(0, T, first)]
    rng = np.random.default_rng(_child(np.random.SeedSequence([seed, index]), _CUT_STREAM))
    n = min(int(rng.poisson(cfg.cuts)), T - 1)
    starts = [0] + sorted(int(t) for t in rng.choice(np.arange(1, T), size=n, replace=False))
    scenes = [first] + [_draw_scene(index, seed, cfg, first.label, view=k) for k in range(1, n + 1)]
    return list(zip(starts, starts[1:] + [T], scenes))


def _background_frames(scene: _Scene, sel, H: int, W: int) -> np.ndarray:
    """(len(sel), H, W, 3) uint8: frame ``sel[k]`` shows the texture shifted by its shake offset
    (slice copies are ~50x faster than one fancy-index gather here)."""
    frames = np.empty((len(sel), H, W, 3), np.uint8)
    for k, (dy, dx) in enumerate((scene.jit - scene.shake[sel]).tolist()):
        frames[k] = scene.texture[dy : dy + H, dx : dx + W]
    return frames


def render_frames(
    index: int,
    frame_ids,
    seed: int = 0,
    cfg: SceneConfig = SceneConfig(),
    label: int | None = None,
    noise: bool = True,
) -> np.ndarray:
    """Frames ``frame_ids`` of video ``index``, ``(len(frame_ids), H, W, 3)`` uint8: exactly
    ``generate_video(index, seed, cfg, label, noise).frames[frame_ids]``, without rendering the
    other frames or the annotations (what a clip sampler needs; several times faster when a
    clip takes a third of the video). Repeated ids are rendered once."""
    T, H, W = cfg.num_frames, cfg.height, cfg.width
    ids = np.asarray(frame_ids, np.int64).reshape(-1)
    if ids.size and not (0 <= ids.min() and ids.max() < T):
        raise IndexError(f"frame ids must be in [0, {T}), got {ids.min()}..{ids.max()}")
    sel, inverse = np.unique(ids, return_inverse=True)
    parts = []
    for start, end, scene in _views(index, seed, cfg, label):
        part = sel[(sel >= start) & (sel < end)]
        if not part.size:
            continue
        frames = _background_frames(scene, part, H, W)
        frames_flat = frames.reshape(-1, 3)
        for trk in scene.tracks:
            _blend_sprite(frames_flat, trk, *_sprite_cover(trk, scene.shake, part, H, W), H, W, _opacity(trk, part))
        parts.append(frames)
    frames = parts[0] if len(parts) == 1 else np.concatenate(parts) if parts else np.empty((0, H, W, 3), np.uint8)
    if noise:
        frames = add_sensor_noise(frames, sel.tolist(), seed, index, cfg.noise_std, cfg.shot_noise)
    return frames if len(sel) == len(ids) and (sel == ids).all() else frames[inverse]


def generate_video(
    index: int,
    seed: int = 0,
    cfg: SceneConfig = SceneConfig(),
    label: int | None = None,
    noise: bool = True,
) -> SyntheticVideo:
    """Render video ``index`` of the dataset with ``seed``.

    Args:
        index: video index (>= 0); with ``seed`` it fixes every random choice.
        seed: dataset seed (>= 0).
        cfg: scene size, length and motion ranges.
        label: action class; ``None`` draws one from the video's RNG. The appearance
            (background, actor shape and colour, distractors) does not depend on the label.
        noise: add ``cfg``'s sensor noise; False renders the noise-free frames (then
            :func:`add_sensor_noise` on some of them gives exactly those frames of the noisy video).
    """
    views = _views(index, seed, cfg, label)
    T = cfg.num_frames
    # each view renders only its own frames; its objects' track ids come after the earlier views'
    parts, offset = [], 0
    for start, end, scene in views:
        v_frames, v_boxes, v_classes, v_ids, v_masks = _render_view(scene, cfg, np.arange(start, end))
        parts.append((v_frames, v_boxes, v_classes, [i + offset for i in v_ids], v_masks))
        offset += len(scene.tracks)
    if len(parts) == 1:
        frames, boxes, box_classes, ids, masks = parts[0]
    else:
        frames, masks = np.concatenate([p[0] for p in parts]), np.concatenate([p[4] for p in parts])
        boxes, box_classes, ids = ([x for p in parts for x in p[k]] for k in (1, 2, 3))
    if noise:
        frames = add_sensor_noise(frames, range(T), seed, index, cfg.noise_std, cfg.shot_noise)
    # the actor's steps within each view: a cut is no displacement
    steps = np.concatenate([scene.tracks[-1].path_length[start:end - 1] for start, end, scene in views])
    motion = float(steps.mean()) if steps.size else 0.0
    return SyntheticVideo(
        frames=frames,
        label=views[0][2].label,
        boxes=boxes,
        box_classes=box_classes,
        track_ids=ids,
        masks=masks,
        motion=motion,
        fps=float(cfg.fps),
    )


def _render_view(scene: _Scene, cfg: SceneConfig, sel: np.ndarray):
    """Frames ``sel`` (ascending frame indices) of one scene with their annotations:
    ``(frames, boxes, box_classes, track_ids, masks)``, the per-frame lists as in
    :class:`SyntheticVideo`, noise-free. A frame's pixels and annotations do not depend on
    which other frames are rendered with it."""
    H, W = cfg.height, cfg.width
    T = len(sel)
    frames = _background_frames(scene, sel, H, W)
    tracks, track_ids = scene.tracks, scene.track_ids
    shake = scene.shake

    frames_flat = frames.reshape(-1, 3)
    inst = np.zeros(T * H * W, np.uint8)  # instance map: 0 = background, k + 1 = tracks[k]
    masks = np.zeros((T, H, W), np.uint8)
    masks_flat = masks.reshape(-1)
    rendered = []
    for k, trk in enumerate(tracks):
        out = _render_sprite(frames_flat, inst, trk, k + 1, shake, sel, H, W)
        masks_flat[out[2]] = trk.shape + 1
        rendered.append(out)
    # Visible = at least one mask pixel survives occlusion by sprites drawn later.
    visible = np.zeros((len(tracks), T), bool)
    for k, (_, has, mask_index) in enumerate(rendered):
        survived = mask_index[inst[mask_index] == k + 1]
        visible[k] = np.bincount(survived // (H * W), minlength=T) > 0
        visible[k] &= has

    all_boxes = np.stack([b for b, _, _ in rendered])  # (K, T, 4)
    all_classes = np.array([trk.shape for trk in tracks], np.int64)
    all_ids = np.array(track_ids, np.int64)
    order = np.argsort(all_ids, kind="stable")  # list objects by track id (actor first)
    boxes, box_classes, ids = [], [], []
    for t in range(T):
        seen = order[visible[order, t]]
        boxes.append(np.ascontiguousarray(all_boxes[seen, t]))
        box_classes.append(all_classes[seen])
        ids.append(all_ids[seen])
    return frames, boxes, box_classes, ids, masks


class SyntheticVideoSource:
    """Indexable collection of synthetic videos: ``len``, ``classes``, ``get(i)``.

    Labels are balanced (``label = i % num_classes``). Each split draws from its own block of
    video indices, so train, val and test with the same seed never share a video; video ``i``
    of the train split is ``generate_video(i, seed, cfg, label=i % num_classes)``.

    Args:
        num_videos: number of videos in this split.
        seed: dataset seed (>= 0).
        cfg: scene configuration.
        split: one of :data:`SPLITS`.
    """

    def __init__(self, num_videos: int, seed: int = 0, cfg: SceneConfig = SceneConfig(), split: str = "train"):
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
        if num_videos < 0 or num_videos >= _SPLIT_INDEX_OFFSET:
            raise ValueError(f"num_videos must be in [0, 2**40), got {num_videos}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.num_videos = int(num_videos)
        self.seed = int(seed)
        self.cfg = cfg
        self.split = split
        self._offset = SPLITS.index(split) * _SPLIT_INDEX_OFFSET

    @property
    def classes(self) -> tuple[str, ...]:
        return ACTION_CLASSES

    @property
    def num_classes(self) -> int:
        return len(ACTION_CLASSES)

    def label(self, i: int) -> int:
        """Label of video ``i`` without rendering it."""
        return self._check(i) % len(ACTION_CLASSES)

    @property
    def labels(self) -> list[int]:
        return [i % len(ACTION_CLASSES) for i in range(self.num_videos)]

    def _check(self, i: int) -> int:
        i = int(i)
        if not 0 <= i < self.num_videos:
            raise IndexError(f"video index {i} out of range for {self.num_videos} {self.split} videos")
        return i

    def video_index(self, i: int) -> int:
        """The index ``generate_video`` renders video ``i`` of this split at."""
        return self._offset + self._check(i)

    def get(self, i: int, noise: bool = True) -> SyntheticVideo:
        """Video ``i``; ``noise=False``: without the scene's sensor noise (see :func:`generate_video`)."""
        i = self._check(i)
        return generate_video(self._offset + i, self.seed, self.cfg, label=i % len(ACTION_CLASSES), noise=noise)

    def frames(self, i: int, frame_ids, noise: bool = True) -> np.ndarray:
        """Frames ``frame_ids`` of video ``i``: ``get(i, noise).frames[frame_ids]``, rendering
        only those frames (see :func:`render_frames`)."""
        i = self._check(i)
        return render_frames(self._offset + i, frame_ids, self.seed, self.cfg, label=i % len(ACTION_CLASSES),
                             noise=noise)

    def __getitem__(self, i: int) -> SyntheticVideo:
        return self.get(i)

    def __len__(self) -> int:
        return self.num_videos

    def __repr__(self) -> str:
        return f"SyntheticVideoSource(num_videos={self.num_videos}, seed={self.seed}, split={self.split!r})"
