"""LiteEval: coarse-to-fine video recognition with a conditional gate (Wu et al., "A
Coarse-to-Fine Framework for Resource Efficient Video Recognition", Sec. 3, 4.1, 4.3).

Modules:

- :mod:`~dynvid.methods.liteeval.gumbel`: Gumbel-softmax (Eq. 8–9) and the temperature
  schedule over global steps.
- :mod:`~dynvid.methods.liteeval.model`: the cRNN / fRNN / gate core (Eq. 1–6), the pixel
  model with real skipping and the online budget, the LSTM baseline.
- :mod:`~dynvid.methods.liteeval.features`: the Ray Data feature cache.
- :mod:`~dynvid.methods.liteeval.evaluation`: offline and online evaluation, the baselines of
  Table 1 / Fig. 2, the plots of Fig. 2 and Fig. 4.

:class:`LiteEvalTask` runs three stages on the engine:

1. ``cnns`` — the coarse and fine CNNs finetuned as step classifiers on the target data
   (Sec. 4.1), one random step (frame or snippet) per video per epoch;
2. ``lstm`` — Table 1's LSTM baseline on fine features (the CNNs frozen);
3. ``liteeval`` — cRNN, fRNN and gate trained with Eq. 7 (the CNNs frozen), Adam at a fixed
   1e-4 (Sec. 4.1). The registered model is this stage's pixel model.

Stages 2–3 read the feature cache (``liteeval.features=cache``, built by the driver between
stages) or run the frozen CNNs on pixels (``pixels``).

The usage term of Eq. 7 is ``λ·(mean_t B_t − γ)²`` with γ the target *fraction of steps that
read fine features* (γ = 0.05, λ = 2). The authors' released code instead states its target
as a skip ratio, i.e. ``1 − γ`` of steps skipping fine features; the two are the same
penalty, written here as the paper writes it.
"""

from dynvid._lazy import lazy_exports

#: name -> submodule that defines it, imported on first access (see dynvid._lazy)
_EXPORTS = {
    "KNOBS": "task",
    "LiteEvalConfig": "config",
    "LiteEvalTask": "task",
    "gumbel_softmax": "gumbel",
    "temperature_at": "gumbel",
    "usage_loss": "task",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
