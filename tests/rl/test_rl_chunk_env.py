"""ChunkVecEnv: chunk reward sums, terminated vs truncated, final obs kept, autoreset mid-chunk, learner-side
rewards, worker errors."""
import gymnasium as gym
import numpy as np
import pytest

from armflow.sim.vector import SyncVectorEnv, WorkerError
from armflow.workflows.chunk_env import REWARDS, ChunkVecEnv

KEY = "observation.state"


class CounterEnv(gym.Env):
    """Scripted env: state = [episode id, t]; reward = t; terminates at ``term_at`` or truncates at ``limit``."""

    observation_space = gym.spaces.Dict({KEY: gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)})
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def __init__(self, term_at=None, limit=5):
        self.term_at, self.limit, self.episode, self.t = term_at, limit, -1, 0
        self.max_episode_steps = limit
        self.steps_in_episode = []

    def reset(self, seed=None, options=None):
        self.episode += 1
        self.t = 0
        self.steps_in_episode.append(0)
        return {KEY: np.array([self.episode, 0], np.float32)}, {"success": False}

    def step(self, action):
        self.t += 1
        self.steps_in_episode[-1] += 1
        term = self.term_at is not None and self.t == self.term_at
        trunc = not term and self.t >= self.limit
        return {KEY: np.array([self.episode, self.t], np.float32)}, float(self.t), term, trunc, {"success": term}



def _venv(*envs):
    return SyncVectorEnv.from_env_fns([lambda e=e: e for e in envs])


def _env(term_at, limit):
    envs = [CounterEnv(term_at, limit), CounterEnv(None, limit)]
    return ChunkVecEnv("unused", 2, n_obs_steps=2, obs_keys=(KEY,), venv=_venv(*envs)), envs


def test_terminated_mid_chunk_stops_and_resets():
    venv, envs = _env(term_at=2, limit=10)
    obs = venv.reset([0, 1])
    np.testing.assert_array_equal(obs[KEY][0], [[0, 0], [0, 0]])  # first obs repeated T_o times
    step = venv.step(np.zeros((2, 3, 1)))
    assert step.terminated.tolist() == [True, False] and step.truncated.tolist() == [False, False]
    assert step.reward.tolist() == [1 + 2, 1 + 2 + 3]   # env 0 stopped after its terminal step
    assert step.n_steps.tolist() == [2, 3]
    assert step.elapsed.tolist() == [2, 3]   # env steps into each episode at next_obs
    assert step.success.tolist() == [True, False]
    np.testing.assert_array_equal(step.next_obs[KEY][0], [[0, 1], [0, 2]])  # final obs window
    np.testing.assert_array_equal(step.obs[KEY][0], [[1, 0], [1, 0]])       # new episode, first obs
    assert envs[0].steps_in_episode == [2, 0]  # leftover action was not run in the new episode
    assert step.episodes == [{"return": 3.0, "rl_return": 3.0, "length": 2, "success": True, "mode": -1}]


def test_truncated_keeps_final_obs_for_bootstrap():
    venv, envs = _env(term_at=None, limit=4)
    venv.reset([0, 1])
    venv.step(np.zeros((2, 3, 1)))
    step = venv.step(np.zeros((2, 3, 1)))
    assert step.truncated.tolist() == [True, True] and not step.terminated.any()
    assert step.reward.tolist() == [4.0, 4.0] and step.n_steps.tolist() == [1, 1]
    np.testing.assert_array_equal(step.next_obs[KEY][:, -1], [[0, 4], [0, 4]])
    np.testing.assert_array_equal(step.obs[KEY][:, -1], [[1, 0], [1, 0]])
    assert [e["success"] for e in step.episodes] == [False, False]


def test_inactive_envs_are_not_stepped():
    venv, envs = _env(term_at=None, limit=10)
    venv.reset([0, 1])
    step = venv.step(np.zeros((2, 2, 1)), active=np.array([True, False]), autoreset=False)
    assert step.n_steps.tolist() == [2, 0] and envs[1].t == 0 and envs[0].t == 2
    np.testing.assert_array_equal(step.obs[KEY][1], [[0, 0], [0, 0]])  # the inactive env keeps its window


def test_bad_action_shape():
    venv, _ = _env(None, 5)
    venv.reset()
    with pytest.raises(ValueError, match=r"step_chunk\(actions\): expected shape \(2, 'T_a', 1\)"):
        venv.step(np.zeros((3, 2, 1)))


