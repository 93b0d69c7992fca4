"""``pick_either``'s expert resolves the cube choice at the start height before it descends."""
from __future__ import annotations

import numpy as np

from armflow.sim.experts import make_expert
from armflow.sim.registry import make_env


def test_pick_either_expert_translates_above_its_cube_before_descending():
    env = make_env("pick_either")
    for seed in range(4):
        obs, _ = env.reset(seed=seed)
        expert = make_expert(env, noise_std=0.0, seed=seed)
        expert.reset()
        start_z = float(env.ee_pose()[0][2])
        lateral_at_drop = None  # xy distance to the target cube when the grip site first drops 3 cm
        for _ in range(env.max_episode_steps):
            obs, _, terminated, truncated, info = env.step(expert(obs))
            ee = env.ee_pose()[0]
            if lateral_at_drop is None and ee[2] < start_z - 0.03:
                lateral_at_drop = float(np.linalg.norm(env.cube_pos(expert.target)[:2] - ee[:2]))
            if terminated or truncated:
                break
        assert info["success"], seed
        assert lateral_at_drop is not None and lateral_at_drop < 0.03, (seed, lateral_at_drop)


def test_lift_expert_keeps_its_diagonal_approach():
    env = make_env("lift")
    obs, _ = env.reset(seed=0)
    expert = make_expert(env, noise_std=0.0, seed=0)
    expert.reset()
    start = env.ee_pose()[0]
    for _ in range(3):
        obs, *_ = env.step(expert(obs))
    assert env.ee_pose()[0][2] < start[2] - 0.02  # descends while it translates
