"""RL on an image-conditioned policy: ``armflow finetune`` takes a checkpoint whose obs_spec holds a camera in
the env's (H, W, 3) convention (what ``armflow train`` writes from a LeRobot dataset) and fine-tunes it on lift."""
import numpy as np
import pytest
import torch

from armflow.workflows.common import compose_config
from armflow.workflows.finetune import run_finetune

CAM = "observation.images.agentview"
SIDE = 32
TASK = ["task=lift", "+task_overrides.cameras=[agentview]", f"+task_overrides.image_size={SIDE}",
        "+task_overrides.max_episode_steps=8"]


@pytest.fixture(scope="module")
def image_flow_ckpt(tmp_path_factory):
    """A tiny flow policy on lift's state + a 32x32 agentview camera (untrained: the test is the plumbing)."""
    from armflow.policies import make_policy
    from armflow.sim import make_env

    env = make_env("lift", cameras=("agentview",), image_size=SIDE)
    spaces, d_a = env.observation_space.spaces, int(env.action_space.shape[0])
    env.close()
    d_s = int(spaces["observation.state"].shape[0])
    assert tuple(spaces[CAM].shape) == (SIDE, SIDE, 3)
    stats = {"observation.state": {"min": -np.ones(d_s), "max": np.ones(d_s)},
             CAM: {"mean": np.full((3, 1, 1), 0.5), "std": np.full((3, 1, 1), 0.25)},
             "action": {"min": -np.ones(d_a), "max": np.ones(d_a)}}
    torch.manual_seed(0)
    policy = make_policy("flow", obs_spec={"observation.state": (d_s,), CAM: (SIDE, SIDE, 3)}, action_dim=d_a,
                         stats=stats, n_obs_steps=1, horizon=4, n_action_steps=2, state_hidden_dim=32,
                         state_feature_dim=16, mlp_width=32, mlp_blocks=1, time_dim=16, num_inference_steps=2,
                         image_channels=(8, 16), image_keypoints=8, image_feature_dim=16)
    out = tmp_path_factory.mktemp("image_flow")
    policy.save_pretrained(out)
    return str(out)


@pytest.mark.parametrize("algo,extra", [
    ("fpo", ["algo.params.n_mc=2", "algo.params.update_epochs=1", "algo.params.critic_warmup_iters=0"]),
    ("dsrl", ["algo.params.hidden=32", "algo.params.warmup_transitions=4", "algo.params.utd=0.25",
              "algo.params.batch_size=8"]),
])
def test_finetune_an_image_conditioned_flow_checkpoint(image_flow_ckpt, tmp_path, algo, extra):
    from armflow.policies import load_policy
    from armflow.policies.rl import load_dsrl_policy

    cfg = compose_config("finetune", [f"algo={algo}", f"checkpoint={image_flow_ckpt}", f"out={tmp_path}", *TASK,
                                      "n_envs=2", "n_workers=0", "n_eval_envs=2", "eval_episodes=2", "n_steps=2",
                                      "env_steps=16", "eval_every_iters=2", "progress=false", *extra])
    summary = run_finetune(cfg)
    assert summary["iterations"] >= 2 and summary["env_steps"] >= 16
    assert all(0.0 <= e["success_rate"] <= 1.0 for e in summary["evals"])
    last = tmp_path / "checkpoints" / "last"
    policy = load_dsrl_policy(last) if algo == "dsrl" else load_policy(last)
    obs = {"observation.state": torch.zeros(1, 1, policy.obs_spec["observation.state"][0]),
           CAM: torch.zeros(1, 1, SIDE, SIDE, 3, dtype=torch.uint8)}
    chunk = policy.predict_chunk(obs)
    assert chunk.shape == (1, 4, policy.action_dim) and torch.isfinite(chunk).all()
    if algo == "fpo":   # the fine-tuned image encoder moved: the update reached the camera path
        before = load_policy(image_flow_ckpt).state_dict()
        after = policy.state_dict()
        moved = [k for k in before if "image" in k.lower() and not torch.equal(before[k], after[k])]
        assert moved, "no image-encoder weight changed"


def test_image_size_mismatch_is_still_refused(image_flow_ckpt):
    from armflow.policies import load_policy
    from armflow.workflows.finetune import check_compat

    with pytest.raises(ValueError, match=r"'observation.images.agentview' shape \(32, 32, 3\) does not match task "
                                         r"'lift' shape \(48, 48, 3\)"):
        check_compat(load_policy(image_flow_ckpt), "fpo", "lift", {"cameras": ("agentview",), "image_size": 48})
