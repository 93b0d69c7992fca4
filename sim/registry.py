"""Explicit env registry: name -> (module, factory). Imports are lazy so robosuite loads only when asked."""
from __future__ import annotations

import importlib
from typing import Any

# name -> ("armflow.sim.<module>", "<factory callable>")
ENVS: dict[str, tuple[str, str]] = {
    "lift": ("armflow.sim.tasks.lift", "make_lift"),
    "lift_hard": ("armflow.sim.tasks.lift", "make_lift_hard"),
    "place": ("armflow.sim.tasks.place", "make_place"),
    "pick_either": ("armflow.sim.tasks.pick_either", "make_pick_either"),
    "toy2d": ("armflow.sim.toy2d", "make_toy2d"),
    "robosuite/Lift": ("armflow.sim.robosuite_env", "make_robosuite_lift"),
    "robosuite/Can": ("armflow.sim.robosuite_env", "make_robosuite_can"),
    "robosuite/Square": ("armflow.sim.robosuite_env", "make_robosuite_square"),
}

# gymnasium's render modes that every armflow env implements (``None``: frames only on request)
RENDER_MODES = ("rgb_array",)


def _resolve(name: str):
    if name not in ENVS:
        raise KeyError(f"unknown task {name!r}; valid tasks: {', '.join(ENVS)}")
    module, attr = ENVS[name]
    return getattr(importlib.import_module(module), attr)


def make_env(name: str, **overrides: Any):
    """Build one env by registry name; ``overrides`` go to the task's config (unknown keys raise),
    except ``render_mode`` (gymnasium's: None or "rgb_array")."""
    return _resolve(name)(**overrides)


def check_render_mode(render_mode: str | None, task_name: str) -> str | None:
    """``render_mode`` if armflow's envs implement it; otherwise a ValueError listing the valid modes."""
    if render_mode is not None and render_mode not in RENDER_MODES:
        raise ValueError(f"{task_name}: unknown render_mode {render_mode!r}; valid render modes: None, "
                         f"{', '.join(repr(m) for m in RENDER_MODES)}")
    return render_mode


def default_max_episode_steps(name: str) -> int:
    """The task's default time limit [control steps], read from its module without building the env."""
    if name not in ENVS:
        raise KeyError(f"unknown task {name!r}; valid tasks: {', '.join(ENVS)}")
    return importlib.import_module(ENVS[name][0]).DEFAULT_MAX_EPISODE_STEPS[name]
