"""A sim task env under the bridge's safety layer: what a lockstep ``armflow serve robot=sim_panda task=<task>``
does to each action, run in-process, so ``armflow evaluate safety_limits=...`` gives the episodes that
``armflow deploy`` gives through the bridge.

Why: the bridge enforces the arm's limits (``configs/safety_limits/<name>.yaml``: EE speed, acceleration and
workspace box on every ee_delta, joint margins in the env's IK) and a bare sim env does not, so a policy that
asks for more than the limits ran differently in evaluate and through the bridge (measured on a lift policy from
10 demos, 100 seeds: 84 of 100 episodes identical; with every limit lifted, 100 of 100, bit for bit). The limits
are the robot's and stay; this env applies them in evaluation too, with the servo loop's own pieces in its own
order, one env step per lockstep tick:

1. the contact force of the state the last step left over ``force_max_n`` -> HOLD (the bridge stops the arm;
   here the episode ends, truncated, ``info["safety_hold"]`` says why);
2. ``SafetyLayer.filter`` of the action as ``armflow deploy`` sends it (float64 ee_delta, gripper (a + 1) / 2
   clipped to [0, 1]) against that state, with the servo period as dt;
3. ``SimTaskDriver.command`` (the env step with the driver's own clipping and gripper mapping), then the state
   is read for the next tick.

The layer is reset from the first state of each episode, as ARM after RESET does. Every clamp is counted per
episode (``info["safety_clamps"]`` on each step, ``clamps_total`` over the env's life). Robot side only: numpy
and the sim, never torch.
"""
from __future__ import annotations

from collections import Counter

import numpy as np

from armflow.control.limits import SafetyLimits, default_limits_name, load_limits
from armflow.control.servo import safety_for

MODE = "ee_delta"
GRIPPER_DIM = 6  # the 7-D task action = ee delta (6) + gripper (-1 open .. +1 closed)


class SafetyLimitedEnv:
    """``make_env(task, **overrides)`` behind the bridge's safety layer (module docstring); the Gymnasium
    ``reset`` / ``step`` / ``close`` API, every other attribute is the task env's. ``limits``: a name under
    configs/safety_limits/, a YAML path, or None / "auto" for the file the server uses for ``task``."""

    def __init__(self, task: str, limits: str | None = None, **overrides):
        from armflow.hardware import make_driver

        auto = limits in (None, "auto")  # the file `armflow serve robot=sim_panda task=<task>` picks
        self.limits_name = default_limits_name("sim_panda", {"task": task}) if auto else limits
        self.limits: SafetyLimits = load_limits(self.limits_name)
        self.driver = make_driver("sim_panda", task=task, env=dict(overrides))
        self.driver.connect()
        self.env = self.driver.env
        self.safety = safety_for(self.driver, self.limits)
        # the servo's period in lockstep (``ServoLoop``: int(1e9 / rate) ns at the driver's native rate)
        self.dt_s = int(1e9 / float(self.driver.info().native_rate_hz)) / 1e9
        self.clamps_total: Counter = Counter()
        self.episode_clamps: Counter = Counter()
        self.clamps_by_seed: dict[int, dict] = {}  # the clamps of each seeded episode (evaluate reports them)
        self._state, self._seed = None, None

    def __getattr__(self, name):
        if name in ("env", "driver"):  # not built yet (a failed __init__): never recurse
            raise AttributeError(name)
        return getattr(self.env, name)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        self._state = self.driver.reset(seed)
        self.safety.clamps.clear()
        self.safety.reset(MODE, self._state)
        self.episode_clamps, self._seed = Counter(), seed
        if seed is not None:
            self.clamps_by_seed[int(seed)] = {}
        return self.driver.last_obs(), {"success": False}

    def step(self, action):
        a = np.asarray(action, np.float64)
        if self.safety.force_exceeded(self._state):
            return self._hold(f"contact force {np.linalg.norm(self._state.ee_force_n):.0f} N over the limit "
                              f"{self.limits.force_max_n:.0f} N")
        grip = float(np.clip((a[GRIPPER_DIM] + 1.0) / 2.0, 0.0, 1.0))
        setpoint, grip = self.safety.filter(MODE, a[:GRIPPER_DIM], grip, self._state, self.dt_s)
        self.driver.command(MODE, setpoint, grip)
        self._state = self.driver.read_state()
        obs, reward, terminated, truncated, info = self.driver.last_step()
        return obs, reward, terminated, truncated, self._count(info)

    def _count(self, info: dict) -> dict:
        new = self.safety.clamps - self.episode_clamps
        self.episode_clamps.update(new)
        self.clamps_total.update(new)
        if self._seed is not None:
            self.clamps_by_seed[int(self._seed)] = dict(self.episode_clamps)
        return {**info, "safety_clamps": dict(self.episode_clamps)}

    def _hold(self, reason: str):
        """The bridge's HOLD: no more motion this episode (a failure, truncated)."""
        info = self._count({"success": False})
        return self.driver.last_obs(), 0.0, False, True, {**info, "safety_hold": reason}

    def close(self) -> None:
        self.driver.close()


def limited_vec_env(task: str, n_envs: int, limits: str | None = None, overrides: dict | None = None):
    """``n_envs`` in-process ``SafetyLimitedEnv`` as an armflow vector env (``ChunkVecEnv(venv=...)``)."""
    import functools

    from armflow.sim.vector import SyncVectorEnv

    make = functools.partial(SafetyLimitedEnv, task, limits, **dict(overrides or {}))
    return SyncVectorEnv.from_env_fns([make] * int(n_envs))


def add_episode_clamps(results: list[dict], venv) -> None:
    """Set ``clamps`` (safety-layer clamp counts by name, as ``armflow deploy`` reports them) on each per-episode
    result ``{"seed", ...}`` run on ``venv`` (``limited_vec_env``)."""
    by_seed: dict = {}
    for part in venv.get_attr("clamps_by_seed"):
        by_seed.update(part)
    for r in results:
        r["clamps"] = by_seed.get(int(r["seed"]), {})
