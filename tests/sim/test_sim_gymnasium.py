"""armflow's envs under gymnasium's own tools: gym.make ids, check_env, render_mode, vector wrappers."""
from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from gymnasium.wrappers.vector import RecordEpisodeStatistics

from armflow.configs import ConfigError
from armflow.sim import ENVS, SubprocVectorEnv, SyncVectorEnv, gym_id, make_env, make_vec_env
from armflow.sim.registry import default_max_episode_steps

STATE_KEY = "observation.state"
NATIVE = ["lift", "lift_hard", "pick_either", "toy2d"]
# The arm tasks' positions have no physical bound, so their Box is (-inf, inf); check_env warns about it.
TOLERATED = ("observation space minimum value is -infinity", "observation space maximum value is infinity")


def _check_env_strict(env: gym.Env) -> None:
    """gymnasium's check_env with every warning an error, except the unbounded-position one above."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env)
    problems = [str(w.message) for w in caught if not any(t in str(w.message) for t in TOLERATED)]
    assert not problems, problems


def test_every_env_is_registered_with_its_default_time_limit():
    assert gym_id("lift") == "armflow/lift-v0" and gym_id("robosuite/Lift") == "armflow/robosuite-Lift-v0"
    for name in ENVS:
        spec = gym.spec(gym_id(name))
        assert spec.max_episode_steps == default_max_episode_steps(name)
    assert gym.spec("armflow/toy2d-v0").max_episode_steps == make_env("toy2d").max_episode_steps == 30
    with pytest.raises(KeyError, match="valid tasks"):
        gym_id("nope")


@pytest.mark.parametrize("name,kwargs", [(n, {}) for n in NATIVE] + [("lift", {"cameras": ["agentview", "wrist"],
                                                                               "image_size": 32})])
def test_gym_make_passes_check_env(name, kwargs):
    env = gym.make(gym_id(name), render_mode="rgb_array", **kwargs)
    assert isinstance(env.unwrapped, gym.Env) and env.unwrapped.render_mode == "rgb_array"
    _check_env_strict(env.unwrapped)  # also re-makes it through env.spec for each render mode
    obs, _ = env.reset(seed=0)
    assert set(obs) == set(env.observation_space.spaces) and obs in env.observation_space
    env.close()


def test_toy2d_from_make_env_is_a_gymnasium_env():
    env = make_env("toy2d")
    assert isinstance(env, gym.Env)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*alternative render modes.*")  # no spec outside gym.make
        check_env(env)
    first = env.reset(seed=7)[0][STATE_KEY]
    np.testing.assert_array_equal(env.reset(seed=7)[0][STATE_KEY], first)


@pytest.mark.slow
def test_robosuite_lift_passes_check_env():  # ~8 s: robosuite builds its model three times
    env = gym.make(gym_id("robosuite/Lift"), render_mode="rgb_array")
    _check_env_strict(env.unwrapped)
    env.close()


def test_gym_make_time_limit_is_the_only_limit_and_kwargs_reach_the_config():
    env = gym.make("armflow/toy2d-v0", max_episode_steps=45, goal_distance_m=2.0)
    assert env.unwrapped.config.goal_distance_m == 2.0 and env.unwrapped.max_episode_steps is None
    assert env.spec.max_episode_steps == 45
    wrappers, e = [], env
    while e is not e.unwrapped:
        wrappers.append(type(e).__name__)
        e = e.env
    assert wrappers.count("TimeLimit") == 1, wrappers
    env.reset(seed=0)
    for t in range(1, 100):  # standing still: only the time limit ends it, past toy2d's own default of 30
        _, _, terminated, truncated, _ = env.step(np.zeros(2, dtype=np.float32))
        if terminated or truncated:
            break
    assert truncated and not terminated and t == 45
    with pytest.raises(ConfigError, match="unknown config key"):
        gym.make("armflow/toy2d-v0", no_such_key=1)


def test_render_mode():
    env = make_env("lift", render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert env.render_mode == "rgb_array" and frame.shape == (84, 84, 3) and frame.dtype == np.uint8
    assert not np.array_equal(env.render(camera="wrist"), frame), "render(camera=...) still picks the camera"
    env.close()
    assert make_env("toy2d").render_mode is None
    for name in ("lift", "toy2d"):
        with pytest.raises(ValueError, match=r"render_mode 'human'.*valid render modes: None, 'rgb_array'"):
            make_env(name, render_mode="human")
    env = gym.make("armflow/pick_either-v0", render_mode="rgb_array")
    env.reset(seed=1)
    assert env.render().shape == (84, 84, 3)


def _hand_count(rewards, dones):
    """Episode (return, length) pairs per env from the raw reward/done stream (same-step autoreset)."""
    n = rewards.shape[1]
    ret, length, episodes = np.zeros(n), np.zeros(n, dtype=int), [[] for _ in range(n)]
    for r, d in zip(rewards, dones):
        ret += r
        length += 1
        for i in np.flatnonzero(d):
            episodes[i].append((ret[i], length[i]))
            ret[i], length[i] = 0.0, 0
    return episodes


def test_record_episode_statistics_matches_a_hand_count():
    venv = make_vec_env("toy2d", 3, n_workers=0, max_episode_steps=7)
    assert isinstance(venv, gym.vector.VectorEnv)
    assert venv.metadata["autoreset_mode"] == gym.vector.AutoresetMode.SAME_STEP
    assert venv.single_observation_space == make_env("toy2d").observation_space
    env = RecordEpisodeStatistics(venv)
    obs, _ = env.reset(seed=[1, 2, 3])
    assert obs in env.observation_space
    rng = np.random.default_rng(0)
    rewards, dones, recorded = [], [], [[] for _ in range(3)]
    for t in range(40):
        actions = rng.uniform(-1, 1, size=(3, 2)).astype(np.float32)
        actions[0] = (1.0, 0.0)  # env 0 reaches the right goal (terminated), the others mostly truncate
        obs, reward, terminated, truncated, info = env.step(actions)
        assert obs in env.observation_space
        rewards.append(reward)
        dones.append(terminated | truncated)
        if "episode" in info:
            for i in np.flatnonzero(info["_episode"]):
                recorded[i].append((info["episode"]["r"][i], info["episode"]["l"][i]))
                assert info["episode"]["r"][i] == pytest.approx(info["episode_return"][i], rel=1e-5)
                assert info["episode"]["l"][i] == info["episode_length"][i]
    expected = _hand_count(np.array(rewards), np.array(dones))
    assert sum(map(len, expected)) >= 10
    for got, want in zip(recorded, expected):
        assert len(got) == len(want)
        np.testing.assert_allclose(np.array(got), np.array(want), rtol=1e-5)
    assert env.episode_count == sum(map(len, expected))
    env.close()
    assert venv.closed


@pytest.mark.parametrize("n_workers", [0, 2])
def test_vector_reset_options_and_reset_mask(n_workers):
    with make_vec_env("toy2d", 3, n_workers=n_workers) as venv:
        assert isinstance(venv, SyncVectorEnv if n_workers == 0 else SubprocVectorEnv)
        first, _ = venv.reset(seed=[5, 6, 7], options={})
        for _ in range(3):
            moved, *_ = venv.step(np.full((3, 2), 0.3, dtype=np.float32))
        mask = np.array([False, True, False])
        obs, info = venv.reset(seed=[0, 6, 0], options={"reset_mask": mask})
        np.testing.assert_array_equal(obs[STATE_KEY][1], first[STATE_KEY][1])  # env 1 restarted from seed 6
        np.testing.assert_array_equal(obs[STATE_KEY][[0, 2]], moved[STATE_KEY][[0, 2]])  # the others kept going
        assert not info["success"].any()
        with pytest.raises(ValueError, match="reset_mask"):
            venv.reset(options={"reset_mask": np.zeros(3, dtype=bool)})
        with pytest.raises(ValueError, match="reset_mask"):
            venv.reset(options={"reset_mask": np.array([1, 0, 1])})
        frames = venv.render()
        assert len(frames) == 3 and frames[0].shape == (64, 64, 3)


def test_gym_make_vec_builds_armflow_vector_env_with_its_time_limit():
    venv = gym.make_vec("armflow/toy2d-v0", num_envs=2, n_workers=0, max_episode_steps=5)
    assert isinstance(venv, SyncVectorEnv) and venv.max_episode_steps == 5 and venv.spec.id == "armflow/toy2d-v0"
    venv.reset(seed=0)
    for _ in range(5):
        *_, truncated, _ = venv.step(np.zeros((2, 2), dtype=np.float32))
    assert truncated.all()
    venv.close()
    gym_venv = gym.make_vec("armflow/toy2d-v0", num_envs=2, vectorization_mode="sync")
    obs, _ = gym_venv.reset(seed=0)
    assert obs[STATE_KEY].shape == (2, 2)
    gym_venv.close()
