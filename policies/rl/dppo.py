"""DPPO (Ren et al. 2024): PPO over the denoising MDP of a diffusion policy.

Only the last K' denoising steps are fine-tuned, through ``actor_ft`` (a copy of ``policy.net``);
earlier steps use the frozen pretrained net. Each fine-tuned step is a Gaussian with std clipped
below at ``min_std``; its log-prob is clamped to [-5, 2] per element and averaged over the executed
chunk elements (T_a, D_a), so the per-step ratio is a geometric mean and a small clip stays meaningful.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from armflow.policies.rl.common import require_methods, to_env_action
from armflow.policies.rl.onpolicy import OnPolicyConfig, OnPolicyLearner, frozen_copy
from armflow.policies.rl.ppo_math import denoise_discount, dppo_clip_schedule, ppo_clip_loss


@dataclass
class DPPOConfig(OnPolicyConfig):
    n_ft_steps: int = 0               # K' fine-tuned denoising steps; 0 = all of the sampler's steps
    min_std: float = 0.1              # exploration std floor when sampling (and in the log-prob)
    eta: float = 1.0                  # DDIM eta during fine-tuning (1 = stochastic)
    clip_eps_base: float = 0.001      # clip eps of the noisiest fine-tuned step
    clip_eps: float = 0.01            # clip eps of the final denoising step
    gamma: float = 0.999              # manipulation default (per chunk)


# The paper's fixed constants: per-step clip growth e^{3t}, advantage discount per denoising step before the
# last, per-element log-prob clamp.
CLIP_RATE, GAMMA_DENOISE, LOGPROB_MIN, LOGPROB_MAX = 3.0, 0.99, -5.0, 2.0


class DPPOLearner(OnPolicyLearner):
    algo = "dppo"
    record_keys = ("chain", "logprob")

    def __init__(self, policy, cfg: DPPOConfig, n_envs: int):
        require_methods(policy, "dppo", "diffusion", ("encode_obs", "denoise_chain", "chain_logprob", "net"))
        super().__init__(policy, cfg, n_envs)
        k_total = int(policy.num_inference_steps)
        self.n_ft = cfg.n_ft_steps or k_total
        if not 1 <= self.n_ft <= k_total:
            raise ValueError(f"dppo: n_ft_steps={self.n_ft} exceeds the sampler's {k_total} denoising steps")
        self.actor_ft = frozen_copy(policy.net).train(False)
        for p in self.actor_ft.parameters():
            p.requires_grad_(True)
        self.actor_opt = torch.optim.Adam(self.actor_ft.parameters(), lr=cfg.actor_lr)
        self.clip_eps = dppo_clip_schedule(self.n_ft, cfg.clip_eps_base, cfg.clip_eps, CLIP_RATE)
        self.discount = denoise_discount(self.n_ft, GAMMA_DENOISE)
        self.n_exec = int(policy.n_action_steps)

    def actor_modules(self):
        return [self.actor_ft]

    @torch.no_grad()
    def act(self, obs: dict[str, np.ndarray], explore: bool = True) -> tuple[np.ndarray, dict]:
        """Env action chunk (N, T_p, D_a) + record {chain (N, K'+1, T_p, D_a), logprob (N, K', T_p, D_a)}."""
        cond = self.policy.encode_obs(obs)
        # Evaluation: DDIM eta=0 means, i.e. the exported checkpoint's own deterministic sampler.
        eta = self.cfg.eta if explore else 0.0
        chain, logprob = self.policy.denoise_chain(
            cond, self.n_ft, self.cfg.min_std, net=self.actor_ft, eta=eta, deterministic=not explore)
        env_action = to_env_action(self.policy, chain[:, -1]).numpy()
        return env_action, {"chain": chain.numpy(), "logprob": logprob.numpy()}

    def _chunk_logprob(self, lp: torch.Tensor) -> torch.Tensor:
        """(B, K', T_p, D_a) -> (B, K'): clamp, then mean over the executed chunk elements."""
        lp = lp[:, :, : self.n_exec].clamp(LOGPROB_MIN, LOGPROB_MAX)
        return lp.mean(dim=(-1, -2))

    def actor_loss(self, mb: dict, adv: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        # 1. Conditioning from the frozen encoder (DPPO fine-tunes only the denoiser copy).
        with torch.no_grad():
            cond = self.policy.encode_obs(mb["obs"])
        # 2. New log-probs of the stored chain under actor_ft; per-step geometric-mean ratio.
        new_lp = self._chunk_logprob(self.policy.chain_logprob(
            cond, mb["chain"], self.cfg.min_std, net=self.actor_ft, eta=self.cfg.eta))
        old_lp = self._chunk_logprob(mb["logprob"])
        ratio = torch.exp(new_lp - old_lp)                                   # (B, K')
        # 3. Same (normalised) chunk advantage for every denoising step, discounted toward early steps.
        adv_steps = adv[:, None] * self.discount[None, :]
        loss, info = ppo_clip_loss(ratio, adv_steps, self.clip_eps[None, :])
        info["ratio_mean"] = ratio.mean().item()
        return loss, info

    def export(self, out_dir) -> None:
        """Save the fine-tuned policy (actor_ft as the denoiser) with ``save_pretrained``.

        With K' < K the exported net also drives the early (pretrained) steps; that is exact for
        the default K' = K."""
        policy = frozen_copy(self.policy)
        policy.net.load_state_dict(self.actor_ft.state_dict())
        policy.save_pretrained(out_dir)
