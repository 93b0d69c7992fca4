"""DynaGuide's stochastic-sampling corrector (``mcmc_steps``) draws its re-noise from a generator seeded by the
chunk's noise: a chunk is a function of its noise, and two `armflow evaluate` runs with the same seed give the same
DynaGuide episodes (before, the corrector drew from torch's global generator and reruns differed)."""
from __future__ import annotations

import json

import numpy as np
import torch

from armflow.policies import make_policy
from armflow.policies.steering import LatentDynamics, steer
from armflow.workflows.cli import main as run

KEY = "observation.state"


def toy_setup(tmp_path):
    """A toy2d flow policy, an (untrained) dynamics model for it and one goal frame; the evaluate overrides."""
    from safetensors.numpy import save_file

    torch.manual_seed(0)
    unit = lambda lo, hi: {"min": np.array(lo), "max": np.array(hi)}  # noqa: E731
    stats = {KEY: unit([-1.0, -1.0], [1.0, 1.0]), "action": unit([-0.5, -0.5], [0.5, 0.5])}
    policy = make_policy("flow", {KEY: (2,)}, 2, stats, horizon=6, n_action_steps=3, mlp_width=32, mlp_blocks=1,
                         state_hidden_dim=16, state_feature_dim=8, time_dim=8, num_inference_steps=3)
    ckpt = policy.save_pretrained(tmp_path / "policy")
    model = LatentDynamics.for_policy(policy, hidden=16, n_layers=2)
    with torch.no_grad():  # a fresh model predicts "nothing changes" (no action gradient): random weights instead
        for p in model.parameters():
            p.normal_(0.0, 0.5)
    dyn = model.save_pretrained(tmp_path / "dynamics")
    goals = tmp_path / "goals.safetensors"
    save_file({f"goals/{KEY}": np.array([[0.6, 0.2]], np.float32)}, str(goals))
    spec = {"type": "dynaguide", "dynamics": str(dyn), "goals": str(goals), "guidance": 2.0, "mcmc_steps": 3}
    return policy, ckpt, spec


def test_the_corrector_is_a_function_of_the_chunk_noise(tmp_path):
    policy, _, spec = toy_setup(tmp_path)
    steered = steer(policy, spec)
    obs = {KEY: torch.rand(4, policy.n_obs_steps, 2) * 2 - 1}
    noise = policy.default_noise(4, torch.Generator().manual_seed(1))
    a = steered.predict_chunk(obs, noise=noise.clone())
    torch.randn(1000)  # the global generator moves on between the calls
    b = steered.predict_chunk(obs, noise=noise.clone())
    c = steered.predict_chunk(obs, noise=policy.default_noise(4, torch.Generator().manual_seed(2)))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert (a - c).abs().max() > 1e-3
    # the corrector runs: without it the same noise gives another chunk
    plain = steer(policy, {**spec, "mcmc_steps": 0}).predict_chunk(obs, noise=noise.clone())
    assert (a - plain).abs().max() > 1e-4


def test_evaluate_runs_with_the_same_seed_give_the_same_dynaguide_episodes(tmp_path):
    _, ckpt, spec = toy_setup(tmp_path)
    args = [f"steering.{k}={v}" for k, v in spec.items()]

    def evaluate(name, seed):
        out = tmp_path / name
        assert run(["evaluate", f"checkpoint={ckpt}", "task=toy2d", "episodes=3", "n_envs=1", "video_episodes=0",
                    f"seed={seed}", *args, f"out={out}"]) == 0
        result = json.loads((out / "eval.json").read_text())
        return ([(r["seed"], r["success"], r["length"], r["return"]) for r in result["per_episode"]],
                result["steering"]["diagnostics"]["guidance_norm_mean"])

    first, again, other = evaluate("a", 100000), evaluate("b", 100000), evaluate("c", 100001)
    assert first == again  # returns and the mean guidance norm bit for bit
    # an episode's noise comes from its own seed: seeds 100001, 100002 are the same episodes in both runs, and
    # the run starting at 100001 differs from the one starting at 100000
    assert other[0][:2] == first[0][1:] and other[0][2] != first[0][0]
    assert first[1] > 0  # the guidance ran
