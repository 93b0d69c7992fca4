"""Observation encoders: normalised obs window ``{key: (B, T_o, ...)}`` -> conditioning ``cond (B, C)``.

- ``observation.state`` (or any vector key) (B, T_o, D): an MLP over the flattened window.
- ``observation.images.<cam>`` (B, T_o, 3, H, W): one image encoder per camera (cameras see different
  things, as in diffusion_policy's and robomimic's defaults), applied per frame; the per-frame features of the
  latest ``image_obs_steps`` of the T_o frames are concatenated. Each is a convolutional trunk ending in a spatial softmax (keypoints = expected
  image coordinates of learned feature maps, Levine et al. 2016) and a linear head. Trunks (``IMAGE_ENCODERS``):

  - ``conv`` (default, sized for a CPU): an 8x8 stride-4 stem (84x84 -> 19x19 at once), then 3x3 convs (the
    second at stride 2), GroupNorm + ReLU after each; ~30 k weights. On the 2-core box this trains ~20x faster
    per sample than ``resnet`` (``armflow bench train``).
  - ``resnet``: the first armflow encoder (5x5 stride-2 stem, residual GroupNorm stages of ``image_channels``);
    checkpoints written before ``image_encoder`` existed were built with it.
  - ``resnet18``: ResNet-18's layout with GroupNorm (for GPUs; torchvision-compatible parameter names, so a
    ResNet-18 state dict loads with ``image_weights=PATH``; BatchNorm running statistics are ignored).

Random crops (``image_crop_ratio``) are taken in train mode only; eval mode takes the centre crop, so the
trunk sees the same size in both (Chi et al. 2023). Crops are cut before the float conversion, so uint8 batches
(``WindowDataset(uint8_images=True)``) are converted and normalised only on the cropped pixels.
"""
from __future__ import annotations

import os
from typing import Mapping

import torch
from torch import nn

IMAGE_PREFIX = "observation.images."
IMAGE_ENCODERS = ("conv", "resnet", "resnet18")


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


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(_groups(channels), channels)


class ConvTrunk(nn.Sequential):
    """CPU-sized trunk: conv 8x8 stride 4, then 3x3 convs (stride 2 for the second, 1 after); GroupNorm + ReLU.

    Compute sits where it is cheap: the stem shrinks 76x76 crops to 18x18 in one step, so the later layers,
    which carry most of the weights, run on 18x18 and 9x9 maps."""

    def __init__(self, channels: tuple[int, ...]):
        layers: list[nn.Module] = []
        c_in = 3
        for i, c_out in enumerate(channels):
            conv = (nn.Conv2d(c_in, c_out, 8, stride=4, bias=False) if i == 0 else
                    nn.Conv2d(c_in, c_out, 3, stride=2 if i == 1 else 1, padding=1, bias=False))
            layers += [conv, _norm(c_out), nn.ReLU(inplace=True)]  # GroupNorm backward needs its input only
            c_in = c_out
        super().__init__(*layers)
        self.out_channels = c_in


class ResBlock2d(nn.Module):
    """Basic residual block (two 3x3 convs, GroupNorm), optional stride-2 downsampling (``resnet``'s; its
    parameter names are those of the checkpoints written with it)."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), _norm(c_out),
            nn.ReLU(), nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), _norm(c_out))
        self.skip = (nn.Identity() if stride == 1 and c_in == c_out else
                     nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), _norm(c_out)))
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.skip(x))


class BasicBlock(nn.Module):
    """ResNet-18's block with GroupNorm; attribute names follow torchvision's BasicBlock (``conv1``, ``bn1``,
    ``conv2``, ``bn2``, ``downsample``) so ResNet-18 state dicts map onto :class:`ResNet18Trunk` key for key."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = _norm(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = _norm(c_out)
        self.downsample = (None if stride == 1 and c_in == c_out else
                           nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), _norm(c_out)))
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        skip = x if self.downsample is None else self.downsample(x)
        return self.relu(self.bn2(self.conv2(y)) + skip)


class ResNetTrunk(nn.Sequential):
    """armflow's first image trunk: 5x5 stride-2 stem, then one residual block per stage of ``channels``
    (every stage after the first halves H, W)."""

    def __init__(self, channels: tuple[int, ...]):
        c0 = channels[0]
        layers: list[nn.Module] = [nn.Conv2d(3, c0, 5, stride=2, padding=2, bias=False), _norm(c0), nn.ReLU()]
        c_in = c0
        for i, c_out in enumerate(channels):
            layers.append(ResBlock2d(c_in, c_out, stride=1 if i == 0 else 2))
            c_in = c_out
        super().__init__(*layers)
        self.out_channels = c_in


