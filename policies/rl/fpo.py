"""FPO (McAllister et al. 2025): PPO for flow policies with a likelihood-free ratio.

The CFM "target" is the policy's OWN sampled action: at rollout we sample a = pi(s, eps0) with the
deterministic ODE (exploration comes from eps0 alone), draw N_mc (tau_i, eps_i) pairs and store them with the per-pair CFM losses l_old,i under the rollout
policy. At update, r = exp(mean_i l_old,i - mean_i l_new,i) on the same pairs: lowering the CFM loss
of an action raises its (surrogate) likelihood. Before any update r == 1 exactly.

State baseline (``state_baseline``, on by default; measured, not in the paper): -L_CFM(a|s) is an ELBO only up
to a state-dependent offset, so unlike a true score E_{a~pi}[grad(-L_CFM(a|s))] != 0: it is the gradient of
self-distillation. Any state-only part of the advantage (E[A|s] != 0, i.e. every real critic's error) then
distils the flow onto its own samples where A > 0 and pushes it off them where A < 0. On lift this was the
dominant, consistent part of the FPO gradient (cosine 0.55 with the gradient of an unexecuted sample at the
same state) and it drifted the policy down. With a second sample a' per state and common (tau, eps) pairs the
log-ratio becomes [l_old(a) - l_new(a)] - [l_old(a') - l_new(a')]: a ratio of pi(a|s)/pi(a'|s), whose
gradient is the advantage-weighted covariance only.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from armflow.policies.rl.common import require_methods, to_env_action
from armflow.policies.rl.onpolicy import OnPolicyConfig, OnPolicyLearner
from armflow.policies.rl.ppo_math import asymmetric_trust_loss, ppo_clip_loss


@dataclass
class FPOConfig(OnPolicyConfig):
    n_mc: int = 8                     # (tau, eps) pairs per action
    clip_eps: float = 0.05            # PPO clip
    per_sample_ratio: bool = False    # one ratio per (tau, eps) pair instead of the mean-loss ratio
    asymmetric: bool = True           # PPO clip for A > 0, quadratic penalty for A < 0 (see fpo.yaml)
    state_baseline: bool = True       # subtract the log-ratio of a second, unexecuted sample a' ~ pi(.|s) at the same
                                      # state and the same (tau, eps) pairs (see module doc); removes the state-only
                                      # part of the gradient that -L_CFM, not a normalised log-density, leaves in
    eval_noise_scale: float = 1.0     # evaluation AND the exported policy's ``noise_scale``: 0 = zero-sampling
                                      # (FPO++), the ODE from the noise mean, deterministic; 1 = sample the flow
    ref_coef: float = 0.0             # > 0: + ref_coef * |u_theta - u_ref|^2 at the stored pairs, u_ref the frozen
                                      # pretrained velocity field (a KL-like anchor against self-training drift)
    gamma: float = 0.995


NEG_EPS = 0.2         # softness of the asymmetric A < 0 penalty: its optimum is at r = 1 - NEG_EPS
MAX_LOG_RATIO = 5.0   # clamp on the log-ratio (numerical safety)


class FPOLearner(OnPolicyLearner):
    algo = "fpo"

    def __init__(self, policy, cfg: FPOConfig, n_envs: int):
        require_methods(policy, "fpo", "flow", ("encode_obs", "sample", "cfm_loss_pairs", "pair_velocity", "net"))
        if not cfg.eval_noise_scale >= 0:
            raise ValueError(f"algo.params.eval_noise_scale={cfg.eval_noise_scale} must be >= 0")
        super().__init__(policy, cfg, n_envs)
        self.policy.cfg.noise_scale = float(cfg.eval_noise_scale)   # evaluated == exported == deployed
        self.record_keys = ("action", "tau", "eps", "loss_old") + (
            ("action_ref", "loss_old_ref") if cfg.state_baseline else ())
        self.actor_opt = torch.optim.Adam(self.policy.parameters(), lr=cfg.actor_lr)

    def actor_modules(self):
        return [self.policy]

    @torch.no_grad()
    def act(self, obs: dict[str, np.ndarray], explore: bool = True) -> tuple[np.ndarray, dict]:
        """Env action chunk (N, T_p, D_a) + record {action, tau (N, n_mc), eps (N, n_mc, T_p, D_a), loss_old}."""
        if not explore:   # evaluation is the deployed path (noise_scale = eval_noise_scale); no record
            return self.policy.predict_chunk(obs).numpy(), {}
        cond = self.policy.encode_obs(obs)
        B, T_p, D_a = cond.shape[0], self.policy.horizon, self.policy.action_dim
        n_samples = 2 if self.cfg.state_baseline else 1
        both = self.policy.sample(cond.repeat(n_samples, 1), torch.randn(n_samples * B, T_p, D_a))
        action = both[:B]
        tau, eps = torch.rand(B, self.cfg.n_mc), torch.randn(B, self.cfg.n_mc, T_p, D_a)
        record = {"action": action.numpy(), "tau": tau.numpy(), "eps": eps.numpy(),
                  "loss_old": self.policy.cfm_loss_pairs(cond, action, tau, eps).numpy()}
        if n_samples == 2:   # the state baseline: an unexecuted second sample, same (tau, eps) pairs
            record.update(action_ref=both[B:].numpy(),
                          loss_old_ref=self.policy.cfm_loss_pairs(cond, both[B:], tau, eps).numpy())
        return to_env_action(self.policy, action).numpy(), record

    def actor_loss(self, mb: dict, adv: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        # 1. CFM losses of the stored actions at the stored (tau, eps) pairs, with gradients.
        cond = self.policy.encode_obs(mb["obs"])
        _, u_hat = self.policy.pair_velocity(cond, mb["action"], mb["tau"], mb["eps"])
        loss_new = self.policy.cfm_loss_pairs(cond, mb["action"], mb["tau"], mb["eps"], velocity=u_hat)
        log_r = mb["loss_old"] - loss_new                                                     # (B, n_mc)
        if self.cfg.state_baseline:   # minus the same pairs' log-ratio of the unexecuted sample a'
            log_r = log_r - (mb["loss_old_ref"] - self.policy.cfm_loss_pairs(cond, mb["action_ref"], mb["tau"],
                                                                             mb["eps"]))
        # 2. Likelihood-free ratio: per pair, or of the mean losses (the paper's default).
        if self.cfg.per_sample_ratio:
            ratio = torch.exp(log_r.clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO))                     # (B, n_mc)
            adv = adv[:, None].expand_as(ratio)
        else:
            ratio = torch.exp(log_r.mean(1).clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO))            # (B,)
        # 3. PPO clip (or the asymmetric trust region).
        if self.cfg.asymmetric:
            loss = asymmetric_trust_loss(ratio, adv, self.cfg.clip_eps, NEG_EPS)
            _, info = ppo_clip_loss(ratio.detach(), adv, self.cfg.clip_eps)
        else:
            loss, info = ppo_clip_loss(ratio, adv, self.cfg.clip_eps)
        info.update(ratio_mean=ratio.mean().item(), cfm_loss=loss_new.mean().item())
        # 4. Optional anchor to the frozen pretrained velocity field at the same points.
        if self.cfg.ref_coef > 0:
            with torch.no_grad():
                _, u_ref = self.base.pair_velocity(self.base.encode_obs(mb["obs"]), mb["action"], mb["tau"], mb["eps"])
            ref_loss = (u_hat - u_ref).pow(2).mean()
            loss = loss + self.cfg.ref_coef * ref_loss
            info["ref_loss"] = ref_loss.item()
        return loss, info

    def export(self, out_dir) -> None:
        self.policy.save_pretrained(out_dir)
