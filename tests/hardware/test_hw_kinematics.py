"""The one damped least-squares core: it is the closed form, and the native tasks' OSC step is built on it."""
from __future__ import annotations

import numpy as np
import pytest

from armflow.hardware.kinematics import damped_pinv


@pytest.mark.parametrize("n", [6, 7])
def test_damped_pinv_is_the_closed_form(n):
    rng = np.random.default_rng(n)
    jac, x = rng.normal(size=(6, n)), rng.normal(size=6)
    expected = jac.T @ np.linalg.solve(jac @ jac.T + 0.05**2 * np.eye(6), x)
    pinv = damped_pinv(jac, 0.05)
    np.testing.assert_allclose(pinv(x), expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(pinv(x), expected, rtol=1e-10, atol=1e-12)  # the factor is reused intact


def test_native_osc_step_is_dls_plus_the_damped_nullspace_pull():
    from armflow.sim import make_env

    env = make_env("lift")
    env.reset(seed=0)
    arm = env.unwrapped.arm
    dx = np.array([0.02, -0.01, 0.01, 0.1, 0.0, -0.1])
    q = arm.joint_pos()
    target = arm.ik_step(dx)
    arm.ik_step(dx)  # fills arm._jac for the check below (kinematics unchanged in between)
    jac, cfg = arm._jac.copy(), arm.control
    inv = jac.T @ np.linalg.inv(jac @ jac.T + cfg.damping**2 * np.eye(6))
    v = cfg.nullspace_gain * (arm.q_home - q)
    dq = np.clip(inv @ dx + v - inv @ (jac @ v), -cfg.max_dq_rad, cfg.max_dq_rad)
    np.testing.assert_allclose(target, np.clip(q + dq, arm.q_low, arm.q_high), atol=1e-12)
