"""A cube's observed orientation is its symmetric pose nearest the identity (a flipped cube reads as flat)."""
import mujoco
import numpy as np

from armflow.sim.tasks.cube_env import _CUBE_SYMMETRIES, cube_symmetric_canonical


def _mat(q):
    m = np.zeros(9)
    mujoco.mju_quat2Mat(m, np.asarray(q, np.float64))
    return m.reshape(3, 3)


def test_flipped_cube_reads_as_the_flat_cube_it_is():
    rng = np.random.default_rng(0)
    for _ in range(50):
        yaw = rng.uniform(-np.pi / 4, np.pi / 4)
        flat = np.array([np.cos(yaw / 2), 0, 0, np.sin(yaw / 2)])
        sym = _CUBE_SYMMETRIES[rng.integers(len(_CUBE_SYMMETRIES))]
        flipped = np.zeros(4)
        mujoco.mju_mat2Quat(flipped, (_mat(flat) @ sym).reshape(-1))  # the same cube, another face down
        canon = cube_symmetric_canonical(flipped)
        assert np.allclose(_mat(canon), _mat(flat), atol=1e-9)


def test_the_result_is_a_symmetric_pose_of_the_input_and_nearest_identity():
    rng = np.random.default_rng(1)
    for _ in range(50):
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        canon = cube_symmetric_canonical(q)
        rel = _mat(q).T @ _mat(canon)
        assert np.min([np.abs(rel - s).max() for s in _CUBE_SYMMETRIES]) < 1e-9
        assert canon[0] >= np.cos(np.deg2rad(62.8) / 2) - 1e-9  # the cube group's cell around identity


def test_cube_orientation_obs_false_keeps_positions_only():
    import pytest

    from armflow.sim import make_env

    full, pos_only = make_env("pick_either"), make_env("pick_either", cube_orientation_obs=False)
    a, _ = full.reset(seed=3)
    b, _ = pos_only.reset(seed=3)
    assert pos_only.observation_space["observation.environment_state"].shape == (12,)
    keep = [10 * i + j for i in range(2) for j in (0, 1, 2, 7, 8, 9)]
    assert np.array_equal(b["observation.environment_state"], a["observation.environment_state"][keep])
    for _ in range(5):  # and after steps (the buffer is read when the obs is built)
        act = np.full(7, 0.3, np.float32)
        a, *_ = full.step(act)
        b, *_ = pos_only.step(act)
    assert np.array_equal(b["observation.environment_state"], a["observation.environment_state"][keep])
    with pytest.raises(ValueError, match="state_layout=split"):
        make_env("lift", cube_orientation_obs=False, state_layout="combined")


def test_itps_workspace_box_is_the_sims():
    from armflow.policies.steering import itps
    from armflow.sim import persistent

    assert tuple(itps.WORKSPACE_LOW_M) == tuple(persistent.WORKSPACE_LOW_M)
    assert tuple(itps.WORKSPACE_HIGH_M) == tuple(persistent.WORKSPACE_HIGH_M)
