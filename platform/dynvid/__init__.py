"""dynvid: a training platform on Ray for input-adaptive video networks.

See ../shared/DESIGN.md for the architecture. Sub-packages:

- ``dynvid.data``       synthetic scenes, video decoding, datasets, samplers, transforms
- ``dynvid.backbones``  static networks (R(2+1)D, ...)
- ``dynvid.metrics``    cost meter (MACs, BOPs), accuracy, ...
- ``dynvid.engine``     Ray Train driver, MLflow tracking, storage
- ``dynvid.methods``    one package per paper
"""

__version__ = "0.1.0"
