"""ResQ: residual quantization for video perception (Abati et al.;
``shared/papers/resq-residual-quantization.txt``). Issue 9, in progress.

Built so far:

- :mod:`.quantizers`: Eq. (1) uniform symmetric quantization, the Eq. (6) scale, the Eq. (7)
  min–max weight range, the Eq. (8) line search for activations, the straight-through estimator;
- :mod:`.layers`: ``QuantConv2d`` in float / frame / key / residual mode (Eq. 4–5), reporting
  its BOPs to the cost meter;
- :mod:`.policy`: Dynamic-ResQ's Eq. (10) error bounds and Eq. (11) per-pixel selection.

Not built yet: the model wrapper and network calibration, Dynamic-ResQ inside the layer, the
segmentation network and task, the job, the benchmark and the sweep.
"""
