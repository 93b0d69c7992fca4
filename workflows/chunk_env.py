"""The env side of the rollout core (evaluation and RL): one step = one action chunk of T_a env steps per env.

A thin layer over armflow's vector env (``armflow.sim.vector``): each worker runs its envs' chunks to the
end in one message (``step_chunk``), stopping an env early when its episode ends, so an episode end
mid-chunk never leaks the leftover actions into the next episode. This layer keeps the obs windows (one
``BatchedObsHistory``) and episode counters and applies the RL reward, on the learner side:

    env reward     = sum of the executed steps' rewards (steps after the episode end are not run)
    terminated     = success/failure ended the episode inside the chunk (no bootstrap)
    truncated      = the time limit ended it (bootstrap from ``next_obs``, the true final obs window)
    next_obs       = obs window of the state the chunk reached (before any reset)
    obs            = what the policy sees next: ``next_obs``, or the new episode's first obs
                     (repeated T_o times) after an autoreset

Obs windows stay raw numpy: state float32 (T_o, D_s), images uint8 (T_o, H, W, 3). A worker exception
surfaces as ``armflow.sim.vector.WorkerError`` with the worker's traceback.

Rewards (``REWARDS``) are batched functions ``fn(obs, action, next_obs, info) -> (N,) float64`` over what the
workers return (``info``: per-step ``reward`` and ``reward_terms`` (N, T_a), ``n_steps``, ``success``, and
``prev_reward_terms``, the terms at the chunk's start state, 0 after a reset):

- ``env``: the chunk's summed env reward.
- ``success``: 1.0 when the chunk ends in success, else 0: sparse rewards as in DPPO/DSRL's manipulation
  runs, and immune to shaped terms that pay more for hovering until the time limit than for finishing
  (episode returns in the stats stay the env's).
- ``shaped``: ``success`` plus potential-based shaping (Ng et al. 1999), ``shaping_scale * (phi(s_end) -
  phi(s_start))`` per chunk, with phi the sum of the env's non-success reward terms (lift: reach + grasp +
  lift) and phi = 0 at reset. The shaping telescopes over an episode, so finishing still pays the most,
  but every chunk gets a signal.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import numpy as np

RewardFn = Callable[[dict, np.ndarray, dict, dict], np.ndarray]


def _last(per_step: np.ndarray, n_steps: np.ndarray) -> np.ndarray:
    """Value of each env's last executed step from a per-step (N, T_a) array."""
    return per_step[np.arange(len(n_steps)), np.maximum(n_steps - 1, 0)]


def env_reward_fn(obs, action, next_obs, info) -> np.ndarray:
    """The env's own reward summed over the executed steps (cumsum: the same order as a Python loop)."""
    return np.cumsum(info["reward"], axis=1)[:, -1]


def success_reward(obs, action, next_obs, info) -> np.ndarray:
    """1.0 where the chunk's last executed step is a success, else 0."""
    return info["success"].astype(np.float64)


def _potential(terms: dict[str, np.ndarray]) -> np.ndarray | float:
    return sum(value for name, value in terms.items() if name != "success")


def shaped_reward(obs, action, next_obs, info, shaping_scale: float = 0.1) -> np.ndarray:
    """``success`` plus ``shaping_scale * (phi(end) - phi(start))``, phi = sum of the non-success reward terms."""
    end = {name: _last(v, info["n_steps"]) for name, v in info["reward_terms"].items()}
    return success_reward(obs, action, next_obs, info) + float(shaping_scale) * (
        _potential(end) - _potential(info["prev_reward_terms"]))


REWARDS: dict[str, Callable[..., np.ndarray]] = {"env": env_reward_fn, "success": success_reward,
                                                 "shaped": shaped_reward}
# `armflow finetune reward=...`: a REWARDS name, or ``model`` (a reward model from armflow.rewards that never reads
# the simulator; built by ``workflows.finetune_rollout.build_reward``)
REWARD_MODES = (*REWARDS, "model")


def reward_function(name: str, shaping_scale: float = 0.1) -> RewardFn:
    """The batched function of a ``REWARDS`` name (``shaped`` with its ``shaping_scale``)."""
    if name not in REWARDS:
        raise ValueError(f"reward_mode={name!r}; valid: {tuple(REWARDS)}")
    return functools.partial(shaped_reward, shaping_scale=shaping_scale) if name == "shaped" else REWARDS[name]


