"""CLIP/SigLIP embedding reward (VLM-RM, Rocamonde et al. 2023): dense shaping, not a success detector.

With L2-normalised embeddings x (image), g (goal prompt) and b (baseline prompt):

    d = g - b
    P = alpha * d d^T / ||d||^2 + (1 - alpha) * I        (goal-baseline projection)
    r = 1 - 0.5 * ||(x - g) P||^2

alpha = 0 gives r = 1 - 0.5 ||x - g||^2 = x . g (the cosine); alpha = 1 keeps only the part of x - g along
the baseline-to-goal direction, so whatever the two prompts share (background, the robot itself) stops
counting. P has eigenvalues 1 and 1 - alpha, so ||(x - g) P|| <= ||x - g|| <= 2 and r lies in [-1, 1].

value = clip((r - lo) / (hi - lo), 0, 1) with ``value_range = (lo, hi)``, by default (-1, 1): the whole
range mapped linearly onto [0, 1]. Real CLIP scores crowd a narrow band (cosines ~0.15-0.35), so set
value_range from scores on your own frames to spread them. prob is None: r is not calibrated.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any, Sequence

from armflow.configs import ConfigError, build_config
from armflow.rewards.hf_local import dtype_kwargs, fingerprint, from_local, require_local_dir, to_pil
from armflow.rewards.protocol import RewardModel, RewardQuery, RewardResult

MODES = ("success", "progress")  # dense shaping serves both; preference needs pairs


def l2_normalise(v, eps: float = 1e-12):
    """Rows of v (numpy or torch, (..., D)) scaled to unit length."""
    norm = (v * v).sum(-1)[..., None] ** 0.5
    return v / (norm + eps)


def vlm_rm_reward(x, g, b, alpha: float):
    """VLM-RM reward r = 1 - 0.5 ||(x - g) P||^2 for unit vectors x (..., D), g (D,), b (D,).

    Works on numpy arrays and torch tensors alike. (x - g) P is expanded without building the D x D
    matrix: alpha * ((x - g) . d / ||d||^2) d + (1 - alpha) (x - g).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"vlm_rm_reward alpha={alpha}: expected a value in [0, 1]")
    diff = x - g
    if alpha == 0.0:
        projected = diff
    else:
        d = g - b
        d_sq = float((d * d).sum())
        if d_sq == 0.0:
            raise ValueError("vlm_rm_reward: goal and baseline embeddings are equal, no direction to project on")
        along = (diff * d).sum(-1)[..., None] / d_sq
        projected = alpha * along * d + (1.0 - alpha) * diff
    return 1.0 - 0.5 * (projected * projected).sum(-1)


def reward_to_value(r: float, value_range: tuple[float, float]) -> float:
    lo, hi = value_range
    return min(1.0, max(0.0, (r - lo) / (hi - lo)))


@dataclass(frozen=True)
class EmbeddingConfig:
    path: str = ""  # local directory of a CLIPModel / SiglipModel with its processor
    goal_prompts: tuple[str, ...] | None = None  # g = mean unit embedding (None: each query's instruction)
    baseline_prompts: tuple[str, ...] = ()  # b = mean unit embedding; needed when alpha > 0
    alpha: float = 0.0  # 0: cosine to the goal; 1: only the goal - baseline direction counts
    value_range: tuple[float, float] = (-1.0, 1.0)  # r -> value: (lo, hi) mapped linearly onto [0, 1]
    cameras: tuple[str, ...] | None = None  # cameras scored (newest frame each), value = their mean
    batch_size: int = 32  # frames per image-tower pass
    device: str = "cpu"
    dtype: str | None = None  # torch dtype name for the weights (None: the checkpoint's)

    def __post_init__(self):
        problems = []
        if not str(self.path):
            problems.append("path is required (a local model directory)")
        if not 0.0 <= self.alpha <= 1.0:
            problems.append(f"alpha={self.alpha}: expected a value in [0, 1]")
        if self.alpha > 0.0 and not self.baseline_prompts:
            problems.append(f"alpha={self.alpha} projects onto goal - baseline: give baseline_prompts")
        if len(self.value_range) != 2 or not self.value_range[0] < self.value_range[1]:
            problems.append(f"value_range={self.value_range}: expected (lo, hi) with lo < hi")
        if self.batch_size < 1:
            problems.append(f"batch_size={self.batch_size}: expected >= 1")
        if problems:
            raise ConfigError("embedding reward backend: " + "; ".join(problems))


