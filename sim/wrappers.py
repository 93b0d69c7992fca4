"""EnvGroup: several single envs stepped together with same-step autoreset, returning stacked arrays.

This is the per-process core of both vector envs in ``vector.py`` (the in-process
``SyncVectorEnv`` holds one group; each subprocess worker holds one group).

Step output for a group of ``k`` envs (all arrays stacked on axis 0):
``obs`` dict of (k, ...) arrays (a finished env already shows its next episode's
first obs), ``reward`` float32 (k,), ``terminated``/``truncated`` bool (k,), and
``info`` with ``success`` bool (k,) of this step, ``done_mask`` bool (k,)
(terminated | truncated), ``final_obs`` dict of (k, ...) arrays = the obs returned
by this step before any autoreset (equal to ``obs`` where not done),
``episode_return`` float64 (k,) (NaN where not done), ``episode_length`` int64
(k,) (0 where not done), ``reward_terms`` dict name -> float32 (k,), and gymnasium's mask
``_final_obs`` bool (k,) (= ``done_mask``: the rows of ``final_obs`` that end an episode).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np


def stack_obs(obs_list: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Stack a list of obs dicts into one dict of arrays with a leading env axis."""
    return {key: np.stack([obs[key] for obs in obs_list]) for key in obs_list[0]}


def concat_tree(parts: Sequence[Any]) -> Any:
    """Concatenate matching dicts/tuples of arrays (one per worker) along axis 0."""
    first = parts[0]
    if isinstance(first, dict):
        return {key: concat_tree([p[key] for p in parts]) for key in first}
    if isinstance(first, tuple):
        return tuple(concat_tree([p[i] for p in parts]) for i in range(len(first)))
    return np.concatenate(parts, axis=0)


