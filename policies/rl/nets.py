"""Small networks shared by the learners: MLP, V(s) critic, twin Q, tanh-Gaussian actor, Polyak."""
from __future__ import annotations

import math

import torch
from torch import nn


def mlp(in_dim: int, out_dim: int, hidden: int, n_layers: int = 2, layer_norm: bool = False) -> nn.Sequential:
    """``n_layers`` hidden layers of width ``hidden`` (ReLU), linear head."""
    layers: list[nn.Module] = []
    d = in_dim
    for _ in range(n_layers):
        layers.append(nn.Linear(d, hidden))
        if layer_norm:
            layers.append(nn.LayerNorm(hidden))
        layers.append(nn.ReLU())
        d = hidden
    layers.append(nn.Linear(d, out_dim))
    return nn.Sequential(*layers)


class ValueCritic(nn.Module):
    """V(s): features (B, C) -> (B,)."""

    def __init__(self, in_dim: int, hidden: int = 256, n_layers: int = 2):
        super().__init__()
        self.net = mlp(in_dim, 1, hidden, n_layers)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        return self.net(feat).squeeze(-1)


class TwinQ(nn.Module):
    """Two independent Q(s, x) heads: (feat (B, C), x (B, ...)) -> (q1 (B,), q2 (B,))."""

    def __init__(self, feat_dim: int, x_dim: int, hidden: int = 256, n_layers: int = 2):
        super().__init__()
        self.q1 = mlp(feat_dim + x_dim, 1, hidden, n_layers, layer_norm=True)
        self.q2 = mlp(feat_dim + x_dim, 1, hidden, n_layers, layer_norm=True)

    def forward(self, feat: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.cat([feat, x.flatten(1)], dim=-1)
        return self.q1(h).squeeze(-1), self.q2(h).squeeze(-1)


class TanhGaussianActor(nn.Module):
    """pi(x|s) = bound * tanh(u), u ~ N(mu(s), sigma(s)^2): output in (-bound, bound)^out_dim.

    ``forward(feat, deterministic) -> (x (B, out_dim), logprob (B,))``; the log-prob includes the
    tanh and scale Jacobians, so it is the density of x itself.
    """

    LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0

    def __init__(self, feat_dim: int, out_dim: int, bound: float, hidden: int = 256, n_layers: int = 2):
        super().__init__()
        self.bound = float(bound)
        self.net = mlp(feat_dim, 2 * out_dim, hidden, n_layers)

    def forward(self, feat: torch.Tensor, deterministic: bool = False,
                eps: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``eps`` (B, out_dim): the standard-normal draw to use (reparametrised, deterministic given eps)."""
        mu, log_std = self.net(feat).chunk(2, dim=-1)
        log_std = self.LOG_STD_MIN + 0.5 * (self.LOG_STD_MAX - self.LOG_STD_MIN) * (torch.tanh(log_std) + 1)
        u = mu if deterministic else mu + log_std.exp() * (torch.randn_like(mu) if eps is None else eps)
        gauss_lp = (-0.5 * ((u - mu) / log_std.exp()) ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        # log |d x / d u| = log bound + log(1 - tanh(u)^2), the latter in a stable softplus form.
        log_det = (math.log(self.bound) + 2.0 * (math.log(2.0) - u - nn.functional.softplus(-2.0 * u))).sum(-1)
        return self.bound * torch.tanh(u), gauss_lp - log_det


@torch.no_grad()
def polyak_update(target: nn.Module, source: nn.Module, tau: float) -> None:
    """target <- (1 - tau) target + tau source (parameters and buffers)."""
    for t, s in zip(target.parameters(), source.parameters()):
        t.mul_(1.0 - tau).add_(s, alpha=tau)
    for t, s in zip(target.buffers(), source.buffers()):
        t.copy_(s)
