"""RL with a reward model that never reads the simulator: `armflow finetune reward=model` on lift, the reward from a
success classifier on the envs' rendered camera, with injected detector errors; the camera stays out of the replay."""
import numpy as np
import pytest
import torch

from armflow.workflows.common import compose_config, read_jsonl
from armflow.workflows.finetune import run_finetune



@pytest.fixture(scope="module")
def lift_ckpt(tiny_lift_ckpt):
    return tiny_lift_ckpt


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    from armflow.rewards.classifier import ClassifierConfig, SuccessClassifier

    torch.manual_seed(0)
    return SuccessClassifier(ClassifierConfig(cameras=("agentview",), image_size=(32, 32), channels=(8, 8, 8))).save(
        tmp_path_factory.mktemp("clf") / "classifier")


def _finetune(ckpt, clf, out, threshold: float, extra=()):
    cfg = compose_config("finetune", [
        "algo=dsrl", f"checkpoint={ckpt}", f"out={out}", "task=lift", "+task_overrides.max_episode_steps=8",
        "+task_overrides.image_size=32", "n_envs=2", "n_workers=0", "n_eval_envs=2", "eval_episodes=2",
        "eval_every_iters=1", "env_steps=16", "n_steps=2", "progress=false", "algo.params.hidden=16",
        "algo.params.batch_size=4", "algo.params.warmup_transitions=4", "reward=model",
        f"reward_model.path={clf}", f"+reward_model.options.threshold={threshold}", *extra])
    run_finetune(cfg)
    return [r for r in read_jsonl(out / "metrics.jsonl") if "eval/rl_return" in r]


def _train_rows(out):
    return [r for r in read_jsonl(out / "metrics.jsonl") if "rewards/rl" in r]


def test_the_classifier_is_the_only_reward(lift_ckpt, classifier_dir, tmp_path):
    # threshold 0: the classifier calls every chunk a success (reward 1); 8 steps = 2 chunks of 4 per episode
    evals = _finetune(lift_ckpt, classifier_dir, tmp_path / "yes", 0.0)
    assert evals and all(r["eval/rl_return"] == 2.0 for r in evals)
    rows = _train_rows(tmp_path / "yes")  # the audit: an untrained policy never lifts, so every positive is false
    assert rows and all(r["rewards/rl"] == 1.0 and r["rewards/detector_fp_rate"] == 1.0 for r in rows)
    assert all(r["rewards/reach"] > 0 for r in rows)  # the env's reward terms are logged beside it
    # threshold 1: never a success, whatever the simulator says
    evals = _finetune(lift_ckpt, classifier_dir, tmp_path / "no", 1.0)
    assert all(r["eval/rl_return"] == 0.0 for r in evals)
    assert all(r["rewards/detector_fp_rate"] == 0.0 for r in _train_rows(tmp_path / "no"))


def test_injected_false_negatives_flip_every_positive(lift_ckpt, classifier_dir, tmp_path):
    evals = _finetune(lift_ckpt, classifier_dir, tmp_path / "fn", 0.0, ["reward_noise.fn=1.0"])
    assert all(r["eval/rl_return"] == 0.0 for r in evals)


def _collect(lift_ckpt, classifier_dir, **reward_model):
    from armflow.policies import load_policy
    from armflow.policies.rl import make_learner
    from armflow.workflows.finetune_rollout import EnvSpec, RolloutWorker

    spec = EnvSpec("lift", 2, 0, {"max_episode_steps": 8, "image_size": 32}, 0, reward_mode="model",
                   reward_model={"backend": "classifier", "path": str(classifier_dir), "cameras": ["agentview"],
                                 "options": {"threshold": 0.0}, **reward_model})
    policy = load_policy(lift_ckpt)
    learner = make_learner("dsrl", policy, {"hidden": 16}, 2)
    worker = RolloutWorker(spec, policy.n_obs_steps, tuple(policy.obs_spec), policy.n_action_steps, learner=learner)
    try:
        batch, _ = worker.collect(2)
    finally:
        worker.close()
    return batch, policy


def test_reward_cameras_are_rendered_but_not_stored(lift_ckpt, classifier_dir):
    batch, policy = _collect(lift_ckpt, classifier_dir)
    assert set(batch["obs"]) == set(policy.obs_spec) == set(batch["next_obs"])  # no camera in the replay
    np.testing.assert_array_equal(batch["reward"], np.ones((2, 2), np.float32))


def test_a_terminal_detector_ends_the_episode_and_the_simulator_does_not(lift_ckpt, classifier_dir):
    # threshold 0: the classifier detects success on every chunk; terminal: each detection ends (and resets) the
    # episode, so every chunk is a one-chunk episode; without terminal the 8-step episodes run 2 chunks
    batch, _ = _collect(lift_ckpt, classifier_dir, terminal=True)
    assert batch["terminated"].all() and not batch["truncated"].any()
    batch, _ = _collect(lift_ckpt, classifier_dir, terminal=False)
    assert not batch["terminated"].any() and batch["truncated"][1].all() and not batch["truncated"][0].any()


def test_without_terminate_on_success_the_sim_reports_success_but_runs_on():
    from armflow.sim import make_env
    from armflow.sim.experts import make_expert

    ends = {}
    for flag in (True, False):
        env = make_env("lift", terminate_on_success=flag, max_episode_steps=60)
        obs, _ = env.reset(seed=0)
        expert = make_expert(env, seed=0)
        successes, steps = 0, 0
        while True:
            obs, _, term, trunc, info = env.step(expert(obs))
            successes, steps = successes + info["success"], steps + 1
            if term or trunc:
                break
        ends[flag] = (steps, successes, term)
        env.close()
    assert ends[True][1] == 1 and ends[True][2]  # ends on its first success
    assert ends[False] == (60, ends[False][1], False) and ends[False][1] > 1  # success held, then the time limit


def test_bad_reward_configs_fail_before_any_work(lift_ckpt, tmp_path):
    cfg = compose_config("finetune", ["algo=dsrl", f"checkpoint={lift_ckpt}", f"out={tmp_path}", "task=lift",
                                      "reward=shaped", "reward_noise.fn=0.5"])
    with pytest.raises(ValueError, match="reward_noise flips success labels"):
        run_finetune(cfg)
    cfg = compose_config("finetune", ["algo=dsrl", f"checkpoint={lift_ckpt}", f"out={tmp_path}", "task=lift",
                                      "reward=model", "reward_model.path=/nonexistent/classifier"])
    with pytest.raises((FileNotFoundError, ValueError), match="nonexistent"):
        run_finetune(cfg)
