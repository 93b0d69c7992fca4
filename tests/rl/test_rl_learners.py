"""Learner contracts on tiny toy2d policies: exact first ratios, log-probs, bounds, input validation, state IO."""
import numpy as np
import pytest
import torch

from armflow.configs import ConfigError
from armflow.policies import load_policy
from armflow.policies.rl import make_learner
from armflow.workflows.finetune_rollout import EnvSpec, LearnerHost, LearnerSpec, RolloutWorker

torch.set_num_threads(1)
KEY = "observation.state"


def _worker(learner, n_envs=4):
    return RolloutWorker(EnvSpec("toy2d", n_envs, 0, {"max_episode_steps": 10}), 1, (KEY,), 2, learner=learner)


def _mb(batch, learner):
    from armflow.policies.rl.common import flat, obs_to_torch

    mb = {k: torch.as_tensor(flat(batch[k])) for k in learner.record_keys}
    mb["obs"] = obs_to_torch(flat(batch["obs"]))
    return mb


def test_fpo_ratio_is_one_before_first_update(toy_ckpts):
    learner = make_learner("fpo", load_policy(toy_ckpts["flow"]), {"n_mc": 4}, 4)
    batch, _ = _worker(learner).collect(3)
    mb = _mb(batch, learner)
    cond = learner.policy.encode_obs(mb["obs"])
    loss_new = learner.policy.cfm_loss_pairs(cond, mb["action"], mb["tau"], mb["eps"], net=learner.policy.net)
    assert torch.equal(loss_new.detach(), mb["loss_old"])
    x_tau, _ = learner.policy.pair_velocity(cond, mb["action"], mb["tau"], mb["eps"])
    torch.testing.assert_close(x_tau[:, :, 0], mb["tau"][..., None] * mb["action"][:, None, 0]
                               + (1 - mb["tau"][..., None]) * mb["eps"][:, :, 0])
    for per_sample in (False, True):
        learner.cfg.per_sample_ratio = per_sample
        _, info = learner.actor_loss(mb, torch.randn(len(mb["tau"])))
        assert info["ratio_mean"] == 1.0 and info["clipfrac"] == 0.0


def test_dppo_logprobs_match_torch_distributions(toy_ckpts):
    policy = load_policy(toy_ckpts["diffusion"])
    learner = make_learner("dppo", policy, {"min_std": 0.1}, 4)
    batch, _ = _worker(learner).collect(2)
    mb = _mb(batch, learner)
    cond = policy.encode_obs(mb["obs"])
    chain = mb["chain"]
    # Reference: each fine-tuned DDIM step is N(mean, max(sigma, min_std)^2), the mean from the DDIM update.
    k0 = policy.num_inference_steps - learner.n_ft
    for i in range(learner.n_ft):
        k = k0 + i
        t = policy.ddim_t[k].expand(len(chain))
        eps = learner.actor_ft(chain[:, i], t, cond)
        sa, s1ma, a_prev = policy.ddim_sqrt_a[k], policy.ddim_sqrt_1ma[k], policy.ddim_a_prev[k]
        x0 = ((chain[:, i] - s1ma * eps) / sa).clamp(-1, 1)
        sigma = learner.cfg.eta * policy.ddim_var[k].sqrt()
        mean = a_prev.sqrt() * x0 + (1 - a_prev - sigma**2).clamp_min(0).sqrt() * eps
        ref = torch.distributions.Normal(mean, sigma.clamp_min(0.1)).log_prob(chain[:, i + 1])
        torch.testing.assert_close(mb["logprob"][:, i], ref, atol=1e-4, rtol=1e-4)
    # Chunk log-prob: clamp to [-5, 2] per element, mean over the executed (T_a, D_a) elements.
    lp = mb["logprob"]
    manual = lp[:, :, :2].clamp(-5, 2).mean(dim=(-1, -2))
    torch.testing.assert_close(learner._chunk_logprob(lp), manual)
    _, info = learner.actor_loss(mb, torch.randn(len(chain)))
    assert info["ratio_mean"] == pytest.approx(1.0, abs=1e-5)


