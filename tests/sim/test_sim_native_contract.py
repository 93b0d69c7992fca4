"""README Env contract for the native MuJoCo tasks (real physics, a few control steps each)."""
from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from armflow.sim.registry import make_env

NATIVE = ["lift", "lift_hard", "pick_either"]
STATE_DIM = {"lift": 18, "lift_hard": 18, "pick_either": 28}


@pytest.mark.parametrize("name", NATIVE)
def test_reset_and_step_follow_the_contract(name):
    env = make_env(name)
    assert env.task_name == name
    assert env.ctrl_dt == pytest.approx(0.05) and 0 < env.sim_dt <= env.ctrl_dt
    assert isinstance(env.action_space, gym.spaces.Box) and env.action_space.shape == (7,)
    assert isinstance(env.observation_space, gym.spaces.Dict)
    obs, info = env.reset(seed=0)
    assert info["success"] is False
    assert set(obs) == {"observation.state"}
    state = obs["observation.state"]
    assert state.dtype == np.float32 and state.shape == (STATE_DIM[name],)
    assert env.observation_space.contains(obs)
    rng = np.random.default_rng(0)
    for _ in range(5):
        action = rng.uniform(-1, 1, 7).astype(np.float32)
        obs, reward, terminated, truncated, info = env.step(action)
        assert np.isfinite(obs["observation.state"]).all() and np.isfinite(reward)
        assert isinstance(reward, float) and isinstance(terminated, bool) and isinstance(truncated, bool)
        assert isinstance(info["success"], bool) and info["success"] == terminated
        assert set(info["reward_terms"]) == {"reach", "grasp", "lift", "success"}
        assert reward == pytest.approx(sum(info["reward_terms"].values()))
        assert env.observation_space.contains(obs)
    env.close()


def test_state_layout_matches_the_documented_slices():
    env = make_env("pick_either")
    obs, _ = env.reset(seed=3)
    state = obs["observation.state"]
    ee_pos, ee_quat = env.ee_pose()
    np.testing.assert_allclose(state[0:3], ee_pos, atol=1e-6)
    assert abs(abs(float(np.dot(state[3:7], ee_quat))) - 1.0) < 1e-5  # same rotation, sign canonical
    assert state[7] == pytest.approx(env.gripper_opening_m(), abs=1e-6)
    for i in range(2):
        base = 8 + 10 * i
        np.testing.assert_allclose(state[base : base + 3], env.cube_pos(i), atol=1e-6)
        np.testing.assert_allclose(state[base + 7 : base + 10], env.cube_pos(i) - ee_pos, atol=1e-6)
    assert env.joint_pos().shape == (7,) and len(env.joint_names) == 7
    assert np.linalg.norm(ee_quat) == pytest.approx(1.0, abs=1e-6)


def test_time_limit_is_truncated_not_terminated():
    env = make_env("lift", max_episode_steps=3)
    env.reset(seed=0)
    flags = [env.step(np.zeros(7, np.float32))[2:4] for _ in range(3)]
    assert flags == [(False, False), (False, False), (False, True)]


@pytest.mark.parametrize("name", NATIVE)
def test_seeded_reset_is_deterministic(name):
    actions = np.random.default_rng(1).uniform(-1, 1, (8, 7))

    def rollout(seed):
        env = make_env(name)
        states = [env.reset(seed=seed)[0]["observation.state"]]
        states += [env.step(a)[0]["observation.state"] for a in actions]
        return np.stack(states)

    np.testing.assert_array_equal(rollout(7), rollout(7))
    assert not np.allclose(rollout(7)[0], rollout(8)[0])


def test_lift_hard_spreads_cubes_wider_and_yaw_is_an_override():
    def placements(name, **overrides):
        env = make_env(name, **overrides)
        rows = []
        for seed in range(40):
            state = env.reset(seed=seed)[0]["observation.state"]
            rows.append((*np.abs(state[8:10] - (0.5, 0.0)), abs(env.cube_yaw_rad(0))))
        return np.array(rows)

    lift, hard = placements("lift"), placements("lift_hard")
    assert lift[:, :2].max() <= 0.08 + 1e-6 and lift[:, 2].max() < 1e-6
    assert 0.09 < hard[:, :2].max() <= 0.12 + 1e-6
    yawed = placements("lift_hard", cube_yaw_range_rad=0.5)
    assert 0.3 < yawed[:, 2].max() <= 0.5 + 1e-6


def test_bad_override_key_lists_valid_keys():
    with pytest.raises(TypeError, match="max_episode_steps"):
        make_env("lift", max_episode_stepz=5)
    with pytest.raises(TypeError, match="cube_xy_range_m"):
        make_env("pick_either", cube_range=0.1)


def test_camera_observations_and_render():
    env = make_env("lift", cameras=["agentview", "wrist"])
    obs, _ = env.reset(seed=0)
    for cam in ("agentview", "wrist"):
        image = obs[f"observation.images.{cam}"]
        assert image.dtype == np.uint8 and image.shape == (84, 84, 3)
        assert image.std() > 1.0  # a real picture, not a blank buffer
    assert env.observation_space.contains(obs)
    frame = env.render()
    assert frame.shape == (84, 84, 3) and frame.dtype == np.uint8
    obs2, *_ = env.step(np.zeros(7, np.float32))
    assert obs2["observation.images.agentview"].shape == (84, 84, 3)
    with pytest.raises(ValueError, match="agentview"):
        env.render("nope")
    with pytest.raises(ValueError, match="valid cameras"):
        make_env("lift", cameras=["nope"])
    assert make_env("lift", cameras="wrist", image_size=32).reset(seed=0)[0]["observation.images.wrist"].shape == (
        32, 32, 3)
    env.close()
