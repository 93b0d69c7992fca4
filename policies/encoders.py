"""Observation encoders: normalised obs window ``{key: (B, T_o, ...)}`` -> conditioning ``cond (B, C)``.

- ``observation.state`` (B, T_o, D_s): an MLP over the flattened window.
- ``observation.images.<cam>`` (B, T_o, 3, H, W): a small plain-torch ResNet (GroupNorm, no torchvision)
  ending in a spatial softmax (keypoints = expected image coordinates), applied per frame, one encoder
  per camera; the per-frame features of the T_o frames are concatenated.
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

IMAGE_PREFIX = "observation.images."


class StateEncoder(nn.Module):
    """(B, T_o, D_s) -> (B, out_dim)."""

    def __init__(self, n_obs_steps: int, state_dim: int, hidden_dim: int = 256, out_dim: int = 128):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(n_obs_steps * state_dim, hidden_dim), nn.Mish(),
                                 nn.Linear(hidden_dim, out_dim))
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))


def _groups(channels: int) -> int:
    return 8 if channels % 8 == 0 else 1


class ResBlock2d(nn.Module):
    """Basic residual block (two 3x3 convs, GroupNorm), optional stride-2 downsampling."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.GroupNorm(_groups(c_out), c_out),
            nn.ReLU(), nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.GroupNorm(_groups(c_out), c_out))
        self.skip = (nn.Identity() if stride == 1 and c_in == c_out else
                     nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                                   nn.GroupNorm(_groups(c_out), c_out)))
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.skip(x))


class SpatialSoftmax(nn.Module):
    """(N, C, H, W) -> (N, 2K): per keypoint map, the softmax-weighted mean (x, y) in [-1, 1]."""

    def __init__(self, channels: int, n_keypoints: int):
        super().__init__()
        self.proj = nn.Conv2d(channels, n_keypoints, 1)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        maps = self.proj(feat)
        n, k, h, w = maps.shape
        attn = torch.softmax(maps.reshape(n, k, h * w), dim=-1)
        ys = torch.linspace(-1.0, 1.0, h, device=feat.device, dtype=feat.dtype)
        xs = torch.linspace(-1.0, 1.0, w, device=feat.device, dtype=feat.dtype)
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        grid = torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], dim=-1)  # (H*W, 2)
        return (attn @ grid).reshape(n, 2 * k)


def crop_images(x: torch.Tensor, ratio: float, random: bool) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, round(ratio H), round(ratio W)); a random window per image when ``random``
    (training augmentation, as in Chi et al. 2023), else the centre window (evaluation)."""
    if ratio >= 1.0:
        return x
    n, _, h, w = x.shape
    ch, cw = max(1, round(ratio * h)), max(1, round(ratio * w))
    if not random:
        top, left = (h - ch) // 2, (w - cw) // 2
        return x[:, :, top:top + ch, left:left + cw]
    tops = torch.randint(0, h - ch + 1, (n,), device=x.device)
    lefts = torch.randint(0, w - cw + 1, (n,), device=x.device)
    rows = (tops[:, None] + torch.arange(ch, device=x.device)[None])  # (N, ch)
    cols = (lefts[:, None] + torch.arange(cw, device=x.device)[None])  # (N, cw)
    idx = torch.arange(n, device=x.device)[:, None, None]
    return x.permute(0, 2, 3, 1)[idx, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


class ImageEncoder(nn.Module):
    """(B, T_o, 3, H, W) normalised -> (B, T_o * out_dim); random crops in train mode, centre crops in eval."""

    def __init__(self, channels: tuple[int, ...] = (32, 64, 128), n_keypoints: int = 32, out_dim: int = 64,
                 crop_ratio: float = 1.0):
        super().__init__()
        self.crop_ratio = float(crop_ratio)
        c0 = channels[0]
        layers: list[nn.Module] = [nn.Conv2d(3, c0, 5, stride=2, padding=2, bias=False),
                                   nn.GroupNorm(_groups(c0), c0), nn.ReLU()]
        c_in = c0
        for i, c_out in enumerate(channels):
            layers.append(ResBlock2d(c_in, c_out, stride=1 if i == 0 else 2))
            c_in = c_out
        self.trunk = nn.Sequential(*layers)
        self.pool = SpatialSoftmax(c_in, n_keypoints)
        self.head = nn.Sequential(nn.Linear(2 * n_keypoints, out_dim), nn.Mish())
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t = x.shape[:2]
        frames = crop_images(x.reshape(b * t, *x.shape[2:]), self.crop_ratio, random=self.training)
        feat = self.head(self.pool(self.trunk(frames)))
        return feat.reshape(b, t * self.out_dim)


class ObsEncoder(nn.Module):
    """All observation keys -> cond (B, C); keys in sorted order so C's layout is stable."""

    def __init__(self, obs_spec: Mapping[str, tuple[int, ...]], n_obs_steps: int, state_hidden_dim: int = 256,
                 state_feature_dim: int = 128, image_channels: tuple[int, ...] = (32, 64, 128),
                 image_keypoints: int = 32, image_feature_dim: int = 64, image_crop_ratio: float = 1.0):
        super().__init__()
        self.keys = sorted(obs_spec)
        self.encoders = nn.ModuleDict()
        self.cond_dim = 0
        for key in self.keys:
            shape = tuple(obs_spec[key])
            if key.startswith(IMAGE_PREFIX):
                if len(shape) != 3 or shape[0] != 3:
                    raise ValueError(f"obs_spec[{key!r}] = {shape}: images must be (3, H, W)")
                enc = ImageEncoder(tuple(image_channels), image_keypoints, image_feature_dim, image_crop_ratio)
                self.cond_dim += n_obs_steps * image_feature_dim
            elif len(shape) == 1:
                enc = StateEncoder(n_obs_steps, shape[0], state_hidden_dim, state_feature_dim)
                self.cond_dim += state_feature_dim
            else:
                raise ValueError(f"obs_spec[{key!r}] = {shape}: expected a vector (D,) or an image "
                                 f"key '{IMAGE_PREFIX}<cam>' with shape (3, H, W)")
            self.encoders[key.replace(".", "__")] = enc

    def forward(self, obs_n: Mapping[str, torch.Tensor]) -> torch.Tensor:
        feats = [self.encoders[key.replace(".", "__")](obs_n[key]) for key in self.keys]
        return torch.cat(feats, dim=-1)
