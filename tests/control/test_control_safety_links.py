"""The safety layer keeps the sim Panda's arm links off the table (``RobotInfo.link_radii_m``).

The slow property test found an ee_delta sequence (replayed here) whose tilted wrist put ``link6_collision``
on the table at tick ~1105 while the EE and the gripper corners stayed in the box: the bounce drove joint 5
to 1.22x its speed limit. With the link spheres checked by the layer and by the driver's IK limiter there is
no contact and every ratio keeps the property tests' tolerance.
"""
import mujoco
import numpy as np

from armflow.control.limits import load_limits
from armflow.control.safety import SafetyLayer
from armflow.control.safety_audit import Trace, limit_ratios
from armflow.hardware.driver import MotionLimits, limit_joint_step, sphere_excess
from armflow.hardware.link_spheres import body_vertices
from armflow.hardware.sim_arm import SimArmConfig, SimArmDriver
from armflow.hardware.sim_scene import GRIPPER_BODIES

LIM = load_limits("sim_panda")
DT = 0.002  # 500 Hz servo tick [s]
TOL = 1.0 + 1e-3  # the property tests' tolerance (numerics only)
# (7 numbers in [-1, 1], ticks) segments of ee_delta actions 1.5 * u[:6], as hypothesis found them
FOUND = [([-0.9621779953399199, 0.0, 0.28045820032032087, 0.8175569722402694, -0.0030982502927907607, 0.0], 57),
         ([0.0] * 6, 5), ([0.0, 0.2497904566293483, 0.0, 0.0, 0.4560264048131908, 0.0], 185), ([0.0] * 6, 5),
         ([0.0, 0.0, 0.0, 0.0, 0.8910795499562321, 0.1431042176640942], 398),
         ([0.0, -0.39420731029653655, 0.0, 0.09920193433462843, 0.8910795499562321, 0.0], 188), ([0.0] * 6, 283)]


def _found_setpoints() -> np.ndarray:
    return np.concatenate([np.tile(1.5 * np.asarray(u), (n, 1)) for u, n in FOUND])


def _arm_table_contacts(driver: SimArmDriver) -> int:
    """Contacts of the table with any robot geom outside the gripper (the gripper has its own corner check)."""
    m, d = driver.model, driver.data
    table = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, "table")
    gripper = {mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, b) for b in GRIPPER_BODIES}
    n = 0
    for c in d.contact[: d.ncon]:
        other = c.geom2 if c.geom1 == table else c.geom1 if c.geom2 == table else None
        n += other is not None and m.geom_bodyid[other] not in gripper
    return n


def _replay(driver: SimArmDriver, layer: SafetyLayer) -> tuple[int, dict]:
    """The found sequence through ``layer.filter`` and the driver; (arm-table contact-ticks, limit ratios on
    the measured states and the servo targets)."""
    state = driver.read_state()
    layer.reset("ee_delta", state)
    trace, contacts = Trace(), 0

    def record(st) -> None:
        trace.q.append(st.joint_pos_rad.copy())
        trace.ee.append(st.ee_pos_m.copy())
        trace.quat.append(np.asarray(st.ee_quat_wxyz, float).copy())
        trace.q_target.append(driver.data.ctrl[: driver.dof].copy())

    record(state)
    for sp in _found_setpoints():
        safe, _ = layer.filter("ee_delta", sp, None, state, DT)
        driver.command("ee_delta", safe)
        state = driver.read_state()
        record(state)
        contacts += _arm_table_contacts(driver)
    return contacts, limit_ratios(trace, layer, DT)


def test_found_ee_delta_sequence_keeps_arm_links_off_the_table():
    """The servo's setup (layer + the driver told its motion limits): no link touches the table, and the
    measured joint speeds, EE speeds and box hold (joint 5 reached 1.22x before)."""
    driver = SimArmDriver(SimArmConfig())
    driver.connect()
    layer = SafetyLayer(LIM, driver.info(), fk=driver.forward_pose)
    driver.set_motion_limits(layer.motion_limits())
    assert layer.link_fk is not None and len(layer.link_radii) >= 10  # picked up from the driver's kinematics
    contacts, ratios = _replay(driver, layer)
    assert contacts == 0
    for key, r in ratios.items():
        assert r <= TOL, f"{key}: {r:.4f} x its limit"


def test_layer_alone_keeps_links_off_the_table_in_ee_delta():
    """A driver that ignores the motion limits (a vendor IK): the layer's own check (link spheres carried with
    the commanded EE pose) keeps the links off the table; without it the same sequence strikes it."""
    counts = []
    for with_links in (True, False):
        driver = SimArmDriver(SimArmConfig())
        driver.connect()
        layer = SafetyLayer(LIM, driver.info(), fk=driver.forward_pose)
        if not with_links:
            layer.link_fk = None
        counts.append(_replay(driver, layer)[0])
    assert counts[0] == 0 and counts[1] > 100, counts


def test_link_spheres_hold_every_link_vertex():
    """Each fitted sphere set holds all the mesh vertices of its link, at a pose away from home (the spheres
    ride on the links through ``forward_link_points``); every sphere starts inside the box at home."""
    driver = SimArmDriver(SimArmConfig())
    driver.connect()
    radii = np.asarray(driver.info().link_radii_m)
    assert sphere_excess(driver.forward_link_points(driver.read_state().joint_pos_rad), radii,
                         np.asarray(LIM.workspace_min_m), np.asarray(LIM.workspace_max_m)) == 0.0
    q = driver.read_state().joint_pos_rad + np.array([0.4, -0.3, 0.5, 0.3, -0.6, -0.4, 0.7])
    centres = driver.forward_link_points(q)
    data = driver._ik.data  # forward_link_points left the kinematics of q there
    links = driver._links
    for body in np.unique(links.body_ids):
        world = data.xpos[body] + body_vertices(driver.model, body) @ data.xmat[body].reshape(3, 3).T
        mine = links.body_ids == body
        dist = np.linalg.norm(world[:, None] - centres[mine][None], axis=2) - radii[mine][None]
        assert np.all(dist.min(axis=1) <= 1e-4), f"body {body}: a vertex {dist.min(axis=1).max():.4f} m outside"


def test_joint_step_brakes_a_link_sphere_before_the_floor():
    """``limit_joint_step`` with a toy arm whose one link sphere (r 5 cm) sits at height q[0] while the EE stays
    put: driven down at 1 rad/s it brakes to rest with the sphere on the floor of the box, never through it;
    without ``link_fk`` it goes straight through."""
    lim = MotionLimits(np.array([-5.0]), np.array([5.0]), np.array([2.0]), np.array([-1.0, -1.0, 0.015]),
                       np.array([1.0, 1.0, 1.2]), ee_vel_max_m_s=1.0, ee_rot_vel_max_rad_s=1.0, qdd_max_rad_s2=10.0,
                       link_radii_m=np.array([0.05]))
    fk = lambda q: (np.array([0.3, 0.0, 0.5]), np.array([1.0, 0, 0, 0]))  # noqa: E731
    link_fk = lambda q: np.array([[0.5, 0.0, q[0]]])  # noqa: E731
    lowest = []
    for links in (link_fk, None):
        q, v = np.array([0.4]), np.zeros(1)
        for _ in range(500):
            v = limit_joint_step(lim, q, np.array([-1.0]), v, DT, fk, link_fk=links)
            q = q + v * DT
        lowest.append(float(q[0]))
    assert 0.065 - 1e-9 <= lowest[0] < 0.07  # the sphere's bottom at z_min 0.015, within 5 mm
    assert lowest[1] < 0.0