def test_gaussian_ppo_first_ratio_is_one(toy_ckpts):
    learner = make_learner("ppo", load_policy(toy_ckpts["gaussian"]), {}, 4)
    batch, _ = _worker(learner).collect(2)
    _, info = learner.actor_loss(_mb(batch, learner), torch.randn(8))
    assert info["ratio_mean"] == pytest.approx(1.0, abs=1e-5)


def test_dsrl_noise_within_bound(toy_ckpts):
    learner = make_learner("dsrl", load_policy(toy_ckpts["flow"]), {"hidden": 32, "noise_bound": 1.5}, 4)
    feats = torch.randn(256, learner.actor.net[0].in_features) * 100.0
    with torch.no_grad():
        for p in learner.actor.parameters():
            p.mul_(10.0)
        w, lp = learner.actor(feats)
    assert w.abs().max().item() <= 1.5 and torch.isfinite(lp).all()
    batch, _ = _worker(learner).collect(2)   # warm start: clipped N(0, I)
    assert np.abs(batch["w"]).max() <= 1.5 and batch["w"].shape == (2, 4, 4 * 2)


@pytest.mark.parametrize("algo,ptype,needs", [("dppo", "flow", "diffusion"), ("fpo", "diffusion", "flow"),
                                              ("ppo", "flow", "gaussian"), ("dsrl", "gaussian", "flow")])
def test_wrong_checkpoint_type_is_a_clear_error(toy_ckpts, algo, ptype, needs):
    with pytest.raises(ValueError, match=rf"algo={algo} needs a '{needs}"):
        make_learner(algo, load_policy(toy_ckpts[ptype]), {}, 2)


def test_unknown_algo_and_key(toy_ckpts):
    with pytest.raises(KeyError, match="valid algos: dppo, fpo, dsrl, ppo"):
        make_learner("sac", load_policy(toy_ckpts["flow"]), {}, 2)
    with pytest.raises(ConfigError, match="algo=fpo config: unknown config keys \\['clip_epsilon'\\]"):
        make_learner("fpo", load_policy(toy_ckpts["flow"]), {"clip_epsilon": 0.1}, 2)


def test_checkpoint_task_mismatch_names_both(toy_ckpts):
    from armflow.workflows.finetune import check_compat

    with pytest.raises(ValueError, match=r"action_dim=2 does not match task 'lift' action dim 7"):
        check_compat(load_policy(toy_ckpts["flow"]), "fpo", "lift", {})
    with pytest.raises(ValueError, match=r"n_action_steps=2 .* exceeds task 'toy2d' max_episode_steps=1"):
        check_compat(load_policy(toy_ckpts["flow"]), "fpo", "toy2d", {"max_episode_steps": 1})


@pytest.mark.parametrize("algo,ptype", [("dsrl", "flow"), ("dppo", "diffusion")])
def test_state_roundtrip(toy_ckpts, tmp_path, algo, ptype):
    params = {"hidden": 32, "warmup_transitions": 8, "utd": 0.5} if algo == "dsrl" else {"critic_warmup_iters": 0}
    spec = LearnerSpec(algo, toy_ckpts[ptype], params, 4)
    host = LearnerHost(spec)
    worker = _worker(host.learner)
    for _ in range(2):
        host.update(worker.collect(2)[0])
    host.save(str(tmp_path / "s"), 7, {"counters": {"x": 1}})
    expected_rand = torch.rand(3)
    other = LearnerHost(spec)
    step, extra = other.load(str(tmp_path / "s"))
    assert step == 7 and extra["counters"] == {"x": 1}
    torch.testing.assert_close(torch.rand(3), expected_rand)   # torch RNG restored
    t1, m1, o1 = host.learner.train_state()
    t2, m2, o2 = other.learner.train_state()
    assert t1.keys() == t2.keys() and m1 == m2
    for k in t1:
        torch.testing.assert_close(t1[k], t2[k])
    for name in o1:
        s1, s2 = o1[name].state_dict()["state"], o2[name].state_dict()["state"]
        assert s1.keys() == s2.keys() and all(torch.equal(s1[i]["exp_avg"], s2[i]["exp_avg"]) for i in s1)


