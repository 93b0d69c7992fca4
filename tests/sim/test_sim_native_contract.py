"""README Env contract for the native MuJoCo tasks (real physics, a few control steps each)."""
from __future__ import annotations

import gymnasium as gym
import mujoco
import numpy as np
import pytest

from armflow.configs import ConfigError
from armflow.sim import ENV_STATE_KEY, STATE_KEY
from armflow.sim.registry import make_env

NATIVE = ["lift", "lift_hard", "pick_either"]
ENV_STATE_DIM = {"lift": 10, "lift_hard": 10, "pick_either": 20}  # per cube: pos 3, quat 4, cube - ee 3


@pytest.mark.parametrize("name", NATIVE)
def test_reset_and_step_follow_the_contract(name):
    env = make_env(name)
    assert env.task_name == name
    assert env.ctrl_dt == pytest.approx(0.05) and 0 < env.sim_dt <= env.ctrl_dt
    assert isinstance(env.action_space, gym.spaces.Box) and env.action_space.shape == (7,)
    assert isinstance(env.observation_space, gym.spaces.Dict)
    obs, info = env.reset(seed=0)
    assert info["success"] is False
    assert set(obs) == {STATE_KEY, ENV_STATE_KEY} == set(env.observation_space.spaces)
    assert obs[STATE_KEY].dtype == np.float32 and obs[STATE_KEY].shape == (8,)
    assert obs[ENV_STATE_KEY].dtype == np.float32 and obs[ENV_STATE_KEY].shape == (ENV_STATE_DIM[name],)
    assert env.observation_space.contains(obs)
    rng = np.random.default_rng(0)
    for _ in range(5):
        action = rng.uniform(-1, 1, 7).astype(np.float32)
        obs, reward, terminated, truncated, info = env.step(action)
        assert np.isfinite(obs[STATE_KEY]).all() and np.isfinite(obs[ENV_STATE_KEY]).all() and np.isfinite(reward)
        assert isinstance(reward, float) and isinstance(terminated, bool) and isinstance(truncated, bool)
        assert isinstance(info["success"], bool) and info["success"] == terminated
        assert set(info["reward_terms"]) == {"reach", "grasp", "lift", "success"}
        assert reward == pytest.approx(sum(info["reward_terms"].values()))
        assert env.observation_space.contains(obs)
    env.close()


def test_state_layout_matches_the_documented_slices():
    env = make_env("pick_either")
    obs, _ = env.reset(seed=3)
    state, env_state = obs[STATE_KEY], obs[ENV_STATE_KEY]
    ee_pos, ee_quat = env.ee_pose()
    np.testing.assert_allclose(state[0:3], ee_pos, atol=1e-6)
    assert abs(abs(float(np.dot(state[3:7], ee_quat))) - 1.0) < 1e-5  # same rotation, sign canonical
    assert state[7] == pytest.approx(env.gripper_opening_m(), abs=1e-6)
    for i in range(2):
        base = 10 * i
        np.testing.assert_allclose(env_state[base : base + 3], env.cube_pos(i), atol=1e-6)
        np.testing.assert_allclose(env_state[base + 3 : base + 7], env.cube_quat(i), atol=1e-6)
        np.testing.assert_allclose(env_state[base + 7 : base + 10], env.cube_pos(i) - ee_pos, atol=1e-6)
    assert env.joint_pos().shape == (7,) and len(env.joint_names) == 7
    assert np.linalg.norm(ee_quat) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("name", NATIVE)
