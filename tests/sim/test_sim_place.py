"""``place`` (the reset skill's task), ``PlaceExpert``, ``PersistentEnv`` / ``in_workspace``, and the sim task
driver's audit extras over a place run: real MuJoCo, a few hundred control steps each."""
from __future__ import annotations

import numpy as np
import pytest

from armflow.hardware.sim_task import SimTaskConfig, SimTaskDriver
from armflow.sim import ENV_STATE_KEY, STATE_KEY, make_env, make_expert
from armflow.sim.experts.place import PlaceExpert
from armflow.sim.persistent import PersistentEnv, in_workspace
from armflow.sim.tasks.place import lifted, placed


def run_expert(env, seed: int, expert_seed: int = 0, noise_std: float = 0.0):
    """One ``place`` episode under the scripted expert -> (success, steps, start xy, final cube xy)."""
    obs, _ = env.reset(seed=seed)
    start = env.cube_pos(0)[:2].copy()
    expert = make_expert(env, noise_std=noise_std, seed=expert_seed)
    expert.reset()
    for step in range(1, env.max_episode_steps + 1):
        obs, _, terminated, truncated, info = env.step(expert(obs))
        if terminated or truncated:
            break
    return bool(info["success"]), step, start, env.cube_pos(0)[:2].copy()


def test_place_resets_deterministically_with_the_cube_held():
    env, lift = make_env("place"), make_env("lift")
    obs, info = env.reset(seed=3)
    assert not info["success"] and env._steps == 0
    assert env.grasped(0) and lifted(env) and not placed(env)
    np.testing.assert_allclose(env.start_xy_m, env.cube_pos(0)[:2])
    again, _ = env.reset(seed=3)
    for key in obs:
        np.testing.assert_array_equal(obs[key], again[key])
    other, _ = env.reset(seed=4)
    assert not np.allclose(other[ENV_STATE_KEY][:2], obs[ENV_STATE_KEY][:2])
    lift_obs, _ = lift.reset(seed=3)  # same layout as lift, held above lift's start spot for that seed
    assert {k: v.shape for k, v in lift_obs.items()} == {k: v.shape for k, v in obs.items()}
    assert set(env.observation_space.spaces) == set(lift.observation_space.spaces) == {STATE_KEY, ENV_STATE_KEY}
    np.testing.assert_allclose(obs[ENV_STATE_KEY][:2], lift_obs[ENV_STATE_KEY][:2], atol=0.01)


def test_place_expert_success_rate():
    env = make_env("place")
    results = [run_expert(env, seed) for seed in range(50)]
    assert sum(r[0] for r in results) >= 48, [i for i, r in enumerate(results) if not r[0]]
    for ok, steps, start, end in results:
        if ok:
            assert np.linalg.norm(end - start) >= env.cfg.min_move_m
            assert np.all(np.abs(end - (0.5, 0.0)) <= 0.08)
            assert steps * 1.5 <= env.max_episode_steps, "the time limit leaves the expert 1.5x its need"


def test_placed_false_while_held_true_after_the_expert():
    env = make_env("place", max_episode_steps=None)
    obs, _ = env.reset(seed=0)
    expert = make_expert(env, seed=0)
    expert.reset()
    flags = []
    for _ in range(60):
        obs, _, terminated, _, info = env.step(expert(obs))
        flags.append((env.grasped(0), placed(env), terminated))
        if terminated:
            break
    assert terminated and flags[-1][1] and not flags[-1][0]
    assert not any(p for g, p, _ in flags if g), "placed while grasped"
    assert sum(p for _, p, _ in flags) == 1, "success ends the episode on the first placed step"


def test_place_needs_the_min_move():
    """Putting the cube back where it was is placed but no success (the forward skill needs a new start)."""
    env = make_env("place", min_move_m=0.5)  # farther than the region allows
    ok, steps, _, _ = run_expert(env, seed=1)
    assert not ok and steps == env.max_episode_steps
    assert placed(env)


def test_place_expert_picks_first_when_the_cube_is_on_the_table():
    env = make_env("lift", max_episode_steps=None)  # lift's start: cube on the table, not held
    obs, _ = env.reset(seed=2)
    start = env.cube_pos(0)[:2].copy()
    expert = PlaceExpert(env, seed=0)
    expert.reset()
    assert expert.phase == "pick"
    for _ in range(120):
        obs, *_ = env.step(expert(obs))
        if placed(env) and np.linalg.norm(env.cube_pos(0)[:2] - start) >= 0.04:
            break
    assert placed(env) and np.linalg.norm(env.cube_pos(0)[:2] - start) >= 0.04


