"""FPO (McAllister et al. 2025): PPO for flow policies with a likelihood-free ratio.

The CFM "target" is the policy's OWN sampled action: at rollout we sample a = pi(s, eps0) with the
deterministic ODE (exploration comes from eps0, optionally plus a small Gaussian jitter), draw
N_mc (tau_i, eps_i) pairs and store them with the per-pair CFM losses l_old,i under the rollout
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

from armflow.policies.rl.common import obs_to_torch, require_methods, to_env_action
from armflow.policies.rl.onpolicy import OnPolicyConfig, OnPolicyLearner
from armflow.policies.rl.ppo_math import asymmetric_trust_loss, ppo_clip_loss


@dataclass
class FPOConfig(OnPolicyConfig):
    n_mc: int = 8                     # (tau, eps) pairs per action
    clip_eps: float = 0.05            # PPO clip
    per_sample_ratio: bool = False    # one ratio per (tau, eps) pair instead of the mean-loss ratio
    asymmetric: bool = True           # PPO clip for A > 0, quadratic penalty for A < 0 (see fpo.yaml)
    neg_eps: float = 0.2              # softness of the A < 0 penalty (asymmetric only)
    action_jitter_std: float = 0.0    # Gaussian jitter on the final (normalised) action at rollout
    max_log_ratio: float = 5.0        # clamp on the log-ratio (numerical safety)
    executed_only: bool = False       # CFM losses (so the ratio) over the executed T_a steps only, as DPPO's
                                      # log-probs; the unexecuted rest of the chunk never reached the env
    coupled_eps: bool = False         # True: every (tau, eps) pair reuses the action's own initial noise eps0
                                      # (the sampler's coupling, as in reflow) instead of fresh eps
    train_encoder: bool = True        # False: fine-tune only the velocity net (as DPPO does); the observation
                                      # encoder stays at its pretrained weights
    ratio_sum: bool = False           # log-ratio from CFM losses summed over the chunk's T_p x D_a entries (an
                                      # ELBO is a sum) instead of their mean: the clip becomes a real trust region
    weighting: str = "eps"            # per-pair loss: eps-MSE (FPO paper) | velocity (plain |u - (a - eps)|^2, FPO++)
    state_baseline: bool = True       # subtract the log-ratio of a second, unexecuted sample a' ~ pi(.|s) at the same
                                      # state and the same (tau, eps) pairs (see module doc); removes the state-only
                                      # part of the gradient that -L_CFM, not a normalised log-density, leaves in
    explore_noise_scale: float = 1.0  # rollout: scale of the sampler's initial noise (1 = the flow's own distribution)
    eval_noise_scale: float = 1.0     # evaluation AND the exported policy's ``noise_scale``: 0 = zero-sampling
                                      # (FPO++), the ODE from the noise mean, deterministic; 1 = sample the flow
    ref_coef: float = 0.0             # > 0: + ref_coef * |u_theta - u_ref|^2 at the stored pairs, u_ref the frozen
                                      # pretrained velocity field (a KL-like anchor against self-training drift)
    actor_lr: float = 1e-4
    gamma: float = 0.995


class FPOLearner(OnPolicyLearner):
    algo = "fpo"
    def __init__(self, policy, cfg: FPOConfig, n_envs: int):
        require_methods(policy, "fpo", "flow", ("encode_obs", "sample", "cfm_loss_pairs", "pair_velocity", "net"))
        for name in ("explore_noise_scale", "eval_noise_scale"):
            if not getattr(cfg, name) >= 0:
                raise ValueError(f"algo.params.{name}={getattr(cfg, name)} must be >= 0")
        super().__init__(policy, cfg, n_envs)
        policy.cfg.noise_scale = float(cfg.eval_noise_scale)   # evaluated == exported == deployed
        self.record_keys = ("action", "tau", "eps", "loss_old") + (
            ("action_ref", "loss_old_ref") if cfg.state_baseline else ())
        trained = policy if cfg.train_encoder else policy.net
        for p in trained.parameters():
            p.requires_grad_(True)
        self.actor_opt = torch.optim.Adam(trained.parameters(), lr=cfg.actor_lr)

    def _n_steps(self) -> int | None:
        return int(self.policy.n_action_steps) if self.cfg.executed_only else None

    def actor_modules(self):
        return [self.policy]

    @torch.no_grad()
    def act(self, obs: dict[str, np.ndarray], explore: bool = True) -> tuple[np.ndarray, dict]:
        """Env action chunk (N, T_p, D_a) + record {action, tau (N, n_mc), eps (N, n_mc, T_p, D_a), loss_old}."""
        if not explore:   # evaluation is the deployed path (noise_scale = eval_noise_scale); no record
            return self.policy.predict_chunk(obs_to_torch(obs)).numpy(), {}
        cond = self.policy.encode_obs(obs_to_torch(obs))
        B, T_p, D_a = cond.shape[0], self.policy.horizon, self.policy.action_dim
        n_samples = 2 if self.cfg.state_baseline else 1
        noise = self.cfg.explore_noise_scale * torch.randn(n_samples * B, T_p, D_a)
        both = self.policy.sample(cond.repeat(n_samples, 1), noise)
        action, noise = both[:B], noise[:B]
        if self.cfg.action_jitter_std > 0:
            both = (both + self.cfg.action_jitter_std * torch.randn_like(both)).clamp(-1.0, 1.0)
            action = both[:B]
        tau = torch.rand(B, self.cfg.n_mc)
        if self.cfg.coupled_eps:
            eps = noise.unsqueeze(1).expand(B, self.cfg.n_mc, T_p, D_a).contiguous()
        else:
            eps = torch.randn(B, self.cfg.n_mc, T_p, D_a)
        record = {"action": action.numpy(), "tau": tau.numpy(), "eps": eps.numpy(),
                  "loss_old": self._cfm(cond, action, tau, eps).numpy()}
        if n_samples == 2:   # the state baseline: an unexecuted second sample, same (tau, eps) pairs
            record.update(action_ref=both[B:].numpy(), loss_old_ref=self._cfm(cond, both[B:], tau, eps).numpy())
        return to_env_action(self.policy, action).numpy(), record

    def _cfm(self, cond, action, tau, eps, velocity=None) -> torch.Tensor:
        return self.policy.cfm_loss_pairs(cond, action, tau, eps, n_steps=self._n_steps(), velocity=velocity,
                                          weighting=self.cfg.weighting)

    def actor_loss(self, mb: dict, adv: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        # 1. CFM losses of the stored actions at the stored (tau, eps) pairs, with gradients.
        with torch.set_grad_enabled(self.cfg.train_encoder):
            cond = self.policy.encode_obs(mb["obs"])
        _, u_hat = self.policy.pair_velocity(cond, mb["action"], mb["tau"], mb["eps"])
        loss_new = self._cfm(cond, mb["action"], mb["tau"], mb["eps"], velocity=u_hat)
        log_r = mb["loss_old"] - loss_new                                                     # (B, n_mc)
        if self.cfg.state_baseline:   # minus the same pairs' log-ratio of the unexecuted sample a'
            log_r = log_r - (mb["loss_old_ref"] - self._cfm(cond, mb["action_ref"], mb["tau"], mb["eps"]))
        # 2. Likelihood-free ratio: per pair, or of the mean losses (the paper's default).
        m = self.cfg.max_log_ratio
        if self.cfg.ratio_sum:   # an ELBO sums over the chunk's entries; the per-pair losses are means
            log_r = log_r * float((self._n_steps() or self.policy.horizon) * self.policy.action_dim)
        if self.cfg.per_sample_ratio:
            ratio = torch.exp(log_r.clamp(-m, m))                                             # (B, n_mc)
            adv_b = self.norm_adv(adv)[:, None].expand_as(ratio)
        else:
            ratio = torch.exp(log_r.mean(1).clamp(-m, m))                                     # (B,)
            adv_b = self.norm_adv(adv)
        # 3. PPO clip (or the asymmetric trust region).
        if self.cfg.asymmetric:
            loss = asymmetric_trust_loss(ratio, adv_b, self.cfg.clip_eps, self.cfg.neg_eps)
            _, info = ppo_clip_loss(ratio.detach(), adv_b, self.cfg.clip_eps)
        else:
            loss, info = ppo_clip_loss(ratio, adv_b, self.cfg.clip_eps)
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
