"""The latent dynamics model of DynaGuide (Du & Song 2025): (obs window, executed action chunk) -> the embedding
of the observation T_a steps later.

Embedding: the policy-normalised state of ``embed_keys`` at one frame, ``z = concat_k normalise_k(obs_k)`` (E =
sum of their dims). The paper embeds camera frames with a frozen DINOv2; here the simulator gives the state, so
the embedding is that state in the policy's normalised units (no weights, nothing to collapse). The model predicts
the change of the latest frame's embedding: ``z_hat = z(o_t) + f([o_{t-T_o+1..t}]_n, a_n[t:t+T_a])``.

Inputs are normalised with the POLICY's stats (stored in ``model.safetensors`` and, readable, in ``config.json``);
actions enter normalised, as the sampler holds them, so guidance differentiates the model and nothing else.
:func:`check_dynamics` refuses a model trained for another policy. Saved as ``config.json`` + ``model.safetensors``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from armflow.policies.normalizer import Normalizer
from armflow.policies.steering.model_io import CONFIG_FILE, WEIGHTS_FILE, load_model, save_model

FORMAT_NAME, FORMAT_VERSION = "armflow-dynamics", 1
ACTION = "action"


@dataclass
class DynamicsConfig:
    obs_keys: tuple = ()          # vector obs keys of the policy the model reads (the obs window)
    obs_dims: tuple = ()          # D per obs key
    embed_keys: tuple = ()        # keys whose normalised values form the embedding z (a subset of obs_keys)
    n_obs_steps: int = 2          # T_o (the policy's)
    n_action_steps: int = 8       # T_a: the executed prefix of a chunk; the target is the obs T_a steps later
    horizon: int = 16             # T_p of the policy's chunks
    action_dim: int = 7           # D_a
    hidden: int = 256
    n_layers: int = 3


class LatentDynamics(nn.Module):
    """``forward(feat (N, T_o * sum D), a_n (N, T_a * D_a)) -> z_hat (N, E)``, all normalised."""

    def __init__(self, cfg: DynamicsConfig):
        super().__init__()
        self.cfg = cfg
        missing = [k for k in cfg.embed_keys if k not in cfg.obs_keys]
        if not cfg.embed_keys or missing:
            raise ValueError(f"dynamics: embed_keys={list(cfg.embed_keys)} must be a non-empty subset of the policy's "
                             f"vector obs keys {list(cfg.obs_keys)}")
        self.dims = {k: int(d) for k, d in zip(cfg.obs_keys, cfg.obs_dims)}
        self.normalizer = Normalizer({**{k: (d,) for k, d in self.dims.items()}, ACTION: (cfg.action_dim,)}, None)
        self.embed_dim = sum(self.dims[k] for k in cfg.embed_keys)
        layers, width = [], cfg.n_obs_steps * sum(self.dims.values()) + cfg.n_action_steps * cfg.action_dim
        for _ in range(cfg.n_layers):
            layers += [nn.Linear(width, cfg.hidden), nn.Mish()]
            width = cfg.hidden
        self.net = nn.Sequential(*layers, nn.Linear(width, self.embed_dim))
        nn.init.zeros_(self.net[-1].weight)  # starts as "nothing changes" (the persistence baseline)
        nn.init.zeros_(self.net[-1].bias)

    @classmethod
    def for_policy(cls, policy, embed_keys=(), hidden: int = 256, n_layers: int = 3) -> "LatentDynamics":
        """A new model over ``policy``'s vector obs keys and executed chunk, with its normaliser stats copied."""
        keys = tuple(k for k, s in policy.obs_spec.items() if len(s) == 1)
        if not keys:
            raise ValueError(f"dynamics: the policy has no vector observation keys (it has {sorted(policy.obs_spec)});"
                             " the dynamics model reads vector observations only")
        cfg = DynamicsConfig(keys, tuple(int(policy.obs_spec[k][0]) for k in keys), tuple(embed_keys or keys),
                             int(policy.n_obs_steps), int(policy.n_action_steps), int(policy.horizon),
                             int(policy.action_dim), int(hidden), int(n_layers))
        model = cls(cfg)
        own = model.normalizer.state_dict()
        model.normalizer.load_state_dict({k: policy.normalizer.state_dict()[k].clone() for k in own})
        return model

    def embed(self, frame: Mapping) -> torch.Tensor:
        """One frame {key: (N, D)} robot units -> z (N, E)."""
        return torch.cat([self.normalizer.normalize(k, torch.as_tensor(frame[k], dtype=torch.float32))
                          for k in self.cfg.embed_keys], dim=-1)

    def features(self, obs: Mapping) -> torch.Tensor:
        """Obs window {key: (N, T_o, D)} robot units -> (N, T_o * sum D) normalised."""
        parts = []
        for k, d in self.dims.items():
            x = torch.as_tensor(obs[k], dtype=torch.float32)
            if tuple(x.shape[1:]) != (self.cfg.n_obs_steps, d):
                raise ValueError(f"dynamics: obs[{k!r}] has shape {tuple(x.shape)}; expected (N, T_o="
                                 f"{self.cfg.n_obs_steps}, {d})")
            parts.append(self.normalizer.normalize(k, x).flatten(1))
        return torch.cat(parts, dim=-1)

    def current(self, feat: torch.Tensor) -> torch.Tensor:
        """The latest frame's embedding, read back out of normalised features (N, F) -> (N, E)."""
        t_o, parts, lo = self.cfg.n_obs_steps, {}, 0
        for k, d in self.dims.items():
            parts[k] = feat[:, lo:lo + t_o * d].reshape(-1, t_o, d)[:, -1]
            lo += t_o * d
        return torch.cat([parts[k] for k in self.cfg.embed_keys], dim=-1)

    def forward(self, feat: torch.Tensor, a_n: torch.Tensor) -> torch.Tensor:
        """(feat (N, F), a_n (N, T_a * D_a) or (N, >= T_a, D_a) normalised) -> z_hat (N, E)."""
        if a_n.dim() == 3:
            a_n = a_n[:, :self.cfg.n_action_steps].flatten(1)
        return self.current(feat) + self.net(torch.cat([feat, a_n], dim=-1))

    @torch.no_grad()
    def predict(self, obs: Mapping, chunks: torch.Tensor) -> torch.Tensor:
        """Obs window and chunks (N, >= T_a, D_a) in robot units -> z_hat (N, E)."""
        a_n = self.normalizer.normalize(ACTION, torch.as_tensor(chunks, dtype=torch.float32))
        return self(self.features(obs), a_n)

    # ----------------------------------------------------------------- checkpoint
    def save_pretrained(self, directory: str | os.PathLike, extra: Mapping | None = None) -> Path:
        return save_model(self, directory, (FORMAT_NAME, FORMAT_VERSION), self.cfg, (*self.dims, ACTION), extra)


