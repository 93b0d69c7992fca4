"""The differential-IK arm controller: actions move the grip site where the OSC_POSE convention says."""
from __future__ import annotations

import numpy as np
import pytest

from armflow.sim.registry import make_env


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_position_action_moves_the_grip_site_along_that_axis(axis, sign):
    env = make_env("lift", init_qpos_noise_rad=0.0)
    env.reset(seed=0)
    start, quat0 = env.ee_pose()
    action = np.zeros(7, np.float32)
    action[axis] = 0.4 * sign
    action[6] = -1.0
    for _ in range(4):
        env.step(action)
    moved = env.ee_pose()[0] - start
    commanded = 4 * 0.4 * 0.05  # steps * |a| * max_dpos_m
    assert sign * moved[axis] > 0.4 * commanded  # servo lag: about half the nominal delta per step
    off_axis = np.delete(moved, axis)
    assert np.abs(off_axis).max() < 0.3 * abs(moved[axis])
    # orientation held: |<q0, q>| close to 1
    assert abs(float(np.dot(quat0, env.ee_pose()[1]))) > 0.995


def test_rotation_action_turns_about_world_z():
    env = make_env("lift", init_qpos_noise_rad=0.0)
    env.reset(seed=0)
    action = np.zeros(7, np.float32)
    action[5] = 0.4  # 0.2 rad per step about +z
    for _ in range(3):
        env.step(action)
    xmat = env.data.site_xmat[env.arm.site_id].reshape(3, 3)
    yaw = np.arctan2(xmat[1, 0], xmat[0, 0])  # grip-site x axis starts along world +x
    assert 0.35 < yaw < 0.7
    assert xmat[2, 2] < -0.99  # still pointing down


def test_gripper_action_opens_and_closes():
    env = make_env("lift")
    env.reset(seed=0)
    assert env.gripper_opening_m() == pytest.approx(0.08, abs=1e-3)
    close = np.zeros(7, np.float32)
    close[6] = 1.0
    for _ in range(4):
        env.step(close)
    assert env.gripper_opening_m() < 0.01
    env.step(-close)
    env.step(-close)
    assert env.gripper_opening_m() > 0.05


def test_ik_step_matches_a_finite_difference_of_forward_kinematics():
    """One DLS step for a small twist lands (to first order) where the twist points."""
    import mujoco

    env = make_env("lift", init_qpos_noise_rad=0.0)
    env.reset(seed=0)
    arm = env.arm
    arm.control = type(arm.control)(nullspace_gain=0.0, damping=1e-4)
    p0 = arm.ee_pos()
    dx = np.array([0.004, -0.003, 0.002, 0.0, 0.0, 0.0])
    env.data.qpos[:7] = arm.ik_step(dx)
    mujoco.mj_kinematics(env.model, env.data)
    np.testing.assert_allclose(arm.ee_pos() - p0, dx[:3], atol=2e-4)