def test_state_holds_no_object_information(name):
    """Moving the cubes in the sim changes observation.environment_state and leaves observation.state alone."""
    env = make_env(name)
    before, _ = env.reset(seed=5)
    for i in range(env.n_cubes):
        a = env._cube_qpos[i]
        env.data.qpos[a : a + 2] += (0.03, -0.02)  # slide cube i on the table
        env.data.qpos[a + 3 : a + 7] = (np.cos(0.2), 0.0, 0.0, np.sin(0.2))  # and yaw it 0.4 rad
    mujoco.mj_forward(env.model, env.data)
    after = env._obs()
    np.testing.assert_array_equal(after[STATE_KEY], before[STATE_KEY])
    moved = np.abs(after[ENV_STATE_KEY] - before[ENV_STATE_KEY]).reshape(env.n_cubes, 10)
    assert (moved[:, 0:2].max(axis=1) > 0.019).all() and (moved[:, 3:7].max(axis=1) > 0.1).all()
    assert (moved[:, 7:9].max(axis=1) > 0.019).all()  # the cube - ee offsets moved with them


@pytest.mark.parametrize("name", NATIVE)
def test_combined_layout_is_the_split_concatenated(name):
    """state_layout=combined (the layout before the split) = observation.state ++ observation.environment_state,
    step for step; anything else is refused naming the valid layouts."""
    split, combined = make_env(name), make_env(name, state_layout="combined")
    assert set(combined.observation_space.spaces) == {STATE_KEY}
    assert combined.observation_space[STATE_KEY].shape == (8 + ENV_STATE_DIM[name],)
    obs_s, _ = split.reset(seed=2)
    obs_c, _ = combined.reset(seed=2)
    for i in range(combined.n_cubes):  # the old documented slices: cube i at [8 + 10i : 11 + 10i], offset after
        np.testing.assert_allclose(obs_c[STATE_KEY][8 + 10 * i : 11 + 10 * i], combined.cube_pos(i), atol=1e-6)
        np.testing.assert_allclose(obs_c[STATE_KEY][15 + 10 * i : 18 + 10 * i],
                                   combined.cube_pos(i) - combined.ee_pose()[0], atol=1e-6)
    for action in np.random.default_rng(0).uniform(-1, 1, (4, 7)).astype(np.float32):
        assert set(obs_c) == {STATE_KEY} and combined.observation_space.contains(obs_c)
        np.testing.assert_array_equal(obs_c[STATE_KEY], np.concatenate((obs_s[STATE_KEY], obs_s[ENV_STATE_KEY])))
        obs_s, obs_c = split.step(action)[0], combined.step(action)[0]
    with pytest.raises(ValueError, match="valid: split, combined"):
        make_env(name, state_layout="joined")


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
        flat = lambda obs: np.concatenate((obs[STATE_KEY], obs[ENV_STATE_KEY]))  # noqa: E731
        states = [flat(env.reset(seed=seed)[0])]
        states += [flat(env.step(a)[0]) for a in actions]
        return np.stack(states)

    np.testing.assert_array_equal(rollout(7), rollout(7))
    assert not np.allclose(rollout(7)[0], rollout(8)[0])


def test_lift_hard_spreads_cubes_wider_and_yaw_is_an_override():
    def placements(name, **overrides):
        env = make_env(name, **overrides)
        rows = []
        for seed in range(40):
            cube = env.reset(seed=seed)[0][ENV_STATE_KEY]
            rows.append((*np.abs(cube[0:2] - (0.5, 0.0)), abs(env.cube_yaw_rad(0))))
        return np.array(rows)

    lift, hard = placements("lift"), placements("lift_hard")
    assert lift[:, :2].max() <= 0.08 + 1e-6 and lift[:, 2].max() < 1e-6
    assert 0.09 < hard[:, :2].max() <= 0.12 + 1e-6
    yawed = placements("lift_hard", cube_yaw_range_rad=0.5)
    assert 0.3 < yawed[:, 2].max() <= 0.5 + 1e-6


def test_bad_override_key_lists_valid_keys():
    with pytest.raises(ConfigError, match="lift: unknown config key.*Did you mean 'max_episode_steps'"):
        make_env("lift", max_episode_stepz=5)
    with pytest.raises(ConfigError, match="cube_xy_range_m"):
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
