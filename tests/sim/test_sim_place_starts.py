"""``place``'s start distributions for the reset skill of ``armflow improve``: table starts spread wider than lift's
region and turned (cubes a failed forward attempt pushed), held starts raised as high as the forward skill lifts."""
from __future__ import annotations

import numpy as np
import pytest

from armflow.sim import make_env
from armflow.sim.experts.place import PlaceExpert
from armflow.sim.tasks.place import in_region


def _table_starts(n: int, **overrides) -> tuple[np.ndarray, np.ndarray]:
    env = make_env("place", held_start_prob=0.0, **overrides)
    xy, yaw = [], []
    for seed in range(n):
        env.reset(seed=seed)
        xy.append(env.cube_pos(0)[:2].copy())
        yaw.append(env.cube_yaw_rad(0))
    return np.array(xy), np.array(yaw)


def test_table_starts_spread_beyond_the_region_and_turn():
    base_xy, base_yaw = _table_starts(20)
    wide_xy, wide_yaw = _table_starts(20, table_start_xy_m=(0.2, 0.2), table_start_yaw_rad=0.8)
    centre = np.array([0.5, 0.0])
    assert np.abs(base_xy - centre).max() <= 0.08 + 1e-6 and np.abs(base_yaw).max() < 1e-6
    assert np.abs(wide_xy - centre).max() > 0.12 and np.abs(wide_xy - centre).max() <= 0.2 + 1e-6
    assert np.abs(wide_yaw).max() > 0.3 and np.abs(wide_yaw).max() <= 0.8 + 1e-6


def test_the_expert_fetches_a_cube_from_outside_the_region():
    env = make_env("place", held_start_prob=0.0, table_start_xy_m=(0.2, 0.2), table_start_yaw_rad=0.8,
                   max_episode_steps=80)
    outside = 0
    for seed in range(6):
        obs, _ = env.reset(seed=seed)
        outside += not in_region(env, env.cube_pos(0)[:2])
        expert = PlaceExpert(env, seed=seed)
        expert.reset()
        for _ in range(80):
            obs, _, terminated, truncated, _ = env.step(expert(obs))
            if terminated or truncated:
                break
        assert terminated, f"seed {seed}: the expert did not place a cube fetched from {env.start_xy_m}"
        assert in_region(env, env.cube_pos(0)[:2])
    assert outside >= 2  # the draw really starts cubes outside lift's region


def test_held_starts_are_raised_by_the_extra_lift():
    def heights(**overrides):
        env = make_env("place", **overrides)
        out = []
        for seed in range(6):
            env.reset(seed=seed)
            assert env.grasped(0)
            out.append(env.cube_pos(0)[2])
        return np.array(out)

    low, high = heights(), heights(held_extra_lift_m=(0.03, 0.05))
    assert np.all(high - low > 0.025) and np.all(high - low < 0.06)


@pytest.mark.parametrize("overrides, match", [({"table_start_xy_m": (0.1,)}, "table_start_xy_m"),
                                              ({"held_extra_lift_m": (0.05, 0.01)}, "held_extra_lift_m")])
def test_bad_start_options_name_the_key(overrides, match):
    with pytest.raises(ValueError, match=match):
        make_env("place", **overrides)
