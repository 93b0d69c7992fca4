"""Every registered env (``armflow.sim.ENVS``) against the README "Interfaces / Env" contract."""
from __future__ import annotations

import importlib
import importlib.util

import gymnasium as gym
import numpy as np
import pytest

from armflow.configs import ConfigError
from armflow.sim import ENVS, make_env

STATE_KEY = "observation.state"
SHORT_LIMIT = 5  # max_episode_steps used to check truncation quickly
# robosuite Can/Square build + first render take ~5-15 s on a loaded 2-core box: slow-marked there
HEAVY = {"robosuite/Can", "robosuite/Square"}
NAMES_HEAVY_SLOW = [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in ENVS]
ARM_NAMES_HEAVY_SLOW = [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in ENVS if n != "toy2d"]


def _env_or_skip(name: str, **overrides):
    """Build ``name``; skip (with the reason) if its module or robosuite is not importable here."""
    module, _ = ENVS[name]
    if name.startswith("robosuite/"):
        pytest.importorskip("robosuite", reason="robosuite is not importable")
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} (task {name!r}) does not exist yet")
    return make_env(name, **overrides)


def _check_obs(env, obs) -> None:
    assert set(obs) == set(env.observation_space.spaces), "obs keys differ from observation_space"
    assert env.observation_space.contains(obs), "obs outside observation_space (bounds/dtype/shape)"
    state = obs[STATE_KEY]
    assert state.dtype == np.float32 and state.ndim == 1
    assert state.shape == env.observation_space[STATE_KEY].shape
    assert np.all(np.isfinite(state))
    for key, value in obs.items():
        if key.startswith("observation.images."):
            assert value.dtype == np.uint8 and value.ndim == 3 and value.shape[2] == 3
            assert value.shape == env.observation_space[key].shape


def _check_step(env, step_out) -> None:
    obs, reward, terminated, truncated, info = step_out
    _check_obs(env, obs)
    assert isinstance(reward, float) and np.isfinite(reward)
    assert isinstance(terminated, (bool, np.bool_)) and isinstance(truncated, (bool, np.bool_))
    assert isinstance(info["success"], (bool, np.bool_))
    assert bool(info["success"]) == bool(terminated), "success must end the episode as terminated"
    terms = info["reward_terms"]
    assert terms and all(np.isfinite(v) for v in terms.values())
    assert np.isclose(sum(terms.values()), reward, rtol=1e-5, atol=1e-6), "reward_terms must sum to reward"


@pytest.mark.parametrize("name", NAMES_HEAVY_SLOW)
def test_env_attributes_and_spaces(name):
    env = _env_or_skip(name, max_episode_steps=SHORT_LIMIT)
    try:
        assert env.task_name == name
        assert env.max_episode_steps == SHORT_LIMIT
        assert env.ctrl_dt > 0 and env.sim_dt > 0
        substeps = env.ctrl_dt / env.sim_dt
        assert abs(substeps - round(substeps)) < 1e-6 and round(substeps) >= 1
        assert isinstance(env.observation_space, gym.spaces.Dict) and STATE_KEY in env.observation_space.spaces
        act = env.action_space
        assert isinstance(act, gym.spaces.Box) and act.dtype == np.float32 and act.shape[0] >= 1
        assert np.all(act.low == -1.0) and np.all(act.high == 1.0)
        if name != "toy2d":
            assert act.shape == (7,), "arm tasks use the 7-D OSC_POSE action"
        frame = env.render()
        assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
    finally:
        env.close()


@pytest.mark.parametrize("name", list(ENVS))
def test_reset_step_finite_and_truncation(name):
    env = _env_or_skip(name, max_episode_steps=SHORT_LIMIT)
    try:
        obs, info = env.reset(seed=0)
        _check_obs(env, obs)
        assert isinstance(info["success"], (bool, np.bool_)) and not info["success"]
        again, _ = env.reset(seed=0)
        np.testing.assert_array_equal(obs[STATE_KEY], again[STATE_KEY], err_msg="reset(seed) must be repeatable")
        zero = np.zeros(env.action_space.shape, dtype=np.float32)
        for t in range(1, SHORT_LIMIT + 1):  # holding still never succeeds, so the time limit truncates
            out = env.step(zero)
            _check_step(env, out)
            assert not out[2], "a zero action must not succeed"
            assert bool(out[3]) == (t == SHORT_LIMIT), f"truncated at step {t} of {SHORT_LIMIT}"
        env.reset(seed=1)
        rng = np.random.default_rng(0)
        for _ in range(3):
            _check_step(env, env.step(rng.uniform(-1, 1, env.action_space.shape).astype(np.float32)))
        with pytest.raises(ValueError):
            env.step(np.zeros(env.action_space.shape[0] + 1, dtype=np.float32))
    finally:
        env.close()


@pytest.mark.parametrize("name", ARM_NAMES_HEAVY_SLOW)
def test_camera_observations(name):
    """Arm tasks share the camera overrides: ``cameras=[...]`` and ``image_size`` (square images)."""
    env = _env_or_skip(name, cameras=["agentview"], image_size=24)
    try:
        obs, _ = env.reset(seed=0)
        _check_obs(env, obs)
        img = obs["observation.images.agentview"]
        assert img.shape == (24, 24, 3) and img.std() > 1.0, "camera image must show the scene"
        _check_step(env, env.step(np.zeros(7, dtype=np.float32)))
    finally:
        env.close()


@pytest.mark.parametrize("name", list(ENVS))
def test_unknown_override_raises_listing_valid_keys(name):
    if name.startswith("robosuite/"):
        pytest.importorskip("robosuite", reason="robosuite is not importable")
    if importlib.util.find_spec(ENVS[name][0]) is None:
        pytest.skip(f"{ENVS[name][0]} does not exist yet")
    with pytest.raises(ConfigError, match="max_episode_steps"):
        make_env(name, no_such_key=1)


def test_registry_miss_lists_valid_names():
    with pytest.raises(KeyError, match="toy2d"):
        make_env("no_such_task")


@pytest.mark.parametrize("name", list(ENVS))
def test_expert_episode_ends_as_terminated_on_success(name):
    """With the scripted expert (where one exists), success ends the episode as terminated."""
    env = _env_or_skip(name)
    try:
        experts = pytest.importorskip("armflow.sim.experts", reason="armflow.sim.experts not there yet")
        if name not in experts.EXPERTS:
            pytest.skip(f"no scripted expert for {name}")
        expert = experts.make_expert(env, noise_std=0.0, seed=0)
        obs, _ = env.reset(seed=0)
        expert.reset()
        for _ in range(env.max_episode_steps):
            obs, reward, terminated, truncated, info = env.step(expert(obs))
            _check_step(env, (obs, reward, terminated, truncated, info))
            if terminated or truncated:
                break
        assert terminated and info["success"] and not truncated, f"{name}: expert did not succeed at seed 0"
    finally:
        env.close()
