"""robosuite adapter: state layout, seeding, success signal, cameras, and the scripted Lift expert."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("robosuite", reason="robosuite is not importable")

from armflow.sim import make_env, make_vec_env  # noqa: E402
from armflow.sim.robosuite_env import RobosuiteLiftExpert  # noqa: E402

STATE_KEY, ENV_STATE_KEY = "observation.state", "observation.environment_state"


@pytest.fixture(scope="module")
def lift():
    env = make_env("robosuite/Lift")
    yield env
    env.close()


def _expert_episode(env, seed, noise_std=0.0):
    expert = RobosuiteLiftExpert(env, noise_std=noise_std, seed=seed)
    obs, _ = env.reset(seed=seed)
    cube_z0 = env.field(obs, "cube_pos")[2]
    for _ in range(env.max_episode_steps):
        obs, reward, terminated, truncated, info = env.step(expert(obs))
        if terminated or truncated:
            break
    return obs, reward, terminated, truncated, info, cube_z0


def test_lift_state_layout(lift):
    obs, _ = lift.reset(seed=0)
    state, env_state = obs[STATE_KEY], obs[ENV_STATE_KEY]
    assert state.shape == (9,) and env_state.shape == (10,) and state.dtype == env_state.dtype == np.float32
    assert set(obs) == set(lift.observation_space.spaces) == {STATE_KEY, ENV_STATE_KEY}
    assert {key: [name for name, _ in fields] for key, fields in lift.obs_fields.items()} == {
        STATE_KEY: ["robot0_eef_pos", "robot0_eef_quat", "robot0_gripper_qpos"],
        ENV_STATE_KEY: ["cube_pos", "cube_quat", "gripper_to_cube_pos"]}
    raw = lift.raw._get_observations(force_update=True)
    np.testing.assert_allclose(env_state[0:3], raw["cube_pos"], atol=1e-6)
    np.testing.assert_allclose(lift.field(obs, "cube_pos"), raw["cube_pos"], atol=1e-6)
    q_xyzw = raw["robot0_eef_quat"]
    np.testing.assert_allclose(state[3:7], np.r_[q_xyzw[3], q_xyzw[:3]], atol=1e-6)
    for key in ("robot0_eef_quat", "cube_quat"):
        assert np.linalg.norm(lift.field(obs, key)) == pytest.approx(1.0, abs=1e-4)
    eef, cube = lift.field(obs, "robot0_eef_pos"), lift.field(obs, "cube_pos")
    # robosuite names it gripper_to_cube but stores cube - gripper
    np.testing.assert_allclose(lift.field(obs, "gripper_to_cube_pos"), cube - eef, atol=1e-4)
    assert lift.ctrl_dt == pytest.approx(0.05) and lift.sim_dt == pytest.approx(0.002)
    with pytest.raises(KeyError, match="valid: robot0_eef_pos"):
        lift.field(obs, "nope")


def test_lift_state_holds_no_object_information(lift):
    """Moving the cube in robosuite's sim changes observation.environment_state, not observation.state."""
    before, _ = lift.reset(seed=0)
    sim = lift.raw.sim
    qpos_adr = sim.model.get_joint_qpos_addr(lift.raw.cube.joints[0])[0]
    sim.data.qpos[qpos_adr : qpos_adr + 2] += (0.03, -0.02)
    sim.forward()
    after = lift._obs(lift.raw._get_observations(force_update=True))
    np.testing.assert_allclose(after[STATE_KEY], before[STATE_KEY], atol=1e-9)
    np.testing.assert_allclose(lift.field(after, "cube_pos") - lift.field(before, "cube_pos"), (0.03, -0.02, 0.0),
                               atol=1e-6)


def test_combined_layout_is_the_split_concatenated(lift):
    combined = make_env("robosuite/Lift", state_layout="combined")
    try:
        obs_s, obs_c = lift.reset(seed=3)[0], combined.reset(seed=3)[0]
        assert set(obs_c) == {STATE_KEY} and obs_c[STATE_KEY].shape == (19,)
        np.testing.assert_array_equal(obs_c[STATE_KEY], np.concatenate((obs_s[STATE_KEY], obs_s[ENV_STATE_KEY])))
        np.testing.assert_array_equal(combined.field(obs_c, "cube_pos"), lift.field(obs_s, "cube_pos"))
        with pytest.raises(ValueError, match="valid: split, combined"):
            make_env("robosuite/Lift", state_layout="both")
    finally:
        combined.close()


