"""Teleop glue: a scripted device drives the sim task directly, through the sim task driver, and through the bridge."""
from __future__ import annotations

import numpy as np
import pytest

from armflow.hardware import make_driver
from armflow.hardware.teleop_session import DriverTarget, EnvTarget, run_teleop_episode


class ScriptedDevice:
    """Replays (action, events) pairs, then says "save"."""

    def __init__(self, n_up: int = 8, n_fwd: int = 4):
        self.script = ([np.array([0, 0, 1.0, 0, 0, 0, -1.0])] * n_up + [np.array([1.0, 0, 0, 0, 0, 0, 1.0])] * n_fwd)
        self.i = 0

    def reset(self):
        self.i = 0

    def read(self):
        if self.i >= len(self.script):
            return np.zeros(7), {"save"}
        self.i += 1
        return self.script[self.i - 1], set()


def _run(target):
    rows = []
    result = run_teleop_episode(target, ScriptedDevice(), lambda obs, a, *rest: rows.append((obs, a)), seed=3,
                                realtime=False)
    return result, rows


def test_task_driver_matches_the_env_step_for_step():
    from armflow.sim import make_env

    result_env, rows_env = _run(EnvTarget(make_env("lift")))
    driver = make_driver("sim_panda", task="lift")
    driver.connect()
    result_drv, rows_drv = _run(DriverTarget(driver))
    assert result_env == result_drv == {"outcome": "save", "steps": 12, "success": False}
    for (obs_e, a_e), (obs_d, a_d) in zip(rows_env, rows_drv):
        assert np.array_equal(a_e, a_d)
        assert np.allclose(obs_e["observation.state"], obs_d["observation.state"], atol=1e-6)
    z = [obs["observation.state"][2] for obs, _ in rows_drv]
    assert z[8] - z[0] > 0.15  # eight "up" steps of up to 5 cm


def test_task_driver_state_extras_and_contact_force():
    driver = make_driver("sim_panda", task="lift")
    driver.connect()
    s = driver.reset(seed=1)
    assert s.extras["observation.state"].shape == (8,) and s.extras["success"] is False
    assert s.extras["observation.environment_state"].shape == (10,)  # every env obs key reaches the bridge
    for _ in range(40):  # push down into the table
        s = driver.command("ee_delta", np.array([0, 0, -1.0, 0, 0, 0]), gripper=1.0) is not None and driver.read_state()
    assert s.ee_force_n[2] > 5.0  # the table pushes back up on the fingers
    assert driver.info().native_rate_hz == pytest.approx(20.0)


def test_teleop_through_the_bridge_records_a_dataset(tmp_path):
    from armflow.control.launch import ServerProcess
    from armflow.control.server import ServerConfig
    from armflow.data import LeRobotDataset
    from armflow.workflows.teleop import teleop_through_bridge

    cfg = ServerConfig(robot="sim_panda", robot_options={"task": "lift"}, endpoint=f"ipc://{tmp_path}/tele",
                       lockstep=True)
    with ServerProcess(cfg) as sp:
        summary = teleop_through_bridge(sp.endpoint, ScriptedDevice(), tmp_path / "ds", "lift", episodes=2,
                                        seed=5, realtime=False)
    assert summary["episodes_saved"] == 2 and summary["frames"] == 24
    ds = LeRobotDataset(tmp_path / "ds")
    ep = ds.episode(1)
    assert ds.num_episodes == 2 and ep["action"].shape == (12, 7)
    state = ep["observation.state"]
    assert state[8, 2] - state[0, 2] > 0.1 and state[-1, 0] - state[8, 0] > 0.05
