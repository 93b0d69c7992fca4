"""Safety layer properties (hypothesis): any chunk -> every setpoint within workspace/joint limits and
rate bounds; plus limits-file validation, force -> HOLD, mode gating and the resume check."""
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from armflow.control.fake_arm import FakeArm
from armflow.control.limits import LimitsError, limits_from_dict, load_limits
from armflow.control.safety import SafetyLayer, quat_angle
from armflow.control.scheduler import ChunkScheduler
from armflow.hardware.driver import RobotState

LIM = load_limits("sim_panda")
INFO = FakeArm().info()
MS = 1_000_000
Q0 = np.array([0.0, -0.3, 0.0, -2.2, 0.0, 2.0, 0.785])
DIMS = {"joint_pos": 7, "joint_vel": 7, "ee_pose": 7, "ee_delta": 6}


def _state(q=Q0, ee=(0.5, 0.0, 0.4), force=(0, 0, 0)):
    return RobotState(0, np.array(q, float), np.zeros(7), np.array(ee, float), np.array([0.0, 1, 0, 0]), 0.0,
                      np.array(force, float))


finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)


@st.composite
def chunks(draw):
    mode = draw(st.sampled_from(list(DIMS)))
    h = draw(st.integers(1, 24))
    acts = np.array(draw(st.lists(st.lists(finite, min_size=DIMS[mode], max_size=DIMS[mode]), min_size=h, max_size=h)))
    grip = np.array(draw(st.lists(st.floats(0, 1), min_size=h, max_size=h)))
    dt_ns = draw(st.integers(1 * MS, 200 * MS))
    t0_ns = draw(st.integers(-500 * MS, 500 * MS))
    return mode, acts, grip, dt_ns, t0_ns


def _assert_acc_within_limit(v: np.ndarray, prev_vel: np.ndarray, dt: float) -> None:
    """|dv| <= joint_acc_max * dt, except where braking for a joint limit overrides it (position limits win,
    README "Known limits"): there the joint only slows down, by at most 1.3x the acceleration limit."""
    dv, step = np.abs(v - prev_vel), LIM.joint_acc_max_rad_s2 * dt
    over = dv > step + 1e-6
    assert np.all(~over | ((np.abs(v) < np.abs(prev_vel)) & (dv <= 1.3 * step + 1e-6))), (v, prev_vel)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chunk_list=st.lists(chunks(), min_size=1, max_size=3), tick_ms=st.sampled_from([2, 10]))
def test_any_chunks_give_setpoints_within_limits(chunk_list, tick_ms):
    mode = chunk_list[0][0]
    safety, state = SafetyLayer(LIM, INFO), _state()
    safety.reset(mode, state)
    sched = ChunkScheduler(mode, DIMS[mode])
    dt = tick_ms / 1e3
    prev = safety.prev.copy()
    prev_vel = np.zeros(3) if mode in ("ee_pose", "ee_delta") else np.zeros(7)
    now, k = 0, 0
    for cid, (m, acts, grip, dt_ns, t0_ns) in enumerate(chunk_list):
        if m != mode:
            continue
        anchor = prev if mode in ("joint_pos", "ee_pose") else None
        sched.insert(cid, max(0, t0_ns + now), dt_ns, acts, grip, now, anchor)
        for _ in range(40):
            tick = sched.tick(now, prev)
            sp, g = safety.filter(mode, tick.setpoint, tick.gripper, state, dt)
            assert np.isfinite(sp).all() and (g is None or 0 <= g <= 1)
            if mode == "joint_pos":
                assert np.all(sp >= safety.q_lo - 1e-9) and np.all(sp <= safety.q_hi + 1e-9)
                v = (sp - prev) / dt
                assert np.all(np.abs(v) <= safety.qd_max + 1e-6)
                _assert_acc_within_limit(v, prev_vel, dt)
                prev_vel = v
            elif mode == "joint_vel":
                assert np.all(np.abs(sp) <= safety.qd_max + 1e-9)
                assert np.all(np.abs(sp - prev_vel) <= LIM.joint_acc_max_rad_s2 * dt + 1e-6)
                prev_vel = sp
            elif mode == "ee_pose":
                assert np.all(sp[:3] >= safety.box_lo - 1e-9) and np.all(sp[:3] <= safety.box_hi + 1e-9)
                v = (sp[:3] - prev[:3]) / dt
                assert np.linalg.norm(v) <= LIM.ee_vel_max_m_s + 1e-6
                assert np.linalg.norm(v - prev_vel) <= LIM.ee_acc_max_m_s2 * dt + 1e-6
                assert quat_angle(prev[3:], sp[3:]) <= LIM.ee_rot_vel_max_rad_s * dt + 1e-6
                assert abs(np.linalg.norm(sp[3:]) - 1) < 1e-9
                prev_vel = v
            else:
                assert np.all(np.abs(sp) <= LIM.ee_delta_max + 1e-12)
                v = sp[:3] * INFO.ee_delta_m_per_unit / dt  # the fake arm's units: metres per tick per unit
                assert np.linalg.norm(v) <= LIM.ee_vel_max_m_s + 1e-6
                assert np.linalg.norm(v - prev_vel) <= LIM.ee_acc_max_m_s2 * dt + 1e-6
                prev_vel = v
            prev = sp
            now += tick_ms * MS
            k += 1