def test_dppo_eval_actions_match_exported_checkpoint(toy_ckpts, tmp_path):
    policy = load_policy(toy_ckpts["diffusion"])
    learner = make_learner("dppo", policy, {}, 2)
    with torch.no_grad():
        for p in learner.actor_ft.parameters():
            p.add_(0.01 * torch.randn_like(p))      # a "fine-tuned" net that differs from the base
    obs = {KEY: np.random.default_rng(0).normal(0, 0.05, (3, 1, 2)).astype(np.float32)}
    torch.manual_seed(5)
    eval_action, _ = learner.act(obs, explore=False)
    learner.export(tmp_path / "ft")
    exported = load_policy(tmp_path / "ft")
    torch.manual_seed(5)
    noise = torch.randn(3, exported.horizon, exported.action_dim)
    np.testing.assert_allclose(exported.predict_chunk(obs, noise=noise).numpy(), eval_action, atol=1e-5)
    assert not np.allclose(policy.predict_chunk(obs, noise=noise).numpy(), eval_action, atol=1e-4)


@pytest.mark.parametrize("time_limit", ["bootstrap", "terminal"])
def test_time_limit_terminal_stops_bootstrap_and_critic_sees_elapsed_time(toy_ckpts, time_limit):
    """With time_limit=terminal a truncated chunk's return is its reward alone; with bootstrap it adds
    gamma V(final obs). critic_time appends the elapsed fraction the rollout recorded."""
    params = {"critic_warmup_iters": 10, "reward_scale": False, "gae_lambda": 0.0, "gamma": 0.9,
              "time_limit": time_limit, "critic_time": True}
    learner = make_learner("ppo", load_policy(toy_ckpts["gaussian"]), params, 4)
    worker = _worker(learner)
    batch, _ = worker.collect(6)  # 6 chunks x 2 steps > the 10-step limit: every env truncates or succeeds
    assert batch["time"].shape == (6, 4) and batch["next_time"].max() <= 1.0
    np.testing.assert_allclose(batch["time"][0], 0.0)
    np.testing.assert_allclose(batch["next_time"][0], 0.2)   # 2 of 10 steps
    seen = {}
    learner._values = lambda feats: (seen.setdefault(len(seen), feats), torch.ones(len(feats)))[1]
    out = learner.update(batch)
    assert seen[0].shape[-1] == seen[1].shape[-1] and torch.allclose(seen[0][:, -1], torch.as_tensor(batch["time"]).reshape(-1))
    from armflow.policies.rl.ppo_math import gae

    trunc = torch.as_tensor(batch["truncated"])
    assert trunc.any()
    # lambda = 0: return = r + gamma * V(next) * (1 - ended); V == 1 here.
    term = torch.as_tensor(batch["terminated"]) | (trunc if time_limit == "terminal" else torch.zeros_like(trunc))
    r = torch.as_tensor(batch["reward"])
    expected = r + 0.9 * (~term).float()
    assert out["charts/return_mean"] == pytest.approx(expected.mean().item(), abs=1e-5)
    _, ret = gae(r, torch.ones_like(r), torch.ones_like(r), term, trunc, 0.9, 0.0)
    torch.testing.assert_close(ret, expected)
    with pytest.raises(ValueError, match="time_limit='sometimes'"):
        make_learner("ppo", load_policy(toy_ckpts["gaussian"]), {"time_limit": "sometimes"}, 4)


def test_dsrl_shared_noise_repeats_one_action_dim_vector_over_the_chunk(toy_ckpts, tmp_path):
    from armflow.policies.rl import load_dsrl_policy

    policy = load_policy(toy_ckpts["flow"])
    learner = make_learner("dsrl", policy, {"hidden": 32, "shared_noise": True, "warmup_transitions": 8,
                                            "utd": 0.5, "batch_size": 8}, 4)
    assert learner.w_dim == 2                      # D_a = 2 dims, not T_p * D_a = 8
    batch, _ = _worker(learner).collect(3)
    assert batch["w"].shape == (3, 4, 2)
    learner.update(batch)                          # warm-up fill, then SAC/NA steps on 2-dim noise
    noise = learner.chunk_noise(torch.tensor([[0.5, -1.0]]))
    assert noise.shape == (1, 4, 2) and torch.equal(noise[0], torch.tensor([[0.5, -1.0]] * 4))
    learner.export(tmp_path / "dsrl")
    steered = load_dsrl_policy(tmp_path / "dsrl")
    obs = {KEY: torch.zeros(2, 1, 2)}
    with torch.no_grad():
        w, _ = learner.actor(policy.encode_obs(obs), deterministic=True)
        expected = policy.sample(policy.encode_obs(obs), learner.chunk_noise(w))
    from armflow.policies.rl.common import to_env_action

    torch.testing.assert_close(steered.predict_chunk(obs), to_env_action(policy, expected))


