"""Feature normaliser: an ``nn.Module`` whose statistics are buffers, so they live in ``model.safetensors``.

Modes (one affine map ``x_n = (x - offset) / scale`` per feature, broadcast over leading dims):

- ``min_max`` (actions and ``observation.state``): ``[min, max] -> [-1, 1]`` per dimension.
  Actions must be min-max: DDPM/DDIM ``clip_sample`` clamps predicted x0 to [-1, 1].
  State uses min-max too, so every policy input is bounded the same way.
  A constant dimension (``max - min < EPS_RANGE``) is only centred (scale 1): no division by ~0,
  and a value slightly off the training constant stays near 0 instead of exploding; unnormalising
  returns the constant itself (output scale 0), whatever the model predicts there.
- ``mean_std`` (images, per channel, stats shaped ``(3, 1, 1)`` from LeRobot's stats.json):
  ``(x - mean) / std`` with std clamped below at ``EPS_STD``.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
from torch import nn

EPS_RANGE = 1e-4
EPS_STD = 1e-3
MODES = ("min_max", "mean_std")


def buffer_name(feature: str) -> str:
    """``observation.state`` -> ``observation__state`` (module attribute names cannot hold dots)."""
    return feature.replace(".", "__")


def default_mode(feature: str) -> str:
    return "mean_std" if feature.startswith("observation.images.") else "min_max"


def _stat(stats: Mapping, feature: str, key: str, shape: tuple[int, ...]) -> torch.Tensor:
    if feature not in stats:
        raise KeyError(f"normaliser: no stats for feature {feature!r}; stats have {sorted(stats)}")
    if key not in stats[feature]:
        raise KeyError(f"normaliser: stats[{feature!r}] lacks {key!r}; it has {sorted(stats[feature])}")
    value = torch.as_tensor(np.asarray(stats[feature][key], dtype=np.float32))
    if value.numel() != int(np.prod(shape)):
        raise ValueError(
            f"normaliser: stats[{feature!r}][{key!r}] has {value.numel()} values, expected shape {shape}"
        )
    return value.reshape(shape)


def affine_from_stats(stats: Mapping, feature: str, mode: str, shape: tuple[int, ...]):
    """Return ``(offset, scale, out_scale)`` tensors of ``shape`` for one feature.

    normalize: ``(x - offset) / scale``; unnormalize: ``x_n * out_scale + offset``."""
    if mode == "min_max":
        lo, hi = _stat(stats, feature, "min", shape), _stat(stats, feature, "max", shape)
        if (hi < lo).any():
            raise ValueError(f"normaliser: stats[{feature!r}] has max < min")
        half_range = (hi - lo) / 2.0
        constant = half_range < EPS_RANGE / 2.0
        scale = torch.where(constant, torch.ones_like(half_range), half_range)
        return (hi + lo) / 2.0, scale, torch.where(constant, torch.zeros_like(half_range), half_range)
    if mode == "mean_std":
        mean, std = _stat(stats, feature, "mean", shape), _stat(stats, feature, "std", shape)
        return mean, std.clamp_min(EPS_STD), std.clamp_min(EPS_STD)
    raise ValueError(f"normaliser: unknown mode {mode!r}; valid: {MODES}")


def stats_shape(feature: str, feature_shape: tuple[int, ...], mode: str) -> tuple[int, ...]:
    """Stats are per dimension for vectors, per channel ``(C, 1, 1)`` for images ``(C, H, W)``."""
    if mode == "mean_std" and len(feature_shape) == 3:
        return (feature_shape[0], 1, 1)
    return tuple(feature_shape)


class Normalizer(nn.Module):
    """``normalize(feature, x)`` / ``unnormalize(feature, x_n)`` for a fixed set of features.

    Args:
        shapes: ``{feature: per-sample shape}``, e.g. ``{"action": (7,), "observation.images.front": (3, 84, 84)}``.
        stats: dataset stats ``{feature: {"min","max","mean","std",...}}``; ``None`` builds identity
            placeholders (used when loading a checkpoint, whose buffers then overwrite them).
        modes: optional per-feature override of :func:`default_mode`.
    """

    def __init__(self, shapes: Mapping[str, tuple[int, ...]], stats: Mapping | None = None,
                 modes: Mapping[str, str] | None = None):
        super().__init__()
        modes = dict(modes or {})
        self.modes = {f: modes.get(f, default_mode(f)) for f in shapes}
        for feature, shape in shapes.items():
            sshape = stats_shape(feature, tuple(shape), self.modes[feature])
            if stats is None:
                offset, scale, out_scale = torch.zeros(sshape), torch.ones(sshape), torch.ones(sshape)
            else:
                offset, scale, out_scale = affine_from_stats(stats, feature, self.modes[feature], sshape)
            self.register_buffer(buffer_name(feature) + "__offset", offset.float())
            self.register_buffer(buffer_name(feature) + "__scale", scale.float())
            self.register_buffer(buffer_name(feature) + "__out_scale", out_scale.float())

    def _buffer(self, feature: str, what: str) -> torch.Tensor:
        if feature not in self.modes:
            raise KeyError(f"normaliser: unknown feature {feature!r}; valid: {sorted(self.modes)}")
        return getattr(self, f"{buffer_name(feature)}__{what}")

    def normalize(self, feature: str, x: torch.Tensor) -> torch.Tensor:
        return (x - self._buffer(feature, "offset")) / self._buffer(feature, "scale")

    def unnormalize(self, feature: str, x_n: torch.Tensor) -> torch.Tensor:
        return x_n * self._buffer(feature, "out_scale") + self._buffer(feature, "offset")
