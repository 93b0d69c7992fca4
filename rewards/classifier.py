"""Success classifier (SERL / HIL-SERL style): a small CNN per camera, one success logit.

Per camera: conv stack (5x5/2, 3x3/2, 3x3/2, 3x3/1, ReLU) -> learned spatial embedding (``K`` learned
H x W kernels per channel, SERL's ``SpatialLearnedEmbeddings``) -> concat over cameras -> Linear(256) ->
Dropout(0.1) -> LayerNorm -> ReLU -> Linear(1). Input: uint8 ``(B, H, W, 3)`` per camera, read as a
channels-last view (no layout copy; the one copy is uint8 -> float).

As a ``RewardModel`` (backend ``"classifier"``): ``prob = sigmoid(logit / temperature)`` (temperature
fitted on the validation split), ``value = 1.0 if prob >= threshold else 0.0``, ``evidence = {"logit"}``.
A query's latest frame of each of the model's cameras is scored; missing cameras or wrong shapes raise.

Checkpoint: ``model.safetensors`` + ``config.json`` (``FORMAT``, cameras, image size, architecture,
threshold, temperature, training summary, ``model_version`` = hash of the weights). Never pickled.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from armflow.rewards.protocol import RewardModel, RewardQuery, RewardResult

FORMAT = "armflow.success_classifier/1"
CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"


@dataclass(frozen=True)
class ClassifierConfig:
    """Architecture and decision rule of a ``SuccessClassifier`` (all of it is saved in config.json)."""

    cameras: tuple[str, ...]  # camera names, e.g. ("agentview",) -> observation.images.agentview
    image_size: tuple[int, int] = (84, 84)  # (H, W) [px] of every camera's frames
    channels: tuple[int, ...] = (16, 32, 32, 32)  # conv widths; kernel 5 then 3; stride 2 for the first 3
    spatial_features: int = 8  # learned spatial kernels per conv channel
    hidden: int = 256  # MLP width
    dropout: float = 0.1
    threshold: float = 0.5  # value = prob >= threshold
    temperature: float = 1.0  # prob = sigmoid(logit / temperature)

    def __post_init__(self):
        object.__setattr__(self, "cameras", tuple(str(c) for c in self.cameras))
        object.__setattr__(self, "image_size", tuple(int(s) for s in self.image_size))
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        if not self.cameras or len(set(self.cameras)) != len(self.cameras):
            raise ValueError(f"ClassifierConfig.cameras={list(self.cameras)}: expected distinct camera names")
        if len(self.image_size) != 2 or min(self.image_size) < 16:
            raise ValueError(f"ClassifierConfig.image_size={self.image_size}: expected (H, W), each >= 16 px")
        if not self.channels or min(self.channels) < 1:
            raise ValueError(f"ClassifierConfig.channels={self.channels}: expected positive conv widths")
        if not 0.0 <= self.threshold <= 1.0 or self.temperature <= 0:
            raise ValueError(f"ClassifierConfig: threshold={self.threshold} must be in [0, 1] and "
                             f"temperature={self.temperature} > 0")


def conv_stack(channels: Sequence[int]) -> nn.Sequential:
    layers, c_in = [], 3
    for i, c_out in enumerate(channels):
        layers += [nn.Conv2d(c_in, c_out, 5 if i == 0 else 3, stride=2 if i < 3 else 1), nn.ReLU()]
        c_in = c_out
    return nn.Sequential(*layers)


class SpatialEmbedding(nn.Module):
    """Features (B, C * K): each channel's H x W map weighted by K learned kernels and summed.

    ``kernel`` is (H * W, C, K); the contraction runs as one batched matmul over channels (an einsum
    was 10x slower on CPU, forward and backward).
    """

    def __init__(self, channels: int, height: int, width: int, k: int):
        super().__init__()
        self.kernel = nn.Parameter(torch.randn(height * width, channels, k) * (2.0 / (height * width)) ** 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        per_channel = x.permute(1, 0, 2, 3).reshape(c, b, h * w)  # (C, B, HW)
        return torch.bmm(per_channel, self.kernel.permute(1, 0, 2)).permute(1, 0, 2).reshape(b, -1)


class CameraEncoder(nn.Module):
    """uint8 (B, H, W, 3) -> features (B, C_last * K)."""

    def __init__(self, cfg: ClassifierConfig):
        super().__init__()
        self.conv = conv_stack(cfg.channels)
        with torch.no_grad():
            _, c, h, w = self.conv(torch.zeros(1, 3, *cfg.image_size)).shape
        self.spatial = SpatialEmbedding(c, h, w, cfg.spatial_features)
        self.out_dim = c * cfg.spatial_features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # (B, H, W, 3) uint8 -> a channels-last (B, 3, H, W) view; .float() keeps those strides
        x = images.permute(0, 3, 1, 2).float().div_(255.0).sub_(0.5)
        return self.spatial(self.conv(x))


class ClassifierNet(nn.Module):
    """Per-camera encoders + MLP head -> one logit per sample."""

    def __init__(self, cfg: ClassifierConfig):
        super().__init__()
        self.cameras = cfg.cameras
        self.encoders = nn.ModuleDict({cam: CameraEncoder(cfg) for cam in cfg.cameras})
        dim = sum(e.out_dim for e in self.encoders.values())
        self.head = nn.Sequential(nn.Linear(dim, cfg.hidden), nn.Dropout(cfg.dropout), nn.LayerNorm(cfg.hidden),
                                  nn.ReLU(), nn.Linear(cfg.hidden, 1))
        self.to(memory_format=torch.channels_last)

    def forward(self, images: dict[str, torch.Tensor]) -> torch.Tensor:
        feats = [self.encoders[cam](images[cam]) for cam in self.cameras]
        return self.head(torch.cat(feats, dim=-1)).squeeze(-1)


def weights_version(state: dict[str, torch.Tensor]) -> str:
    """``classifier-<12 hex>``: a hash of the weights, stored with every reward so it can be recomputed."""
    h = hashlib.sha256()
    for key in sorted(state):
        h.update(key.encode())
        h.update(state[key].detach().cpu().contiguous().numpy().tobytes())
    return f"classifier-{h.hexdigest()[:12]}"


class SuccessClassifier(RewardModel):
    """A trained (or freshly initialised) success classifier behind the reward protocol."""

    backend = "classifier"

    def __init__(self, config: ClassifierConfig, net: ClassifierNet | None = None, training: dict | None = None):
        self.config = config
        self.net = (net or ClassifierNet(config)).eval()
        self.training = dict(training or {})
        self.model_version = weights_version(self.net.state_dict())

    @property
    def cameras(self) -> tuple[str, ...]:
        return self.config.cameras

    def with_decision(self, threshold: float | None = None, temperature: float | None = None) -> "SuccessClassifier":
        """The same network with a new threshold and/or temperature."""
        from dataclasses import replace

        cfg = replace(self.config, **{k: float(v) for k, v in
                                      (("threshold", threshold), ("temperature", temperature)) if v is not None})
        return SuccessClassifier(cfg, self.net, self.training)

    # ---------------------------------------------------------------- scoring
    def check_images(self, images: dict[str, np.ndarray]) -> int:
        """Batch size of ``images`` (camera -> uint8 (B, H, W, 3)); a missing camera or a wrong shape raises."""
        missing = [c for c in self.cameras if c not in images]
        if missing:
            raise ValueError(f"success classifier: no frames for camera(s) {missing}; the model reads "
                             f"{list(self.cameras)}, got {sorted(images)}")
        sizes = set()
        for cam in self.cameras:
            arr = images[cam]
            if arr.dtype != np.uint8 or arr.ndim != 4 or tuple(arr.shape[1:]) != (*self.config.image_size, 3):
                raise ValueError(f"success classifier: frames of {cam!r} are {arr.dtype} {tuple(arr.shape)}, "
                                 f"expected uint8 (B, {self.config.image_size[0]}, {self.config.image_size[1]}, 3)")
            sizes.add(arr.shape[0])
        if len(sizes) != 1:
            raise ValueError(f"success classifier: cameras disagree on the batch size ({sorted(sizes)})")
        return sizes.pop()

    def logits(self, images: dict[str, np.ndarray]) -> np.ndarray:
        """Raw logits (B,) for camera -> uint8 (B, H, W, 3) (eval mode, no autograd)."""
        self.check_images(images)
        self.net.eval()
        with torch.inference_mode():
            batch = {cam: torch.from_numpy(np.ascontiguousarray(images[cam])) for cam in self.cameras}
            return self.net(batch).numpy().astype(np.float64)

    def probs(self, images: dict[str, np.ndarray]) -> np.ndarray:
        """Calibrated success probabilities (B,)."""
        return sigmoid(self.logits(images) / self.config.temperature)

    def _score(self, queries: Sequence[RewardQuery]) -> list[RewardResult]:
        if not queries:
            return []
        images = {}
        for cam in self.cameras:
            missing = [i for i, q in enumerate(queries) if cam not in q.frames]
            if missing:
                have = sorted(queries[missing[0]].frames)
                raise ValueError(f"success classifier: query {missing[0]} has no frames for camera {cam!r}; the "
                                 f"model reads {list(self.cameras)}, the query has {have}")
            images[cam] = np.stack([q.frames[cam][-1] for q in queries])
        logits = self.logits(images)
        probs = sigmoid(logits / self.config.temperature)
        return [RewardResult(value=float(p >= self.config.threshold), prob=float(p), evidence={"logit": float(z)})
                for p, z in zip(probs, logits)]

    # ---------------------------------------------------------------- checkpoint
    def save(self, directory: str | Path) -> Path:
        """Write ``model.safetensors`` + ``config.json`` into ``directory`` (created)."""
        from safetensors.torch import save_file

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous() for k, v in self.net.state_dict().items()}
        save_file(state, str(out / WEIGHTS_FILE))
        payload = {"format": FORMAT, "backend": self.backend, "model_version": self.model_version,
                   **asdict(self.config), "training": self.training}
        (out / CONFIG_FILE).write_text(json.dumps(payload, indent=2, default=_json_default))
        return out

    @classmethod
    def load(cls, directory: str | Path) -> "SuccessClassifier":
        """Load a checkpoint written by ``save``; a missing file, another format or mismatched weights raise."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        root = Path(directory)
        if not (root / CONFIG_FILE).is_file() and (root / "checkpoint" / CONFIG_FILE).is_file():
            root = root / "checkpoint"  # the run dir of `armflow reward fit`
        cfg_path, weights_path = root / CONFIG_FILE, root / WEIGHTS_FILE
        for path in (cfg_path, weights_path):
            if not path.is_file():
                raise FileNotFoundError(f"{path}: missing; a success classifier checkpoint is a directory with "
                                        f"{CONFIG_FILE} and {WEIGHTS_FILE} (armflow reward fit writes one)")
        config, training = read_config(cfg_path)
        net = ClassifierNet(config)
        try:
            state = load_file(str(weights_path))
        except SafetensorError as exc:
            raise ValueError(f"{weights_path}: corrupt safetensors file ({exc})") from None
        own = net.state_dict()
        problems = [f"{k}: missing" for k in own if k not in state] + \
                   [f"{k}: unexpected" for k in state if k not in own] + \
                   [f"{k}: shape {tuple(state[k].shape)}, config gives {tuple(own[k].shape)}"
                    for k in own if k in state and state[k].shape != own[k].shape]
        if problems:
            raise ValueError(f"{weights_path}: weights do not match {cfg_path} (cameras {list(config.cameras)}, "
                             f"image_size {list(config.image_size)}): " + "; ".join(problems[:6]))
        net.load_state_dict(state)
        return cls(config, net, training)