@dataclass
class ChunkStep:
    """Result of one chunk step over N envs; every array has leading dim N."""

    obs: dict[str, np.ndarray]       # (N, T_o, ...) next policy input (after autoreset)
    next_obs: dict[str, np.ndarray]  # (N, T_o, ...) state reached by the chunk (final obs if done)
    reward: np.ndarray               # (N,) float32, the RL reward
    terminated: np.ndarray           # (N,) bool
    truncated: np.ndarray            # (N,) bool
    success: np.ndarray              # (N,) bool, success on the chunk's last executed step
    n_steps: np.ndarray              # (N,) int, env steps executed (< T_a when the episode ended)
    elapsed: np.ndarray              # (N,) int, env steps into the episode at ``next_obs``
    episodes: list[dict]             # finished episodes: {"return" (env reward), "rl_return" (the RL reward),
                                     # "length", "success"}
    reward_terms: dict[str, np.ndarray]  # name -> (N, T_a) per-step env reward terms (0 after the episode end)
    step_reward: np.ndarray | None = None  # (N, T_a) per-step env reward (0 after the episode end)
    step_obs: dict[str, np.ndarray] | None = None  # with keep_steps: (N, keep, ...) the chunk's last executed steps'
                                                   # obs, right-aligned (an env's n_steps newest at the end)


