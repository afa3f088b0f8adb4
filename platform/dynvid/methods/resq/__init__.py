"""ResQ: residual quantization for video perception (Abati et al.;
``shared/papers/resq-residual-quantization.txt``). Issue 9, in progress.

Built so far:

- :mod:`.quantizers`: Eq. (1) uniform symmetric quantization, the Eq. (6) scale, the Eq. (7)
  min–max weight range, the Eq. (8) line search for activations, the straight-through estimator;
- :mod:`.layers`: ``QuantConv2d`` in float / frame / key / residual mode (Eq. 4–5), reporting
  its BOPs to the cost meter;
- :mod:`.policy`: Dynamic-ResQ's Eq. (10) error bounds and Eq. (11) per-pixel selection;
- :mod:`.wrap`: any model's convolutions wrapped, modes switched network-wide, sequences run
  with a keyframe every T frames, every layer calibrated on its own inputs.

Not built yet: Dynamic-ResQ inside the layer (the pool of quantizers per pixel), QAT, the
segmentation network and task, bit-width map images, the job, the benchmark and the sweep.
"""
