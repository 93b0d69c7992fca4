"""Shared fixtures for the RL tests: tiny toy2d policies pretrained in-test on scripted demos."""
import numpy as np
import pytest
import torch

KEY = "observation.state"
T_P, T_A = 4, 2
POLICY_CFG = {
    "flow": dict(n_obs_steps=1, horizon=T_P, n_action_steps=T_A, state_hidden_dim=64, state_feature_dim=32,
                 mlp_width=64, mlp_blocks=2, time_dim=32, num_inference_steps=5),
    "diffusion": dict(n_obs_steps=1, horizon=T_P, n_action_steps=T_A, state_hidden_dim=64, state_feature_dim=32,
                      mlp_width=64, mlp_blocks=2, time_dim=32, num_inference_steps=5, num_train_timesteps=50),
    "gaussian": dict(n_obs_steps=1, horizon=T_P, n_action_steps=T_A, state_hidden_dim=64, state_feature_dim=32,
                     hidden_dim=64, n_layers=2),
}
# A short time limit makes the toy hard enough that slow, noisy demos leave room for RL.
TOY_OVERRIDES = {"max_episode_steps": 10}


def toy_demos(n_episodes=60, noise_std=0.6, seed=0):
    """(obs (M, 1, 2), action chunks (M, T_p, 2)) windows from noisy scripted toy2d demos."""
    from armflow.sim import make_env, make_expert

    env = make_env("toy2d", max_episode_steps=40)
    expert = make_expert(env, noise_std=noise_std, seed=seed)
    obs_w, act_w = [], []
    for ep in range(n_episodes):
        obs, _ = env.reset(seed=seed + ep)
        expert.reset()
        states, actions = [], []
        for _ in range(40):
            a = expert(obs)
            states.append(obs[KEY])
            actions.append(a)
            obs, _, term, trunc, _ = env.step(a)
            if term or trunc:
                break
        states, actions = np.array(states), np.array(actions)
        for t in range(len(states)):
            idx = np.minimum(np.arange(t, t + T_P), len(actions) - 1)
            obs_w.append(states[t:t + 1])
            act_w.append(actions[idx])
    return np.array(obs_w, np.float32), np.array(act_w, np.float32)


def pretrain(policy_type, steps, seed=0, noise_std=0.6):
    from armflow.policies import make_policy

    torch.manual_seed(seed)
    obs, act = toy_demos(noise_std=noise_std, seed=seed)
    stats = {KEY: {"min": obs.reshape(-1, 2).min(0), "max": obs.reshape(-1, 2).max(0),
                   "mean": obs.reshape(-1, 2).mean(0), "std": obs.reshape(-1, 2).std(0)},
             "action": {"min": -np.ones(2), "max": np.ones(2), "mean": np.zeros(2), "std": np.ones(2)}}
    policy = make_policy(policy_type, obs_spec={KEY: (2,)}, action_dim=2, stats=stats, **POLICY_CFG[policy_type])
    opt = torch.optim.Adam(policy.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(obs), (128,), generator=gen)
        loss, _ = policy.compute_loss({KEY: torch.from_numpy(obs[idx]), "action": torch.from_numpy(act[idx])})
        opt.zero_grad()
        loss.backward()
        opt.step()
    return policy.eval()


@pytest.fixture(scope="session")
def toy_ckpts(tmp_path_factory):
    """{policy_type: checkpoint dir} of briefly pretrained toy2d policies."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("toy_ckpts")
    out = {}
    for ptype, steps in (("flow", 300), ("diffusion", 600), ("gaussian", 300)):
        pretrain(ptype, steps).save_pretrained(root / ptype)
        out[ptype] = str(root / ptype)
    return out
