"""What every policy shares: normaliser, observation encoder, the batch/obs contract, loss masking,
``predict_chunk`` and ``save_pretrained``. Subclasses add the action model (``sample``, ``_elementwise_loss``).
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
from torch import nn

from .encoders import IMAGE_PREFIX, ObsEncoder
from .normalizer import Normalizer
from .sampler import SamplerHooks

ACTION_KEY = "action"
PAD_KEY = "action_is_pad"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT_NAME = "armflow-policy"
FORMAT_VERSION = 1


def image_chw(key: str, shape: tuple[int, ...]) -> tuple[int, int, int]:
    """Image per-frame shape -> (3, H, W). Accepts the env/LeRobot convention (H, W, 3) or (3, H, W)."""
    if len(shape) == 3 and shape[-1] == 3:
        return (3, shape[0], shape[1])
    if len(shape) == 3 and shape[0] == 3:
        return tuple(shape)
    raise ValueError(f"obs_spec[{key!r}] = {tuple(shape)}: images must be (H, W, 3) or (3, H, W)")


class BasePolicy(nn.Module):
    """Common policy machinery. Shapes: obs values ``(B, T_o, ...)``, actions ``(B, T_p, D_a)``."""

    policy_type: str = ""

    def __init__(self, cfg, obs_spec: Mapping[str, tuple[int, ...]], action_dim: int, stats: Mapping | None):
        super().__init__()
        self.cfg = cfg
        self.obs_spec = {k: tuple(int(d) for d in v) for k, v in obs_spec.items()}
        if not self.obs_spec:
            raise ValueError("obs_spec is empty: a policy needs at least one observation key")
        self.action_dim = int(action_dim)
        self.n_obs_steps, self.horizon, self.n_action_steps = cfg.n_obs_steps, cfg.horizon, cfg.n_action_steps
        # Internal per-frame layout: images channels-first (3, H, W); obs_spec keeps the caller's convention.
        self.input_shapes = {k: image_chw(k, v) if k.startswith(IMAGE_PREFIX) else v for k, v in self.obs_spec.items()}
        shapes = {**self.input_shapes, ACTION_KEY: (self.action_dim,)}
        self.normalizer = Normalizer(shapes, stats)
        # Pretrained trunk weights load only for a new policy: stats=None is a placeholder that load_state_dict
        # overwrites (load_policy), where the weights file need not exist any more.
        self.obs_encoder = ObsEncoder(self.input_shapes, cfg.n_obs_steps, cfg.state_hidden_dim, cfg.state_feature_dim,
                                      cfg.image_encoder, cfg.image_channels, cfg.image_keypoints,
                                      cfg.image_feature_dim, cfg.image_crop_ratio,
                                      cfg.image_weights if stats is not None else None, cfg.image_obs_steps)
        self.cond_dim = self.obs_encoder.cond_dim

    # ----------------------------------------------------------------- contract attributes
    @property
    def action_spec(self) -> dict[str, tuple[int, ...]]:
        return {ACTION_KEY: (self.action_dim,)}

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # ----------------------------------------------------------------- observations
    def _obs_tensor(self, key: str, value) -> torch.Tensor:
        """One obs entry -> tensor (B, T_o, *input_shapes[key]): vectors float; images (3, H, W) keep their dtype
        (uint8 [0,255] or float [0,1]), channels first or last on input, first on output."""
        x = torch.as_tensor(np.asarray(value) if not torch.is_tensor(value) else value, device=self.device)
        spec = self.input_shapes[key]
        if key.startswith(IMAGE_PREFIX):
            c, h, w = spec
            if x.shape[-3:] != (c, h, w) and x.shape[-3:] == (h, w, c):
                x = x.movedim(-1, -3)
            x = x if x.dtype == torch.uint8 else x.float()
        else:
            x = x.float()
        if x.ndim != len(spec) + 2 or tuple(x.shape[1:]) != (self.n_obs_steps, *spec):
            raise ValueError(f"obs[{key!r}] has shape {tuple(x.shape)}; expected (B, T_o={self.n_obs_steps}, "
                             f"*{spec})")
        return x

    def _image_input(self, key: str, x: torch.Tensor) -> torch.Tensor:
        """(B, T_o, 3, H, W) uint8 or float [0, 1] -> normalised crops (B, image_obs_steps, 3, h, w) of the latest
        frames: cropped first (random in train mode), so only the crop's pixels are converted and normalised."""
        x = x[:, x.shape[1] - self.obs_encoder.image_obs_steps:]
        b, t = x.shape[:2]
        frames = self.obs_encoder.image_encoder(key).crop(x.reshape(b * t, *x.shape[2:]))
        frames = frames.float().div_(255.0) if frames.dtype == torch.uint8 else frames.float()
        return self.normalizer.normalize(key, frames).reshape(b, t, *frames.shape[1:])

    def normalize_obs(self, obs: Mapping) -> dict[str, torch.Tensor]:
        """Raw obs window -> the encoder's inputs: normalised vectors, normalised (cropped) images."""
        missing = [k for k in self.obs_spec if k not in obs]
        if missing:
            raise KeyError(f"obs lacks {missing}; the policy needs {sorted(self.obs_spec)}, got {sorted(obs)}")
        return {k: self._image_input(k, self._obs_tensor(k, obs[k])) if k.startswith(IMAGE_PREFIX) else
                self.normalizer.normalize(k, self._obs_tensor(k, obs[k])) for k in self.obs_spec}

    def encode_obs(self, obs: Mapping) -> torch.Tensor:
        """Raw obs window ``{key: (B, T_o, ...)}`` -> cond (B, C); normalises inside."""
        return self.obs_encoder(self.normalize_obs(obs))

    # ----------------------------------------------------------------- training
    def _elementwise_loss(self, cond: torch.Tensor, actions_n: torch.Tensor):
        """-> (loss (B, T_p, D_a), metrics dict[str, float]); implemented per policy type."""
        raise NotImplementedError

    def compute_loss(self, batch: Mapping) -> tuple[torch.Tensor, dict[str, float]]:
        """WindowDataset batch -> (scalar loss, metrics); padded action steps (``action_is_pad``) are ignored."""
        actions = torch.as_tensor(batch[ACTION_KEY], device=self.device).float()
        if actions.ndim != 3 or tuple(actions.shape[1:]) != (self.horizon, self.action_dim):
            raise ValueError(f"batch['action'] has shape {tuple(actions.shape)}; expected "
                             f"(B, T_p={self.horizon}, D_a={self.action_dim})")
        cond = self.encode_obs(self._drop_condition(batch))
        loss_el, metrics = self._elementwise_loss(cond, self.normalizer.normalize(ACTION_KEY, actions))
        if PAD_KEY in batch:
            valid = (~torch.as_tensor(batch[PAD_KEY], device=self.device).bool()).float()  # (B, T_p)
        else:
            valid = torch.ones(actions.shape[:2], device=self.device)
        weight = valid.unsqueeze(-1).expand_as(loss_el)
        loss = (loss_el * weight).sum() / weight.sum().clamp_min(1.0)
        metrics = {"loss": float(loss.detach()), "valid_frac": float(valid.mean()), **metrics}
        return loss, metrics

    def _drop_condition(self, batch: Mapping) -> Mapping:
        """Training only: the condition obs (``cfg.condition_key``) zeroed, the null condition of classifier-free
        guidance, in a ``condition_dropout`` fraction of the rows."""
        key, p = getattr(self.cfg, "condition_key", None), float(getattr(self.cfg, "condition_dropout", 0.0))
        if not (self.training and key and p > 0):
            return batch
        x = torch.as_tensor(batch[key], device=self.device).float()
        keep = (torch.rand(x.shape[0], device=x.device) >= p).float().reshape(-1, *[1] * (x.ndim - 1))
        return {**batch, key: x * keep}

    # ----------------------------------------------------------------- inference
    def default_noise(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """The policy's own initial noise: ``cfg.noise_scale`` x standard normal (zeros for the Gaussian
        mean and for ``noise_scale=0``). Seeded rollouts (evaluate, deploy) draw it from ``generator``, so
        what is evaluated is what is deployed, with the exported noise scale."""
        device = self.device if generator is None else generator.device
        noise = torch.randn(batch, self.horizon, self.action_dim, generator=generator, device=device)
        return noise.to(self.device) * float(getattr(self.cfg, "noise_scale", 1.0))

    def sample(self, cond: torch.Tensor, noise: torch.Tensor, hooks: SamplerHooks | None = None,
               select=None) -> torch.Tensor:
        """Deterministic map (cond (B, C), noise (B, T_p, D_a)) -> normalised actions (B, T_p, D_a); ``select``:
        :func:`~.sampler.integrate`'s row selection (early reranking)."""
        raise NotImplementedError

    @torch.no_grad()
    def predict_chunk(self, obs: Mapping, noise: torch.Tensor | None = None,
                      hooks: SamplerHooks | None = None) -> torch.Tensor:
        """Obs window ``{key: (B, T_o, ...)}`` -> action chunk (B, T_p, D_a) in robot units.

        Normalised actions are clipped to [-1, 1] (the training data's [min, max]) before unnormalising.
        ``hooks`` steer the sampler (:class:`~.sampler.SamplerHooks`); with ``hooks.n_candidates = K > 1`` the K
        chunks per observation are sampled in one batch (``noise``, if given, is (B, K, T_p, D_a)) and
        ``hooks.reranker`` picks one.
        """
        cond = self.encode_obs(obs)
        b, k = cond.shape[0], hooks.n_candidates if hooks is not None else 1
        cond = cond.repeat_interleave(k, dim=0) if k > 1 else cond
        if noise is None:
            noise = hooks.noise(cond) if hooks is not None and hooks.noise else self.default_noise(len(cond))
        noise = torch.as_tensor(noise, device=cond.device, dtype=cond.dtype)
        if noise.shape[:-2].numel() != len(cond) or tuple(noise.shape[-2:]) != (self.horizon, self.action_dim):
            raise ValueError(f"noise has shape {tuple(noise.shape)}; expected (B={b}, {f'K={k}, ' * (k > 1)}"
                             f"T_p={self.horizon}, D_a={self.action_dim})")
        early = k > 1 and hooks.rerank_level is not None
        select = (hooks.rerank_level, lambda x_hat: self._rerank_rows(obs, x_hat, hooks)) if early else None
        actions_n = self.sample(cond, noise.reshape(len(cond), self.horizon, self.action_dim), hooks=hooks,
                                select=select)
        actions = self.normalizer.unnormalize(ACTION_KEY, actions_n.clamp(-1.0, 1.0))
        if k > 1 and not early:
            actions = actions.reshape(b, k, self.horizon, self.action_dim)
            actions = actions[torch.arange(b, device=actions.device), hooks.reranker(obs, actions)]
        return actions

    def _rerank_rows(self, obs: Mapping, x_hat: torch.Tensor, hooks: SamplerHooks) -> torch.Tensor:
        """Early reranking: the K clean-chunk estimates per observation (B * K rows, normalised) -> the rows kept,
        the reranker's pick of each observation's K."""
        k = hooks.n_candidates
        b = len(x_hat) // k
        candidates = self.normalizer.unnormalize(ACTION_KEY, x_hat.clamp(-1.0, 1.0))
        chosen = hooks.reranker(obs, candidates.reshape(b, k, self.horizon, self.action_dim))
        return torch.arange(b, device=x_hat.device) * k + chosen.to(x_hat.device)

    # ----------------------------------------------------------------- checkpoint
    def config_dict(self) -> dict:
        return {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "policy_type": self.policy_type,
                "obs_spec": {k: list(v) for k, v in self.obs_spec.items()}, "action_dim": self.action_dim,
                "config": dataclasses.asdict(self.cfg)}

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write ``config.json`` + ``model.safetensors`` (normaliser buffers included); atomic per file."""
        from safetensors.torch import save_file

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        tmp = out / (WEIGHTS_FILE + ".tmp")
        save_file(tensors, str(tmp), metadata={"format": FORMAT_NAME, "policy_type": self.policy_type})
        os.replace(tmp, out / WEIGHTS_FILE)
        tmp = out / (CONFIG_FILE + ".tmp")
        tmp.write_text(json.dumps(self.config_dict(), indent=2))
        os.replace(tmp, out / CONFIG_FILE)
        return out