def load_dynamics(directory: str | os.PathLike) -> LatentDynamics:
    """Rebuild a model saved by ``LatentDynamics.save_pretrained``; errors name the file and what was expected."""
    model = load_model(directory, (FORMAT_NAME, FORMAT_VERSION), LatentDynamics, DynamicsConfig,
                       "a dynamics model from `armflow dynamics`")
    return model


def check_dynamics(model: LatentDynamics, policy, source: str) -> None:
    """Refuse a model trained for another policy: action dim, T_o, T_a, T_p, obs keys/dims and the normaliser must
    match (``source`` names the model dir in the message)."""
    c = model.cfg
    for key in ("action_dim", "n_obs_steps", "n_action_steps", "horizon"):
        if int(getattr(c, key)) != int(getattr(policy, key)):
            raise ValueError(f"{source}/{CONFIG_FILE}: dynamics {key}={getattr(c, key)} but the policy has "
                             f"{key}={getattr(policy, key)}; train it for this policy "
                             "(armflow dynamics checkpoint=DIR)")
    for key, dim in model.dims.items():
        if tuple(policy.obs_spec.get(key, ())) != (dim,):
            shape = tuple(policy.obs_spec.get(key, ())) or "no such key"
            raise ValueError(f"{source}/{CONFIG_FILE}: dynamics reads obs {key!r} of shape ({dim},); the policy has "
                             f"{shape} (obs_spec {sorted(policy.obs_spec)})")
    theirs = policy.normalizer.state_dict()
    for name, value in model.normalizer.state_dict().items():
        if name not in theirs or not torch.allclose(value, theirs[name].to(value), atol=1e-6, rtol=1e-5):
            diff = (value - theirs[name].to(value)).abs().max() if name in theirs else "missing"
            raise ValueError(f"{source}/{WEIGHTS_FILE}: dynamics normaliser {name} differs from the policy's (max "
                             f"|diff| {diff}); the model was trained with another policy's stats")