def test_fpo_ref_coef_anchors_to_the_pretrained_velocity_field(toy_ckpts):
    policy = load_policy(toy_ckpts["flow"])
    learner = make_learner("fpo", policy, {"n_mc": 4, "ref_coef": 1.0}, 4)
    batch, _ = _worker(learner).collect(2)
    mb = _mb(batch, learner)
    _, info = learner.actor_loss(mb, torch.zeros(len(mb["tau"])))
    assert info["ref_loss"] == 0.0                                  # the policy still is the pretrained one
    with torch.no_grad():
        for p in learner.policy.net.parameters():
            p.add_(1e-2 * torch.randn_like(p))
    opt = torch.optim.SGD(learner.policy.net.parameters(), lr=0.05)
    losses = []
    for _ in range(5):                                              # zero advantages: only the anchor pulls
        loss, info = learner.actor_loss(mb, torch.zeros(len(mb["tau"])))
        losses.append(info["ref_loss"])
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert losses[0] > 0 and losses[-1] < 0.8 * losses[0]


def test_fpo_state_baseline_ratio_is_relative_to_the_unexecuted_sample(toy_ckpts):
    policy = load_policy(toy_ckpts["flow"])
    learner = make_learner("fpo", policy, {"n_mc": 4, "asymmetric": False}, 4)
    assert learner.cfg.state_baseline and {"action_ref", "loss_old_ref"} <= set(learner.record_keys)
    batch, _ = _worker(learner).collect(2)
    mb = _mb(batch, learner)
    assert not torch.allclose(mb["action"], mb["action_ref"])       # a second, independent sample per state
    adv = torch.randn(len(mb["tau"]))

    def grad(m):
        loss, info = learner.actor_loss(m, adv)
        assert info["ratio_mean"] == 1.0
        g = torch.autograd.grad(loss, [p for p in learner.policy.net.parameters()])
        return torch.cat([x.reshape(-1) for x in g])

    g = grad(mb)
    # The log-ratio is [l_old(a) - l(a)] - [l_old(a') - l(a')]: swapping a and a' flips the gradient ...
    swapped = dict(mb, action=mb["action_ref"], action_ref=mb["action"], loss_old=mb["loss_old_ref"],
                   loss_old_ref=mb["loss_old"])
    torch.testing.assert_close(grad(swapped), -g, atol=1e-6, rtol=1e-4)
    # ... and a' = a leaves nothing to learn from, whatever the advantages.
    assert grad(dict(mb, action_ref=mb["action"], loss_old_ref=mb["loss_old"])).abs().max() == 0
    plain = make_learner("fpo", load_policy(toy_ckpts["flow"]), {"n_mc": 4, "state_baseline": False}, 4)
    assert "action_ref" not in plain.record_keys and "action_ref" not in _worker(plain).collect(1)[0]


def test_fpo_zero_sampling_evaluates_and_exports_the_noise_mean_map(toy_ckpts, tmp_path):
    obs = {KEY: np.random.default_rng(1).normal(0, 0.05, (3, 1, 2)).astype(np.float32)}
    learner = make_learner("fpo", load_policy(toy_ckpts["flow"]), {"eval_noise_scale": 0.0}, 3)
    a1, _ = learner.act(obs, explore=False)
    a2, _ = learner.act(obs, explore=False)
    np.testing.assert_array_equal(a1, a2)                         # deterministic: no noise drawn
    zero = torch.zeros(3, learner.policy.horizon, learner.policy.action_dim)
    np.testing.assert_allclose(a1, learner.policy.predict_chunk(obs, noise=zero).numpy(), atol=1e-6)
    learner.export(tmp_path / "ft")
    exported = load_policy(tmp_path / "ft")
    assert exported.cfg.noise_scale == 0.0                         # deployed as evaluated
    np.testing.assert_allclose(exported.predict_chunk(obs).numpy(), a1, atol=1e-6)
    # The default samples the flow: two evaluations differ; rollouts keep exploring either way.
    sampled = make_learner("fpo", load_policy(toy_ckpts["flow"]), {}, 3)
    assert not np.allclose(sampled.act(obs, explore=False)[0], sampled.act(obs, explore=False)[0])
    assert not np.allclose(learner.act(obs)[0], learner.act(obs)[0])
    with pytest.raises(ValueError, match="eval_noise_scale"):
        make_learner("fpo", load_policy(toy_ckpts["flow"]), {"eval_noise_scale": -1.0}, 3)