TASK_INFO = replace(INFO, ee_delta_m_per_unit=0.05, ee_delta_rad_per_unit=0.5, ee_delta_anchor="measured",
                    ee_delta_tracking=(0.6, 0.7))  # the lift env's OSC, as SimTaskDriver declares it


def test_ee_delta_cannot_push_out_of_the_workspace():
    """The predicted pose (anchor + this step) is checked, not the measured pose before it (which let the
    arm overshoot the box by 5 cm): at the wall, outward components are zeroed, the rest passes."""
    safety = SafetyLayer(LIM, TASK_INFO)
    at_wall = _state(ee=(LIM.workspace_max_m[0], 0.0, LIM.workspace_min_m[2]))
    safety.reset("ee_delta", at_wall)
    sp, _ = safety.filter("ee_delta", np.array([0.3, 0.3, -0.3, 0, 0, 0]), None, at_wall, 0.05)
    np.testing.assert_allclose(sp[:3], [0.0, 0.3, 0.0], atol=1e-12)
    assert safety.clamps["workspace"] == 1
    near = _state(ee=(0.5, 0.0, LIM.workspace_min_m[2] + 0.01))  # a full -1 step would end 4 cm below z_min
    safety.reset("ee_delta", near)
    sp, _ = safety.filter("ee_delta", np.array([0, 0, -0.5, 0, 0, 0]), None, near, 0.05)
    assert near.ee_pos_m[2] + sp[2] * 0.05 >= LIM.workspace_min_m[2] - 1e-12


def test_ee_delta_from_outside_the_box_may_only_move_inward():
    safety = SafetyLayer(LIM, TASK_INFO)
    below = _state(ee=(0.5, 0.0, LIM.workspace_min_m[2] - 0.05))
    safety.reset("ee_delta", below)
    down, _ = safety.filter("ee_delta", np.array([0, 0, -0.3, 0, 0, 0]), None, below, 0.05)
    assert down[2] == 0.0
    up, _ = safety.filter("ee_delta", np.array([0, 0, 0.3, 0, 0, 0]), None, below, 0.05)
    assert up[2] > 0


def test_ee_delta_is_speed_limited_in_driver_units():
    """Issue 10: ee_delta was only clipped to |a| <= 1, whatever a unit means to the driver. With the sim
    arm's metres-per-tick units an action of 0.1 at 500 Hz asks for 50 m/s; it must come out <= 0.5 m/s,
    ramped at <= ee_acc_max, and rotation <= ee_rot_vel_max."""
    info = replace(INFO, ee_delta_m_per_unit=1.0, ee_delta_rad_per_unit=1.0)
    safety, state, dt = SafetyLayer(LIM, info), _state(), 0.002
    safety.reset("ee_delta", state)
    v_prev = np.zeros(3)
    for _ in range(200):
        sp, _ = safety.filter("ee_delta", np.array([0.1, 0, 0, 0, 0, 0.1]), None, state, dt)
        v = sp[:3] / dt
        assert np.linalg.norm(v) <= LIM.ee_vel_max_m_s + 1e-9
        assert np.linalg.norm(v - v_prev) <= LIM.ee_acc_max_m_s2 * dt + 1e-9
        assert np.linalg.norm(sp[3:]) / dt <= LIM.ee_rot_vel_max_rad_s + 1e-9
        v_prev = v
    assert np.linalg.norm(v) == pytest.approx(LIM.ee_vel_max_m_s)


def test_joint_vel_limits_the_integrated_target_not_the_measured_q():
    """Issue 10: the margin was checked on the measured q while the driver integrated its own target, so a
    lagging arm let the target reach the hard limit. Here the measured q never moves."""
    safety, state, dt = SafetyLayer(LIM, INFO), _state(), 0.002
    safety.reset("joint_vel", state)
    q_cmd = state.joint_pos_rad.copy()
    for _ in range(3000):
        qd, _ = safety.filter("joint_vel", np.full(7, 5.0), None, state, dt)
        q_cmd = q_cmd + qd * dt
    assert np.all(q_cmd <= safety.q_hi + 1e-9)
    assert np.any(q_cmd >= safety.q_hi - 1e-3)  # it did run to the margin


