"""Pure pieces of the PPO family (DPPO, FPO, Gaussian PPO): GAE, clipped surrogate, DPPO schedules,
running reward scaling. No env, no policy: tensors in, tensors out.

Shapes: ``S`` rollout steps (action chunks), ``N`` parallel envs, ``K'`` fine-tuned denoising steps.
"""
from __future__ import annotations

import math

import numpy as np
import torch


def gae(rewards: torch.Tensor, values: torch.Tensor, next_values: torch.Tensor,
        terminated: torch.Tensor, truncated: torch.Tensor, gamma: float, lam: float
        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over a (S, N) rollout of chunk transitions.

    ``next_values[t]`` is V of the state reached after step t: the true final obs when the episode
    ended there (autoreset replaced the obs), so a time-limit (``truncated``) bootstraps from it while
    ``terminated`` zeroes it. The recursion is cut at every episode end (terminated or truncated).
    Returns (advantages (S, N), returns = advantages + values (S, N)).
    """
    not_term = 1.0 - terminated.to(rewards.dtype)
    not_done = 1.0 - torch.logical_or(terminated.bool(), truncated.bool()).to(rewards.dtype)
    deltas = rewards + gamma * next_values * not_term - values
    adv = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[0])
    for t in reversed(range(rewards.shape[0])):
        running = deltas[t] + gamma * lam * not_done[t] * running
        adv[t] = running
    return adv, adv + values


def ppo_clip_loss(ratio: torch.Tensor, adv: torch.Tensor, clip_eps: torch.Tensor | float
                  ) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO clipped surrogate, to minimise: mean(max(-A r, -A clip(r, 1-eps, 1+eps))).

    ``clip_eps`` may be a tensor broadcastable to ``ratio`` (DPPO: one eps per denoising step).
    Returns (loss, {"clipfrac", "approx_kl"}) with approx_kl = mean((r-1) - log r).
    """
    clip_eps = torch.as_tensor(clip_eps, dtype=ratio.dtype, device=ratio.device)
    unclipped = -adv * ratio
    clipped = -adv * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    loss = torch.max(unclipped, clipped).mean()
    with torch.no_grad():
        clipfrac = ((ratio - 1.0).abs() > clip_eps).float().mean().item()
        approx_kl = ((ratio - 1.0) - torch.log(ratio.clamp_min(1e-8))).mean().item()
    return loss, {"clipfrac": clipfrac, "approx_kl": approx_kl}


def asymmetric_trust_loss(ratio: torch.Tensor, adv: torch.Tensor, clip_eps: float, neg_eps: float
                          ) -> torch.Tensor:
    """PPO clip for A > 0; for A < 0 a softer quadratic penalty (SPO-style):
    maximise r A - |A| (r - 1)^2 / (2 neg_eps). Returns the loss to minimise (mean)."""
    pos = torch.max(-adv * ratio, -adv * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps))
    neg = -(adv * ratio - adv.abs() * (ratio - 1.0) ** 2 / (2.0 * neg_eps))
    return torch.where(adv >= 0, pos, neg).mean()


def dppo_clip_schedule(n_ft_steps: int, eps_base: float, eps_final: float, rate: float = 3.0
                       ) -> torch.Tensor:
    """Per-denoising-step clip eps (K',): eps_i = eps_base + (eps_final - eps_base)(e^{rate t}-1)/(e^rate-1),
    t = i/(K'-1); i = 0 is the noisiest fine-tuned step, i = K'-1 produces the executed action."""
    if n_ft_steps == 1:
        return torch.tensor([eps_final])
    t = torch.arange(n_ft_steps, dtype=torch.float32) / (n_ft_steps - 1)
    return eps_base + (eps_final - eps_base) * (torch.exp(rate * t) - 1.0) / (math.exp(rate) - 1.0)


def denoise_discount(n_ft_steps: int, gamma_denoise: float) -> torch.Tensor:
    """Weights (K',) gamma_denoise^(K'-i-1): the final denoising step (i = K'-1) gets weight 1."""
    i = torch.arange(n_ft_steps, dtype=torch.float32)
    return gamma_denoise ** (n_ft_steps - i - 1)


def normalize(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Zero-mean unit-std (advantage normalisation per minibatch)."""
    if x.numel() < 2:
        return x - x.mean()
    return (x - x.mean()) / (x.std() + eps)


class RunningMeanStd:
    """Running mean/var of a scalar stream (Chan et al. parallel update); state is plain floats."""

    def __init__(self) -> None:
        self.mean, self.var, self.count = 0.0, 1.0, 1e-4

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float64).ravel()
        if x.size == 0:
            return
        b_mean, b_var, b_n = float(x.mean()), float(x.var()), x.size
        delta, tot = b_mean - self.mean, self.count + b_n
        m2 = self.var * self.count + b_var * b_n + delta**2 * self.count * b_n / tot
        self.mean, self.var, self.count = self.mean + delta * b_n / tot, m2 / tot, tot

    def state_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "var": self.var, "count": self.count}

    def load_state_dict(self, sd: dict[str, float]) -> None:
        self.mean, self.var, self.count = float(sd["mean"]), float(sd["var"]), float(sd["count"])


class RewardScaler:
    """Divide rewards by the running std of the discounted return (per env, reset at episode end)."""

    def __init__(self, n_envs: int, gamma: float, eps: float = 1e-8) -> None:
        self.gamma, self.eps = gamma, eps
        self.ret = np.zeros(n_envs, dtype=np.float64)
        self.rms = RunningMeanStd()

    def __call__(self, rewards: np.ndarray, dones: np.ndarray) -> np.ndarray:
        """rewards, dones: (S, N) in time order. Returns scaled rewards (S, N) float32."""
        for t in range(rewards.shape[0]):
            self.ret = self.ret * self.gamma + rewards[t]
            self.rms.update(self.ret)
            self.ret = np.where(dones[t], 0.0, self.ret)
        return (rewards / math.sqrt(self.rms.var + self.eps)).astype(np.float32)

    def state_dict(self) -> dict:
        return {"ret": self.ret.tolist(), **self.rms.state_dict()}

    def load_state_dict(self, sd: dict) -> None:
        self.ret = np.asarray(sd["ret"], dtype=np.float64)
        self.rms.load_state_dict(sd)