class ResNet18Trunk(nn.Module):
    """ResNet-18 without its pooling head and classifier (7x7 stride-2 stem, max-pool, 4 stages x 2 blocks at
    64-128-256-512 channels, /32 overall), GroupNorm in place of BatchNorm (as diffusion_policy does: batch
    statistics drift between training and closed-loop rollouts)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = _norm(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        widths, c_in = (64, 128, 256, 512), 64
        for i, c_out in enumerate(widths):
            stride = 1 if i == 0 else 2
            setattr(self, f"layer{i + 1}", nn.Sequential(BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out, 1)))
            c_in = c_out
        self.out_channels = c_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def make_trunk(kind: str, channels: tuple[int, ...]) -> nn.Module:
    if kind == "conv":
        return ConvTrunk(channels)
    if kind == "resnet":
        return ResNetTrunk(channels)
    if kind == "resnet18":
        return ResNet18Trunk()
    raise ValueError(f"image_encoder={kind!r}; valid: {IMAGE_ENCODERS}")


class SpatialSoftmax(nn.Module):
    """(N, C, H, W) -> (N, 2K): per keypoint map, the softmax-weighted mean (x, y) in [-1, 1]."""

    def __init__(self, channels: int, n_keypoints: int):
        super().__init__()
        self.proj = nn.Conv2d(channels, n_keypoints, 1)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        maps = self.proj(feat)
        n, k, h, w = maps.shape
        attn = torch.softmax(maps.reshape(n, k, h * w).float(), dim=-1)
        ys = torch.linspace(-1.0, 1.0, h, device=feat.device)
        xs = torch.linspace(-1.0, 1.0, w, device=feat.device)
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        grid = torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], dim=-1)  # (H*W, 2)
        return (attn @ grid).reshape(n, 2 * k)


def crop_size(h: int, w: int, ratio: float) -> tuple[int, int]:
    return (h, w) if ratio >= 1.0 else (max(1, round(ratio * h)), max(1, round(ratio * w)))


def crop_images(x: torch.Tensor, ratio: float, random: bool) -> torch.Tensor:
    """(N, C, H, W) any dtype -> (N, C, round(ratio H), round(ratio W)); a random window per image when
    ``random`` (training augmentation), else the centre window (evaluation).

    Random windows are sliced image by image and stacked: a strided copy per image moves 4-5x less memory
    than one advanced-indexing gather over the batch (measured 28 vs 120 ms for 512 float 84x84 frames)."""
    n, _, h, w = x.shape
    ch, cw = crop_size(h, w, ratio)
    if (ch, cw) == (h, w):
        return x
    if not random:
        top, left = (h - ch) // 2, (w - cw) // 2
        return x[:, :, top:top + ch, left:left + cw]
    tops = torch.randint(0, h - ch + 1, (n,)).tolist()
    lefts = torch.randint(0, w - cw + 1, (n,)).tolist()
    return torch.stack([x[i, :, t:t + ch, l:l + cw] for i, (t, l) in enumerate(zip(tops, lefts))])


class ImageEncoder(nn.Module):
    """Normalised frames (N, 3, h, w) (already cropped: :meth:`crop`) -> (N, out_dim)."""

    def __init__(self, kind: str = "conv", channels: tuple[int, ...] = (16, 32, 64), n_keypoints: int = 32,
                 out_dim: int = 64, crop_ratio: float = 1.0):
        super().__init__()
        self.crop_ratio = float(crop_ratio)
        self.trunk = make_trunk(kind, tuple(channels))
        self.pool = SpatialSoftmax(self.trunk.out_channels, n_keypoints)
        self.head = nn.Sequential(nn.Linear(2 * n_keypoints, out_dim), nn.Mish())
        self.out_dim = out_dim

    def crop(self, frames: torch.Tensor) -> torch.Tensor:
        """Raw frames (N, 3, H, W), uint8 or float -> the window the trunk sees (random in train mode)."""
        return crop_images(frames, self.crop_ratio, random=self.training)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.trunk(frames)))


def load_image_weights(encoder: ImageEncoder, path: str | os.PathLike) -> list[str]:
    """Load trunk weights from a local file (safetensors or a torch state dict): keys as in
    ``encoder.trunk.state_dict()``, optionally under a prefix (``trunk.``, ``backbone.``, ...). BatchNorm running
    statistics and classifier weights (``fc.*``) in the file are ignored. Returns the loaded key names."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image_weights={path!r}: no such file (a .safetensors or torch state dict)")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file
        state = load_file(path)
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, Mapping):
        raise ValueError(f"image_weights={path!r}: expected a state dict (name -> tensor), got {type(state).__name__}")
    own = encoder.trunk.state_dict()
    matched: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        name = next((key[len(p):] for p in ("", "trunk.", "backbone.", "model.", "encoder.") if key[len(p):] in own
                     and key.startswith(p)), None)
        if name is None:
            continue
        if tuple(value.shape) != tuple(own[name].shape):
            raise ValueError(f"image_weights={path!r}: {key!r} has shape {tuple(value.shape)}, the "
                             f"{type(encoder.trunk).__name__} expects {tuple(own[name].shape)}")
        matched[name] = value
    missing = sorted(set(own) - set(matched))
    if missing:
        raise ValueError(f"image_weights={path!r}: no weights for {len(missing)} of {len(own)} trunk tensors "
                         f"(e.g. {missing[:3]}); the file's keys start {sorted(state)[:3]}")
    encoder.trunk.load_state_dict(matched)
    return sorted(matched)


