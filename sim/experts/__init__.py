"""Scripted experts: ``make_expert(env, noise_std=0.0, seed=None) -> Expert``.

An expert reads privileged simulator state from ``env`` (not just the observation), so demos
are clean; ``noise_std`` adds Gaussian action noise to lower demo quality. ``expert.reset()``
at each episode start, ``expert(obs) -> action (D_a,) float32 in [-1, 1]``.
``EXPERTS`` maps ``env.task_name`` to ``(module, class)``; imports are lazy.
"""
from __future__ import annotations

import importlib
from typing import Any

EXPERTS: dict[str, tuple[str, str]] = {
    "lift": ("armflow.sim.experts.pick", "PickExpert"),
    "lift_hard": ("armflow.sim.experts.pick", "PickExpert"),
    "place": ("armflow.sim.experts.place", "PlaceExpert"),
    "pick_either": ("armflow.sim.experts.pick", "PickExpert"),
    "toy2d": ("armflow.sim.toy2d", "Toy2DExpert"),
    "robosuite/Lift": ("armflow.sim.robosuite_env", "RobosuiteLiftExpert"),
}


def make_expert(env: Any, noise_std: float = 0.0, seed: int | None = None):
    """The scripted expert for ``env.task_name`` (a miss lists the tasks that have one)."""
    base = getattr(env, "unwrapped", env)
    name = getattr(base, "task_name", None)
    if name not in EXPERTS:
        raise KeyError(f"no scripted expert for task {name!r}; experts exist for: {', '.join(EXPERTS)}")
    module, attr = EXPERTS[name]
    cls = getattr(importlib.import_module(module), attr)
    return cls(base, noise_std=noise_std, seed=seed)


__all__ = ["EXPERTS", "make_expert"]