class EmbeddingReward(RewardModel):
    """VLM-RM reward from a local CLIPModel / SiglipModel directory; one value per query (mean over cameras).

    ``EmbeddingReward(path, **options)`` with the keys of ``EmbeddingConfig``; an unknown key raises
    ConfigError.
    """

    backend = "embedding"

    def __init__(self, path: str | os.PathLike | None = None, **options: Any):
        if path is not None:
            options["path"] = str(path)
        self.cfg = cfg = build_config(EmbeddingConfig, options, where="embedding reward backend")
        self.alpha, self.value_range = float(cfg.alpha), tuple(float(v) for v in cfg.value_range)
        self.cameras = list(cfg.cameras) if cfg.cameras is not None else None
        self.batch_size, self.device = cfg.batch_size, cfg.device
        self.root = require_local_dir(cfg.path, "embedding")
        self._load(cfg.dtype)
        self._text_cache: dict[str, object] = {}
        self.goal = self.embed_prompts(cfg.goal_prompts) if cfg.goal_prompts else None
        self.baseline = self.embed_prompts(cfg.baseline_prompts) if cfg.baseline_prompts else None
        settings = repr((list(cfg.goal_prompts or []), list(cfg.baseline_prompts), self.alpha, self.value_range))
        self.model_version = (f"{self.root.name}@{fingerprint(self.root)}/vlmrm-"
                              f"{hashlib.sha256(settings.encode()).hexdigest()[:8]}")

    def _load(self, dtype: str | None) -> None:
        from transformers import AutoModel, AutoProcessor

        model = from_local(AutoModel, self.root, "embedding", **dtype_kwargs(dtype))
        if not (hasattr(model, "get_image_features") and hasattr(model, "get_text_features")):
            raise ValueError(f"embedding: {self.root} holds a {type(model).__name__}, expected a dual encoder "
                             "with image and text towers (CLIPModel, SiglipModel)")
        self.model = model.to(self.device).eval()
        self.processor = from_local(AutoProcessor, self.root, "embedding")
        # SigLIP was trained on max-length padded text; CLIP pools at the EOS token, so padding is harmless.
        self._text_padding = "max_length" if "siglip" in model.config.model_type else True

    def embed_texts(self, texts: Sequence[str]):
        """(N,) texts -> (N, D) float32 unit embeddings (torch, CPU)."""
        import torch

        inputs = self.processor(text=list(texts), padding=self._text_padding, truncation=True,
                                return_tensors="pt").to(self.device)
        with torch.inference_mode():
            out = self.model.get_text_features(**inputs)
        return l2_normalise(_pooled(out).float().cpu())

    def embed_prompts(self, texts: Sequence[str]):
        """Mean of the prompts' unit embeddings, renormalised: (D,)."""
        return l2_normalise(self.embed_texts(texts).mean(0))

    def embed_images(self, images: Sequence):
        """(N,) uint8 (H, W, 3) frames -> (N, D) float32 unit embeddings, ``batch_size`` frames a pass."""
        import torch

        chunks = []
        for start in range(0, len(images), self.batch_size):
            pil = [to_pil(im) for im in images[start:start + self.batch_size]]
            inputs = self.processor(images=pil, return_tensors="pt").to(self.device)
            with torch.inference_mode():
                out = self.model.get_image_features(pixel_values=inputs["pixel_values"].to(self.model.dtype))
            chunks.append(_pooled(out).float().cpu())
        return l2_normalise(torch.cat(chunks))

    def _goal_for(self, query: RewardQuery):
        if self.goal is not None:
            return self.goal
        if not query.instruction:
            raise ValueError("embedding: no goal_prompts and the query has no instruction to use as the goal")
        if query.instruction not in self._text_cache:
            self._text_cache[query.instruction] = self.embed_prompts([query.instruction])
        return self._text_cache[query.instruction]

    def _camera_names(self, query: RewardQuery) -> list[str]:
        if query.mode not in MODES:
            raise ValueError(f"embedding scores modes {', '.join(MODES)}, got {query.mode!r}")
        names = self.cameras if self.cameras is not None else list(query.frames)
        missing = [cam for cam in names if cam not in query.frames]
        if missing or not names:
            raise ValueError(f"embedding: camera(s) {missing or names} not in the query "
                             f"(it has {sorted(query.frames)})")
        return names

    def _score(self, queries: Sequence[RewardQuery]) -> list[RewardResult]:
        if not queries:
            return []
        cams = [self._camera_names(q) for q in queries]
        goals = [self._goal_for(q) for q in queries]
        x = self.embed_images([q.frames[c][-1] for q, names in zip(queries, cams) for c in names])
        results, row = [], 0
        for names, g in zip(cams, goals):
            xq = x[row:row + len(names)]
            row += len(names)
            b = self.baseline if self.baseline is not None else g  # unused at alpha = 0
            r = vlm_rm_reward(xq, g, b, self.alpha)
            r_mean = float(r.mean())
            results.append(RewardResult(value=reward_to_value(r_mean, self.value_range), prob=None, evidence={
                "r": r_mean, "r_per_camera": dict(zip(names, r.tolist())),
                "cos_goal": dict(zip(names, (xq @ g).tolist())), "alpha": self.alpha}))
        return results


def _pooled(out):
    """get_*_features returns the embedding tensor in transformers 4 and an output with pooler_output in 5."""
    return out.pooler_output if hasattr(out, "pooler_output") else out
