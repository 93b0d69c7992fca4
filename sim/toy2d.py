"""toy2d: a no-physics, bimodal 2-D reaching task for fast unit tests and RL toy runs.

A point agent starts near the origin and must reach one of two goals, left
``(-goal_distance_m, 0)`` or right ``(+goal_distance_m, 0)``; both are equally
good unless ``goal_rewards`` says otherwise (so RL tests can check whether a
fine-tuned policy keeps or collapses the two modes).

- ``observation.state``: float32 (2,) = agent position (x, y) [m]. The goals are
  fixed, so the position is a Markov state.
- ``action``: float32 (2,) in [-1, 1] = velocity command; the agent moves
  ``action * max_speed_m_s * ctrl_dt`` per step (clipped to [-1, 1] first), inside a square arena
  of half-width ``2 * goal_distance_m + 1`` (the observation bounds).
- reward terms (summed into ``reward``):
  ``progress`` = decrease of the distance to the nearest goal [m] * ``progress_weight``,
  ``action_cost`` = -``action_cost_weight`` * |a|^2,
  ``success`` = ``goal_rewards[k]`` on the step that reaches goal k (0 left, 1 right).
- success (episode ends as ``terminated``): within ``success_radius_m`` of a goal;
  ``max_episode_steps`` ends it as ``truncated``.
"""
from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from armflow.configs import build_config
from armflow.sim.registry import RENDER_MODES, check_render_mode

STATE_KEY = "observation.state"


@dataclass(frozen=True)
class Toy2DConfig:
    """Default config of toy2d; every field can be overridden through ``make_toy2d``."""

    goal_distance_m: float = 1.0  # goals at (-d, 0) and (+d, 0)
    start_noise_m: float = 0.05  # start position ~ U[-noise, noise]^2
    max_speed_m_s: float = 2.0  # |velocity| per axis at action = 1
    ctrl_dt: float = 0.05  # control period [s]; no physics, so sim_dt == ctrl_dt
    max_episode_steps: int | None = 30  # None: no own limit (gym.make's TimeLimit owns it)
    success_radius_m: float = 0.1
    goal_rewards: tuple[float, float] = (1.0, 1.0)  # success bonus for (left, right)
    progress_weight: float = 1.0
    action_cost_weight: float = 0.01
    render_size: int = 64  # render() returns (render_size, render_size, 3) uint8