def test_persistent_env_keeps_the_scene_and_counts():
    env = PersistentEnv(make_env("lift", max_episode_steps=5))
    obs, info = env.reset(seed=0)
    assert info["scene_reset"] and (env.scene_resets, env.soft_resets) == (1, 0)
    for _ in range(5):
        obs, _, _, truncated, _ = env.step(np.array([0, 0, -1, 0, 0, 0, -1], np.float32))
    assert truncated
    kept, info = env.reset(seed=1)  # a soft reset: the seed is ignored, the arm stays where it went
    assert not info["scene_reset"] and (env.scene_resets, env.soft_resets) == (1, 1)
    for key in obs:
        np.testing.assert_array_equal(kept[key], obs[key])
    _, _, _, truncated, _ = env.step(np.zeros(7, np.float32))
    assert not truncated, "the time limit restarts at a soft reset"
    fresh, info = env.reset(seed=0, options={"scene": True})
    assert info["scene_reset"] and (env.scene_resets, env.soft_resets) == (2, 1)
    assert not np.allclose(fresh[STATE_KEY][:3], obs[STATE_KEY][:3])


def test_in_workspace_detects_a_cube_off_the_table():
    env = make_env("lift")
    env.reset(seed=0)
    assert in_workspace(env)
    qpos = env.model.jnt_qposadr[env.model.jnt("cube0_joint").id]
    for pos in ((0.5, 0.0, -0.3), (0.9, 0.0, 0.02), (0.5, 0.35, 0.02)):  # fallen, out of reach in x, in y
        env.data.qpos[qpos : qpos + 3] = pos
        assert not in_workspace(env), pos


def test_sim_task_driver_audit_extras_over_a_place_run():
    driver = SimTaskDriver(SimTaskConfig(task="place", seed=5))
    driver.connect()
    state = driver.read_state()
    assert state.extras["scene_resets"] == 1
    assert state.extras["success.lift"] and not state.extras["success.place"] and state.extras["in_workspace"]
    env = driver.env
    expert = make_expert(env, seed=0)
    expert.reset()
    trace = []
    for _ in range(env.max_episode_steps):
        action = expert()
        driver.command("ee_delta", action[:6], gripper=(float(action[6]) + 1.0) / 2.0)
        extras = driver.read_state().extras
        trace.append(extras)
        assert extras["success.lift"] == lifted(env) and extras["success.place"] == placed(env)
        if extras["success"]:
            break
    assert trace[-1]["success"] and trace[-1]["success.place"] and not trace[-1]["success.lift"]
    assert trace[0]["success.lift"] and not trace[0]["success.place"]
    assert all(e["in_workspace"] and e["scene_resets"] == 1 for e in trace)
    driver.reset(7)
    assert driver.read_state().extras["scene_resets"] == 2
    driver.close()


@pytest.mark.parametrize("persistent", [False, True])
def test_sim_task_driver_without_a_time_limit_steps_on_after_success(persistent):
    """The persistent stream: no time limit, stepping after success works; ``persistent`` also keeps the
    episode flags False (lockstep serving ends an episode on them) while ``success.lift`` reports the skill."""
    cfg = SimTaskConfig(task="lift", seed=0, persistent=True) if persistent else \
        SimTaskConfig(task="lift", seed=0, env={"max_episode_steps": None})
    driver = SimTaskDriver(cfg)
    driver.connect()
    env = driver.env
    assert env.max_episode_steps is None
    expert = make_expert(env, seed=0)
    expert.reset()
    lifted_steps, success_steps = 0, 0
    for _ in range(150):
        action = expert()
        driver.command("ee_delta", action[:6], gripper=(float(action[6]) + 1.0) / 2.0)
        extras = driver.read_state().extras
        assert not extras["truncated"]
        lifted_steps += extras["success.lift"]
        success_steps += extras["success"]
    assert lifted_steps > 100 and extras["episode_step"] == 150
    assert success_steps == (0 if persistent else lifted_steps)
    driver.close()


def test_sim_task_driver_persistent_refuses_a_time_limit():
    with pytest.raises(ValueError, match="max_episode_steps"):
        SimTaskDriver(SimTaskConfig(task="lift", persistent=True, env={"max_episode_steps": 100}))
