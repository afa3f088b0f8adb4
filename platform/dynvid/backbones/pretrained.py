"""Pretrained weights for dynvid's networks: torchvision's by name, or a file of one's own.

``model.pretrained`` (and a method's per-extractor settings) takes

- a torchvision weights name, ``"<Enum>.<member>"`` as torchvision spells it
  (``R2Plus1D_18_Weights.KINETICS400_V1``, ``MobileNet_V2_Weights.IMAGENET1K_V2``,
  ``EfficientNet_B0_Weights.IMAGENET1K_V1``, ``ResNet101_Weights.IMAGENET1K_V2``); its file is
  read from torchvision's cache, ``$TORCH_HOME/hub/checkpoints/<file name of its URL>``, and
  downloaded there when missing and the network allows;
- or a local state-dict file (``torch.save(model.state_dict())``), or a dynvid checkpoint
  folder (its ``model.pt``), local or ``s3://`` (the engine fetches an ``s3://`` checkpoint to
  the node first, as it does for ``--init-from``; this module reads local files only).

:func:`check_pretrained` runs on the driver before anything trains: weights that are neither
cached nor downloadable fail there, with the weights' name, URL and the cache path to put the
file in. :func:`load_pretrained` loads a state dict into a dynvid network whose keys are
torchvision's (every dynvid backbone that torchvision also has is torchvision's network), and
leaves out only the classifier when its class count differs (a Kinetics-400 head on a
12-class task): any other missing or mismatched key is an error naming it.

Choice: the cached file is not hash-checked (``check_hash=True``). torchvision checks the
hash prefix of its file name when it downloads; a file someone placed in the cache by hand
(the offline case) is taken as given.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

__all__ = ["PretrainedError", "cache_path", "check_pretrained", "is_weights_name", "load_parts", "load_pretrained",
           "pretrained_state"]


class PretrainedError(ValueError):
    """Pretrained weights that cannot be found or do not fit the network."""


def is_weights_name(spec: str) -> bool:
    """``"<Enum>_Weights.<MEMBER>"``: a torchvision weights name rather than a path."""
    head, dot, member = spec.partition(".")
    return bool(dot) and head.endswith("_Weights") and "/" not in spec and member.isidentifier()


def _weights(spec: str):
    from torchvision.models import get_weight

    try:
        return get_weight(spec)
    except (KeyError, ValueError, AttributeError) as exc:
        raise PretrainedError(f"pretrained weights {spec!r}: not a torchvision weights name ({exc}); "
                              "e.g. R2Plus1D_18_Weights.KINETICS400_V1, or give a file / s3:// path") from None


def cache_path(spec: str) -> Path:
    """Where torchvision keeps the file of the weights ``spec``: ``<torch.hub.get_dir()>/checkpoints/<name>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(_weights(spec).url).path)


def check_pretrained(spec: str | None, where: str = "model.pretrained") -> None:
    """Fail now, before any training, when ``spec`` cannot be loaded: an unknown weights name,
    weights neither in torchvision's cache nor downloadable, a missing local file. A cached
    or local file is not read here (it can be large); the engine's driver fetches an ``s3://``
    checkpoint itself (:func:`dynvid.engine.preflight.check_pretrained_weights`)."""
    if not spec:
        return
    if is_weights_name(spec):
        weights, path = _weights(spec), cache_path(spec)
        if path.is_file():
            return
        try:
            torch.hub.load_state_dict_from_url(weights.url, map_location="cpu", progress=True, check_hash=True,
                                               weights_only=True)
        except Exception as exc:  # no network (URLError, timeouts, proxies): say what to do offline
            raise PretrainedError(
                f"{where}={spec}: the weights are not in torchvision's cache ({path}) and could not be downloaded "
                f"from {weights.url} ({type(exc).__name__}: {exc}); download that file on a machine with network "
                f"and put it at {path} (or set TORCH_HOME)") from None
    elif spec.startswith("s3://"):
        return
    elif not Path(spec).exists():
        raise PretrainedError(f"{where}={spec}: no such file or checkpoint folder")


def pretrained_state(spec: str) -> dict[str, torch.Tensor]:
    """The state dict of ``spec`` (see the module docstring), on the CPU."""
    if is_weights_name(spec):
        check_pretrained(spec)
        return torch.hub.load_state_dict_from_url(_weights(spec).url, map_location="cpu", check_hash=True,
                                                  weights_only=True)
    if spec.startswith("s3://"):
        raise PretrainedError(f"pretrained weights {spec!r}: an s3:// checkpoint is fetched by the engine before "
                              "loading (its worker passes the local copy); outside it, fetch it with "
                              "dynvid.engine.storage.fetch_checkpoint and give the folder")
    p = Path(spec)
    if p.is_dir():
        p = p / "model.pt"
    if not p.is_file():
        raise PretrainedError(f"pretrained weights {spec!r}: no such file or checkpoint folder")
    state = torch.load(p, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise PretrainedError(f"pretrained weights {spec!r}: {p} holds a {type(state).__name__}, not a state dict")
    return state


def load_pretrained(model: nn.Module, spec: str, head: tuple[str, ...] = ("fc.", "classifier."),
                    prefix: str = "", partial: bool = False) -> dict[str, list]:
    """Load ``spec`` into ``model`` (keys as torchvision's). The classifier (keys starting with one
    of ``head``) is left as initialised when its shape differs (another class count); every
    parameter and BatchNorm statistic of ``model`` must be there with its shape (buffers of
    dynvid's own, e.g. the supernet's per-ratio statistics, keep their initial values). ``prefix``: only the keys under it,
    without it (``"features."`` for a trunk cut from a backbone's ``features``); ``partial``:
    keys ``model`` lacks are ignored (the trunk stops before the backbone's last layers).
    Returns ``{"loaded", "skipped"}`` key lists."""
    state = pretrained_state(spec)
    if prefix:
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    own = model.state_dict()
    if partial:
        state = {k: v for k, v in state.items() if k in own}
    skipped = [k for k, v in state.items() if k.startswith(head) and k in own and own[k].shape != v.shape]
    state = {k: v for k, v in state.items() if k not in skipped}
    # every parameter and BatchNorm statistic must come from the weights; buffers of dynvid's own
    # (ANT's per-ratio BatchNorm statistics of the supernet) keep their initial values
    params = {name for name, _ in model.named_parameters()}
    missing = [k for k in own if k not in state and k not in skipped
               and (k in params or k.endswith(("running_mean", "running_var")))]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in state if k in own
             and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        raise PretrainedError(
            f"pretrained weights {spec!r} do not fit {type(model).__name__}: "
            + "; ".join(f"{what}: {', '.join(keys[:5])}{' …' if len(keys) > 5 else ''} ({len(keys)})"
                        for what, keys in (("missing", missing), ("unexpected", unexpected), ("shape", wrong)) if keys)
            + " (is it the same backbone at width 1.0?)")
    model.load_state_dict(state, strict=False)
    return {"loaded": sorted(state), "skipped": skipped}


def load_parts(parts: list[tuple[str, str | None, nn.Module, dict]], stage: str) -> list[str]:
    """Load each ``(setting, spec, module, load_pretrained keyword arguments)`` whose spec is
    set (a method with two extractors has two); returns one log line per part loaded."""
    lines = []
    for setting, spec, module, kwargs in parts:
        if spec:
            report = load_pretrained(module, spec, **kwargs)
            skipped = f", classifier left out ({len(report['skipped'])} tensors)" if report["skipped"] else ""
            lines.append(f"[dynvid] {stage}: {setting}={spec} ({len(report['loaded'])} tensors{skipped})")
    return lines
