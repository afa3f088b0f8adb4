"""LiteEval's coarse-to-fine network (Wu et al., Sec. 3.1, Eq. 1–6; Algorithm 1).

- :class:`LiteEvalCore`: the coarse RNN (Eq. 1), the conditional gate
  ``b_t = W_g^T [v_t^c, h_{t-1}^f]`` (Eq. 2), the fine RNN (Eq. 3) with its gated update
  (Eq. 4), the synchronisation that copies ``h_t^c`` into the first ``D^c`` dims of the
  fine state when ``B_t = 0`` (Eq. 5), and the classifier on ``h^f`` (Eq. 6, logits).
  It runs on features, so the same module trains on a feature cache and runs inside the
  pixel model.
- :class:`LiteEval`: the pixel model. Per time step the coarse CNN sees the step's input
  downsampled to ``coarse_size``; the fine CNN runs *only* on the samples whose gate chose
  ``B_t = 1`` (a sub-batch, not a mask), and the cost meter is told what ran.

A time step is one frame for a 2-D fine backbone (the paper's ResNet-101 at 1 fps) or a
snippet of ``snippet_len`` frames for a 3-D one (Sec. 4.2.2: a SlowFast "frame" is an
8-frame snippet); the coarse CNN gets the same step input at low resolution.

Choices where the paper is vague:

- With LSTMs, "``h_t^c`` denotes all hidden states" (Sec. 3.1), so Eq. 5 copies both the
  hidden and the cell state of the cRNN into the first ``D^c`` dims of the fRNN's; the gate
  of Eq. 2 reads the fRNN's hidden (output) state ``h``, not its cell.
- During training the fine features of every step are computed (the straight-through
  gradient of ``B_t`` needs the would-be update of Eq. 3); at inference they are not.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dynvid.metrics.cost import CostMeter, gru_cell_macs, linear_macs, lstm_cell_macs, record_cost
from dynvid.methods.liteeval.gumbel import gumbel_softmax

__all__ = ["Extractor", "FrameClassifiers", "FrozenExtractors", "LSTMBaseline", "LiteEval", "UniformBaseline", "LiteEvalCore", "RNN_TYPES", "StepOutput",
           "split_steps"]

RNN_TYPES = {"lstm": nn.LSTMCell, "gru": nn.GRUCell}
FORCE = (None, "fine", "coarse")


def _scatter_cost(rows: torch.Tensor | None, batch: int, macs: float) -> torch.Tensor | float:
    """Per-sample MACs: ``macs`` for ``rows`` (all samples when None), 0 elsewhere."""
    if rows is None:
        return macs
    out = torch.zeros(batch, dtype=torch.float64)
    out[rows.cpu()] = macs
    return out


def split_steps(video: torch.Tensor, steps: int, snippet_len: int, clips: bool) -> torch.Tensor:
    """A video ``(B, C, T·S, H, W)`` as step inputs: ``(B, T, C, S, H, W)`` for clip (3-D)
    networks, ``(B, T, C, H, W)`` for frame networks (S = 1)."""
    if video.dim() != 5:
        raise ValueError(f"LiteEval expects a video (B, C, T, H, W), got shape {tuple(video.shape)}")
    b, c, n, h, w = video.shape
    if n != steps * snippet_len:
        raise ValueError(f"LiteEval expects {steps * snippet_len} frames ({steps} steps × {snippet_len}), got {n}")
    x = video.view(b, c, steps, snippet_len, h, w).permute(0, 2, 1, 3, 4, 5)
    return x if clips else x.squeeze(3)


class Extractor(nn.Module):
    """A backbone used as a feature extractor on a sub-batch of the metered samples.

    ``forward(x, rows, batch)`` runs ``net.forward_features`` on ``x`` (the inputs of the
    samples ``rows`` of a metered batch of ``batch``) and reports to the cost meter the
    MACs it measured on exactly those rows (0 for the others).
    """

    counts_own_cost = True

    def __init__(self, net: nn.Module, size: int | None = None) -> None:
        super().__init__()
        self.net = net
        self.size = size  # input side; None = as given (the fine CNN at full resolution)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Resize a step input (``(N, C, H, W)`` or ``(N, C, S, H, W)``) to ``size`` (coarse scale)."""
        if self.size is None or x.shape[-1] == self.size and x.shape[-2] == self.size:
            return x
        if x.dim() == 5:  # resize the frames of each snippet
            n, c, s = x.shape[:3]
            flat = x.transpose(1, 2).flatten(0, 1)
            flat = F.interpolate(flat, size=(self.size, self.size), mode="bilinear", align_corners=False,
                                 antialias=True)
            return flat.view(n, s, c, self.size, self.size).transpose(1, 2)
        return F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False, antialias=True)

    def _metered(self, fn, x: torch.Tensor, rows: torch.Tensor | None, batch: int | None) -> torch.Tensor:
        """``fn(x)`` under a meter of ``net``; its per-row MACs go to the outer meter, placed at
        ``rows`` of the metered ``batch`` (0 for the others)."""
        with CostMeter(self.net, batch_size=x.shape[0]) as meter:
            out = fn(x)
        per_row = meter.per_sample_macs
        if rows is not None:
            full = torch.zeros(batch, dtype=torch.float64)
            full[rows.cpu()] = per_row
            per_row = full
        record_cost(self, per_row)
        return out

    def forward(self, x: torch.Tensor, rows: torch.Tensor | None = None, batch: int | None = None) -> torch.Tensor:
        return self._metered(self.net.forward_features, self.prepare(x), rows, batch)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores of the backbone's own head (the step classifiers of stage ``cnns``)."""
        return self._metered(self.net, self.prepare(x), None, None)


