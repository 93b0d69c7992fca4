"""How armflow's arm tasks split an observation into proprioception and object state (issue 12).

LeRobot's convention, which every task follows by default (``state_layout="split"``):

- ``observation.state``: what a real arm measures about itself (end-effector pose, gripper);
- ``observation.environment_state``: the simulator's object state (privileged: a real arm does not
  know where the cube is), for state policies, experts and analysis.

``state_layout="combined"`` restores the layout recorded before the split (one ``observation.state`` =
proprioception then object state, no ``environment_state``), so checkpoints trained on it still evaluate.
``combined_layout_problem`` turns the shape mismatch such a checkpoint meets on a split env into a message
that says what happened and what to do.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

STATE_KEY = "observation.state"
ENV_STATE_KEY = "observation.environment_state"
STATE_LAYOUTS = ("split", "combined")
LAYOUT_OVERRIDE = "state_layout=combined"


def check_state_layout(value: str, where: str) -> str:
    """``value`` if it names a layout; otherwise a ValueError listing the valid ones."""
    if value not in STATE_LAYOUTS:
        raise ValueError(f"{where}: unknown state_layout {value!r}; valid: {', '.join(STATE_LAYOUTS)}")
    return value


def combined_layout_problem(obs_spec: Mapping[str, tuple], env_shapes: Mapping[str, tuple], source: str,
                            env_name: str) -> str | None:
    """The message for a policy trained on the pre-split layout meeting a split env, else None.

    ``obs_spec``: the policy's keys -> shapes; ``env_shapes``: the env's keys -> shapes; ``source`` names the
    checkpoint, ``env_name`` the env (``task 'lift'``, ``the served robot``). The combined layout is
    recognised by its size: the policy's ``observation.state`` dim equals the env's state + environment_state
    dims and the policy has no ``environment_state`` of its own.
    """
    if STATE_KEY not in obs_spec or ENV_STATE_KEY in obs_spec or ENV_STATE_KEY not in env_shapes:
        return None
    d_policy = int(np.prod(obs_spec[STATE_KEY]))
    d_state, d_env = int(np.prod(env_shapes[STATE_KEY])), int(np.prod(env_shapes[ENV_STATE_KEY]))
    if d_policy != d_state + d_env:
        return None
    return (f"{source}: its observation.state has {d_policy} dims, the combined layout recorded before "
            f"the state split (robot proprioception ({d_state}) then object state ({d_env}) in one vector); "
            f"{env_name} now publishes robot proprioception as observation.state ({d_state},) and object state as "
            f"observation.environment_state ({d_env},). Retrain on a dataset collected now (armflow collect, "
            f"armflow train), or run the old checkpoint on the old layout with the task option {LAYOUT_OVERRIDE} "
            f"(armflow evaluate / finetune: +task_overrides.{LAYOUT_OVERRIDE}; armflow serve: "
            f"+robot_options.env.{LAYOUT_OVERRIDE})")
