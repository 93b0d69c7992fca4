"""Native MuJoCo Panda tasks: one file per task with its default config beside it.

Factories (used by ``armflow.sim.registry``): ``lift.make_lift``, ``lift.make_lift_hard``,
``pick_either.make_pick_either``. All return a ``CubeEnv`` (see ``cube_env`` for the obs layout).
"""
from armflow.sim.tasks.config import CubeTaskConfig, build_config
from armflow.sim.tasks.cube_env import CAMERAS, CubeEnv

__all__ = ["CAMERAS", "CubeEnv", "CubeTaskConfig", "build_config"]
