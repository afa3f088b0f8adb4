"""VA-RED²: video adaptive redundancy reduction (Pan et al., thesis "VA-RED²", Ch. 3–4, App. A.2).

Modules:

- :mod:`~dynvid.methods.vared.dynconv`: the soft modulation gate (Eq. 3.4) and the dynamic
  convolution with temporal (Eq. 3.1–3.2) and channel (Sec. 3.1) redundancy reduction,
  shared weights (Eq. 3.5, A.1) and a hard inference path that runs only the selected
  sub-convolution.
- :mod:`~dynvid.methods.vared.efficiency`: the efficiency loss (Eq. 3.6).
- :mod:`~dynvid.methods.vared.convert`: which convolutions of R(2+1)D-18, I3D and X3D-M
  become dynamic, and the conversion of a static backbone.
- :mod:`~dynvid.methods.vared.analysis`: policy statistics (Fig. 4-1), cost histogram
  (Fig. B-6), measured throughput, and the static-vs-dynamic table (Tables 4.1–4.2).

:class:`VaredTask` is the method's Task: three stages on the engine (Sec. 4.3, App. A.2):

1. ``base`` — the static backbone, trained from scratch;
2. ``dynamic`` — the dynamic model initialised from the base (gates and cheap operations
   start near "compute all"), trained with the accuracy loss. A.2 says every model is
   trained from scratch; starting the dynamic model from the base is this
   implementation's reading of Sec. 4.3 ("base and dynamic models", then a finetune), and
   what makes the laptop-sized job converge;
3. ``finetune`` — the dynamic model finetuned with L = L_a + λ_e·L_e (λ_e = 0.8) at the
   finetune learning rate (0.01 for R(2+1)D, 0.1 for I3D/X3D: ``optim.lr / 18``).
"""

from dynvid._lazy import lazy_exports

#: name -> submodule that defines it, imported on first access (see dynvid._lazy)
_EXPORTS = {
    "DynamicConv3d": "dynconv",
    "FINETUNE_LR_RATIO": "task",
    "SoftModulationGate": "dynconv",
    "VaredConfig": "config",
    "VaredTask": "task",
    "dynamic_layers": "convert",
    "efficiency_loss": "efficiency",
    "force_policy": "convert",
    "make_dynamic": "convert",
    "target_names": "convert",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