class ChunkVecEnv:
    """N envs of ``task`` stepped a chunk at a time (see module docstring): the env side of the rollout core.

    Args:
        task: registry name for ``armflow.sim.make_env``.
        n_envs: N parallel envs.
        n_obs_steps: T_o, obs window length.
        obs_keys: observation keys windowed (the policy's; None: every key the env has).
        n_workers: 0 = in-process; otherwise that many subprocesses (None: ``make_vec_env``'s choice).
        overrides: task config overrides passed to ``make_env``.
        reward_mode: a ``REWARDS`` name, or a batched reward function (see module docstring).
        shaping_scale: weight of the potential-based shaping (``reward_mode="shaped"``).
        venv: a pre-built armflow vector env to wrap instead of making one (tests).
        keep_steps: > 0 returns every executed step's obs (``ChunkStep.step_obs``, last ``max(T_o, keep_steps)``
            steps) for per-step recording (``armflow evaluate record=``).
    """

    def __init__(self, task: str, n_envs: int, n_obs_steps: int, obs_keys, n_workers: int | None = 0,
                 overrides: dict | None = None, reward_mode: str | RewardFn = "env", shaping_scale: float = 0.1,
                 venv=None, keep_steps: int = 0):
        from armflow.policies import BatchedObsHistory
        from armflow.sim.vector import make_vec_env

        self.reward_fn = reward_function(reward_mode, shaping_scale) if isinstance(reward_mode, str) else reward_mode
        self.n_envs, self.n_obs_steps = int(n_envs), int(n_obs_steps)
        self.keep_steps = max(self.n_obs_steps, int(keep_steps))
        self.venv = venv if venv is not None else make_vec_env(task, self.n_envs, n_workers,
                                                               **dict(overrides or {}))
        self.obs_keys = tuple(self.venv.single_observation_space.spaces if obs_keys is None else obs_keys)
        self.max_episode_steps = int(self.venv.max_episode_steps)
        self.action_dim = int(self.venv.single_action_space.shape[0])
        self.windows = BatchedObsHistory(self.n_obs_steps)
        self._prev_terms: dict[str, np.ndarray] = {}
        self._counters = np.zeros((2, self.n_envs), dtype=np.float64)  # env return, RL return
        self._length = np.zeros(self.n_envs, dtype=np.int64)

    def reset(self, seeds: list[int | None] | None = None) -> dict[str, np.ndarray]:
        """Reset every env (``seeds`` one per env, None = continue its RNG); returns obs (N, T_o, ...)."""
        return self.reset_envs(np.ones(self.n_envs, bool), seeds)

    def reset_envs(self, mask, seeds: list[int | None] | None = None) -> dict[str, np.ndarray]:
        """Reset the envs in ``mask`` (bool (N,)) with ``seeds`` (one per True entry); the others keep their
        episodes. Returns every env's obs window (N, T_o, ...)."""
        mask = np.asarray(mask, dtype=bool)
        full = [None] * self.n_envs
        for i, s in zip(np.flatnonzero(mask), seeds if seeds is not None else [None] * int(mask.sum())):
            full[i] = s
        options = None if mask.all() else {"reset_mask": mask}
        obs, _ = self.venv.reset(seed=full, options=options)
        self.windows.reset({k: obs[k] for k in self.obs_keys}, None if mask.all() else mask)
        for name in self._prev_terms:
            self._prev_terms[name] = np.where(mask, 0.0, self._prev_terms[name])
        self._counters[:, mask], self._length[mask] = 0.0, 0
        return self.windows.get()

    def step(self, actions: np.ndarray, active: np.ndarray | None = None, autoreset: bool = True) -> ChunkStep:
        """Run one chunk per env: ``actions`` (N, T_a, D_a); envs outside ``active`` are not stepped (their rows
        keep their obs, ``n_steps`` 0; evaluation)."""
        obs_before = self.windows.get(copy=False)  # windows are never written in place (BatchedObsHistory)
        out = self.venv.step_chunk(actions, active, autoreset, self.obs_keys, self.keep_steps)  # checks the shape
        n = out["n_steps"]
        self.windows.extend({k: v[:, v.shape[1] - self.n_obs_steps:] for k, v in out["obs"].items()}, n)
        next_obs = self.windows.get(copy=False)
        info = {**out, "prev_reward_terms": {name: self._prev_terms.get(name, np.zeros(self.n_envs))
                                             for name in out["reward_terms"]}}
        rl_reward = np.asarray(self.reward_fn(obs_before, np.asarray(actions), next_obs, info), dtype=np.float64)
        env_reward = env_reward_fn(None, actions, None, out)
        self._reward_ends(info, out, n, autoreset)  # marks them terminated in out
        done = out["terminated"] | out["truncated"]
        self._counters += np.where(n > 0, np.stack([env_reward, rl_reward]), 0.0)
        self._length += n
        elapsed = self._length.copy()
        episodes = [{"return": float(self._counters[0, i]), "rl_return": float(self._counters[1, i]),
                     "length": int(self._length[i]), "success": bool(out["success"][i]),
                     "mode": int(out["mode"][i]) if "mode" in out else -1} for i in np.flatnonzero(done)]
        for name, v in out["reward_terms"].items():  # terms at the next chunk's start state (0 after a reset)
            kept = np.where(n > 0, _last(v, n), self._prev_terms.get(name, 0.0))
            self._prev_terms[name] = np.where(done, 0.0, kept)
        self._counters[:, done], self._length[done] = 0.0, 0
        if autoreset and done.any():
            self.windows.reset({k: out["reset_obs"][k] for k in self.obs_keys}, done)
        return ChunkStep(obs=self.windows.get(copy=False) if autoreset and done.any() else next_obs, next_obs=next_obs,
                         reward=rl_reward.astype(np.float32), terminated=out["terminated"],
                         truncated=out["truncated"], success=out["success"], n_steps=n, elapsed=elapsed,
                         episodes=episodes, reward_terms=out["reward_terms"], step_reward=out["reward"],
                         step_obs=out["obs"] if self.keep_steps > self.n_obs_steps else None)

    def _reward_ends(self, info: dict, out: dict, n: np.ndarray, autoreset: bool) -> np.ndarray:
        """Episodes the reward function ended (``info["reward_terminated"]``, e.g. a success detector, as on a real
        arm where no simulator says when the task is done): marked terminated in ``out`` and, with ``autoreset``,
        reset here (their ``reset_obs`` filled in) like the envs that ended themselves."""
        ended = np.asarray(info.get("reward_terminated", np.zeros(self.n_envs, bool)), bool)
        ended = ended & (n > 0) & ~(out["terminated"] | out["truncated"])
        if ended.any():
            out["terminated"] = out["terminated"] | ended
            if autoreset:
                obs, _ = self.venv.reset(seed=[None] * self.n_envs, options={"reset_mask": ended})
                out["reset_obs"] = {k: np.where(ended.reshape(-1, *[1] * (np.ndim(obs[k]) - 1)), obs[k],
                                                out["reset_obs"][k]) for k in self.obs_keys}
        return ended

    def close(self) -> None:
        self.venv.close()
