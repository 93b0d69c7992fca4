"""Every env of ``ENVS`` registered with gymnasium as ``armflow/<name>-v0`` (a "/" in a name written "-").

``import armflow.sim`` registers them (``gym.make("armflow.sim:armflow/lift-v0")`` imports it first);
gymnasium >= 1.0 has no plugin entry points, so there is nothing to declare in the package metadata.

- ``gym.make(id, **kwargs)``: ``kwargs`` are the task's config overrides plus ``render_mode``. gym.make
  wraps as it wraps any env (PassiveEnvChecker, OrderEnforcing, TimeLimit), and its TimeLimit is the
  only time limit: the entry point switches the env's own off (``max_episode_steps=None``). So
  ``gym.spec(id).max_episode_steps`` is the task's default and ``gym.make(id, max_episode_steps=N)`` gives
  N-step episodes for any N (-1: none), as for gymnasium's own envs.
- ``gym.make_vec(id, num_envs, **kwargs)`` defaults to armflow's vector env (the ``vector_entry_point``:
  ``make_vec_env``, same-step autoreset, workers holding blocks of envs), whose envs keep their own limit
  (``max_episode_steps`` reaches their config); ``vectorization_mode="sync"/"async"`` gives gymnasium's.
"""
from __future__ import annotations

import functools
from typing import Any

import gymnasium as gym

from armflow.sim.registry import ENVS, default_max_episode_steps, make_env
from armflow.sim.vector import make_vec_env

NAMESPACE = "armflow"
VERSION = 0


def gym_id(name: str) -> str:
    """gymnasium id of armflow env ``name``: ``lift`` -> ``armflow/lift-v0``, ``robosuite/Lift`` ->
    ``armflow/robosuite-Lift-v0``."""
    if name not in ENVS:
        raise KeyError(f"unknown task {name!r}; valid tasks: {', '.join(ENVS)}")
    return f"{NAMESPACE}/{name.replace('/', '-')}-v{VERSION}"


def _make_single(name: str, **kwargs: Any) -> gym.Env:
    """gym.make's entry point: the env without its own time limit (gym.make's TimeLimit is the one)."""
    return make_env(name, max_episode_steps=None, **kwargs)


def _make_vector(name: str, num_envs: int, **kwargs: Any):
    """gym.make_vec's entry point: ``make_vec_env`` (``n_workers``, ``context`` and config overrides)."""
    return make_vec_env(name, num_envs, **kwargs)


def register_gym_envs() -> list[str]:
    """Register every ``ENVS`` name with gymnasium (idempotent); returns the ids."""
    ids = []
    for name in ENVS:
        env_id = gym_id(name)
        if env_id not in gym.registry:
            gym.register(env_id, entry_point=functools.partial(_make_single, name),
                         vector_entry_point=functools.partial(_make_vector, name),
                         max_episode_steps=default_max_episode_steps(name))
        ids.append(env_id)
    return ids
