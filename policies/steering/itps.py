"""ITPS (Wang et al. 2024, "Inference-Time Policy Steering through Human Interactions"): steer a frozen flow /
diffusion policy toward a point goal or a sketched path in workspace coordinates, through the end-effector path its
ee-delta chunk implies (``itps_math``). Four strategies, each one sampler hook (``SamplerHooks``):

- ``pr`` post-hoc ranking: K chunks in one batch (reranker), keep the one with the smallest alignment distance;
- ``bi`` biased initialisation: the initial x is the goal's chunk noised to level ``bi_skip * levels``
  (``x_s = c_a a_goal + c_z z``, the family's own renoise) and the sampler starts there (``start_level``);
- ``gd`` guided diffusion: each level adds ``-guidance * dD/dx_hat`` (closed form, eq. 4 of ``itps_math``);
- ``ss`` stochastic sampling: ``gd`` plus ``mcmc_steps`` re-noise/predict corrector steps per level (the re-noise
  drawn from a generator seeded by the given noise, so the chunk is deterministic given the noise).

Goal: ``spec.goal`` (a point [x, y, z] or a path [[x, y, z], ...]) inside ``WORKSPACE_LOW_M .. WORKSPACE_HIGH_M``
(the box the Panda's grip site reaches, ``armflow.sim.persistent``); :meth:`ITPSPolicy.set_goal` changes it between
chunks (the viewer's click, or one goal per batch row); with no goal yet it samples as the base policy. The grip
site p_0 is ``observation.state[..., -1, 0:3]``. Diagnostics per chunk: ``goal_m`` (the shared goal; None for
per-row goals or none), ``alignment_m`` (B,), ``guidance_norm`` (mean |g| per level), for ``pr`` ``scores`` (B, K)
= -D and ``chosen`` (B,), ``hook_ms``.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np
import torch

from armflow.policies.sampler import SamplerHooks
# the box the Panda's grip site reaches on the cube tasks [m] (armflow.sim.persistent's; policies may not import sim)
WORKSPACE_LOW_M, WORKSPACE_HIGH_M = (0.25, -0.30, 0.0), (0.75, 0.30, 0.40)

from . import itps_math as im
from .base import SteeredPolicy

STRATEGIES = ("pr", "bi", "gd", "ss")
STATE_KEY, ACTION_KEY = "observation.state", "action"
EE_DELTA_DIM = 7  # [dx, dy, dz, rx, ry, rz, g]


@dataclass
class ITPSConfig:
    goal: tuple = ()            # point [x, y, z] or path [[x, y, z], ...] [m], world frame; () = set_goal() later
    strategy: str = "ss"        # pr | bi | gd | ss (module docstring)
    K: int = 32                 # pr: candidate chunks sampled in one batch
    guidance: float = 60.0      # gd / ss: weight of -dD/dx_hat added each level (pick_either: 60 for both)
    mcmc_steps: int = 4         # ss: corrector steps per level
    bi_skip: float = 0.5        # bi: fraction of the sampler levels skipped (the goal chunk's noise level)
    max_dpos_m: float = 0.05    # the env's position delta at |action| = 1 [m per step] (lift / pick_either: 0.05)
    radius_m: float = 0.0       # distances up to this count as aligned (the goal is a ball of this radius) [m]
    tracking: float = 0.5       # fraction of a commanded delta the arm realises per step (sim Panda's servo lag ~0.5)

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"steering.strategy={self.strategy!r}: valid: {', '.join(STRATEGIES)}")
        if (int(self.K) < 2 or float(self.guidance) < 0 or int(self.mcmc_steps) < 0 or float(self.max_dpos_m) <= 0
                or float(self.radius_m) < 0 or not 0 < float(self.tracking) <= 1):
            raise ValueError(f"steering: K={self.K} must be >= 2, guidance={self.guidance} >= 0, mcmc_steps="
                             f"{self.mcmc_steps} >= 0, max_dpos_m={self.max_dpos_m} > 0, radius_m={self.radius_m} "
                             f">= 0, tracking={self.tracking} in (0, 1]")
        if not 0.0 < float(self.bi_skip) < 1.0:
            raise ValueError(f"steering.bi_skip={self.bi_skip} must be in (0, 1)")
        self.goal = tuple(tuple(float(v) for v in p) if np.ndim(p) else float(p) for p in self.goal)
        if self.goal:
            check_goal(self.goal)


def check_goal(goal) -> np.ndarray:
    """A point (3,) / path (M, 3) / per-row goals (B, M, 3) [m] -> float array; a value outside the workspace box
    or of the wrong shape raises ValueError naming it."""
    arr = np.asarray(goal, dtype=np.float64)
    if arr.ndim == 0 or arr.shape[-1] != 3 or arr.size == 0 or arr.ndim > 3:
        raise ValueError(f"steering.goal={np.asarray(goal).tolist()}: expected a point [x, y, z] or a path "
                         "[[x, y, z], ...] in metres")
    low, high = np.asarray(WORKSPACE_LOW_M), np.asarray(WORKSPACE_HIGH_M)
    bad = (arr < low - 1e-9) | (arr > high + 1e-9)
    if bad.any():
        point = arr.reshape(-1, 3)[int(np.nonzero(bad.reshape(-1, 3).any(1))[0][0])]
        raise ValueError(f"steering.goal: point {point.round(4).tolist()} is outside the workspace box x "
                         f"[{low[0]}, {high[0]}], y [{low[1]}, {high[1]}], z [{low[2]}, {high[2]}] m (world frame)")
    return arr


def check_ee_delta_policy(base) -> None:
    """ITPS reads the ee-delta position part of the actions and the grip site from ``observation.state[0:3]``."""
    if base.policy_type not in ("flow", "diffusion"):
        raise ValueError(f"steering.type=itps: the policy is {base.policy_type!r}; ITPS needs a sampled policy "
                         "(flow or diffusion)")
    if base.action_dim != EE_DELTA_DIM:
        raise ValueError(f"steering.type=itps: the policy's action_dim is {base.action_dim}; ITPS maps goals through "
                         f"ee-delta actions [dx, dy, dz, rx, ry, rz, g] (action_dim {EE_DELTA_DIM})")
    centre, half = base.normalizer._buffer(ACTION_KEY, "offset"), base.normalizer._buffer(ACTION_KEY, "out_scale")
    lo, hi = (centre - half)[:3], (centre + half)[:3]
    if (lo < -1 - 1e-3).any() or (hi > 1 + 1e-3).any():
        raise ValueError(f"steering.type=itps: the policy's position actions range over [{lo.tolist()}, {hi.tolist()}]"
                         " (its action normaliser); ee-delta actions lie in [-1, 1]")
    if STATE_KEY not in base.obs_spec or base.obs_spec[STATE_KEY][-1] < 3:
        raise ValueError(f"steering.type=itps: the policy reads no {STATE_KEY!r} with the grip-site position in 0:3 "
                         f"(its obs_spec: {dict(base.obs_spec)})")


class ITPSPolicy(SteeredPolicy):
    steering_type = "itps"

    def __init__(self, base, spec: ITPSConfig):
        super().__init__(base, spec)
        check_ee_delta_policy(base)
        self.goal_m: torch.Tensor | None = None  # (G, M, 3), G = 1 or the batch
        if spec.goal:
            self.set_goal(spec.goal)

    @property
    def step_m(self) -> float:
        """Realised grip-site motion per unit position action [m per step]: ``max_dpos_m * tracking`` (the sim Panda
        re-anchors its target every step, so a sustained delta moves it about half as far: a commanded path
        overshoots the real one twice, and steering it would stop the arm short of the goal)."""
        return float(self.spec.max_dpos_m) * float(self.spec.tracking)

    def set_goal(self, goal, per_row: bool = False) -> None:
        """A point (3,) or path (M, 3) for every row, or with ``per_row`` one per batch row ((B, 3) or (B, M, 3));
        used from the next ``predict_chunk``."""
        arr = check_goal(goal)
        arr = arr.reshape(len(arr), -1, 3) if per_row else arr.reshape(1, -1, 3)
        self.goal_m = torch.as_tensor(arr, dtype=torch.float32)

    # ----------------------------------------------------------------- noise
    def default_noise(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.spec.strategy != "pr":
            return self.base.default_noise(batch, generator)
        k, shape = int(self.spec.K), (self.base.horizon, self.base.action_dim)
        return self.base.default_noise(batch * k, generator).reshape(batch, k, *shape)

    def _candidate_noise(self, noise, batch: int) -> torch.Tensor | None:
        """pr: (B, T_p, D_a) -> (B, K, T_p, D_a), candidate k the row's entries rolled by k * 7919 (a permutation of
        iid normals is again N(0, I); k = 0 the noise itself), so the call is deterministic given any noise."""
        if noise is None:
            return None
        k, shape = int(self.spec.K), (self.base.horizon, self.base.action_dim)
        noise = torch.as_tensor(noise, dtype=torch.float32)
        if tuple(noise.shape) == (batch, *shape):
            flat = noise.reshape(batch, -1)
            return torch.stack([flat.roll(i * 7919, 1) for i in range(k)], 1).reshape(batch, k, *shape)
        if tuple(noise.shape) != (batch, k, *shape):
            raise ValueError(f"itps pr: noise has shape {tuple(noise.shape)}; expected (B={batch}, K={k}, "
                             f"T_p={shape[0]}, D_a={shape[1]}) or (B, T_p, D_a)")
        return noise

    # ----------------------------------------------------------------- steering
    def _goal_rows(self, n: int) -> torch.Tensor:
        if len(self.goal_m) not in (1, n):
            raise ValueError(f"itps: {len(self.goal_m)} per-row goals for a batch of {n}")
        return self.goal_m.expand(n, -1, -1) if len(self.goal_m) == 1 else self.goal_m

    def distance(self, p0_m: torch.Tensor, actions: torch.Tensor, goal: torch.Tensor | None = None) -> torch.Tensor:
        """Alignment distance D (N,) [m] of chunks (N, T_p, D_a) in robot units from grip sites p0 (N, 3) to ``goal``
        (N or 1, M, 3; default the policy's goal)."""
        goal = self._goal_rows(len(p0_m)) if goal is None else goal
        return im.alignment(im.ee_path(p0_m, actions.float(), self.step_m), goal, p0_m, float(self.spec.radius_m))[0]

    def _guidance_term(self, p0_m: torch.Tensor, goal: torch.Tensor, diag: dict):
        """g(x, x_hat, k) = -w dD/dx_hat, x_hat in normalised units: da/dx_n is the normaliser's out_scale."""
        nz = self.base.normalizer
        offset, out_scale = nz._buffer(ACTION_KEY, "offset"), nz._buffer(ACTION_KEY, "out_scale")
        w, dpos, radius = float(self.spec.guidance), self.step_m, float(self.spec.radius_m)

        def term(x, x_hat, k):
            t0 = time.perf_counter()
            a_hat = x_hat.detach().clamp(-1.0, 1.0) * out_scale + offset
            _, dpath = im.alignment(im.ee_path(p0_m, a_hat, dpos), goal, p0_m, radius)
            g = -w * im.action_grad(dpath, dpos, a_hat.shape[-1]).to(x_hat) * out_scale
            diag["guidance_norm"].append(float(g.norm(dim=(1, 2)).mean()))
            diag["hook_ms"] += (time.perf_counter() - t0) * 1e3
            return g

        return term

    def _biased_init(self, p0_m, goal, noise, batch: int) -> tuple[torch.Tensor, int]:
        """bi: (x at level s, s): the goal's chunk in normalised units noised to level s with ``noise``."""
        base = self.base
        n_levels = base.num_inference_steps
        s = min(max(int(round(float(self.spec.bi_skip) * n_levels)), 1), n_levels - 1)
        chunk = im.goal_chunk(p0_m, goal, base.horizon, base.n_action_steps, self.step_m,
                              base.action_dim)
        a_n = base.normalizer.normalize(ACTION_KEY, chunk).clamp(-1.0, 1.0)
        a_n[..., 3:] = 0.0  # rotation and gripper: the range's middle, left to the policy
        z = base.default_noise(batch) if noise is None else torch.as_tensor(noise, dtype=torch.float32)
        if base.policy_type == "flow":
            tau = s / n_levels
            return tau * a_n + (1 - tau) * z, s
        s1ma, sa = base._fast[s][:2]  # DDIM level s: sqrt(a_s) x0 + sqrt(1 - a_s) z
        return sa * a_n + s1ma * z, s

    def _steered_chunk(self, obs, noise, hooks: SamplerHooks, diag: dict) -> torch.Tensor:
        if hooks.reranker is not None or hooks.n_candidates > 1 or hooks.start_level > 0:
            raise ValueError("itps: hooks.reranker/n_candidates/start_level are ITPS's own; pass other hooks only")
        p0_m = torch.as_tensor(obs[STATE_KEY], dtype=torch.float32)[:, -1, :3]
        batch, strategy = len(p0_m), self.spec.strategy
        diag["guidance_norm"] = []
        diag["goal_m"] = None if self.goal_m is None or len(self.goal_m) > 1 else self.goal_m[0].squeeze(0).tolist()
        if self.goal_m is None:  # the viewer before its first click: the policy as trained
            return self.base.predict_chunk(obs, noise=noise, hooks=hooks)
        goal = self._goal_rows(batch)
        if strategy == "pr":
            def rerank(obs_, candidates):
                t0 = time.perf_counter()
                k = candidates.shape[1]
                d = self.distance(p0_m.repeat_interleave(k, 0), candidates.reshape(batch * k, *candidates.shape[2:]),
                                  goal.repeat_interleave(k, 0))
                scores = -d.reshape(batch, k)
                chosen = scores.argmax(dim=1)
                diag.update(scores=scores.tolist(), chosen=chosen.tolist())
                diag["hook_ms"] += (time.perf_counter() - t0) * 1e3
                return chosen
            hooks = dataclasses.replace(hooks, reranker=rerank, n_candidates=int(self.spec.K))
            noise = self._candidate_noise(noise, batch)
        elif strategy == "bi":
            t0 = time.perf_counter()
            noise, start = self._biased_init(p0_m, goal, noise, batch)
            diag["hook_ms"] += (time.perf_counter() - t0) * 1e3
            hooks = dataclasses.replace(hooks, start_level=start)
        else:
            term = self._guidance_term(p0_m, goal, diag)
            hooks = dataclasses.replace(hooks, guidance=(*hooks.guidance, term),
                                        mcmc_steps=int(self.spec.mcmc_steps) if strategy == "ss" else hooks.mcmc_steps)
        if hooks.mcmc_steps and noise is not None:  # the corrector's re-noise from a generator seeded by the noise:
            with torch.random.fork_rng(devices=[]):  # deterministic given the noise, as the Policy contract says
                torch.manual_seed(_noise_seed(noise))
                actions = self.base.predict_chunk(obs, noise=noise, hooks=hooks)
        else:
            actions = self.base.predict_chunk(obs, noise=noise, hooks=hooks)
        diag["alignment_m"] = self.distance(p0_m, actions).tolist()
        return actions

    def _save_extras(self, directory) -> dict:
        return self.steering


def _noise_seed(noise) -> int:
    """A 63-bit seed that is a deterministic function of the noise's bytes."""
    import hashlib

    data = torch.as_tensor(noise).detach().cpu().float().numpy().tobytes()
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "little") >> 1


def load_itps_export(directory, base, spec: dict) -> ITPSPolicy:
    return ITPSPolicy(base, ITPSConfig(**{k: v for k, v in spec.items() if k != "type"}))
