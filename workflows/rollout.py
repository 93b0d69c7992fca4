"""The one rollout core: a policy's chunks executed in environments, shared by evaluate, the RL rollouts and their
evaluation, deploy over the bridge, the quickstart and the benchmarks.

Two halves, each written once:

- env side, :class:`armflow.workflows.chunk_env.ChunkVecEnv`: N envs stepped a chunk at a time (one message per
  chunk to the workers), obs windows in one ``BatchedObsHistory``, rewards applied on the learner side;
- policy side, :class:`PolicyRunner`: obs windows for per-step sources (the bridge, video recording), per-episode
  seeded sampler noise, chunk prediction through ``BasePolicy.predict_chunk`` (the only obs -> tensor
  conversion), and a ``BatchedActionChunker`` for per-step execution.

:func:`run_episodes` drives them over a list of seeds with no lockstep rounds: an env whose episode ends starts
the next seed at once, so N envs never wait for the slowest episode of a round. Each episode's sampler noise
comes from a generator seeded with its env seed (one ``policy.default_noise`` draw per chunk), exactly as
``armflow deploy`` draws it, so a seed gives the same episode in evaluation and through the bridge (where the
bridge's safety layer clamps an action, in evaluation under the same limits: ``evaluate limits=``, which runs
the envs behind that layer, ``armflow.control.sim_limits``).
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from armflow.policies import BatchedActionChunker, BatchedObsHistory


class SeededNoise:
    """Per-env sampler noise: env i draws ``policy.default_noise`` from a generator seeded with its episode's seed.
    Without seeds (``seed(mask, None)``) no noise is given and the policy draws its own."""

    def __init__(self, policy, n_envs: int):
        self.policy, self.generators = policy, [None] * int(n_envs)

    def seed(self, mask, seeds: Sequence[int] | None) -> None:
        """Restart the generators of the envs in ``mask`` (bool (N,)) with ``seeds`` (one per True entry)."""
        idx = np.flatnonzero(mask)
        for j, i in enumerate(idx):
            self.generators[i] = None if seeds is None else torch.Generator().manual_seed(int(seeds[j]))

    def __call__(self, rows: np.ndarray) -> torch.Tensor | None:
        """Initial noise (len(rows), T_p, D_a) for the envs ``rows``, or None when they are unseeded."""
        gens = [self.generators[i] for i in rows]
        if any(g is None for g in gens):
            return None
        return torch.cat([self.policy.default_noise(1, generator=g) for g in gens])


class PolicyRunner:
    """The policy side of every rollout over N envs (N = 1 through the bridge).

    ``start(obs, seeds, mask)`` begins episodes (windows filled with the first obs, noise reseeded),
    ``observe(obs)`` appends one step's obs, ``predict(windows, rows)`` returns chunks ``(len(rows), T_p, D_a)``
    numpy in robot units, ``act()`` the next action ``(N, D_a)`` of each env's current chunk (per-step execution).
    """

    def __init__(self, policy, n_envs: int, noise_fn: Callable[[int], torch.Tensor] | None = None):
        self.policy, self.n_envs = policy, int(n_envs)
        self.keys = tuple(policy.obs_spec)
        self.history = BatchedObsHistory(policy.n_obs_steps)
        self.chunker = BatchedActionChunker(self.n_envs, policy.n_action_steps)
        self.noise = SeededNoise(policy, self.n_envs)
        self.noise_fn = noise_fn  # optional: (n) -> initial noise (n, T_p, D_a) for unseeded envs (deploy)

    def start(self, obs: dict, seeds: Sequence[int] | None = None, mask=None) -> None:
        """Start episodes in the envs of ``mask`` (default all) from their first obs ``{key: (N, ...)}``."""
        mask = np.ones(self.n_envs, bool) if mask is None else np.asarray(mask, bool)
        self.history.reset({k: obs[k] for k in self.keys}, mask)
        self.chunker.reset(mask)
        self.noise.seed(mask, seeds)

    def observe(self, obs: dict) -> None:
        self.history.push({k: obs[k] for k in self.keys})

    @torch.inference_mode()
    def predict(self, windows: dict | None = None, rows=None, hooks=None, noise=None) -> np.ndarray:
        """Chunks for the envs ``rows`` (default all) from obs windows ``{key: (N, T_o, ...)}`` (default the
        runner's own history). ``hooks``: sampler hooks (chunk executors: RTC, RTI-DP); ``noise``: these rows'
        initial noise, already drawn (default: the seeded draw; none with a ``hooks.noise`` provider)."""
        windows = self.history.get() if windows is None else windows
        rows = np.arange(self.n_envs) if rows is None else np.asarray(rows)
        obs = {k: windows[k][rows] if len(rows) < self.n_envs else windows[k] for k in self.keys}
        if noise is None and (hooks is None or hooks.noise is None):
            noise = self.noise(rows)
            if noise is None and self.noise_fn is not None:
                noise = self.noise_fn(len(rows))
        return self.policy.predict_chunk(obs, noise=noise, hooks=hooks).detach().cpu().numpy()

    def act(self) -> np.ndarray:
        """Next action for every env (N, D_a); predicts where an env's chunk has run out."""
        need = self.chunker.needs_chunk()
        if need.any():
            chunks = np.zeros((self.n_envs, self.policy.horizon, self.policy.action_dim), np.float32)
            chunks[need] = self.predict(rows=np.flatnonzero(need))
            self.chunker.push(chunks, mask=need)
        return self.chunker.pop().astype(np.float32)


def run_episodes(env, act: Callable[[dict, np.ndarray], np.ndarray], seeds: Sequence[int], n_action_steps: int,
                 on_start: Callable[[np.ndarray, list[int]], None] | None = None, progress=None,
                 on_step: Callable[[dict, np.ndarray, object, np.ndarray], None] | None = None) -> list[dict]:
    """One episode per seed on a ``ChunkVecEnv``, envs refilled with the next seed as soon as theirs ends.

    ``act(obs windows (N, T_o, ...), rows)`` returns chunks ``(len(rows), >= T_a, D_a)`` for the active envs
    ``rows``, of which the first ``n_action_steps`` (T_a) run; ``on_start(mask, seeds)`` is told which envs start which seeds (to reseed sampler noise);
    ``on_step(obs windows, chunks (N, T_a, D_a), ChunkStep, active)`` sees every chunk step (recording). Returns
    ``{"seed", "success", "return" (env), "rl_return", "length", "mode"}`` per seed, in the order of ``seeds``.
    """
    n, t_a, queue = env.n_envs, int(n_action_steps), list(seeds)
    results, slot = {}, np.full(n, -1, dtype=np.int64)
    active = np.zeros(n, bool)
    first, queue = queue[:n], queue[n:]
    active[: len(first)], slot[: len(first)] = True, first
    obs = env.reset(list(first) + [None] * (n - len(first)))
    if on_start is not None:
        on_start(active.copy(), list(first))
    while active.any():
        rows = np.flatnonzero(active)
        chunks = np.zeros((n, t_a, env.action_dim), np.float32)
        chunks[rows] = np.asarray(act(obs, rows))[:, :t_a]
        step = env.step(chunks, active=active, autoreset=False)
        if on_step is not None:
            on_step(obs, chunks, step, active)
        done = active & (step.terminated | step.truncated)
        for i, ep in zip(np.flatnonzero(done), step.episodes):
            results[int(slot[i])] = {"seed": int(slot[i]), "success": ep["success"], "return": ep["return"],
                                     "length": ep["length"], "mode": ep["mode"],
                                     "rl_return": ep["rl_return"]}
        if progress is not None and done.any():
            progress.update(int(done.sum()))
        obs, active = step.obs, active & ~done
        refill = np.flatnonzero(done)[: len(queue)]
        if len(refill):
            new, queue = queue[: len(refill)], queue[len(refill):]
            mask = np.zeros(n, bool)
            mask[refill], slot[refill], active[refill] = True, new, True
            obs = env.reset_envs(mask, new)
            if on_start is not None:
                on_start(mask, list(new))
    return [results[int(s)] for s in seeds]
