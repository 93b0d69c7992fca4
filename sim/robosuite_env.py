"""robosuite adapter: Lift, Can (PickPlaceCan) and Square (NutAssemblySquare) behind armflow's Gymnasium API.

- Panda, the robot's default composite controller (BASIC with an OSC_POSE arm: 7-D action =
  delta eef position (3; 1.0 = 5 cm), delta axis-angle (3; 1.0 = 0.5 rad), gripper (1; -1 open,
  +1 closed)), 20 Hz control (25 physics substeps of 2 ms), ``reward_shaping=True``,
  ``hard_reset=False``, no robosuite renderer.
- LeRobot's split (``sim/obs_layout.py``): ``observation.state`` float32 (9,) = robot proprioception
  ``[eef_pos (3) [m], eef_quat (4, w x y z), gripper_qpos (2) [m]]``; ``observation.environment_state`` float32 =
  robosuite's object observables in its order (quaternions also converted to w x y z): Lift (10,) (cube_pos,
  cube_quat, gripper_to_cube_pos = cube - eef); Can and Square (14,) (<obj>_to_robot0_eef_pos/quat, <obj>_pos,
  <obj>_quat). ``env.obs_fields[key]`` lists ``(name, dim)`` in order, ``env.field(obs, name)`` reads one.
  ``state_layout="combined"``: one ``observation.state`` = proprioception then objects (the layout before
  the split; Lift 19, Can and Square 23).
- Images (``cameras=("agentview", ...)``) and ``render()`` come from ``mujoco.Renderer`` on robosuite's
  own model, collision geoms hidden (as robosuite does), shadows, multisampling and reflections off
  (OSMesa renders the ~350k-vertex Panda meshes in ~17 ms per 84x84 frame that way, vs ~100 ms with
  robosuite's offscreen renderer at default quality); frames are upright (row 0 = top), uint8 (H, W, 3).
- Success is robosuite's ``_check_success()``; success ends the episode (``terminated``), the time
  limit ``max_episode_steps`` truncates it. ``info["reward_terms"] = {"task": robosuite reward}``.
- ``reset(seed)`` re-seeds robosuite's shared RNG (placement sampler, robot init noise) in place, so a
  seed gives the same initial state every time, in every process. Some randomness is drawn when
  robosuite builds the model (the Lift cube's size, 2.0-2.2 cm): with ``hard_reset=False`` the model is
  built once, from ``model_seed``, so all envs with the same ``model_seed`` share it.

Why defaults matter for speed: ``suite.make("Lift", robots="Panda")`` renders a 256x256 "agentview"
camera every step (``use_camera_obs=True``) at full render quality under OSMesa (~11 steps/s);
without the camera robosuite steps at ~100 steps/s on one core, all in its Python controller loop.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from armflow.configs import ConfigError, build_config
from armflow.sim.obs_layout import ENV_STATE_KEY, STATE_KEY, check_state_layout
from armflow.sim.registry import RENDER_MODES, check_render_mode

# MuJoCo picks its GL backend when first imported: default to OSMesa (EGL does not work on CPU boxes)
os.environ.setdefault("MUJOCO_GL", "osmesa")
os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")

_PROPRIO = ("robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos")
_NO_HORIZON = 2**31 - 1  # robosuite needs an int horizon; with ignore_done=True it never ends an episode


@dataclass(frozen=True)
class RobosuiteConfig:
    """Adapter config; every field except ``env_name``/``task_name`` can be overridden per task."""

    env_name: str  # robosuite environment class name
    task_name: str  # armflow registry name
    max_episode_steps: int | None = 200  # None: no own limit (gym.make's TimeLimit owns it)
    robot: str = "Panda"
    control_freq_hz: float = 20.0
    cameras: tuple[str, ...] = ()  # robosuite camera names -> observation.images.<cam>
    image_size: int = 84  # camera images are (image_size, image_size, 3)
    render_camera: str = "agentview"  # render(camera=None) uses this one
    render_size: int = 256
    reward_shaping: bool = True
    hard_reset: bool = False
    model_seed: int = 0  # seeds robosuite's model-build randomness (e.g. Lift cube size), see module doc
    state_layout: str = "split"  # split | combined (proprio and objects in one observation.state, as before)


class _QuietRobosuite(logging.Filter):
    """Drops robosuite's INFO/WARNING chatter (missing macros file, controller config paths)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR


