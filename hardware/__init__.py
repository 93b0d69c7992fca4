"""armflow.hardware: arm drivers (MuJoCo sim + real adapters), cameras, teleop devices. Never imports torch.

``make_driver(name, **cfg)`` builds a ``Driver`` from the explicit registry ``DRIVERS``:

- ``sim_panda``, ``sim_ur5e``, ``sim_xarm7``: the MuJoCo sim arm (``SimArmConfig`` keys). ``sim_panda``
  with ``task=<native task>`` wraps ``armflow.sim.make_env(task)`` instead (``SimTaskConfig`` keys).
- ``ur``, ``franka``, ``xarm``: real adapters (``URConfig``/``FrankaConfig``/``XArmConfig`` keys);
  ``sdk=fake`` runs them against the faithful SDK fakes in ``armflow.hardware.fakes``.
Unknown config keys raise ``armflow.configs.ConfigError`` listing the valid ones.

``make_intervention(name, **cfg)`` (``keyboard`` | ``spacemouse`` | ``none``) builds the human takeover
``Intervention`` of ``armflow improve``; see ``armflow.hardware.intervention``.
"""
from __future__ import annotations

import importlib

from armflow.configs import ConfigError, build_config
from armflow.hardware.driver import MODES, Driver, DriverError, RobotInfo, RobotState
from armflow.hardware.intervention import INTERVENTION_DEVICES, Intervention, make_intervention

# name -> (module, driver class, config class, fixed config values)
DRIVERS: dict[str, tuple[str, str, str, dict]] = {
    "sim_panda": ("armflow.hardware.sim_arm", "SimArmDriver", "SimArmConfig", {"arm": "panda"}),
    "sim_ur5e": ("armflow.hardware.sim_arm", "SimArmDriver", "SimArmConfig", {"arm": "ur5e"}),
    "sim_xarm7": ("armflow.hardware.sim_arm", "SimArmDriver", "SimArmConfig", {"arm": "xarm7"}),
    "ur": ("armflow.hardware.ur", "URDriver", "URConfig", {}),
    "franka": ("armflow.hardware.franka", "FrankaDriver", "FrankaConfig", {}),
    "xarm": ("armflow.hardware.xarm", "XArmDriver", "XArmConfig", {}),
}
TASK_DRIVER = ("armflow.hardware.sim_task", "SimTaskDriver", "SimTaskConfig", {})


def make_driver(name: str, **cfg) -> Driver:
    """Build the driver ``name`` (a key of ``DRIVERS``) with config overrides ``cfg``."""
    if name not in DRIVERS:
        raise KeyError(f"unknown robot {name!r}; valid robots: {', '.join(DRIVERS)}")
    entry = DRIVERS[name]
    if cfg.get("task") is not None:
        if name != "sim_panda":
            raise ValueError(f"robot {name!r}: task={cfg['task']!r} needs robot sim_panda (native tasks use the Panda)")
        entry = TASK_DRIVER
    elif "task" in cfg:
        cfg = {k: v for k, v in cfg.items() if k != "task"}
    module, cls_name, cfg_name, fixed = entry
    mod = importlib.import_module(module)
    clash = sorted(set(fixed) & set(cfg))
    if clash:
        raise ConfigError(f"robot {name!r}: {clash} are fixed by the robot name")
    config = build_config(getattr(mod, cfg_name), {**fixed, **cfg}, f"robot {name!r}")
    return getattr(mod, cls_name)(config)


__all__ = ["DRIVERS", "INTERVENTION_DEVICES", "MODES", "Driver", "DriverError", "Intervention", "RobotInfo",
           "RobotState", "make_driver", "make_intervention"]
