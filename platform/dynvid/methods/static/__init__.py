"""Static baseline: a backbone trained as a plain clip classifier.

This is the reference every dynamic method is compared to, and VA-RED²'s first training
stage ("static base model", thesis Sec. 3.4). Clip-1 accuracy is measured on ``val``
items (one centre clip, centre crop) and video-1/5 on ``test`` items (3K views averaged,
thesis Sec. 4.3). The evaluation also reports the per-clip cost (GFLOPs) measured by the
cost meter on the path that ran; for a static network it is constant.
"""

from dynvid._lazy import lazy_exports

#: name -> submodule that defines it, imported on first access (see dynvid._lazy)
_EXPORTS = {
    "StaticClassification": "task",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
