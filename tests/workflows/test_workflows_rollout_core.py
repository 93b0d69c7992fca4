"""The one rollout core: obs windows, seeded per-episode noise, chunked execution without lockstep rounds.

The chunked, refilled, vectorised path (``run_episodes`` over ``ChunkVecEnv``) must give every seed exactly the
episode a single env stepped one action at a time by the same ``PolicyRunner`` gives it (what deploy and the
video recorder do), whatever the number of envs or workers.
"""
import numpy as np
import pytest
import torch

from armflow.policies import BatchedObsHistory, make_policy
from armflow.workflows.chunk_env import ChunkVecEnv
from armflow.workflows.rollout import PolicyRunner, run_episodes

KEY = "observation.state"


def _toy_policy():
    torch.manual_seed(0)
    unit = lambda d, s: {"min": -s * np.ones(d), "max": s * np.ones(d), "mean": np.zeros(d),  # noqa: E731
                         "std": s * np.ones(d)}
    stats = {KEY: unit(2, 1.0), "action": unit(2, 1.0)}
    stats["action"]["min"] = np.array([0.1, -0.3])  # drifts right at a noise-dependent speed: reaches the goal
    stats["action"]["max"] = np.array([0.5, 0.3])
    return make_policy("flow", {KEY: (2,)}, 2, stats, horizon=6, n_action_steps=3, mlp_width=32, mlp_blocks=1,
                       state_hidden_dim=16, state_feature_dim=8, time_dim=8, num_inference_steps=2).eval()


def _one_env_episode(policy, seed: int) -> dict:
    from armflow.sim import make_env

    env = make_env("toy2d")
    runner = PolicyRunner(policy, 1)
    obs, _ = env.reset(seed=seed)
    runner.start({k: v[None] for k, v in obs.items()}, seeds=[seed])
    ret, length = 0.0, 0
    while True:
        obs, r, term, trunc, info = env.step(runner.act()[0])
        runner.observe({k: v[None] for k, v in obs.items()})
        ret, length = ret + r, length + 1
        if term or trunc:
            return {"seed": seed, "success": bool(info["success"]), "return": ret, "length": length}


@pytest.mark.parametrize("n_envs,n_workers", [(3, 0), (4, 2)])
def test_refilled_chunked_episodes_equal_single_env_episodes(n_envs, n_workers):
    policy = _toy_policy()
    seeds = list(range(100, 107))
    env = ChunkVecEnv("toy2d", n_envs, policy.n_obs_steps, (KEY,), n_workers=n_workers)
    runner = PolicyRunner(policy, n_envs)
    try:
        got = run_episodes(env, runner.predict, seeds, policy.n_action_steps, on_start=runner.noise.seed)
    finally:
        env.close()
    want = [_one_env_episode(policy, s) for s in seeds]
    assert len({w["length"] for w in want}) > 1  # episodes end at different steps: envs are refilled mid-run
    for g, w in zip(got, want):
        assert (g["seed"], g["success"], g["length"]) == (w["seed"], w["success"], w["length"])
        assert g["return"] == pytest.approx(w["return"], rel=1e-6)  # the one-env sum runs in float32


def test_obs_history_extend_and_masked_reset():
    h = BatchedObsHistory(3)
    h.reset({KEY: np.array([[0.0], [10.0]])})
    before = h.get()
    steps = np.array([[[1.0], [2.0], [3.0]], [[11.0], [11.0], [12.0]]])  # right-aligned last T_o obs
    h.extend({KEY: steps}, n_new=[5, 2])  # env 0 ran a whole chunk, env 1 only two steps
    np.testing.assert_array_equal(h.get()[KEY][:, :, 0], [[1, 2, 3], [10, 11, 12]])
    h.extend({KEY: steps}, n_new=[0, 1])  # env 0 inactive: its window stays
    np.testing.assert_array_equal(h.get()[KEY][:, :, 0], [[1, 2, 3], [11, 12, 12]])
    h.reset({KEY: np.array([[7.0], [8.0]])}, mask=np.array([False, True]))
    np.testing.assert_array_equal(h.get()[KEY][:, :, 0], [[1, 2, 3], [8, 8, 8]])
    np.testing.assert_array_equal(before[KEY][:, :, 0], [[0, 0, 0], [10, 10, 10]])  # handed-out windows unchanged


def test_bench_evaluate_reports_every_grid_point_with_one_success_rate(tmp_path, capsys):
    import json

    from armflow.workflows import bench_evaluate
    from armflow.workflows.common import compose_config

    _toy_policy().save_pretrained(tmp_path / "ckpt")
    cfg = compose_config("bench_evaluate", [f"checkpoint={tmp_path / 'ckpt'}", "task=toy2d", "episodes=5",
                                            "grid=[[2,0],[3,1]]", f"out={tmp_path / 'bench'}", "progress=false"])
    bench = bench_evaluate.main(cfg)
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("BENCH_JSON: ") and json.loads(line.removeprefix("BENCH_JSON: ")) == bench
    assert bench["episodes_per_s_2x0"] > 0 and bench["env_steps_per_s_3x1"] > 0
    assert isinstance(bench["success_rate"], float)  # a seed's episode does not depend on N or the workers