class Toy2DEnv(gym.Env):
    """Bimodal point-reaching ``gymnasium.Env`` (see module docstring)."""

    task_name = "toy2d"
    metadata = {"render_modes": list(RENDER_MODES), "render_fps": 20.0}

    def __init__(self, config: Toy2DConfig = Toy2DConfig(), render_mode: str | None = None):
        limit = config.max_episode_steps
        if (limit is not None and limit < 1) or config.ctrl_dt <= 0 or config.success_radius_m <= 0:
            raise ValueError(f"toy2d: invalid config {config}: need max_episode_steps >= 1 (or None), ctrl_dt > 0, "
                             "success_radius_m > 0")
        if len(config.goal_rewards) != 2:
            raise ValueError(f"toy2d: goal_rewards must have 2 entries (left, right), got {config.goal_rewards!r}")
        self.config = config
        self.render_mode = check_render_mode(render_mode, self.task_name)
        self.ctrl_dt = float(config.ctrl_dt)
        self.sim_dt = float(config.ctrl_dt)
        self.metadata = {**Toy2DEnv.metadata, "render_fps": 1.0 / self.ctrl_dt}
        self.max_episode_steps = None if limit is None else int(limit)
        d = float(config.goal_distance_m)
        self.goals = np.array([[-d, 0.0], [d, 0.0]], dtype=np.float64)  # (2 goals, xy) [m]
        self.arena_half_m = 2.0 * d + 1.0  # the agent is kept inside this square (a wall)
        bound = np.float32(self.arena_half_m)
        self.observation_space = gym.spaces.Dict(
            {STATE_KEY: gym.spaces.Box(-bound, bound, shape=(2,), dtype=np.float32)})
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self._pos = np.zeros(2)
        self._t = 0
        self._needs_reset = True

    # -- Gymnasium API -------------------------------------------------------------
    def reset(self, seed: int | None = None, options: dict | None = None):
        """Start an episode; ``seed`` re-seeds ``np_random`` (None continues it)."""
        super().reset(seed=seed)
        noise = self.config.start_noise_m
        self._pos = self.np_random.uniform(-noise, noise, size=2)
        self._t = 0
        self._needs_reset = False
        return self._obs(), {"success": False}

    def step(self, action):
        """Advance one control step; returns (obs, reward, terminated, truncated, info)."""
        if self._needs_reset:
            raise RuntimeError("toy2d: step() called before reset() or after the episode ended")
        a = np.asarray(action, dtype=np.float64)
        if a.shape != (2,) or not np.all(np.isfinite(a)):
            raise ValueError(f"toy2d: action must be a finite array of shape (2,), got shape {a.shape} "
                             f"values {a!r}")
        a = np.clip(a, -1.0, 1.0)
        dist_before = self._goal_distances().min()
        self._pos = np.clip(self._pos + a * self.config.max_speed_m_s * self.ctrl_dt,
                            -self.arena_half_m, self.arena_half_m)
        self._t += 1
        dists = self._goal_distances()
        reached = dists <= self.config.success_radius_m
        success = bool(reached.any())
        bonus = float(self.config.goal_rewards[int(np.argmin(dists))]) if success else 0.0
        terms = {
            "progress": float(self.config.progress_weight * (dist_before - dists.min())),
            "action_cost": float(-self.config.action_cost_weight * np.dot(a, a)),
            "success": bonus,
        }
        truncated = (not success) and self.max_episode_steps is not None and self._t >= self.max_episode_steps
        self._needs_reset = success or truncated
        info = {"success": success, "reward_terms": terms,
                "goal_index": int(np.argmin(dists)) if success else -1,
                "mode": int(np.argmin(dists))}
        return self._obs(), float(sum(terms.values())), success, truncated, info

    def render(self, camera: str | None = None) -> np.ndarray:
        """Top-down picture: goals green, agent red. Returns uint8 (H, W, 3) whatever ``render_mode`` is;
        ``camera`` is ignored."""
        size = self.config.render_size
        img = np.full((size, size, 3), 255, dtype=np.uint8)
        extent = 1.5 * self.config.goal_distance_m  # half-width of the view [m]
        for xy, color, radius in [(g, (0, 160, 0), self.config.success_radius_m) for g in self.goals] + [
                (self._pos, (220, 0, 0), 0.05 * extent)]:
            col = (xy[0] + extent) / (2 * extent) * (size - 1)
            row = (extent - xy[1]) / (2 * extent) * (size - 1)
            r_px = max(1.0, radius / (2 * extent) * size)
            rr, cc = np.ogrid[:size, :size]
            img[(rr - row) ** 2 + (cc - col) ** 2 <= r_px ** 2] = color
        return img

    def close(self) -> None:
        """Nothing to release (no physics, no renderer)."""

    # -- helpers ----------------------------------------------------------------------
    def _goal_distances(self) -> np.ndarray:
        """Distances [m] from the agent to the (left, right) goals, shape (2,)."""
        return np.linalg.norm(self.goals - self._pos, axis=1)

    def _obs(self) -> dict[str, np.ndarray]:
        return {STATE_KEY: self._pos.astype(np.float32)}


DEFAULT_MAX_EPISODE_STEPS = {"toy2d": Toy2DConfig.max_episode_steps}


def make_toy2d(render_mode: str | None = None, **overrides) -> Toy2DEnv:
    """Build toy2d; ``overrides`` are ``Toy2DConfig`` fields (an unknown key raises, listing valid ones)."""
    if "goal_rewards" in overrides:
        overrides["goal_rewards"] = tuple(float(r) for r in overrides["goal_rewards"])
    return Toy2DEnv(build_config(Toy2DConfig, overrides, "toy2d"), render_mode=render_mode)


class Toy2DExpert:
    """Scripted toy2d expert: picks the left or right goal at random each episode (both modes).

    ``noise_std`` is the std of Gaussian noise added to the action (before clipping to [-1, 1]).
    """

    def __init__(self, env: Toy2DEnv, noise_std: float = 0.0, seed: int | None = None):
        base = getattr(env, "unwrapped", env)
        if not isinstance(base, Toy2DEnv):
            raise TypeError(f"Toy2DExpert needs a Toy2DEnv, got {type(env).__name__}")
        if noise_std < 0:
            raise ValueError(f"Toy2DExpert: noise_std must be >= 0, got {noise_std}")
        self.env = base
        self.noise_std = float(noise_std)
        self._rng = np.random.default_rng(seed)
        self.goal_index = 0
        self.reset()

    def reset(self) -> None:
        """Pick this episode's goal (0 left, 1 right) uniformly at random."""
        self.goal_index = int(self._rng.integers(2))

    def __call__(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """Action float32 (2,): a velocity towards the chosen goal, arriving without overshoot."""
        pos = np.asarray(obs[STATE_KEY], dtype=np.float64)
        step_m = self.env.config.max_speed_m_s * self.env.ctrl_dt  # distance per step at |a| = 1
        action = (self.env.goals[self.goal_index] - pos) / step_m
        if self.noise_std > 0:
            action = action + self._rng.normal(0.0, self.noise_std, size=2)
        return np.clip(action, -1.0, 1.0).astype(np.float32)
