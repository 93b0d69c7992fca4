"""Unimodal Gaussian baseline: MLP(cond) -> mean chunk, state-independent log-std (per chunk element).

On multimodal demos it regresses to the mean of the modes (the failure the generative policies fix).
``predict_chunk(obs)`` returns the mean; ``predict_chunk(obs, noise)`` returns ``mean + std * noise``.
For Gaussian PPO: ``action_dist(cond)`` and ``log_prob(obs, actions)`` in normalised action space.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .base import BasePolicy
from .config import GaussianConfig
from .sampler import SamplerHooks

LOG_STD_MIN, LOG_STD_MAX = -5.0, 1.0


class GaussianPolicy(BasePolicy):
    policy_type = "gaussian"
    Config = GaussianConfig

    def __init__(self, cfg: GaussianConfig, obs_spec, action_dim: int, stats):
        super().__init__(cfg, obs_spec, action_dim, stats)
        layers: list[nn.Module] = []
        d = self.cond_dim
        for _ in range(cfg.n_layers):
            layers += [nn.Linear(d, cfg.hidden_dim), nn.Mish()]
            d = cfg.hidden_dim
        layers.append(nn.Linear(d, cfg.horizon * self.action_dim))
        self.net = nn.Sequential(*layers)  # cond (B, C) -> flat mean (B, T_p * D_a)
        self.log_std = nn.Parameter(torch.full((cfg.horizon, self.action_dim), math.log(cfg.init_std)))

    def mean(self, cond: torch.Tensor) -> torch.Tensor:
        return self.net(cond).reshape(cond.shape[0], self.horizon, self.action_dim)

    def std(self) -> torch.Tensor:
        """(T_p, D_a) in normalised action units."""
        return self.log_std.clamp(LOG_STD_MIN, LOG_STD_MAX).exp()

    def action_dist(self, cond: torch.Tensor) -> torch.distributions.Normal:
        mean = self.mean(cond)
        return torch.distributions.Normal(mean, self.std().expand_as(mean))

    def log_prob(self, obs, actions: torch.Tensor) -> torch.Tensor:
        """Elementwise log-prob (B, T_p, D_a) of normalised ``actions`` given the raw obs window."""
        return self.action_dist(self.encode_obs(obs)).log_prob(actions)

    def default_noise(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.zeros(batch, self.horizon, self.action_dim, device=self.device)

    def sample(self, cond: torch.Tensor, noise: torch.Tensor, hooks: SamplerHooks | None = None,
               select=None) -> torch.Tensor:
        """mean + std * noise (normalised); noise = 0 gives the deterministic mean used for evaluation."""
        if (hooks is not None and hooks.in_loop) or select is not None:
            raise ValueError("gaussian policy: guidance, mcmc_steps, composer, start_level and rerank_level need a "
                             "sampling loop (flow, diffusion)")
        return self.mean(cond) + self.std() * noise

    def _elementwise_loss(self, cond, actions_n):
        mean = self.mean(cond)
        log_std = self.log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)
        mse = (mean - actions_n) ** 2
        # "mse": the mean learns from plain MSE; the std is fitted by NLL on the (detached) residual.
        resid = mse if self.cfg.loss == "nll" else mse.detach()
        nll = 0.5 * resid * torch.exp(-2 * log_std) + log_std + 0.5 * math.log(2 * math.pi)
        loss = nll if self.cfg.loss == "nll" else mse + nll
        return loss, {"mse": float(mse.mean().detach()), "std": float(log_std.exp().mean().detach())}
