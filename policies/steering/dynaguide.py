"""DynaGuide (Du & Song, NeurIPS 2025): steer a frozen flow/diffusion policy toward goal examples through a
separately trained latent dynamics model (:mod:`.dynamics`, ``armflow dynamics``).

Score of a chunk a at obs o, with z_hat = D(o, a[:T_a]) the predicted embedding T_a steps later, positive goal
embeddings z+_i and negative ones z-_j (DynaGuide's guidance metric):

    S(a) = logsumexp_i(-||z_hat - z+_i|| / alpha) - logsumexp_j(-||z_hat - z-_j|| / alpha)

Each sampler level adds ``w * dS/dx_hat`` as a guidance term of ``SamplerHooks`` (the sampler shifts the level's
clean-chunk estimate by (noise fraction) x the term: flow adds it to the velocity, diffusion to -eps); the gradient
runs through the dynamics model only (one backward per level), at the clean estimate x_hat, normalised units.
``mcmc_steps`` > 0 adds the stochastic-sampling corrector (the reference uses 4); its re-noise is drawn from a
generator seeded by the chunk's initial noise (as ITPS's), so a chunk is deterministic given its noise and a seeded
run (evaluate, deploy: noise from the episode seed) is reproducible.

Goals are observation frames: the last ``goal_frames`` frames of the episodes ``goal_episodes`` of a LeRobot dataset
``goals`` (e.g. the demos that lifted cube 1), likewise ``negatives``; an export keeps the frames it used in
``steering_goals.safetensors``, which ``goals`` / ``negatives`` may also name.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from armflow.policies.sampler import SamplerHooks

from .base import SteeredPolicy
from .dynamics import ACTION, LatentDynamics, check_dynamics, load_dynamics
from .itps import _noise_seed as noise_seed

DYNAMICS_DIR, GOALS_FILE = "steering_dynamics", "steering_goals.safetensors"  # where an export keeps them


@dataclass
class DynaGuideConfig:
    dynamics: str = ""          # dynamics model dir (`armflow dynamics`), trained for this policy
    goals: str = ""             # LeRobot dataset dir whose episodes end in the goal (or an export's goals file)
    goal_episodes: tuple = ()   # episode indices of `goals` used as positives; empty = every episode
    negatives: str = ""         # optional: dataset (or goals file) of outcomes to steer away from
    negative_episodes: tuple = ()  # episode indices of `negatives`; empty = every episode
    goal_frames: int = 1        # last frames of each episode taken as goal examples
    guidance: float = 1.5       # w: the term added each level is w * dS/dx_hat (reference default 1.5)
    alpha: float = 1.0          # distance temperature of the logsumexp [embedding units]
    mcmc_steps: int = 0         # stochastic sampling: corrector steps per level (reference 4)

    def __post_init__(self):
        if not self.dynamics or not self.goals:
            raise ValueError("steering.dynamics and steering.goals: DynaGuide needs a dynamics model dir (train one "
                             "with `armflow dynamics`) and a dataset of goal episodes")
        if float(self.alpha) <= 0 or int(self.goal_frames) < 1 or int(self.mcmc_steps) < 0:
            raise ValueError(f"steering.alpha={self.alpha} must be > 0, goal_frames={self.goal_frames} >= 1, "
                             f"mcmc_steps={self.mcmc_steps} >= 0")


def goal_score(z_hat: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor | None, alpha: float) -> torch.Tensor:
    """S (N,) of predicted embeddings z_hat (N, E) against positives (P, E) and negatives (M, E) or None."""
    def soft_near(goals):  # logsumexp_i(-||z_hat - g_i|| / alpha); eps keeps the norm's gradient finite at 0
        d = ((z_hat[:, None, :] - goals[None]) ** 2).sum(-1).add(1e-8).sqrt()
        return torch.logsumexp(-d / alpha, dim=1)

    return soft_near(pos) - (soft_near(neg) if neg is not None and len(neg) else 0.0)


def goal_frames(path: str, episodes, n_frames: int, keys, side: str) -> dict[str, np.ndarray]:
    """{key: (N, D)}: the last ``n_frames`` frames of the chosen episodes of a dataset, or ``side``'s frames of an
    export's goals file."""
    if str(path).endswith(".safetensors"):
        from safetensors.numpy import load_file

        saved = load_file(str(path))
        return {k: saved[f"{side}/{k}"] for k in keys}
    from armflow.data import LeRobotDataset

    ds = LeRobotDataset(path, check_videos=False)
    missing = [k for k in keys if k not in ds.features]
    if missing:
        raise ValueError(f"steering.{side}: dataset {path} lacks {missing} (the dynamics model embeds {list(keys)})")
    chosen = [int(i) for i in episodes] if episodes else list(range(ds.num_episodes))
    bad = [i for i in chosen if not 0 <= i < ds.num_episodes]
    if bad:
        raise ValueError(f"steering.{side}: episodes {bad} are not in {path} ({ds.num_episodes} episodes)")
    rows = {k: [] for k in keys}
    for i in chosen:
        ep = ds.episode(i)
        for k in keys:
            rows[k].append(np.asarray(ep[k], np.float32)[-int(n_frames):])
    return {k: np.concatenate(v) for k, v in rows.items()}


