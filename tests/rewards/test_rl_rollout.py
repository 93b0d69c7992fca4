"""A RewardModel as the rollout core's reward over real MuJoCo renders: it sees each env's newest frame."""
import importlib

import numpy as np

from armflow.rewards.fake import FunctionReward
from armflow.rewards.rl import RewardModelFn


def _chunk_env_class():
    for name in ("armflow.workflows.chunk_env", "armflow.workflows.finetune_envs"):  # module being renamed
        try:
            return importlib.import_module(name).ChunkVecEnv
        except ModuleNotFoundError:
            continue
    raise AssertionError("no ChunkVecEnv module")


def test_reward_model_reads_the_chunks_last_render_and_state():
    cam, seen = "observation.images.agentview", []
    model = FunctionReward(lambda q: seen.append((q.frames["agentview"].copy(), q.state.copy()))
                           or q.frames["agentview"].mean() / 255.0, name="brightness")
    reward_fn = RewardModelFn(model, ["agentview"])
    env = _chunk_env_class()("lift", 2, n_obs_steps=2, obs_keys=("observation.state", cam),
                             overrides={"cameras": ["agentview"], "image_size": 32}, reward_mode=reward_fn)
    try:
        env.reset(seeds=[0, 1])
        rng = np.random.default_rng(0)
        for _ in range(2):
            step = env.step(rng.uniform(-0.5, 0.5, (2, 4, env.venv.single_action_space.shape[0])).astype(np.float32))
            frames, states = zip(*seen[-2:])
            for i in range(2):
                np.testing.assert_array_equal(frames[i][-1], step.next_obs[cam][i, -1])
                np.testing.assert_allclose(states[i], step.next_obs["observation.state"][i, -1])
            np.testing.assert_allclose(step.reward, step.next_obs[cam][:, -1].mean(axis=(1, 2, 3)) / 255.0,
                                       rtol=1e-6)
    finally:
        env.close()
    assert reward_fn.stats == {"queries": 4, "invalid": 0, "held": 0, "skipped": 0}