class EnvGroup:
    """``k`` envs built by ``env_fns`` with same-step autoreset and episode bookkeeping."""

    def __init__(self, env_fns: Sequence[Callable[[], Any]]):
        if not env_fns:
            raise ValueError("EnvGroup needs at least one env factory")
        self.envs = [fn() for fn in env_fns]
        self._returns = np.zeros(len(self.envs), dtype=np.float64)
        self._lengths = np.zeros(len(self.envs), dtype=np.int64)
        self._obs: list[dict[str, np.ndarray] | None] = [None] * len(self.envs)  # each env's latest obs
        self._term_names: list[str] | None = None

    def __len__(self) -> int:
        return len(self.envs)

    def spec(self) -> dict[str, Any]:
        """Attributes shared by the group's envs (spaces, timing, task name, render mode, metadata)."""
        env = self.envs[0]
        return {name: getattr(env, name, None) for name in (
            "observation_space", "action_space", "ctrl_dt", "sim_dt", "max_episode_steps", "task_name",
            "render_mode", "metadata")}

    def reset(self, seeds: Sequence[int | None], options: dict | None = None, mask: np.ndarray | None = None):
        """Reset env i with ``seeds[i]`` and ``options`` where ``mask[i]`` (default: all) -> (obs dict (k, ...), info).

        Envs outside ``mask`` keep their episode (gymnasium's ``reset_mask``): their rows repeat their latest obs."""
        k = len(self.envs)
        if len(seeds) != k:
            raise ValueError(f"EnvGroup.reset: got {len(seeds)} seeds for {k} envs")
        mask = np.ones(k, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
        for i in np.flatnonzero(mask):
            seed = None if seeds[i] is None else int(seeds[i])
            self._obs[i] = self.envs[i].reset(seed=seed, options=options)[0]
        if any(obs is None for obs in self._obs):
            raise RuntimeError("reset(options={'reset_mask': ...}) before every env was reset once")
        self._returns[mask] = 0.0
        self._lengths[mask] = 0
        return stack_obs(self._obs), {"success": np.zeros(k, dtype=bool)}

    def step(self, actions: np.ndarray):
        """Step env i with ``actions[i]``; finished envs reset at once (see module docstring)."""
        k = len(self.envs)
        if len(actions) != k:
            raise ValueError(f"EnvGroup.step: got {len(actions)} actions for {k} envs")
        reward = np.zeros(k, dtype=np.float32)
        terminated = np.zeros(k, dtype=bool)
        truncated = np.zeros(k, dtype=bool)
        success = np.zeros(k, dtype=bool)
        mode = np.full(k, -1, dtype=np.int64)  # info["mode"] where the task reports one (multimodal tasks)
        ep_return = np.full(k, np.nan, dtype=np.float64)
        ep_length = np.zeros(k, dtype=np.int64)
        obs_list, final_list, terms_list = [], [], []
        for i, env in enumerate(self.envs):
            obs, r, term, trunc, info = env.step(actions[i])
            reward[i], terminated[i], truncated[i] = r, term, trunc
            success[i] = bool(info["success"])
            mode[i] = int(info.get("mode", -1))
            terms_list.append(info.get("reward_terms", {}))
            self._returns[i] += r
            self._lengths[i] += 1
            final_list.append(obs)
            if term or trunc:
                ep_return[i], ep_length[i] = self._returns[i], self._lengths[i]
                self._returns[i], self._lengths[i] = 0.0, 0
                obs = env.reset()[0]
            obs_list.append(obs)
        self._obs = obs_list
        if self._term_names is None:
            self._term_names = sorted(terms_list[0])
        reward_terms = {name: np.array([t.get(name, 0.0) for t in terms_list], dtype=np.float32)
                        for name in self._term_names}
        done = terminated | truncated
        info = {"success": success, "mode": mode, "done_mask": done, "final_obs": stack_obs(final_list),
                "_final_obs": done.copy(), "episode_return": ep_return, "episode_length": ep_length,
                "reward_terms": reward_terms}
        return stack_obs(obs_list), reward, terminated, truncated, info

    def step_chunk(self, actions: np.ndarray, active: np.ndarray, autoreset: bool, keys: Sequence[str],
                   keep: int) -> dict[str, Any]:
        """Run env i's chunk ``actions[i]`` (T_a, D_a) (if ``active[i]``) until its episode ends: leftover actions
        are dropped, so they never leak into the next episode. Returns ``obs`` key -> (k, keep, ...) the last
        executed steps' obs right-aligned (before any reset), ``reset_obs`` key -> (k, ...) the obs each env
        shows now, ``reward`` and ``reward_terms`` name -> float64 (k, T_a) per executed step (0 after; float64
        so learner-side sums equal Python sums), ``terminated``/``truncated``/``success`` bool (k,) of the last
        executed step, ``n_steps`` int64 (k,), ``mode`` int64 (k,) the last step's ``info["mode"]`` (which object a
        multimodal task's success used; -1 where the task reports none)."""
        k, t_a = len(self.envs), actions.shape[1]
        reward, terms, mode = np.zeros((k, t_a), dtype=np.float64), {}, np.full(k, -1, dtype=np.int64)
        flags, n_steps, window = np.zeros((3, k), dtype=bool), np.zeros(k, dtype=np.int64), []
        for i, env in enumerate(self.envs):
            steps, rewards, infos = [], [], []
            for t in range(t_a if active[i] else 0):
                obs, r, term, trunc, info = env.step(actions[i, t])
                steps.append(obs), rewards.append(r), infos.append(info.get("reward_terms", {}))
                if term or trunc:
                    break
            if steps:
                n_steps[i], flags[:, i], self._obs[i] = len(steps), (term, trunc, info["success"]), steps[-1]
                mode[i] = int(info.get("mode", -1))
                reward[i, :len(steps)] = rewards
                for name in infos[0]:
                    terms.setdefault(name, np.zeros((k, t_a), dtype=np.float64))[i, :len(steps)] = [
                        d.get(name, 0.0) for d in infos]
            steps = steps[-keep:] or [self._obs[i]]
            window.append([steps[0]] * (keep - len(steps)) + steps)
            if autoreset and (flags[0, i] or flags[1, i]):
                self._obs[i] = env.reset()[0]
        return {"obs": {key: np.stack([np.stack([o[key] for o in w]) for w in window]) for key in keys},
                "reset_obs": {key: np.stack([o[key] for o in self._obs]) for key in keys}, "reward": reward,
                "reward_terms": terms, "terminated": flags[0], "truncated": flags[1], "success": flags[2],
                "n_steps": n_steps, "mode": mode}

    def call(self, index: int | None, name: str, args: tuple = (), kwargs: dict | None = None) -> list:
        """Call method ``name`` (or read attribute ``name``) on env ``index``, or on all envs if None."""
        envs = self.envs if index is None else [self.envs[index]]
        results = []
        for env in envs:
            attr = getattr(env, name)
            results.append(attr(*args, **(kwargs or {})) if callable(attr) else attr)
        return results

    def close(self) -> None:
        """Close every env (errors in one do not stop the others; the first is re-raised)."""
        first_error = None
        for env in self.envs:
            try:
                env.close()
            except Exception as exc:  # noqa: BLE001 - re-raised below after closing the rest
                first_error = first_error or exc
        self.envs = []
        if first_error is not None:
            raise first_error
