"""Explicit env registry: name -> (module, factory). Imports are lazy so robosuite loads only when asked."""
from __future__ import annotations

import importlib
from typing import Any

# name -> ("armflow.sim.<module>", "<factory callable>")
ENVS: dict[str, tuple[str, str]] = {
    "lift": ("armflow.sim.tasks.lift", "make_lift"),
    "lift_hard": ("armflow.sim.tasks.lift", "make_lift_hard"),
    "pick_either": ("armflow.sim.tasks.pick_either", "make_pick_either"),
    "toy2d": ("armflow.sim.toy2d", "make_toy2d"),
    "robosuite/Lift": ("armflow.sim.robosuite_env", "make_robosuite_lift"),
    "robosuite/Can": ("armflow.sim.robosuite_env", "make_robosuite_can"),
    "robosuite/Square": ("armflow.sim.robosuite_env", "make_robosuite_square"),
}


def _resolve(name: str):
    if name not in ENVS:
        raise KeyError(f"unknown task {name!r}; valid tasks: {', '.join(ENVS)}")
    module, attr = ENVS[name]
    return getattr(importlib.import_module(module), attr)


def make_env(name: str, **overrides: Any):
    """Build one env by registry name; ``overrides`` go to the task's config (unknown keys raise)."""
    return _resolve(name)(**overrides)