def _import_robosuite():
    """Import robosuite lazily with quiet logs (software GL is chosen at module import, above)."""
    logger = logging.getLogger("robosuite_logs")
    if not any(isinstance(f, _QuietRobosuite) for f in logger.filters):
        logger.addFilter(_QuietRobosuite())
    import robosuite

    return robosuite


def _xyzw_to_wxyz(q: np.ndarray) -> np.ndarray:
    return np.concatenate([q[3:4], q[:3]])


class RobosuiteEnv(gym.Env):
    """One robosuite task as a ``gymnasium.Env`` with armflow's obs/action layout (see module docstring)."""

    metadata = {"render_modes": list(RENDER_MODES), "render_fps": 20.0}

    def __init__(self, config: RobosuiteConfig, render_mode: str | None = None):
        import mujoco

        self.render_mode = check_render_mode(render_mode, config.task_name)
        check_state_layout(config.state_layout, config.task_name)
        if config.max_episode_steps is not None and config.max_episode_steps < 1:
            raise ValueError(f"{config.task_name}: need max_episode_steps >= 1 (or None), "
                             f"got {config.max_episode_steps}")
        suite = _import_robosuite()
        self.config = config
        self.task_name = config.task_name
        controller = suite.load_composite_controller_config(robot=config.robot)
        arm = controller["body_parts"].get("arms", controller["body_parts"]).get("right", {})
        if arm.get("type") != "OSC_POSE":
            raise ValueError(f"robosuite: expected an OSC_POSE arm controller for {config.robot}, got {arm!r}")
        self.raw = suite.make(
            config.env_name, robots=config.robot, controller_configs=controller,
            has_renderer=False, has_offscreen_renderer=False, use_camera_obs=False, use_object_obs=True,
            reward_shaping=config.reward_shaping, control_freq=config.control_freq_hz,
            horizon=config.max_episode_steps or _NO_HORIZON, ignore_done=True, hard_reset=config.hard_reset,
            seed=config.model_seed)
        self.ctrl_dt = 1.0 / float(config.control_freq_hz)
        self.sim_dt = float(self.raw.model_timestep)
        self.metadata = {**RobosuiteEnv.metadata, "render_fps": float(config.control_freq_hz)}
        self.max_episode_steps = None if config.max_episode_steps is None else int(config.max_episode_steps)
        self._closed = False
        self._mj_model, self._mj_data = self.raw.sim.model._model, self.raw.sim.data._data
        self._mj_model.vis.quality.shadowsize = 0  # see module docstring (render speed)
        self._mj_model.vis.quality.offsamples = 0
        self._mujoco = mujoco
        self._renderers: dict[int, Any] = {}
        self._scene_option = mujoco.MjvOption()
        self._scene_option.geomgroup[0] = 0  # robosuite's collision geoms (it hides them too)
        valid_cams = set(self.raw.sim.model.camera_names)
        bad = [c for c in (*config.cameras, config.render_camera) if c not in valid_cams]
        if bad:
            raise ValueError(f"robosuite/{config.env_name}: unknown cameras {bad}; valid: {sorted(valid_cams)}")
        raw_obs = self.raw.reset()
        self._object_keys = [k for k in raw_obs if k in self.raw._observables
                             and self.raw._observables[k].modality == "object"]
        for name in list(self.raw._observables):  # skip unused observables (computed every substep)
            if name not in _PROPRIO and name not in self._object_keys:
                self.raw.modify_observable(name, "enabled", False)
        proprio = [(k, int(np.size(raw_obs[k]))) for k in _PROPRIO]
        objects = [(k, int(np.size(raw_obs[k]))) for k in self._object_keys]
        self.obs_fields = ({STATE_KEY: proprio + objects} if config.state_layout == "combined"
                           else {STATE_KEY: proprio, ENV_STATE_KEY: objects})
        self._field_at: dict[str, tuple[str, slice]] = {}  # field name -> (obs key, columns)
        spaces = {}
        for key, fields in self.obs_fields.items():
            start = 0
            for name, dim in fields:
                self._field_at[name] = (key, slice(start, start + dim))
                start += dim
            spaces[key] = gym.spaces.Box(-np.inf, np.inf, shape=(start,), dtype=np.float32)
        for cam in config.cameras:
            spaces[f"observation.images.{cam}"] = gym.spaces.Box(
                0, 255, shape=(config.image_size, config.image_size, 3), dtype=np.uint8)
        self.observation_space = gym.spaces.Dict(spaces)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(self.raw.action_dim,), dtype=np.float32)
        self._t = 0
        self._needs_reset = True

    # -- Gymnasium API -------------------------------------------------------------
    def reset(self, seed: int | None = None, options: dict | None = None):
        """Start an episode; ``seed`` re-seeds robosuite's RNG in place (None continues it)."""
        super().reset(seed=seed)  # gymnasium's np_random (unused by robosuite; the env checker expects it)
        if seed is not None:
            # placement samplers and robots hold references to raw.rng, so set its state, not the object
            self.raw.rng.bit_generator.state = np.random.default_rng(int(seed)).bit_generator.state
        raw_obs = self.raw.reset()
        self._t = 0
        self._needs_reset = False
        return self._obs(raw_obs), {"success": False}

    def step(self, action):
        """One 20 Hz control step; returns (obs, reward, terminated, truncated, info)."""
        if self._needs_reset:
            raise RuntimeError(f"{self.task_name}: step() called before reset() or after the episode ended")
        a = np.asarray(action, dtype=np.float64)
        if a.shape != self.action_space.shape or not np.all(np.isfinite(a)):
            raise ValueError(f"{self.task_name}: action must be finite with shape {self.action_space.shape}, "
                             f"got shape {a.shape} values {a!r}")
        raw_obs, reward, _, _ = self.raw.step(np.clip(a, -1.0, 1.0))
        self._t += 1
        success = bool(self.raw._check_success())
        truncated = (not success) and self.max_episode_steps is not None and self._t >= self.max_episode_steps
        self._needs_reset = success or truncated
        info = {"success": success, "reward_terms": {"task": float(reward)}}
        return self._obs(raw_obs), float(reward), success, truncated, info

    def render(self, camera: str | None = None) -> np.ndarray:
        """Frame uint8 (render_size, render_size, 3) from ``camera`` (default ``config.render_camera``), whatever
        ``render_mode`` is."""
        return self._render(camera or self.config.render_camera, self.config.render_size)

    def close(self) -> None:
        """Free the renderers and robosuite's sim (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers = {}
        self.raw.close()

    # -- helpers ----------------------------------------------------------------------
    def _render(self, camera: str, size: int) -> np.ndarray:
        renderer = self._renderers.get(size)
        if renderer is None:
            vis = self._mj_model.vis.global_
            vis.offwidth, vis.offheight = max(vis.offwidth, size), max(vis.offheight, size)
            renderer = self._renderers[size] = self._mujoco.Renderer(self._mj_model, size, size)
            renderer.scene.flags[self._mujoco.mjtRndFlag.mjRND_REFLECTION] = 0  # halves OSMesa frame time
        renderer.update_scene(self._mj_data, camera=camera, scene_option=self._scene_option)
        return renderer.render().copy()

    def field(self, obs: dict[str, np.ndarray], name: str) -> np.ndarray:
        """One named robosuite observable (e.g. ``cube_pos``) out of an armflow obs dict, whatever the layout."""
        if name not in self._field_at:
            raise KeyError(f"{self.task_name}: no observable {name!r}; valid: {', '.join(self._field_at)}")
        key, cols = self._field_at[name]
        return np.asarray(obs[key])[..., cols]

    def _obs(self, raw_obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        obs = {}
        for key, fields in self.obs_fields.items():
            parts = [_xyzw_to_wxyz(raw_obs[k]) if k.endswith("quat") else raw_obs[k] for k, _ in fields]
            obs[key] = np.concatenate(parts).astype(np.float32)
        for cam in self.config.cameras:
            obs[f"observation.images.{cam}"] = self._render(cam, self.config.image_size)
        return obs


# armflow name -> (robosuite environment class, default time limit [control steps])
_TASKS = {
    "robosuite/Lift": ("Lift", 200),  # lift a cube 4 cm
    "robosuite/Can": ("PickPlaceCan", 400),  # move a can into its bin
    "robosuite/Square": ("NutAssemblySquare", 400),  # square nut onto its peg
}
DEFAULT_MAX_EPISODE_STEPS = {name: limit for name, (_, limit) in _TASKS.items()}


def _make(task_name: str, overrides: dict[str, Any], render_mode: str | None) -> RobosuiteEnv:
    env_name, max_episode_steps = _TASKS[task_name]
    fixed = sorted({"env_name", "task_name"} & set(overrides))
    if fixed:
        raise ConfigError(f"{task_name}: {fixed} are fixed by the task name")
    config = build_config(RobosuiteConfig, {"env_name": env_name, "task_name": task_name,
                                            "max_episode_steps": max_episode_steps, **overrides}, task_name)
    return RobosuiteEnv(config, render_mode=render_mode)


def make_robosuite_lift(render_mode: str | None = None, **overrides: Any) -> RobosuiteEnv:
    """robosuite Lift (lift a cube 4 cm); ``overrides`` are ``RobosuiteConfig`` fields."""
    return _make("robosuite/Lift", overrides, render_mode)


def make_robosuite_can(render_mode: str | None = None, **overrides: Any) -> RobosuiteEnv:
    """robosuite PickPlaceCan (move a can into its bin); ``overrides`` are ``RobosuiteConfig`` fields."""
    return _make("robosuite/Can", overrides, render_mode)


def make_robosuite_square(render_mode: str | None = None, **overrides: Any) -> RobosuiteEnv:
    """robosuite NutAssemblySquare (square nut onto its peg); ``overrides`` are ``RobosuiteConfig`` fields."""
    return _make("robosuite/Square", overrides, render_mode)


class RobosuiteLiftExpert:
    """Scripted robosuite Lift expert: approach above the cube, descend, grasp, lift.

    Reads the end-effector and the privileged cube position from the obs (``env.field``: observation.state and
    observation.environment_state, or the combined observation.state);
    the cube fits the open Panda gripper at any yaw, so orientation is held (zero rotation).
    ``noise_std``: std of Gaussian noise added to the 6 arm action dims (before clipping).
    """

    hover_m = 0.06  # approach height above the cube centre
    xy_tol_m = 0.012  # horizontal alignment needed before descending
    grasp_tol_m = 0.012  # eef-to-cube distance at which the gripper closes
    close_steps = 6  # control steps to let the fingers close before lifting
    lift_m = 0.15  # lift target above the grasp height
    gain = 1.5  # proportional gain from position error to action (1.0 = 5 cm per step)

    def __init__(self, env: RobosuiteEnv, noise_std: float = 0.0, seed: int | None = None):
        base = getattr(env, "unwrapped", env)
        if not isinstance(base, RobosuiteEnv) or base.config.env_name != "Lift":
            raise TypeError(f"RobosuiteLiftExpert needs a robosuite/Lift env, got {getattr(base, 'task_name', base)!r}")
        if noise_std < 0:
            raise ValueError(f"RobosuiteLiftExpert: noise_std must be >= 0, got {noise_std}")
        self.env = base
        self.noise_std = float(noise_std)
        self._rng = np.random.default_rng(seed)
        self.reset()

    def reset(self) -> None:
        """Forget the previous episode's phase."""
        self.phase = "approach"
        self._closed_for = 0
        self._grasp_z = 0.0

    def __call__(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """Action float32 (7,) for the current state."""
        eef = self.env.field(obs, "robot0_eef_pos").astype(np.float64)
        cube = self.env.field(obs, "cube_pos").astype(np.float64)
        target, gripper = self._target(eef, cube)
        action = np.zeros(7)
        action[:3] = self.gain * (target - eef) / 0.05
        action[6] = gripper
        if self.noise_std > 0:
            action[:6] += self._rng.normal(0.0, self.noise_std, size=6)
        return np.clip(action, -1.0, 1.0).astype(np.float32)

    def _target(self, eef: np.ndarray, cube: np.ndarray) -> tuple[np.ndarray, float]:
        """Advance the phase machine; returns (eef target position [m], gripper command)."""
        above = cube + np.array([0.0, 0.0, self.hover_m])
        if self.phase == "approach":
            if np.linalg.norm(eef[:2] - cube[:2]) < self.xy_tol_m and abs(eef[2] - above[2]) < 0.02:
                self.phase = "descend"
            return above, -1.0
        if self.phase == "descend":
            if np.linalg.norm(eef - cube) < self.grasp_tol_m:
                self.phase, self._grasp_z = "grasp", float(cube[2])
            return cube, -1.0
        if self.phase == "grasp":
            self._closed_for += 1
            if self._closed_for >= self.close_steps:
                self.phase = "lift"
            return cube, 1.0
        return np.array([cube[0], cube[1], self._grasp_z + self.lift_m]), 1.0
