"""Issue 10: every limit of ``configs/safety_limits/sim_panda.yaml`` holds on what the arm is commanded and
on what it reaches, in every mode, for any setpoint sequence (hypothesis), on the MuJoCo sim Panda
(``SimArmDriver``, lockstep, 500 Hz) and on the fake arm, driven through ``SafetyLayer.filter`` + the real
driver. Ratios come from ``armflow.control.safety_audit`` (1.0 = at the limit).

Tolerances: the fake arm tracks perfectly, so its states must be within 0.2 % of the limits (see below). On the sim
arm the joint targets sent to the servos are checked with 0.2 % (their EE speed comes from scaling a
joint step linearly, and FK is not linear); the *measured* states may exceed
the limits by up to 30 %: the position servos (kp with damping ratio 1 computed at the home inertia) lag
a moving target and then catch up slightly faster than it, with the arm's inertial coupling (measured
worst case found 1.20, EE rotation speed after a reversal, with the targets at exactly 1.0).
"""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from armflow.control.fake_arm import FakeArm
from armflow.control.limits import load_limits
from armflow.control.safety import SafetyLayer
from armflow.control.safety_audit import drive, limit_ratios
from armflow.hardware.sim_arm import SimArmConfig, SimArmDriver

LIM = load_limits("sim_panda")
DT = 0.002  # 500 Hz servo tick [s]
MODES = ("joint_pos", "joint_vel", "ee_pose", "ee_delta")
SIM_TRACKING_TOL = 1.3  # measured-state slack on the sim arm (see the module docstring)
_SIM: dict = {}


def _sim():
    """One sim arm per test session (the model build takes ~1 s); reset before every example."""
    if "driver" not in _SIM:
        d = SimArmDriver(SimArmConfig())
        d.connect()
        layer = SafetyLayer(LIM, d.info(), fk=d.forward_pose)
        d.set_motion_limits(layer.motion_limits())
        _SIM["driver"] = d
    d = _SIM["driver"]
    d.reset()
    layer = SafetyLayer(LIM, d.info(), fk=d.forward_pose)
    return d, layer, lambda: d.data.ctrl[: d.dof].copy()


def _fake():
    d = FakeArm()
    d.connect()
    return d, SafetyLayer(LIM, d.info(), fk=d.forward_pose), None


def _setpoint(mode: str, q0: np.ndarray, u: np.ndarray) -> np.ndarray:
    """A wild setpoint from 7 numbers in [-1, 1]: far beyond every limit, in every direction."""
    if mode == "joint_pos":
        return q0 + 3.0 * u[: len(q0)]
    if mode == "joint_vel":
        return 5.0 * u[: len(q0)]
    if mode == "ee_pose":
        return np.concatenate([[0.3, 0.0, 0.45] + np.array([1.5, 1.5, 1.1]) * u[:3], u[3:7] + [1e-3, 0, 0, 0]])
    return 1.5 * u[:6]


segments = st.lists(st.tuples(st.lists(st.floats(-1, 1), min_size=7, max_size=7), st.integers(5, 120)),
                    min_size=1, max_size=5)


def _run(make, mode: str, segs) -> dict:
    driver, layer, targets = make()
    q0 = driver.read_state().joint_pos_rad
    sps = np.concatenate([np.repeat(_setpoint(mode, q0, np.array(u))[None], n, axis=0) for u, n in segs])
    return limit_ratios(drive(driver, layer, mode, sps, DT, targets), layer, DT)


def _check(ratios: dict, tol_measured: float) -> None:
    for key, r in ratios.items():
        # targets: a joint step scaled to an EE speed is scaled linearly, its FK chord is not (< 0.2 %)
        tol = 1.002 if key.startswith("target_") else tol_measured
        assert r <= tol, f"{key}: {r:.3f} x its limit (allowed {tol})"


@pytest.mark.parametrize("mode", MODES)
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                HealthCheck.function_scoped_fixture])
@given(segs=segments)
def test_sim_panda_stays_within_limits(mode, segs):
    _check(_run(_sim, mode, segs), SIM_TRACKING_TOL)


@pytest.mark.parametrize("mode", MODES)
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(segs=segments)
def test_fake_arm_stays_within_limits(mode, segs):
    _check(_run(_fake, mode, segs), 1.002)  # joint modes: EE speed through the FK chord, as for targets


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(segs=st.lists(st.tuples(st.lists(st.floats(-1, 1), min_size=7, max_size=7), st.integers(5, 400)),
                     min_size=1, max_size=8))
def test_sim_panda_stays_within_limits_long(mode, segs):
    """Longer search: the servo targets stay exact; the measured overshoot found here reached 1.30 (EE speed,
    ee_delta), so the measured states get 1.5 (the servo's tracking, not a limit the layer can enforce)."""
    _check(_run(_sim, mode, segs), 1.5)


def test_ee_delta_held_for_a_second_keeps_ee_and_joint_speeds():
    """The issue's case: +0.1 in ee_delta x for 1 s drove the sim Panda's EE at 3.1 m/s (limit 0.5) and its
    joints at 2.4x the allowed 0.5 vmax. The servo targets must stay within the limits exactly."""
    driver, layer, targets = _sim()
    r = limit_ratios(drive(driver, layer, "ee_delta", np.tile([0.1, 0, 0, 0, 0, 0], (500, 1)), DT, targets),
                     layer, DT)
    assert r["target_joint_vel"] <= 1.0 + 1e-6 and r["joint_vel"] <= SIM_TRACKING_TOL
    assert r["ee_vel"] * LIM.ee_vel_max_m_s <= 0.5  # [m/s], measured (3.1 before the fix)
    assert r["workspace"] <= 1.0 and r["target_workspace"] <= 1.0 + 1e-6