def test_reset_seed_is_deterministic_through_steps(lift):
    actions = np.random.default_rng(0).uniform(-1, 1, size=(5, 7)).astype(np.float32)

    def rollout(seed):
        flat = lambda obs: np.concatenate((obs[STATE_KEY], obs[ENV_STATE_KEY]))  # noqa: E731
        states = [flat(lift.reset(seed=seed)[0])]
        states += [flat(lift.step(a)[0]) for a in actions]
        return np.stack(states)

    a, b, c = rollout(4), rollout(4), rollout(5)
    np.testing.assert_array_equal(a, b)
    other = make_env("robosuite/Lift")  # a fresh env (as in another worker) must reproduce it too
    try:
        np.testing.assert_array_equal(other.reset(seed=4)[0][ENV_STATE_KEY], a[0, 9:])
    finally:
        other.close()
    assert np.abs(a[0] - c[0]).max() > 1e-3, "different seeds place the cube differently"


def test_action_moves_end_effector_along_x(lift):
    obs, _ = lift.reset(seed=1)
    x0 = obs[STATE_KEY][0]
    for _ in range(5):
        obs, *_ = lift.step(np.array([1, 0, 0, 0, 0, 0, -1], dtype=np.float32))
    assert obs[STATE_KEY][0] - x0 > 0.03, "OSC_POSE +x delta must move the eef forward"


@pytest.mark.parametrize("seed", [0, 1])
def test_expert_lifts_cube_and_success_terminates(lift, seed):
    obs, reward, terminated, truncated, info, cube_z0 = _expert_episode(lift, seed)
    assert terminated and info["success"] and not truncated
    assert lift.raw._check_success()
    assert lift.field(obs, "cube_pos")[2] > cube_z0 + 0.01  # robosuite: cube centre > table + 4 cm
    assert info["reward_terms"] == {"task": pytest.approx(reward)} and reward > 0.9


@pytest.mark.slow
def test_expert_success_rate_with_noise(lift):
    clean = [_expert_episode(lift, seed)[4]["success"] for seed in range(10, 20)]
    noisy = [_expert_episode(lift, seed, noise_std=0.3)[4]["success"] for seed in range(10, 20)]
    assert np.mean(clean) >= 0.8 and np.mean(noisy) >= 0.6


def test_camera_observations():
    env = make_env("robosuite/Lift", cameras=["agentview"], image_size=32, render_size=48)
    try:
        obs, _ = env.reset(seed=0)
        img = obs["observation.images.agentview"]
        assert img.shape == (32, 32, 3) and img.dtype == np.uint8 and img.std() > 5
        assert env.observation_space["observation.images.agentview"].shape == (32, 32, 3)
        frame = env.render(camera="robot0_eye_in_hand")
        assert frame.shape == (48, 48, 3) and not np.array_equal(frame[:32, :32], img)
    finally:
        env.close()


def test_unknown_camera_and_wrong_expert_task():
    with pytest.raises(ValueError, match="agentview"):
        make_env("robosuite/Lift", cameras=["no_such_cam"])
    with pytest.raises(TypeError):
        RobosuiteLiftExpert(make_env("toy2d"))


@pytest.mark.slow
def test_robosuite_vector_env_matches_single_env():
    seeds, actions = [7, 8], np.random.default_rng(2).uniform(-1, 1, size=(4, 2, 7)).astype(np.float32)
    with make_vec_env("robosuite/Lift", 2, n_workers=2, max_episode_steps=3) as venv:
        obs, _ = venv.reset(seed=seeds)
        for a in actions:
            obs, _, _, trunc, info = venv.step(a)
    env = make_env("robosuite/Lift", max_episode_steps=3)
    for i, seed in enumerate(seeds):
        o, _ = env.reset(seed=seed)
        for a in actions[:3, i]:
            o, *_ = env.step(a)
        final = o  # step 3 truncates; step 4 is the new episode's first step
        o, _ = env.reset()
        o, *_ = env.step(actions[3, i])
        np.testing.assert_allclose(obs[STATE_KEY][i], o[STATE_KEY], atol=1e-6)
        np.testing.assert_allclose(obs[ENV_STATE_KEY][i], o[ENV_STATE_KEY], atol=1e-6)
        assert final[STATE_KEY].shape == (9,) and final[ENV_STATE_KEY].shape == (10,)
    env.close()
