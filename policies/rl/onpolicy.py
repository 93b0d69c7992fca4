"""What DPPO, FPO and Gaussian PPO share: a V(s) critic on frozen policy features, running reward
scaling, GAE over chunk transitions and the epoch/minibatch loop. Each algorithm only supplies
``act`` and ``actor_loss`` (its math, on one screen, in its own file).

Rollout batch (from ``armflow.workflows.finetune_rollout``), leading dims (S steps, N envs):
``obs``/``next_obs``: dict of raw obs windows; ``reward`` (chunk sums), ``terminated``, ``truncated``,
``time``/``next_time`` (elapsed fraction of the episode's time limit at obs / next_obs);
plus the algorithm's own record keys returned by ``act`` (e.g. DPPO ``chain``, FPO ``tau``).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch

from armflow.policies.rl.common import flat, load_module_state, minibatches, module_state, obs_to_torch
from armflow.policies.rl.nets import ValueCritic
from armflow.policies.rl.ppo_math import RewardScaler, gae, normalize


@dataclass
class OnPolicyConfig:
    """Defaults mirror ``configs/algo/<algo>.yaml`` (what ``armflow finetune`` users see); a test keeps them equal."""

    gamma: float = 0.99               # discount per chunk (RL step)
    gae_lambda: float = 0.95          # GAE lambda
    actor_lr: float = 1e-4            # actor Adam lr
    actor_lr_final: float | None = None  # with lr_anneal_iters > 0: actor lr reached linearly at that iteration
    lr_anneal_iters: int = 0          # > 0: anneal the actor lr from actor_lr to actor_lr_final over this many
                                      # actor-training iterations, constant after (0: constant actor_lr)
    critic_lr: float = 1e-3           # critic Adam lr
    update_epochs: int = 5            # passes over each rollout
    minibatch_size: int = 256         # samples (chunks) per minibatch
    reward_scale: bool = True         # divide rewards by running std of discounted return
    critic_warmup_iters: int = 2      # first iterations update only the critic
    time_limit: str = "terminal"      # terminal: the limit is part of the task (success within the episode);
                                      # bootstrap: V(final obs) through truncation (the limit is only a reset)
    critic_time: bool = True          # feed the critic the elapsed episode fraction (Pardo et al. 2018); needed
                                      # for a Markov V(s, t) when time_limit=terminal


MAX_GRAD_NORM = 1.0   # gradient clipping (actor and critic)
TARGET_KL = 1.0       # an update stops its epochs early above this mean approx KL
TIME_LIMITS = ("bootstrap", "terminal")


def _flat_or_none(batch: dict, key: str) -> np.ndarray | None:
    return flat(batch[key]) if key in batch else None


def _explained_variance(pred: torch.Tensor, target: torch.Tensor) -> float:
    """1 - Var[target - pred] / Var[target]: 1 = perfect critic, 0 = predicts the mean, < 0 worse."""
    var = target.var().item()
    return float("nan") if var == 0 else 1.0 - (target - pred).var().item() / var


def frozen_copy(module: torch.nn.Module) -> torch.nn.Module:
    clone = copy.deepcopy(module).eval()
    for p in clone.parameters():
        p.requires_grad_(False)
    return clone


def feature_dim(policy) -> int:
    """Width of ``policy.encode_obs`` for one dummy observation built from ``policy.obs_spec``."""
    dummy = {k: torch.zeros(1, policy.n_obs_steps, *shape) for k, shape in policy.obs_spec.items()}
    with torch.no_grad():
        return int(policy.encode_obs(dummy).shape[-1])


class OnPolicyLearner:
    """Base for PPO-family learners; subclasses set ``self.actor_opt`` and implement
    ``act(obs, explore)``, ``actor_loss(mb, adv)`` (``adv`` normalised per minibatch), ``actor_modules()``."""

    algo = "onpolicy"

    def __init__(self, policy, cfg: OnPolicyConfig, n_envs: int):
        # The learner trains its own copy: the caller's policy (weights, cfg, flags) is never touched.
        self.policy, self.cfg = copy.deepcopy(policy).eval().requires_grad_(True), cfg
        self.base = frozen_copy(policy)  # critic features + frozen pretrained denoising steps
        if cfg.time_limit not in TIME_LIMITS:
            raise ValueError(f"time_limit={cfg.time_limit!r}; valid: {', '.join(TIME_LIMITS)}")
        self.critic = ValueCritic(feature_dim(policy) + int(cfg.critic_time))
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=cfg.critic_lr)
        self.reward_scaler = RewardScaler(n_envs, cfg.gamma)
        self.iteration = 0
        if cfg.lr_anneal_iters < 0 or (cfg.lr_anneal_iters > 0 and cfg.actor_lr_final is None):
            raise ValueError(f"lr_anneal_iters={cfg.lr_anneal_iters} needs actor_lr_final (the lr it anneals to) "
                             "and must be >= 0")

    def actor_lr_now(self) -> float:
        """Actor lr for the current iteration (linear anneal over the actor-training iterations)."""
        if self.cfg.lr_anneal_iters <= 0:
            return self.cfg.actor_lr
        frac = min(1.0, max(0, self.iteration - self.cfg.critic_warmup_iters) / self.cfg.lr_anneal_iters)
        return self.cfg.actor_lr + frac * (self.cfg.actor_lr_final - self.cfg.actor_lr)

    @torch.no_grad()
    def features(self, obs: dict[str, torch.Tensor], time: np.ndarray | None = None) -> torch.Tensor:
        """Critic input: frozen policy features, plus the elapsed episode fraction with ``critic_time``."""
        feats = self.base.encode_obs(obs)
        if not self.cfg.critic_time:
            return feats
        if time is None:
            raise ValueError("critic_time=true needs the rollout's 'time'/'next_time' (elapsed episode fraction)")
        return torch.cat([feats, torch.as_tensor(time, dtype=feats.dtype).reshape(-1, 1)], dim=-1)

    def _values(self, feats: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([self.critic(f) for f in feats.split(4096)])

    def prepare(self, batch: dict) -> tuple[dict, dict]:
        """Steps 1-3 of an update on a rollout (S, N): (minibatch-ready tensors flat over S*N: the record keys,
        ``obs``, ``feats``, ``adv``, ``ret``; and (S, N) ``values``/``returns``/``adv``/``rewards`` for
        logging). Advances the running reward scaler."""
        S, N = batch["reward"].shape
        # 1. Frozen features and values of s_t and of the state each chunk reached (final obs if done).
        feats = self.features(obs_to_torch(flat(batch["obs"])), _flat_or_none(batch, "time"))
        next_feats = self.features(obs_to_torch(flat(batch["next_obs"])), _flat_or_none(batch, "next_time"))
        values, next_values = self._values(feats).view(S, N), self._values(next_feats).view(S, N)
        # 2. Reward scaling by running std of the discounted return; 3. GAE over chunks.
        dones = np.logical_or(batch["terminated"], batch["truncated"])
        rewards = self.reward_scaler(batch["reward"], dones) if self.cfg.reward_scale else batch["reward"]
        # time_limit=terminal: a truncated chunk ends the task like a failure (no bootstrap).
        terminated = dones if self.cfg.time_limit == "terminal" else batch["terminated"]
        adv, returns = gae(torch.as_tensor(rewards, dtype=torch.float32), values, next_values,
                           torch.as_tensor(terminated), torch.as_tensor(batch["truncated"]),
                           self.cfg.gamma, self.cfg.gae_lambda)
        data = {k: torch.as_tensor(flat(v)) for k, v in batch.items() if k in self.record_keys}
        data.update(obs=obs_to_torch(flat(batch["obs"])), feats=feats, adv=adv.reshape(-1), ret=returns.reshape(-1))
        return data, {"values": values, "returns": returns, "adv": adv, "rewards": rewards}

    def update(self, batch: dict) -> dict[str, float]:
        """One PPO iteration on a rollout (S, N); returns namespaced metrics."""
        data, st = self.prepare(batch)
        values, returns, adv, rewards = st["values"], st["returns"], st["adv"], st["rewards"]
        # 4. Epochs of minibatch updates; the actor waits while the critic warms up.
        train_actor = self.iteration >= self.cfg.critic_warmup_iters
        lr = self.actor_lr_now()
        for group in self.actor_opt.param_groups:
            group["lr"] = lr
        logs: dict[str, list[float]] = {}
        for _ in range(self.cfg.update_epochs):
            kls = []
            for idx in minibatches(len(data["adv"]), self.cfg.minibatch_size):
                mb = {k: ({kk: vv[idx] for kk, vv in v.items()} if isinstance(v, dict) else v[idx])
                      for k, v in data.items()}
                v_loss = 0.5 * (self.critic(mb["feats"]) - mb["ret"]).pow(2).mean()
                self.critic_opt.zero_grad()
                v_loss.backward()
                torch.nn.utils.clip_grad_norm_(self.critic.parameters(), MAX_GRAD_NORM)
                self.critic_opt.step()
                logs.setdefault("losses/value_loss", []).append(v_loss.item())
                if train_actor:
                    loss, info = self.actor_loss(mb, normalize(mb["adv"]))
                    self.actor_opt.zero_grad()
                    loss.backward()
                    params = [p for m in self.actor_modules() for p in m.parameters()]
                    torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
                    self.actor_opt.step()
                    kls.append(info.get("approx_kl", 0.0))
                    logs.setdefault("losses/policy_loss", []).append(loss.item())
                    for k, v in info.items():
                        logs.setdefault(f"losses/{k}", []).append(v)
            if kls and float(np.mean(kls)) > TARGET_KL:
                break
        self.iteration += 1
        out = {k: float(np.mean(v)) for k, v in logs.items()}
        out.update({"charts/value_mean": values.mean().item(), "charts/return_mean": returns.mean().item(),
                    "charts/explained_variance": _explained_variance(values, returns), "charts/advantage_std": adv.std().item(),
                    "charts/reward_scaled_mean": float(np.mean(rewards)), "charts/actor_trained": float(train_actor),
                    "charts/actor_lr": lr})
        return out

    # -- state for rollout workers and for resume ----------------------------------------------------
    def acting_state(self) -> dict[str, torch.Tensor]:
        return {k: v for i, m in enumerate(self.actor_modules()) for k, v in module_state(f"actor{i}", m).items()}

    def load_acting_state(self, tensors: dict[str, torch.Tensor]) -> None:
        for i, m in enumerate(self.actor_modules()):
            load_module_state(f"actor{i}", m, tensors)

    def train_state(self) -> tuple[dict[str, torch.Tensor], dict, dict[str, torch.optim.Optimizer]]:
        """(tensors, json-able meta, optimizers) for ``workflows.train_state.save_training_state``."""
        tensors = {**self.acting_state(), **module_state("critic", self.critic)}
        meta = {"iteration": self.iteration, "reward_scaler": self.reward_scaler.state_dict()}
        return tensors, meta, {"actor": self.actor_opt, "critic": self.critic_opt}

    def load_train_state(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        self.load_acting_state(tensors)
        load_module_state("critic", self.critic, tensors)
        self.iteration = int(meta["iteration"])
        self.reward_scaler.load_state_dict(meta["reward_scaler"])

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"actor": self.actor_opt, "critic": self.critic_opt}