@dataclass(frozen=True)
class ClassifierBackendConfig:
    """What ``make_reward_model("classifier", ...)`` takes."""

    path: str  # checkpoint dir (model.safetensors + config.json), e.g. <armflow reward fit out>/checkpoint
    threshold: float | None = None  # overrides the saved threshold


def load_backend(**cfg: Any) -> SuccessClassifier:
    """The registry's factory: a saved classifier, optionally with another threshold (unknown keys raise)."""
    from armflow.configs import build_config

    opts = build_config(ClassifierBackendConfig, cfg, "reward backend classifier")
    model = SuccessClassifier.load(opts.path)
    return model.with_decision(threshold=opts.threshold) if opts.threshold is not None else model


def read_config(path: Path) -> tuple[ClassifierConfig, dict]:
    try:
        payload = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if payload.get("format") != FORMAT:
        raise ValueError(f"{path}: format {payload.get('format')!r}, expected {FORMAT!r} "
                         "(not a success classifier checkpoint, or one from another version)")
    names = {f.name for f in fields(ClassifierConfig)}
    try:
        config = ClassifierConfig(**{k: v for k, v in payload.items() if k in names})
    except TypeError as exc:
        raise ValueError(f"{path}: {exc}") from None
    return config, payload.get("training", {})


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))  # stable for large |x|


def _json_default(obj: Any):
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, (tuple, np.ndarray)):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