def test_subprocess_toy2d_matches_inprocess():
    actions = np.tile(np.array([[1.0, 0.0]], np.float32), (2, 4, 1))
    results = []
    for n_workers in (0, 2):
        venv = ChunkVecEnv("toy2d", 2, n_obs_steps=1, obs_keys=(KEY,), n_workers=n_workers)
        try:
            venv.reset([3, 4])
            results.append([venv.step(actions) for _ in range(3)])
        finally:
            venv.close()
    for a, b in zip(*results):
        np.testing.assert_allclose(a.reward, b.reward)
        np.testing.assert_allclose(a.obs[KEY], b.obs[KEY])
        assert a.terminated.tolist() == b.terminated.tolist()
    # Moving right at full speed reaches the right goal (1 m at 0.1 m/step) inside the third chunk.
    assert results[0][2].terminated.all() and results[0][2].success.all()


def test_success_reward_mode_is_sparse():
    env = CounterEnv(term_at=2, limit=10)
    venv = ChunkVecEnv("unused", 1, n_obs_steps=1, obs_keys=(KEY,), venv=_venv(env), reward_mode="success")
    venv.reset([0])
    first = venv.step(np.zeros((1, 1, 1)))
    second = venv.step(np.zeros((1, 3, 1)))
    assert first.reward.tolist() == [0.0] and second.reward.tolist() == [1.0]
    assert second.episodes[0]["return"] == 3.0   # the stats keep the env's own return ...
    assert second.episodes[0]["rl_return"] == 1.0   # ... and the return of the reward being optimised
    with pytest.raises(ValueError, match="reward_mode='dense'"):
        ChunkVecEnv("unused", 1, n_obs_steps=1, obs_keys=(KEY,), venv=_venv(CounterEnv()), reward_mode="dense")


class TermsEnv(CounterEnv):
    """CounterEnv whose info carries shaped reward terms: reach = 0.1 t, success bonus on the terminal step."""

    def step(self, action):
        obs, r, term, trunc, info = super().step(action)
        info["reward_terms"] = {"reach": 0.1 * self.t, "success": 5.0 * term}
        return obs, r, term, trunc, info


def test_shaped_reward_is_success_plus_telescoping_potential():
    venv = ChunkVecEnv("unused", 1, n_obs_steps=1, obs_keys=(KEY,), venv=_venv(TermsEnv(term_at=5, limit=10)),
                       reward_mode="shaped", shaping_scale=0.5)
    venv.reset([0])
    rewards = [venv.step(np.zeros((1, 2, 1))).reward[0] for _ in range(3)]  # t = 2, 4, 5 (terminal)
    np.testing.assert_allclose(rewards, [0.5 * 0.2, 0.5 * 0.2, 1.0 + 0.5 * 0.1], rtol=1e-6)
    assert sum(rewards) == pytest.approx(1.0 + 0.5 * 0.5)   # success + scale * phi(final) - phi(reset) = 0
    step = venv.step(np.zeros((1, 2, 1)))                   # new episode: potential restarts from 0
    assert step.reward[0] == pytest.approx(0.5 * 0.2)


def test_rewards_are_computed_on_the_learner_side_from_per_step_terms():
    """The workers return per-step env rewards and reward terms; any batched function can be the RL reward."""
    calls = []

    def reach_only(obs, action, next_obs, info):
        calls.append((obs[KEY].shape, action.shape, next_obs[KEY].shape))
        return info["reward_terms"]["reach"].sum(axis=1)

    venv = ChunkVecEnv("unused", 1, n_obs_steps=1, obs_keys=(KEY,), venv=_venv(TermsEnv(term_at=5, limit=10)),
                       reward_mode=reach_only)
    venv.reset([0])
    step = venv.step(np.zeros((1, 3, 1)))
    np.testing.assert_allclose(step.reward_terms["reach"], [[0.1, 0.2, 0.3]], rtol=1e-6)
    assert step.reward[0] == pytest.approx(0.6) and calls == [((1, 1, 2), (1, 3, 1), (1, 1, 2))]
    assert set(REWARDS) == {"env", "success", "shaped"}


@pytest.mark.parametrize("n_workers", [0, 1])
def test_a_worker_exception_surfaces_with_its_traceback(n_workers):
    venv = ChunkVecEnv("toy2d", 2, n_obs_steps=1, obs_keys=(KEY,), n_workers=n_workers)
    try:
        venv.reset([0, 1])
        bad = np.zeros((2, 2, 2), np.float32)
        bad[1, 1] = np.nan
        error = WorkerError if n_workers else ValueError
        with pytest.raises(error, match="action must be a finite array") as info:
            venv.step(bad)
        if n_workers:
            assert "Traceback" in str(info.value) and "toy2d.py" in str(info.value)
    finally:
        venv.close()
