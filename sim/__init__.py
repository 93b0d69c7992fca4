"""armflow.sim: MuJoCo tasks, the robosuite adapter, vector envs and scripted experts.

Public names: ``make_env``, ``ENVS`` (explicit registry), ``make_vec_env``,
``SyncVectorEnv``, ``SubprocVectorEnv``, ``WorkerError``, ``make_expert``, ``gym_id``, the observation keys
``STATE_KEY`` (robot proprioception) and ``ENV_STATE_KEY`` (privileged object state; ``obs_layout``),
``PersistentEnv`` and ``in_workspace`` (reset-free episodes; ``persistent``).
Importing this package registers every ``ENVS`` name with gymnasium (``gym_registration``).
"""
from __future__ import annotations

import importlib
import os
from typing import Any

# MuJoCo picks its GL backend when first imported; default to OSMesa (EGL does not work on CPU boxes).
os.environ.setdefault("MUJOCO_GL", "osmesa")
os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")

from armflow.sim.registry import ENVS, make_env  # noqa: E402 - after the GL default above
from armflow.sim.obs_layout import ENV_STATE_KEY, STATE_KEY  # noqa: E402
from armflow.sim.vector import SubprocVectorEnv, SyncVectorEnv, WorkerError, make_vec_env  # noqa: E402
from armflow.sim.gym_registration import gym_id, register_gym_envs  # noqa: E402
from armflow.sim.persistent import PersistentEnv, in_workspace  # noqa: E402

register_gym_envs()  # gymnasium's convention: importing the package makes gym.make("armflow/<name>-v0") work


def make_expert(env: Any, noise_std: float = 0.0, seed: int | None = None):
    """Scripted expert for ``env`` (see ``armflow.sim.experts``; imported lazily)."""
    experts = importlib.import_module("armflow.sim.experts")
    return experts.make_expert(env, noise_std=noise_std, seed=seed)


__all__ = ["ENVS", "ENV_STATE_KEY", "STATE_KEY", "make_env", "make_vec_env", "make_expert", "SyncVectorEnv", "SubprocVectorEnv",
           "WorkerError", "gym_id", "register_gym_envs", "PersistentEnv", "in_workspace"]