def test_noise_scale_sets_the_default_inference_noise(toy_ckpts):
    policy = load_policy(toy_ckpts["flow"])
    obs = {KEY: np.zeros((2, 1, 2), np.float32)}
    assert policy.cfg.noise_scale == 1.0 and not torch.equal(policy.predict_chunk(obs), policy.predict_chunk(obs))
    policy.cfg.noise_scale = 0.0
    zero = torch.zeros(2, policy.horizon, policy.action_dim)
    torch.testing.assert_close(policy.predict_chunk(obs), policy.predict_chunk(obs, noise=zero))
    from armflow.policies.config import FlowConfig
    with pytest.raises(ValueError, match="noise_scale"):
        FlowConfig(noise_scale=-0.5)


def test_actor_lr_anneals_linearly_after_the_critic_warmup(toy_ckpts):
    learner = make_learner("fpo", load_policy(toy_ckpts["flow"]), {
        "n_mc": 2, "actor_lr": 1e-4, "actor_lr_final": 2e-5, "lr_anneal_iters": 2, "critic_warmup_iters": 1,
        "update_epochs": 1}, 4)
    worker = _worker(learner)
    lrs = []
    for _ in range(4):
        lrs.append(learner.update(worker.collect(2)[0])["charts/actor_lr"])
        assert learner.actor_opt.param_groups[0]["lr"] == lrs[-1]
    np.testing.assert_allclose(lrs, [1e-4, 1e-4, 6e-5, 2e-5])      # warmup, start, halfway, final (then constant)
    with pytest.raises(ValueError, match="actor_lr_final"):
        make_learner("dppo", load_policy(toy_ckpts["diffusion"]), {"lr_anneal_iters": 10}, 2)


@pytest.mark.parametrize("algo,ptype,params", [
    ("fpo", "flow", {"n_mc": 2, "critic_warmup_iters": 0, "actor_lr": 1e-2, "eval_noise_scale": 0.0}),
    ("dppo", "diffusion", {"critic_warmup_iters": 0, "actor_lr": 1e-2}),
    ("ppo", "gaussian", {"critic_warmup_iters": 0, "actor_lr": 1e-2}),
    ("dsrl", "flow", {"hidden": 32, "warmup_transitions": 4, "utd": 0.5, "batch_size": 8}),
])
def test_learners_leave_the_callers_policy_untouched(toy_ckpts, algo, ptype, params):
    """A learner trains its own deep copy: building it and one update change neither the weights, the cfg
    (FPO's eval_noise_scale goes to the learner's copy) nor the grad flags of the policy it was given."""
    import copy
    import dataclasses

    policy = load_policy(toy_ckpts[ptype])
    weights = {k: v.clone() for k, v in policy.state_dict().items()}
    cfg, grads = copy.deepcopy(dataclasses.asdict(policy.cfg)), [p.requires_grad for p in policy.parameters()]
    learner = make_learner(algo, policy, params, 4)
    batch, _ = _worker(learner).collect(3)
    batch["reward"] = np.random.default_rng(0).normal(size=batch["reward"].shape).astype(np.float32)
    metrics = learner.update(batch)
    if algo == "dsrl":
        assert "losses/td_loss" in metrics                              # gradient steps ran
    else:                                                              # the learner's own actor moved
        assert metrics["charts/actor_trained"] == 1.0
        actor = learner.actor_modules()[0]
        start = policy.net.state_dict() if algo == "dppo" else weights
        assert any(not torch.equal(v, start[k]) for k, v in actor.state_dict().items())
    assert all(torch.equal(v, policy.state_dict()[k]) for k, v in weights.items())
    assert dataclasses.asdict(policy.cfg) == cfg and [p.requires_grad for p in policy.parameters()] == grads