@dataclass
class StepOutput:
    """One time step of :meth:`LiteEvalCore.step`."""

    coarse: tuple[torch.Tensor, ...]
    fine: tuple[torch.Tensor, ...]
    use_fine: torch.Tensor
    """B_t: (N,) 0/1 (straight-through differentiable in training)."""
    gate_logits: torch.Tensor


class LiteEvalCore(nn.Module):
    """cRNN, fRNN, conditional gate and classifier (Eq. 1–6) on features.

    Args:
        coarse_dim: dimension of ``v^c``.
        fine_dim: dimension of ``v^f``.
        num_classes: classifier outputs.
        coarse_hidden: ``D^c`` (512 on FCVID, 1,024 on Kinetics, Sec. 4.1).
        fine_hidden: ``D^f`` (2,048 on FCVID/Kinetics); must exceed ``D^c`` (Eq. 5).
        rnn: ``lstm`` (the paper's default) or ``gru`` (Sec. 4.3).
    """

    counts_own_cost = True  # steps run on sub-batches; the step reports what ran

    def __init__(self, coarse_dim: int, fine_dim: int, num_classes: int, coarse_hidden: int = 512,
                 fine_hidden: int = 2048, rnn: str = "lstm") -> None:
        super().__init__()
        if rnn not in RNN_TYPES:
            raise ValueError(f"liteeval.rnn: unknown RNN {rnn!r}; valid: {', '.join(RNN_TYPES)}")
        if not 0 < coarse_hidden < fine_hidden:
            raise ValueError(f"Eq. 5 copies h^c into the first D^c dims of h^f: need 0 < D^c < D^f, "
                             f"got coarse_hidden={coarse_hidden}, fine_hidden={fine_hidden}")
        cell = RNN_TYPES[rnn]
        self.rnn, self.coarse_dim, self.fine_dim = rnn, coarse_dim, fine_dim
        self.coarse_hidden, self.fine_hidden = coarse_hidden, fine_hidden
        self.crnn = cell(coarse_dim, coarse_hidden)
        self.frnn = cell(coarse_dim + fine_dim, fine_hidden)
        self.gate = nn.Linear(coarse_dim + fine_hidden, 2)  # index 1 = "compute fine features"
        self.classifier = nn.Linear(fine_hidden, num_classes)
        cell_macs = lstm_cell_macs if rnn == "lstm" else gru_cell_macs
        self.coarse_step_macs = cell_macs(coarse_dim, coarse_hidden) + linear_macs(coarse_dim + fine_hidden, 2)
        self.fine_step_macs = cell_macs(coarse_dim + fine_dim, fine_hidden)
        self.classifier_macs = linear_macs(fine_hidden, num_classes)

    def init_state(self, n: int, like: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
        """Zero coarse and fine states for ``n`` samples."""
        parts = 2 if self.rnn == "lstm" else 1
        # one tensor per part: ``infer`` writes states in place, so h and c must not alias
        return (tuple(like.new_zeros(n, self.coarse_hidden) for _ in range(parts)),
                tuple(like.new_zeros(n, self.fine_hidden) for _ in range(parts)))

    @staticmethod
    def _pack(out) -> tuple[torch.Tensor, ...]:
        return tuple(out) if isinstance(out, tuple) else (out,)

    def synchronize(self, coarse: tuple[torch.Tensor, ...], fine: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """Eq. 5: ``h^f <- [h^c, h^f(D^c+1 : D^f)]`` for every state tensor."""
        d = self.coarse_hidden
        return tuple(torch.cat([c, f[:, d:]], 1) for c, f in zip(coarse, fine))

    def step(self, v_c: torch.Tensor, state, fine_fn, *, tau: float = 1.0, force: str | None = None,
             rows: torch.Tensor | None = None, batch: int | None = None) -> StepOutput:
        """One time step (Algorithm 1, lines 3–12).

        Args:
            v_c: coarse features ``(N, coarse_dim)`` of the N samples stepping now.
            state: ``(coarse_state, fine_state)`` of those samples.
            fine_fn: ``fine_fn(idx) -> v_f`` for row indices ``idx`` into the N samples;
                called only for the rows that need fine features.
            tau: Gumbel-softmax temperature (training).
            force: ``"fine"`` / ``"coarse"`` fixes B_t (baselines, tests); None = the gate.
            rows, batch: where the N samples sit in the metered batch (cost attribution);
                None = N is the whole batch.
        """
        if force not in FORCE:
            raise ValueError(f"force must be one of {FORCE}, got {force!r}")
        coarse_state, fine_state = state
        n = v_c.shape[0]
        batch = batch if batch is not None else n
        coarse = self._pack(self.crnn(v_c, coarse_state if self.rnn == "lstm" else coarse_state[0]))  # Eq. 1
        gate_logits = self.gate(torch.cat([v_c, fine_state[0]], 1))  # Eq. 2
        if force == "fine":
            use = v_c.new_ones(n)
        elif force == "coarse":
            use = v_c.new_zeros(n)
        elif self.training:
            use = gumbel_softmax(gate_logits, tau, hard=True)[:, 1]  # Eq. 9, straight-through
        else:
            use = (gate_logits[:, 1] > gate_logits[:, 0]).to(v_c.dtype)  # arg max (Algorithm 1, l. 9)
        synced = self.synchronize(coarse, fine_state)  # Eq. 5
        record_cost(self, _scatter_cost(rows, batch, float(self.coarse_step_macs)))
        if self.training:  # every row's update, mixed by B_t (Eq. 4) so B_t gets a gradient
            v_f = fine_fn(torch.arange(n, device=v_c.device))
            updated = self._pack(self.frnn(torch.cat([v_c, v_f], 1), fine_state if self.rnn == "lstm" else fine_state[0]))
            w = use.unsqueeze(1)
            fine = tuple(w * u + (1 - w) * s for u, s in zip(updated, synced))
            fine_rows = torch.arange(n)
        else:  # real skipping: fine CNN and fRNN only where B_t = 1
            idx = use.nonzero().flatten()
            fine = tuple(s.clone() for s in synced)
            if idx.numel():
                v_f = fine_fn(idx)
                prev = tuple(f[idx] for f in fine_state)
                updated = self._pack(self.frnn(torch.cat([v_c[idx], v_f], 1), prev if self.rnn == "lstm" else prev[0]))
                for f, u in zip(fine, updated):
                    f[idx] = u
            fine_rows = idx.cpu()
        ran = fine_rows if rows is None else rows.cpu()[fine_rows]
        record_cost(self, _scatter_cost(ran, batch, float(self.fine_step_macs)))
        return StepOutput(coarse, fine, use, gate_logits)

    @torch.no_grad()
    def infer(self, batch: int, steps: int, coarse_fn, fine_fn, budget: int | None = None,
              force: str | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The inference path (hard decisions, real skipping) over ``steps`` time steps.

        ``coarse_fn(t, rows)`` and ``fine_fn(t, rows)`` return the features of step ``t`` for
        the samples ``rows`` (indices into the batch): the pixel model runs its CNNs there,
        the feature cache reads them. Offline (``budget`` None) every sample runs all steps;
        online (Sec. 4.2.1) a sample stops, and emits its prediction, at the step where it
        reads fine features for the ``budget``-th time; nothing runs for it afterwards.

        Returns ``(logits (B, classes), use (B, T) 0/1, exit_step (B,))``, ``exit_step``
        being the number of steps the sample ran (K' of UNIFORM-K).
        """
        if budget is not None and budget < 1:
            raise ValueError(f"budget K must be >= 1, got {budget}")
        device = self.classifier.weight.device
        active = torch.arange(batch, device=device)
        state = None
        out_logits = torch.zeros(batch, self.classifier.out_features, device=device)
        use = torch.zeros(batch, steps, device=device)
        reads = torch.zeros(batch, dtype=torch.long, device=device)
        exit_step = torch.full((batch,), steps, dtype=torch.long)
        for t in range(steps):
            v_c = coarse_fn(t, active)
            if state is None:
                state = self.init_state(batch, v_c)
            sub = (tuple(s[active] for s in state[0]), tuple(s[active] for s in state[1]))
            rows_now = active
            out = self.step(v_c, sub, lambda idx: fine_fn(t, rows_now[idx]), force=force, rows=active, batch=batch)
            for full, new in zip(state[0] + state[1], out.coarse + out.fine):
                full[active] = new
            use[active, t] = out.use_fine
            reads[active] += out.use_fine.long()
            done = active if t == steps - 1 else active[reads[active] >= budget] if budget is not None else active[:0]
            if done.numel():
                out_logits[done] = self.classify(tuple(s[done] for s in state[1]), rows=done, batch=batch)
                exit_step[done.cpu()] = t + 1
                keep = torch.ones(batch, dtype=torch.bool, device=device)
                keep[done] = False
                active = active[keep[active]]
            if active.numel() == 0:
                break
        return out_logits, use, exit_step

    def classify(self, fine_state, rows: torch.Tensor | None = None, batch: int | None = None) -> torch.Tensor:
        """Eq. 6 (logits; the softmax is the loss's)."""
        record_cost(self, _scatter_cost(rows, batch if batch is not None else fine_state[0].shape[0],
                                        float(self.classifier_macs)))
        return self.classifier(fine_state[0])

    def forward(self, coarse_feats: torch.Tensor, fine_feats: torch.Tensor, *, tau: float = 1.0,
                force: str | None = None, all_logits: bool = False):
        """Run a whole sequence of cached features ``(B, T, D)``; returns ``(logits, use)``:
        the last step's logits ``(B, classes)`` (``(B, T, classes)`` with ``all_logits``)
        and the decisions ``(B, T)``."""
        b, t = coarse_feats.shape[:2]
        state = self.init_state(b, coarse_feats)
        uses, logits = [], []
        for i in range(t):
            out = self.step(coarse_feats[:, i], state, lambda idx, i=i: fine_feats[idx, i], tau=tau, force=force)
            state = (out.coarse, out.fine)
            uses.append(out.use_fine)
            if all_logits or i == t - 1:
                logits.append(self.classify(state[1]))
        logits = torch.stack(logits, 1) if all_logits else logits[-1]
        return logits, torch.stack(uses, 1)


class FrameClassifiers(nn.Module):
    """The coarse and fine CNNs trained as step classifiers on the target data (Sec. 4.1:
    "these CNN backbones are finetuned on target datasets as image classification tasks").
    Same keys (``coarse.net.*``, ``fine.net.*``) as in :class:`LiteEval`."""

    def __init__(self, coarse: nn.Module, fine: nn.Module, coarse_size: int) -> None:
        super().__init__()
        self.coarse = Extractor(coarse, coarse_size)
        self.fine = Extractor(fine)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(coarse_logits, fine_logits)`` for a batch of step inputs."""
        return self.coarse.logits(x), self.fine.logits(x)


class FrozenExtractors(nn.Module):
    """The coarse and fine CNNs of a video-level model (LiteEval, the LSTM baseline), frozen:
    their parameters take no gradient and they stay in eval mode (BatchNorm statistics
    included) while the recurrent part trains. Keys ``coarse.net.*`` and ``fine.net.*``."""

    def __init__(self, coarse: nn.Module, fine: nn.Module, coarse_size: int, steps: int, snippet_len: int = 1) -> None:
        super().__init__()
        if coarse.takes_clips != fine.takes_clips:
            raise ValueError("the coarse and fine backbones must both be frame (2-D) or both clip (3-D) networks")
        if not fine.takes_clips and snippet_len != 1:
            raise ValueError(f"liteeval.snippet_len={snippet_len} needs a 3-D fine backbone; a 2-D one takes 1 frame")
        self.coarse = Extractor(coarse, coarse_size)
        self.fine = Extractor(fine)
        self.steps, self.snippet_len = steps, snippet_len
        for p in list(self.coarse.parameters()) + list(self.fine.parameters()):
            p.requires_grad_(False)

    def train(self, mode: bool = True) -> FrozenExtractors:
        super().train(mode)
        self.coarse.eval()
        self.fine.eval()
        return self

    def step_inputs(self, video: torch.Tensor) -> torch.Tensor:
        """``(B, C, T·S, H, W) -> (B, T, C, H, W)`` (S = 1) or ``(B, T, C, S, H, W)``."""
        return split_steps(video, self.steps, self.snippet_len, self.fine.net.takes_clips)


class LiteEval(FrozenExtractors):
    """The pixel model: coarse CNN + fine CNN + :class:`LiteEvalCore`.

    Input: a video ``(B, C, T·S, H, W)`` (the clip pipeline's layout), cut into ``steps``
    step inputs of ``snippet_len`` = S frames (a frame for 2-D fine backbones).
    """

    def __init__(self, coarse: nn.Module, fine: nn.Module, core: LiteEvalCore, coarse_size: int, steps: int,
                 snippet_len: int = 1) -> None:
        super().__init__(coarse, fine, coarse_size, steps, snippet_len)
        self.core = core
        self.last_use: torch.Tensor | None = None
        self.last_exit: torch.Tensor | None = None
        # global optimisation step of the Gumbel temperature schedule: in the state dict, so the
        # anneal continues across epochs and resumes (the authors' code restarts it each epoch)
        self.register_buffer("global_step", torch.zeros((), dtype=torch.long))
        # the Task keeps a host copy of it (``_host_step``, no device read per step); a load replaces it
        self.register_load_state_dict_post_hook(lambda module, _keys: setattr(module, "_host_step", None))

    def forward(self, video: torch.Tensor, budget: int | None = None, force: str | None = None,
                tau: float = 1.0) -> torch.Tensor:
        """Logits ``(B, classes)``. Offline (``budget`` None): after the last step. Online
        (Sec. 4.2.1): a sample stops, and emits its prediction, at the step where it reads
        fine features for the ``budget``-th time (or at the end); nothing runs for it after.
        The decisions are kept in ``last_use`` ``(B, T)`` and the exit steps in ``last_exit``."""
        if isinstance(video, (tuple, list)):  # cached (coarse, fine) features (B, T, D): the training path
            logits, self.last_use = self.core(video[0], video[1], tau=tau, force=force)
            return logits
        x = self.step_inputs(video)
        b = x.shape[0]
        if self.training:  # the differentiable path: every step, every sample
            coarse = torch.stack([self.coarse(x[:, t]) for t in range(self.steps)], 1)
            fine = torch.stack([self.fine(x[:, t]) for t in range(self.steps)], 1)
            logits, self.last_use = self.core(coarse, fine, tau=tau, force=force)
            return logits
        logits, self.last_use, self.last_exit = self.core.infer(
            b, self.steps,
            lambda t, rows: self.coarse(x[rows, t], rows=rows, batch=b),
            lambda t, rows: self.fine(x[rows, t], rows=rows, batch=b),
            budget=budget, force=force)
        return logits


class LSTMBaseline(FrozenExtractors):
    """Table 1's LSTM: an LSTM over the fine CNN's features of every step, classified from the
    last hidden state. Holds the two CNNs (frozen) so its checkpoint starts the next stage."""

    def __init__(self, coarse: nn.Module, fine: nn.Module, num_classes: int, hidden: int, coarse_size: int,
                 steps: int, snippet_len: int = 1) -> None:
        super().__init__(coarse, fine, coarse_size, steps, snippet_len)
        self.lstm = nn.LSTM(fine.num_features, hidden, batch_first=True)
        self.classifier = nn.Linear(hidden, num_classes)

    def from_features(self, fine_feats: torch.Tensor) -> torch.Tensor:
        """Logits from fine features ``(B, T, D)``."""
        out, _ = self.lstm(fine_feats)
        return self.classifier(out[:, -1])

    def forward(self, video) -> torch.Tensor:
        """Logits of a video ``(B, C, T·S, H, W)``, or of cached ``(coarse, fine)`` features."""
        if isinstance(video, (tuple, list)):
            return self.from_features(video[1])
        x = self.step_inputs(video)
        fine = torch.stack([self.fine(x[:, t]) for t in range(self.steps)], 1)
        return self.from_features(fine)


class UniformBaseline(nn.Module):
    """Table 1's UNIFORM on pixels: the fine CNN's class probabilities averaged over all T steps
    (every step computed). The pixel counterpart of the cached baseline in ``evaluation``, for
    measuring wall-clock time against LiteEval."""

    def __init__(self, fine: nn.Module, steps: int, snippet_len: int = 1) -> None:
        super().__init__()
        self.fine = fine
        self.steps, self.snippet_len = steps, snippet_len

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        x = split_steps(video, self.steps, self.snippet_len, self.fine.takes_clips)
        probs = torch.stack([self.fine(x[:, t]).softmax(-1) for t in range(self.steps)], 1)
        return probs.mean(1)
