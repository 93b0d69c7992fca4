"""Gaussian PPO baseline (DPPO's main comparison): PPO on a GaussianPolicy's chunk distribution.

The chunk (T_p, D_a) is sampled from N(mean(s), std^2) with std floored at ``min_std``; only the
executed T_a elements enter the log-prob (summed), since the rest never touch the env.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from armflow.policies.rl.common import require_methods, to_env_action
from armflow.policies.rl.onpolicy import OnPolicyConfig, OnPolicyLearner
from armflow.policies.rl.ppo_math import ppo_clip_loss


@dataclass
class PPOConfig(OnPolicyConfig):
    clip_eps: float = 0.2             # PPO clip
    min_std: float = 0.1              # exploration std floor (normalised action units)


class GaussianPPOLearner(OnPolicyLearner):
    algo = "ppo"
    record_keys = ("action", "logprob")

    def __init__(self, policy, cfg: PPOConfig, n_envs: int):
        require_methods(policy, "ppo", "gaussian", ("encode_obs", "mean", "std", "net"))
        super().__init__(policy, cfg, n_envs)
        self.actor_opt = torch.optim.Adam(self.policy.parameters(), lr=cfg.actor_lr)
        self.n_exec = int(policy.n_action_steps)

    def actor_modules(self):
        return [self.policy]

    def _dist(self, cond: torch.Tensor) -> torch.distributions.Normal:
        mean = self.policy.mean(cond)
        return torch.distributions.Normal(mean, self.policy.std().clamp_min(self.cfg.min_std).expand_as(mean))

    def _logprob(self, dist: torch.distributions.Normal, action: torch.Tensor) -> torch.Tensor:
        return dist.log_prob(action)[:, : self.n_exec].sum(dim=(-1, -2))

    @torch.no_grad()
    def act(self, obs: dict[str, np.ndarray], explore: bool = True) -> tuple[np.ndarray, dict]:
        """Env action chunk (N, T_p, D_a) + record {action (normalised), logprob (N,)}; eval = the mean."""
        dist = self._dist(self.policy.encode_obs(obs))
        action = dist.sample() if explore else dist.mean
        record = {"action": action.numpy(), "logprob": self._logprob(dist, action).numpy()}
        return to_env_action(self.policy, action).numpy(), record

    def actor_loss(self, mb: dict, adv: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        dist = self._dist(self.policy.encode_obs(mb["obs"]))
        ratio = torch.exp(self._logprob(dist, mb["action"]) - mb["logprob"])
        loss, info = ppo_clip_loss(ratio, adv, self.cfg.clip_eps)
        info.update(entropy=dist.entropy()[:, : self.n_exec].mean().item(), std_mean=self.policy.std().mean().item(),
                    ratio_mean=ratio.mean().item())
        return loss, info

    def export(self, out_dir) -> None:
        self.policy.save_pretrained(out_dir)