class ObsEncoder(nn.Module):
    """All observation keys -> cond (B, C); keys in sorted order so C's layout is stable."""

    def __init__(self, obs_spec: Mapping[str, tuple[int, ...]], n_obs_steps: int, state_hidden_dim: int = 256,
                 state_feature_dim: int = 128, image_encoder: str = "conv", image_channels: tuple[int, ...] = (16, 32, 64),
                 image_keypoints: int = 32, image_feature_dim: int = 64, image_crop_ratio: float = 1.0,
                 image_weights: str | None = None, image_obs_steps: int | None = None):
        super().__init__()
        self.keys = sorted(obs_spec)
        self.image_obs_steps = n_obs_steps if image_obs_steps is None else int(image_obs_steps)
        self.encoders = nn.ModuleDict()
        self.cond_dim = 0
        for key in self.keys:
            shape = tuple(obs_spec[key])
            if key.startswith(IMAGE_PREFIX):
                if len(shape) != 3 or shape[0] != 3:
                    raise ValueError(f"obs_spec[{key!r}] = {shape}: images must be (3, H, W)")
                enc = ImageEncoder(image_encoder, tuple(image_channels), image_keypoints, image_feature_dim,
                                   image_crop_ratio)
                _check_image_size(key, shape, image_encoder, image_crop_ratio)
                if image_weights:
                    load_image_weights(enc, image_weights)
                self.cond_dim += self.image_obs_steps * image_feature_dim
            elif len(shape) == 1:
                enc = StateEncoder(n_obs_steps, shape[0], state_hidden_dim, state_feature_dim)
                self.cond_dim += state_feature_dim
            else:
                raise ValueError(f"obs_spec[{key!r}] = {shape}: expected a vector (D,) or an image "
                                 f"key '{IMAGE_PREFIX}<cam>' with shape (3, H, W)")
            self.encoders[key.replace(".", "__")] = enc

    def image_encoder(self, key: str) -> ImageEncoder:
        return self.encoders[key.replace(".", "__")]

    def forward(self, obs_n: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``obs_n``: normalised vectors (B, T_o, D) and normalised, cropped images (B, image_obs_steps, 3, h, w)
        (:meth:`BasePolicy.normalize_obs`)."""
        feats = []
        for key in self.keys:
            x, enc = obs_n[key], self.encoders[key.replace(".", "__")]
            if key.startswith(IMAGE_PREFIX):
                b, t = x.shape[:2]
                x = enc(x.reshape(b * t, *x.shape[2:])).reshape(b, t * enc.out_dim)
            else:
                x = enc(x)
            feats.append(x)
        return torch.cat(feats, dim=-1)


MIN_SIDE = {"conv": 8, "resnet": 8, "resnet18": 32}


def _check_image_size(key: str, shape: tuple[int, ...], kind: str, crop_ratio: float) -> None:
    h, w = crop_size(shape[1], shape[2], crop_ratio)
    if min(h, w) < MIN_SIDE[kind]:
        raise ValueError(f"obs_spec[{key!r}] = {shape}: image_encoder={kind!r} needs crops of at least "
                         f"{MIN_SIDE[kind]}x{MIN_SIDE[kind]} pixels, image_crop_ratio={crop_ratio} gives {h}x{w}")