class DynaGuidePolicy(SteeredPolicy):
    steering_type = "dynaguide"

    def __init__(self, base, spec: DynaGuideConfig, dynamics: LatentDynamics | None = None):
        super().__init__(base, spec)
        if base.policy_type not in ("flow", "diffusion"):
            raise ValueError(f"steering.type=dynaguide: the policy is {base.policy_type!r}; guidance terms need a "
                             "sampling loop (flow, diffusion)")
        self.dynamics = (dynamics if dynamics is not None else load_dynamics(spec.dynamics)).eval()
        self.dynamics.requires_grad_(False)
        check_dynamics(self.dynamics, base, str(spec.dynamics))
        keys = self.dynamics.cfg.embed_keys
        self.frames = {"goals": goal_frames(spec.goals, spec.goal_episodes, spec.goal_frames, keys, "goals")}
        if spec.negatives:
            self.frames["negatives"] = goal_frames(spec.negatives, spec.negative_episodes, spec.goal_frames, keys,
                                                  "negatives")
        with torch.no_grad():
            self.z_goal = {side: self.dynamics.embed(f) for side, f in self.frames.items()}

    def guidance_term(self, feat: torch.Tensor, diag: dict):
        """The term g(x, x_hat, k) = w * dS/dx_hat for observations with normalised features ``feat`` (B, F)."""
        w, alpha, t_a = float(self.spec.guidance), float(self.spec.alpha), self.dynamics.cfg.n_action_steps
        pos, neg = self.z_goal["goals"], self.z_goal.get("negatives")

        def term(x: torch.Tensor, x_hat: torch.Tensor, k: int) -> torch.Tensor:
            t0 = time.perf_counter()
            rows = len(x_hat) // len(feat)  # candidates share their observation's features
            z_hat = self.dynamics(feat.repeat_interleave(rows, 0), x_hat[:, :t_a].flatten(1))
            (grad,) = torch.autograd.grad(goal_score(z_hat, pos, neg, alpha).sum(), x_hat)
            g = w * grad
            diag["guidance_norm"].append(float(g.flatten(1).norm(dim=1).mean()))
            diag["hook_ms"] += (time.perf_counter() - t0) * 1e3
            return g

        return term

    def _steered_chunk(self, obs, noise, hooks: SamplerHooks, diag: dict) -> torch.Tensor:
        diag["guidance_norm"] = []  # mean ||w dS/dx_hat|| over rows, one per sampler level (and corrector step)
        feat = self.dynamics.features({k: obs[k] for k in self.dynamics.dims})
        term = (self.guidance_term(feat, diag),) if float(self.spec.guidance) != 0 else ()  # w = 0: no backward
        steered = dataclasses.replace(hooks, guidance=(*hooks.guidance, *term),
                                      mcmc_steps=max(hooks.mcmc_steps, int(self.spec.mcmc_steps)))
        if steered.mcmc_steps and noise is not None:  # the corrector's re-noise from a generator seeded by the
            with torch.random.fork_rng(devices=[]):     # given noise (as ITPS's): a seeded rollout is reproducible
                torch.manual_seed(noise_seed(noise))
                actions = self.base.predict_chunk(obs, noise=noise, hooks=steered)
        else:
            actions = self.base.predict_chunk(obs, noise=noise, hooks=steered)
        t0 = time.perf_counter()
        with torch.no_grad():  # the executed chunk's score: how close its predicted outcome is to the goals
            a_n = self.dynamics.normalizer.normalize(ACTION, actions)
            z = self.dynamics(feat, a_n)
            diag["goal_score"] = goal_score(z, self.z_goal["goals"], self.z_goal.get("negatives"),
                                            float(self.spec.alpha)).tolist()
        diag["hook_ms"] += (time.perf_counter() - t0) * 1e3
        return actions

    def _save_extras(self, directory: Path) -> dict:
        from safetensors.numpy import save_file

        self.dynamics.save_pretrained(directory / DYNAMICS_DIR)
        save_file({f"{side}/{k}": np.ascontiguousarray(v) for side, f in self.frames.items() for k, v in f.items()},
                  str(directory / GOALS_FILE))
        return {**self.steering, "dynamics": DYNAMICS_DIR, "goals": GOALS_FILE, "goal_episodes": [],
                "negatives": GOALS_FILE if "negatives" in self.frames else "", "negative_episodes": []}


def load_dynaguide_export(directory: Path, base, spec: dict) -> DynaGuidePolicy:
    """The DynaGuide policy of an export: the model dir and goals file in ``config.json`` are relative to it."""
    params = {k: v for k, v in spec.items() if k != "type"}
    rel = lambda p: str(Path(directory) / p) if p else ""  # noqa: E731
    params.update(dynamics=rel(params["dynamics"]), goals=rel(params["goals"]),
                  negatives=rel(params.get("negatives", "")), goal_episodes=(), negative_episodes=())
    return DynaGuidePolicy(base, DynaGuideConfig(**params))
