"""``CubeEnv``: the native Panda + cube(s) Gymnasium env shared by ``lift``, ``lift_hard`` and ``pick_either``.

Success = some cube is held between both finger pads and raised ``lift_height_m`` above its
resting height; it ends the episode as ``terminated``. The time limit is ``truncated``.

Observations follow LeRobot's convention (``sim/obs_layout.py``): robot proprioception in
``observation.state`` (float32, D_s = 8), the cubes' state in ``observation.environment_state``
(float32, 10 * n_cubes; 10 for lift, 20 for pick_either), privileged: a real arm does not measure it.

==========================================  =====  ==========================================================
slice                                       size   content
==========================================  =====  ==========================================================
observation.state[0:3]                      3      grip-site position [m], world frame
observation.state[3:7]                      4      grip-site quaternion wxyz, sign on the hemisphere of (0, 1, 0, 0)
observation.state[7]                        1      gripper opening [m] (0 closed, ~0.08 open)
observation.environment_state[10i:10i+3]    3      cube i position [m]
observation.environment_state[10i+3:10i+7]  4      cube i quaternion wxyz, sign with w >= 0; turned > 45 deg:
                                                   its symmetric pose nearest the identity (a cube has 24)
observation.environment_state[10i+7:10i+10] 3      cube i position - grip-site position [m]
(``cube_orientation_obs=False``: 6 per cube, the position and the position relative to the grip site)
==========================================  =====  ==========================================================

Joint angles are not in the state: actions are end-effector deltas, so the ee pose is the controlled
quantity; the joints follow from it through the env's IK (up to a null space it holds near home), and an
ee-space state is the same on every arm the bridge drives (Panda, UR5e, xArm7), joint vectors are not.
They stay available as ``env.joint_pos()``. ``state_layout="combined"`` gives the layout before the split:
one ``observation.state`` (D_s = 8 + 10 * n_cubes) = the state above followed by the environment state.
"""
from __future__ import annotations

import math

import gymnasium as gym
import mujoco
import numpy as np

from armflow.sim.arm import ArmControlConfig, PandaArm, quat_canonical
from armflow.sim.arm_mjcf import HOME_EE_QUAT, load_model
from armflow.sim.obs_layout import ENV_STATE_KEY, STATE_KEY
from armflow.sim.registry import RENDER_MODES, check_render_mode
from armflow.sim.tasks.config import CubeTaskConfig

CAMERAS = ("agentview", "wrist", "topview", "video")
VIDEO_SIZE = 256  # render_video() side [px]
_EE_REF_AXIS = 1  # grip-site quat sign: on HOME_EE_QUAT's hemisphere, i.e. quat . (0, 1, 0, 0) = quat[1] >= 0
assert HOME_EE_QUAT == (0.0, 1.0, 0.0, 0.0), "update _EE_REF_AXIS with HOME_EE_QUAT"
_CUBE_REF = np.array((1.0, 0.0, 0.0, 0.0))
class _Gather:
    """Some entries of a buffer, read when the obs is built (``astype`` like the plain views beside it)."""

    def __init__(self, buf: np.ndarray, index: np.ndarray):
        self.buf, self.index = buf, index

    def astype(self, dtype) -> np.ndarray:
        return self.buf[self.index].astype(dtype)


_SYM_FAST_W = math.cos(math.pi / 8)  # w >= this: rotation < 45 deg, identity is already the nearest symmetric pose


def _cube_rotations() -> np.ndarray:
    """The cube's 24 proper symmetry rotations as matrices (24, 3, 3): signed permutations with det +1."""
    import itertools

    out = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1.0, -1.0), repeat=3):
            m = np.zeros((3, 3))
            m[range(3), perm] = signs
            if np.linalg.det(m) > 0:
                out.append(m)
    return np.array(out)


_CUBE_SYMMETRIES = _cube_rotations()


def cube_symmetric_canonical(quat_wxyz: np.ndarray) -> np.ndarray:
    """The orientation (wxyz, w >= 0) of the same cube that is nearest the identity: all six faces look alike, so
    a cube knocked onto another face is observed as the flat cube it is (a policy that only saw flat cubes would
    read a flipped one as 50 std away). ``R S`` over the 24 symmetries S, the one with the largest trace."""
    r = np.zeros(9)
    mujoco.mju_quat2Mat(r, np.asarray(quat_wxyz, np.float64))
    cands = r.reshape(3, 3) @ _CUBE_SYMMETRIES
    best = cands[int(np.argmax(np.trace(cands, axis1=1, axis2=2)))]
    out = np.zeros(4)
    mujoco.mju_mat2Quat(out, best.reshape(-1))
    return out if out[0] >= 0 else -out