def test_in_range_ee_delta_passes_unchanged():
    """Lockstep equivalence needs actions within the limits untouched (bit-identical): the lift env's
    OSC units (0.05 m, 0.5 rad per unit per 50 ms step), |a_xyz| <= 0.7 and |a_rot| <= 0.2 like its expert."""
    safety, state = SafetyLayer(LIM, TASK_INFO), _state()
    safety.reset("ee_delta", state)
    rng = np.random.default_rng(0)
    a = np.zeros(6)
    for _ in range(50):
        a = np.clip(a + rng.uniform(-0.1, 0.1, 6), [-0.4] * 3 + [-0.1] * 3, [0.4] * 3 + [0.1] * 3)
        sp, _ = safety.filter("ee_delta", a, 0.5, state, 0.05)
        np.testing.assert_array_equal(sp, a)
    assert sum(safety.clamps.values()) == 0


def test_force_threshold_and_mode_gating_and_resume():
    safety = SafetyLayer(LIM, INFO)
    assert not safety.force_exceeded(_state(force=(0, 0, LIM.force_max_n * 0.9)))
    assert safety.force_exceeded(_state(force=(0, 0, LIM.force_max_n * 1.1)))
    assert safety.clamps["force_hold"] == 1
    assert safety.check_mode("joint_pos")
    gated = SafetyLayer(limits_from_dict({**LIM.to_dict(), "allowed_modes": ["joint_pos"]}), INFO)
    assert not gated.check_mode("ee_delta")
    ok, _ = safety.resume_ok("joint_pos", Q0 + 0.5 * LIM.max_resume_delta_rad, _state())
    far, dist = safety.resume_ok("joint_pos", Q0 + 2 * LIM.max_resume_delta_rad, _state())
    assert ok and not far and dist == pytest.approx(2 * LIM.max_resume_delta_rad)


def test_limits_file_validation_and_hash():
    d = LIM.to_dict()
    assert len(LIM.hash) == 16 and limits_from_dict(dict(d)).hash == LIM.hash
    assert limits_from_dict({**d, "force_max_n": 10.0}).hash != LIM.hash
    for bad in ({**d, "version": 99}, {**d, "typo_key": 1}, {**d, "workspace_min_m": [0, 0]},
                {**d, "allowed_modes": ["fly"]}, {**d, "ee_vel_max_m_s": float("nan")}):
        with pytest.raises(LimitsError):
            limits_from_dict(bad)
    with pytest.raises(LimitsError, match="bundled limits"):
        load_limits("no_such_robot")


def test_lift_task_keeps_its_own_limits_file_under_the_scripted_expert():
    """``sim_task_lift.yaml`` states the joint speed the lift env's OSC reaches (the layer cannot enforce joint
    speeds on that driver without changing the trained dynamics): the scripted expert through the layer
    succeeds untouched (0 clamps) and every measured joint and EE speed stays within that file; under
    sim_panda.yaml's 0.5 vmax the same run reaches 1.19x."""
    from armflow.hardware.sim_task import SimTaskConfig, SimTaskDriver
    from armflow.sim.experts import make_expert

    lim = load_limits("sim_task_lift")
    driver = SimTaskDriver(SimTaskConfig(seed=11))
    driver.connect()
    layer = SafetyLayer(lim, driver.info())
    driver.set_motion_limits(layer.motion_limits())
    dt, state = driver.env.ctrl_dt, driver.reset(11)
    layer.reset("ee_delta", state)
    expert = make_expert(driver.env)
    expert.reset()
    joint_ratio = ee_ratio = 0.0
    for _ in range(driver.env.max_episode_steps):
        a = expert(state.extras)
        safe, grip = layer.filter("ee_delta", a[:6].astype(float), (a[6] + 1) / 2, state, dt)
        before = state
        driver.command("ee_delta", safe, grip)
        state = driver.read_state()
        dq = np.abs(state.joint_pos_rad - before.joint_pos_rad)
        joint_ratio = max(joint_ratio, float(np.max(dq / dt / layer.qd_max)))
        ee_ratio = max(ee_ratio, float(np.linalg.norm(state.ee_pos_m - before.ee_pos_m)) / dt / lim.ee_vel_max_m_s)
        if state.extras["terminated"] or state.extras["truncated"]:
            break
    driver.close()
    assert state.extras["success"] and sum(layer.clamps.values()) == 0
    assert joint_ratio <= 1.0 and ee_ratio <= 1.0
    assert joint_ratio * lim.joint_vel_scale > load_limits("sim_panda").joint_vel_scale  # why the file exists


def test_a_served_sim_task_defaults_to_its_own_limits_file():
    from armflow.control.limits import default_limits_name, load_limits

    assert default_limits_name("sim_panda", {"task": "lift"}) == "sim_task_lift"
    assert default_limits_name("sim_panda", {}) == "sim_panda"
    assert default_limits_name("sim_panda", {"task": "pick_either"}) == "sim_panda"  # no file of its own
    assert load_limits("sim_task_lift").joint_vel_scale > load_limits("sim_panda").joint_vel_scale
