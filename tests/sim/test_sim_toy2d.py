"""toy2d: bimodal goals, reward terms, seeding, truncation, and its expert covering both modes."""
from __future__ import annotations

import numpy as np
import pytest

from armflow.configs import ConfigError
from armflow.sim.toy2d import Toy2DExpert, make_toy2d

STATE_KEY = "observation.state"


def _run_episode(env, expert, seed):
    obs, _ = env.reset(seed=seed)
    expert.reset()
    total, steps = 0.0, 0
    while True:
        obs, reward, terminated, truncated, info = env.step(expert(obs))
        total, steps = total + reward, steps + 1
        if terminated or truncated:
            return info, total, steps, obs


def test_expert_succeeds_and_covers_both_goals():
    env = make_toy2d()
    expert = Toy2DExpert(env, noise_std=0.0, seed=0)
    goals = []
    for seed in range(40):
        info, _, steps, obs = _run_episode(env, expert, seed)
        assert info["success"] and steps <= env.max_episode_steps
        goals.append(info["goal_index"])
        assert info["goal_index"] == expert.goal_index
        assert np.linalg.norm(obs[STATE_KEY] - env.goals[expert.goal_index]) <= env.config.success_radius_m + 1e-6
    assert 10 <= sum(goals) <= 30, f"expert should pick both goals about equally, got right={sum(goals)}/40"


def test_noisy_expert_mostly_succeeds_and_is_seeded():
    env = make_toy2d()
    a = [Toy2DExpert(env, noise_std=0.5, seed=3) for _ in range(2)]
    obs, _ = env.reset(seed=0)
    a[0].reset(), a[1].reset()
    np.testing.assert_array_equal(a[0](obs), a[1](obs))
    wins = [_run_episode(env, a[0], s)[0]["success"] for s in range(30)]
    assert np.mean(wins) >= 0.8


def test_reward_terms_and_weighted_goal():
    env = make_toy2d(goal_rewards=(1.0, 3.0))
    env.reset(seed=0)
    obs, reward, *_ = env.step(np.array([1.0, 0.0], dtype=np.float32))
    assert obs[STATE_KEY][0] > 0.05
    right = Toy2DExpert(env, seed=0)
    left_info = right_info = None
    for seed in range(20):
        info, total, *_ = _run_episode(env, right, seed)
        if right.goal_index == 1:
            right_info, right_total = info, total
        else:
            left_info, left_total = info, total
    assert right_info["reward_terms"]["success"] == pytest.approx(3.0)
    assert left_info["reward_terms"]["success"] == pytest.approx(1.0)
    assert right_total > left_total + 1.5


def test_progress_term_is_distance_decrease():
    env = make_toy2d(action_cost_weight=0.0)
    obs, _ = env.reset(seed=5)
    d0 = np.min(np.linalg.norm(env.goals - obs[STATE_KEY], axis=1))
    obs, reward, _, _, info = env.step(np.array([-0.5, 0.3], dtype=np.float32))
    d1 = np.min(np.linalg.norm(env.goals - obs[STATE_KEY], axis=1))
    assert info["reward_terms"]["progress"] == pytest.approx(d0 - d1, abs=1e-6)
    assert reward == pytest.approx(d0 - d1, abs=1e-6)


def test_seeding_and_truncation():
    env = make_toy2d(max_episode_steps=4)
    s0 = env.reset(seed=7)[0][STATE_KEY]
    assert np.array_equal(s0, env.reset(seed=7)[0][STATE_KEY])
    assert not np.array_equal(s0, env.reset(seed=8)[0][STATE_KEY])
    env.reset(seed=7)
    flags = [env.step(np.zeros(2, dtype=np.float32))[2:4] for _ in range(4)]
    assert flags == [(False, False)] * 3 + [(False, True)]
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(2, dtype=np.float32))


def test_bad_inputs_raise():
    with pytest.raises(ConfigError, match="toy2d: unknown config key.*Did you mean 'goal_rewards'.*Valid keys"):
        make_toy2d(goal_reward=(1, 2))
    env = make_toy2d()
    env.reset(seed=0)
    with pytest.raises(ValueError, match="finite"):
        env.step(np.array([np.nan, 0.0]))
    with pytest.raises(TypeError):
        Toy2DExpert(object())


def test_render_shows_agent():
    env = make_toy2d(render_size=48)
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (48, 48, 3) and frame.dtype == np.uint8
    red = (frame[..., 0] > 200) & (frame[..., 1] < 50)
    rows, cols = np.nonzero(red)
    assert len(rows) and abs(cols.mean() - 23.5) < 3, "agent starts near the image centre"


def test_agent_stays_in_observation_space():
    env = make_toy2d(max_episode_steps=200)
    obs, _ = env.reset(seed=0)
    for _ in range(60):
        obs, *_ = env.step(np.array([0.0, 1.0], dtype=np.float32))
    assert env.observation_space.contains(obs)
    assert obs[STATE_KEY][1] == pytest.approx(env.arena_half_m)