class CubeEnv(gym.Env):
    """Panda on a table with ``len(cfg.cube_centers_xy_m)`` cubes; lifting any one of them succeeds."""

    metadata = {"render_modes": list(RENDER_MODES), "render_fps": 20.0}

    def __init__(self, cfg: CubeTaskConfig, task_name: str, render_mode: str | None = None):
        self.cfg, self.task_name = cfg, task_name
        self.render_mode = check_render_mode(render_mode, task_name)
        self.n_cubes = len(cfg.cube_centers_xy_m)
        self.model = load_model(self.n_cubes, cfg.cube_half_m, cfg.sim_dt_s)
        self._data = mujoco.MjData(self.model)
        self._dynamics_stale = False  # see the ``data`` property
        self.arm = PandaArm(self.model, self._data, ArmControlConfig(cfg.max_dpos_m, cfg.max_drot_rad))
        self.joint_names = self.arm.joint_names
        self.sim_dt = float(self.model.opt.timestep)
        self.n_substeps = int(round((1.0 / cfg.ctrl_hz) / self.sim_dt))
        self.ctrl_dt = self.n_substeps * self.sim_dt
        self.metadata = {**CubeEnv.metadata, "render_fps": 1.0 / self.ctrl_dt}
        self.max_episode_steps = None if cfg.max_episode_steps is None else int(cfg.max_episode_steps)
        self.rest_height_m = float(cfg.cube_half_m)  # cube centre z when resting on the table
        bad = [c for c in cfg.cameras if c not in CAMERAS]
        if bad:
            raise ValueError(f"{task_name}: unknown camera(s) {bad}; valid cameras: {', '.join(CAMERAS)}")
        self._cube_qpos = [self.model.jnt_qposadr[self._id("joint", f"cube{i}_joint")] for i in range(self.n_cubes)]
        self._cube_index = {self._id("geom", f"cube{i}"): i for i in range(self.n_cubes)}  # geom id -> cube
        self._pad_side = {self._id("geom", "left_pad"): 0, self._id("geom", "right_pad"): 1}
        self.proprio_dim, self.object_dim = 8, 10 * self.n_cubes
        combined = cfg.state_layout == "combined"
        self.state_dim = self.proprio_dim + self.object_dim if combined else self.proprio_dim
        per_cube = 10 if cfg.cube_orientation_obs else 6
        self.env_state_dim = 0 if combined else per_cube * self.n_cubes  # observation.environment_state (absent when 0)
        self.observation_space = gym.spaces.Dict(self._obs_spaces())
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(7,), dtype=np.float32)
        self._renderer = None
        self._video_renderer = None
        self._steps = 0
        self._init_views()

    def _init_views(self) -> None:
        """Views for ``_obs`` (few numpy calls, as in ``PandaArm._init_buffers``): into MjData and into one float64
        state buffer, proprio ++ objects, the obs before the float32 cast."""
        d, p = self._data, self.proprio_dim
        buf = self._state_buf = np.zeros(p + self.object_dim)
        self._ee_pos, self._ee_xmat = d.site_xpos[self.arm.site_id], d.site_xmat[self.arm.site_id]
        self._buf_ee, self._buf_quat = buf[0:3], buf[3:7]
        # per cube: (its qpos pos+quat, its pos, buffer pos+quat, buffer quat, buffer cube - ee)
        self._cube_views = [(d.qpos[a : a + 7], d.qpos[a : a + 3], buf[b : b + 7], buf[b + 3 : b + 7],
                             buf[b + 7 : b + 10]) for a, b in zip(self._cube_qpos, range(p, len(buf), 10))]
        combined = self.cfg.state_layout == "combined"  # one vector, the layout before the split (sim/obs_layout.py)
        objects = buf[p:]
        if not self.cfg.cube_orientation_obs:  # position and position relative to the grip site only, per cube
            objects = _Gather(buf[p:], np.array([10 * i + j for i in range(self.n_cubes) for j in (0, 1, 2, 7, 8, 9)]))
        self._obs_views = [(STATE_KEY, buf)] if combined else [(STATE_KEY, buf[:p]), (ENV_STATE_KEY, objects)]

    @property
    def data(self) -> mujoco.MjData:
        """The ``MjData``, every ``mj_forward`` quantity current. ``step`` ends after MuJoCo's position and velocity
        stages (kinematics, contacts: all the env and the next step need); accelerations and contact forces
        (``mj_contactForce``) for the new state are computed here, on the first access after a step."""
        if self._dynamics_stale:
            mujoco.mj_forward(self.model, self._data)
            self._dynamics_stale = False
        return self._data

    def _id(self, kind: str, name: str) -> int:
        return mujoco.mj_name2id(self.model, getattr(mujoco.mjtObj, f"mjOBJ_{kind.upper()}"), name)

    def _obs_spaces(self) -> dict:
        spaces = {STATE_KEY: gym.spaces.Box(-np.inf, np.inf, (self.state_dim,), np.float32)}
        if self.env_state_dim:
            spaces[ENV_STATE_KEY] = gym.spaces.Box(-np.inf, np.inf, (self.env_state_dim,), np.float32)
        side = self.cfg.image_size
        for cam in self.cfg.cameras:
            spaces[f"observation.images.{cam}"] = gym.spaces.Box(0, 255, (side, side, 3), np.uint8)
        return spaces

    # ----- privileged state (experts, bridge sim driver) -----------------------------------------
    def ee_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """(grip-site position (3,) [m], quaternion wxyz (4,)), world frame."""
        return self.arm.ee_pose()

    def joint_pos(self) -> np.ndarray:
        """Arm joint angles (7,) [rad], in ``joint_names`` order."""
        return self.arm.joint_pos()

    def gripper_opening_m(self) -> float:
        return self.arm.gripper_opening_m()

    def cube_pos(self, i: int) -> np.ndarray:
        """Cube ``i`` centre (3,) [m], world frame."""
        a = self._cube_qpos[i]
        return self._data.qpos[a : a + 3].copy()

    def cube_quat(self, i: int) -> np.ndarray:
        """Cube ``i`` orientation (4,) wxyz, w >= 0."""
        a = self._cube_qpos[i]
        return quat_canonical(self._data.qpos[a + 3 : a + 7].copy(), _CUBE_REF)

    def cube_yaw_rad(self, i: int) -> float:
        """Cube ``i`` yaw about world z [rad], in (-pi, pi]."""
        w, x, y, z = self._data.qpos[self._cube_qpos[i] + 3 : self._cube_qpos[i] + 7]
        return float(np.arctan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z)))

    def grasped(self, i: int) -> bool:
        """Both finger pads are in contact with cube ``i``."""
        return self._grasp_flags()[i]

    def _grasp_flags(self) -> list[bool]:
        """Per cube: both finger pads touch it (plain Python over the few contacts: faster than numpy)."""
        touches = [[False, False] for _ in range(self.n_cubes)]
        pad_side, cube_index = self._pad_side, self._cube_index
        for g1, g2 in self._data.contact.geom.tolist():  # the list holds the ncon active contacts
            side = pad_side.get(g2)
            if side is not None and g1 in cube_index:
                touches[cube_index[g1]][side] = True
            side = pad_side.get(g1)
            if side is not None and g2 in cube_index:
                touches[cube_index[g2]][side] = True
        return [left and right for left, right in touches]

    # ----- gymnasium API -------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        rng = self.np_random
        mujoco.mj_resetData(self.model, self._data)
        noise = self.cfg.init_qpos_noise_rad
        self.arm.set_home(self.arm.q_home + rng.uniform(-noise, noise, size=7))
        xy_range = np.asarray(self.cfg.cube_xy_range_m, dtype=float)
        yaw_range = self.cfg.cube_yaw_range_rad
        for i, centre in enumerate(self.cfg.cube_centers_xy_m):
            xy = np.asarray(centre, dtype=float) + rng.uniform(-xy_range, xy_range)
            yaw = rng.uniform(-yaw_range, yaw_range) if yaw_range > 0 else 0.0
            a = self._cube_qpos[i]
            self._data.qpos[a : a + 3] = (xy[0], xy[1], self.rest_height_m)
            self._data.qpos[a + 3 : a + 7] = (np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2))
        mujoco.mj_forward(self.model, self._data)
        self._steps, self._dynamics_stale = 0, False
        return self._obs(), {"success": False}

    def step(self, action):
        action = np.asarray(action, dtype=np.float64).reshape(-1)
        if action.shape != (7,):
            raise ValueError(f"{self.task_name}: action must have shape (7,), got {action.shape}")
        self.arm.apply_action(action)
        # The first substep's position/velocity stages are those of the mj_step1 that ended the last step (or
        # reset's mj_forward): mj_step2 runs the rest of mj_step, so the physics is bit for bit n_substeps
        # mj_steps. Whoever edits qpos/qvel between steps must mj_forward (as the IK already needed).
        mujoco.mj_step2(self.model, self._data)
        if self.n_substeps > 1:
            mujoco.mj_step(self.model, self._data, nstep=self.n_substeps - 1)
        mujoco.mj_step1(self.model, self._data)  # kinematics and contacts of the new state: all the env reads
        self._dynamics_stale = True
        self._steps += 1
        obs = self._obs()
        terms, success, mode = self._reward_terms(self._state_buf.tolist())
        terminated = success and self.cfg.terminate_on_success
        truncated = (not terminated) and self.max_episode_steps is not None and self._steps >= self.max_episode_steps
        info = {"success": success, "reward_terms": terms, "mode": mode}
        return obs, float(sum(terms.values())), terminated, truncated, info

    def _reward_terms(self, state: list[float]) -> tuple[dict[str, float], bool, int]:
        """Dense shaped reward terms for the best cube (the one closest to being lifted), success, and
        that cube's index (the mode: which of several equally good cubes the policy went for).
        ``state``: ``_state_buf`` as filled by ``_obs`` (ee position at 0:3, cube i's position at 8 + 10 i)."""
        cfg, ee = self.cfg, state[0:3]
        grasp_flags = self._grasp_flags()
        best, best_total, success = None, -math.inf, False
        for i in range(self.n_cubes):
            pos = state[self.proprio_dim + 10 * i : self.proprio_dim + 10 * i + 3]
            grasped = grasp_flags[i]
            height = pos[2] - self.rest_height_m
            lifted = grasped and height > cfg.lift_height_m
            terms = {
                "reach": cfg.reach_weight * (1.0 - math.tanh(10.0 * math.dist(pos, ee))),
                "grasp": cfg.grasp_weight * float(grasped),
                "lift": cfg.lift_weight * float(grasped) * min(max(height / cfg.lift_height_m, 0.0), 1.0),
                "success": cfg.success_bonus * float(lifted),
            }
            total = sum(terms.values())
            if total > best_total:
                best, best_total, mode = terms, total, i
            success = success or lifted
        return best, success, mode

    def _obs(self) -> dict[str, np.ndarray]:
        """Fill ``_state_buf`` from the sim (kinematics must be fresh) and return the obs dict (float32 copies)."""
        ee, quat = self._ee_pos, self._buf_quat
        np.copyto(self._buf_ee, ee)
        mujoco.mju_mat2Quat(quat, self._ee_xmat)
        if not quat[_EE_REF_AXIS] >= 0.0:
            np.negative(quat, out=quat)
        self._state_buf[7] = self.arm.gripper_opening_m()
        for cube, cube_pos, dst, dst_quat, dst_rel in self._cube_views:
            np.copyto(dst, cube)
            if not cube[3] >= 0.0:
                np.negative(dst_quat, out=dst_quat)
            if dst_quat[0] < _SYM_FAST_W:  # turned > 45 deg: the same cube as its nearest symmetric pose
                dst_quat[:] = cube_symmetric_canonical(dst_quat)
            np.subtract(cube_pos, ee, out=dst_rel)
        obs = {key: view.astype(np.float32) for key, view in self._obs_views}
        for cam in self.cfg.cameras:
            obs[f"observation.images.{cam}"] = self.render(cam)
        return obs

    def render(self, camera: str | None = None) -> np.ndarray:
        """uint8 (image_size, image_size, 3) offscreen frame from ``camera`` (default: first obs camera or agentview).

        Returns a frame whatever ``render_mode`` is (armflow's callers record videos from envs made without one)."""
        name = camera or (self.cfg.cameras[0] if self.cfg.cameras else "agentview")
        if name not in CAMERAS:
            raise ValueError(f"{self.task_name}: unknown camera {name!r}; valid cameras: {', '.join(CAMERAS)}")
        if self._renderer is None:
            self._renderer = mujoco.Renderer(self.model, self.cfg.image_size, self.cfg.image_size)
        self._renderer.update_scene(self._data, camera=name)
        return self._renderer.render().copy()

    def render_video(self) -> np.ndarray:
        """uint8 (256, 256, 3) frame from the 3/4 "video" camera, for rollout videos a person watches."""
        if self._video_renderer is None:
            self._video_renderer = mujoco.Renderer(self.model, VIDEO_SIZE, VIDEO_SIZE)
        self._video_renderer.update_scene(self._data, camera="video")
        return self._video_renderer.render().copy()

    def close(self) -> None:
        if self._video_renderer is not None:
            self._video_renderer.close()
            self._video_renderer = None
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
