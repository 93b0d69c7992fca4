"""``armflow critic``: a chunk critic Q(s, a_{0:T_a}) trained offline with Cal-QL or IQL for V-GPS reranking.

1. Chunk transitions from LeRobot v3 episodes (:func:`chunk_transitions`), obs windows / actions normalised with the
   policy's stats (``ChunkCritic.for_policy``).
2. The policy's own chunks at every s and s' (``n_candidates``, sampled once): what V-GPS will choose among, so
   Cal-QL pushes down exactly those (plus uniform chunks) and its TD target is the max over them (the greedy
   reranked policy's value); IQL's target is V(s').
3. Gradient steps (``armflow.policies.steering.critic_losses``), Polyak target; saved as ``OUT/critic``.
"""
from __future__ import annotations

import copy
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from armflow.configs import plain

METHODS = ("calql", "iql")
REWARDS = ("success", "env")  # per chunk: 1 on reaching next.success / the summed next.reward


def chunk_transitions(dataset, keys, t_o: int, t_a: int, gamma: float, reward: str = "success") -> dict:
    """Episodes -> chunk transitions: obs/next_obs {key: (N, T_o, D)}, action (N, T_a, D_a) (padded with the last
    action), reward (N,) (``success``: 1 on the chunk containing a success; ``env``: the chunk's summed
    ``next.reward``), done (N,) on each episode's last chunk, mc_return (N,) the discounted return-to-go in chunks."""
    cols = {k: [] for k in ("obs", "next_obs", "action", "reward", "done", "mc_return")}
    for i in range(dataset.num_episodes):
        ep = dataset.episode(i)
        n, starts = len(ep["action"]), np.arange(0, len(ep["action"]), t_a)
        window = lambda end: np.clip(np.arange(end - t_o + 1, end + 1), 0, n - 1)  # noqa: E731
        success = np.asarray(ep["next.success"], bool).reshape(n)
        if reward == "env":
            rewards = np.add.reduceat(np.asarray(ep["next.reward"], np.float64).reshape(n), starts)
        else:
            rewards = np.array([float(success[s:s + t_a].any()) for s in starts])
        ret, mc = 0.0, np.zeros(len(starts))
        for j in range(len(starts) - 1, -1, -1):
            ret = rewards[j] + gamma * ret
            mc[j] = ret
        for j, s in enumerate(starts):
            cols["obs"].append({k: ep[k][window(s)] for k in keys})
            cols["next_obs"].append({k: ep[k][window(min(s + t_a, n - 1))] for k in keys})
            cols["action"].append(ep["action"][np.clip(np.arange(s, s + t_a), 0, n - 1)])
        cols["reward"].append(rewards)
        cols["done"].append(starts + t_a >= n)
        cols["mc_return"].append(mc)
    stack = lambda rows: {k: np.stack([r[k] for r in rows]).astype(np.float32) for k in keys}  # noqa: E731
    return {"obs": stack(cols["obs"]), "next_obs": stack(cols["next_obs"]),
            "action": np.stack(cols["action"]).astype(np.float32),
            **{k: np.concatenate(cols[k]).astype(np.float32) for k in ("reward", "done", "mc_return")}}


@torch.inference_mode()
def policy_candidates(policy, critic, obs: dict, m: int, batch: int = 256) -> torch.Tensor:
    """m chunks of ``policy`` per obs window, the critic's normalised executed prefix: (N, m, T_a * D_a)."""
    n, out = len(next(iter(obs.values()))), []
    for lo in range(0, n, batch):
        window = {k: torch.as_tensor(v[lo:lo + batch]).repeat_interleave(m, 0) for k, v in obs.items()}
        out.append(critic.actions(policy.predict_chunk(window)).reshape(-1, m, critic.act_dim))
    return torch.cat(out)


def load_transitions(paths, keys, policy, gamma: float, reward: str = "success") -> dict:
    from armflow.data import LeRobotDataset

    parts = []
    for path in paths:
        ds = LeRobotDataset(path, check_videos=False)
        missing = [k for k in (*keys, "action", "next.success") if k not in ds.features]
        if missing:
            raise ValueError(f"dataset {path}: lacks {missing} (the critic needs the policy's obs keys, action and "
                             "next.success; record rollouts with `armflow evaluate record=DIR`)")
        parts.append(chunk_transitions(ds, keys, policy.n_obs_steps, policy.n_action_steps, gamma, reward))
    cat = lambda vs: np.concatenate(vs)  # noqa: E731
    return {"obs": {k: cat([p["obs"][k] for p in parts]) for k in keys},
            "next_obs": {k: cat([p["next_obs"][k] for p in parts]) for k in keys},
            **{k: cat([p[k] for p in parts]) for k in ("action", "reward", "done", "mc_return")}}


def gradient_step(critic, target, opt, batch: dict, cfg) -> dict[str, float]:
    """One Cal-QL or IQL step on a minibatch of precomputed tensors (see the module docstring)."""
    from armflow.policies.steering import calql_loss, iql_loss, td_target

    f, f2, a, r, d = batch["feat"], batch["next_feat"], batch["act"], batch["reward"], batch["done"]
    b, m = len(f), batch["next_cands"].shape[1]
    with torch.no_grad():
        if cfg.method == "calql":
            q_next = target(f2.repeat_interleave(m, 0), batch["next_cands"].reshape(b * m, -1))
            y = td_target(r, d, cfg.gamma, torch.min(*q_next).reshape(b, m).max(1).values)
        else:
            y = td_target(r, d, cfg.gamma, critic.v(f2))
    q = critic.q_values(f, a)
    if cfg.method == "calql":
        ood = torch.cat([batch["cands"], torch.rand(b, int(cfg.n_uniform), a.shape[1]) * 2 - 1], dim=1)
        q_ood = critic.q_values(f.repeat_interleave(ood.shape[1], 0), ood.reshape(-1, a.shape[1])).reshape(2, b, -1)
        loss, terms = calql_loss(q, y, q_ood, batch["mc_return"], float(cfg.alpha))
    else:
        with torch.no_grad():
            q_t = torch.min(*target(f, a))
        loss, terms = iql_loss(q, critic.v(f), q_t, y, float(cfg.expectile))
    opt.zero_grad()
    loss.backward()
    opt.step()
    with torch.no_grad():
        for t, s in zip(target.parameters(), critic.q.parameters()):
            t.mul_(1 - cfg.polyak).add_(s, alpha=cfg.polyak)
    return terms


def train_critic(cfg: DictConfig, out: Path) -> dict:
    from armflow.policies import load_policy
    from armflow.policies.steering import ChunkCritic
    from armflow.workflows.common import MetricLogger

    if cfg.method not in METHODS:
        raise SystemExit(f"armflow critic: method={cfg.method!r}; valid: {', '.join(METHODS)}")
    torch.manual_seed(int(cfg.seed))
    torch.set_num_threads(int(cfg.num_threads))
    policy = load_policy(cfg.checkpoint, steered=False)
    critic = ChunkCritic.for_policy(policy, int(cfg.hidden), int(cfg.n_layers), cfg.method)
    paths = [cfg.dataset] if isinstance(cfg.dataset, str) else list(plain(cfg.dataset))
    if cfg.reward not in REWARDS:
        raise SystemExit(f"armflow critic: reward={cfg.reward!r}; valid: {', '.join(REWARDS)}")
    data = load_transitions(paths, critic.cfg.obs_keys, policy, float(cfg.gamma), cfg.reward)
    t0 = time.monotonic()
    m = int(cfg.n_candidates) if cfg.method == "calql" else 1
    tensors = {"feat": critic.features(data["obs"]).detach(), "next_feat": critic.features(data["next_obs"]).detach(),
               "act": critic.actions(torch.as_tensor(data["action"])).detach(),
               "cands": policy_candidates(policy, critic, data["obs"], m),
               "next_cands": policy_candidates(policy, critic, data["next_obs"], m),
               **{k: torch.as_tensor(data[k]) for k in ("reward", "done", "mc_return")}}
    sample_s = time.monotonic() - t0
    target = copy.deepcopy(critic.q).requires_grad_(False)
    opt = torch.optim.Adam(critic.parameters(), lr=float(cfg.lr))
    n, gen = len(tensors["reward"]), torch.Generator().manual_seed(int(cfg.seed))
    logger, terms = MetricLogger(out, tensorboard=False), {}
    for step in range(1, int(cfg.steps) + 1):
        idx = torch.randint(n, (int(cfg.batch_size),), generator=gen)
        terms = gradient_step(critic, target, opt, {k: v[idx] for k, v in tensors.items()}, cfg)
        if step % int(cfg.log_every) == 0 or step == int(cfg.steps):
            logger.log(step, terms)
    logger.close()
    path = critic.save_pretrained(out / "critic", extra={
        "trained": {"policy": str(cfg.checkpoint), "datasets": [str(p) for p in paths], "method": cfg.method,
                    "steps": int(cfg.steps), "gamma": float(cfg.gamma), "reward": cfg.reward, "transitions": n}})
    return {"critic": str(path), "method": cfg.method, "transitions": n, "episodes_successful_frac":
            float((tensors["reward"] * (cfg.reward == "success")).sum() / tensors["done"].sum().clamp_min(1)),
            "candidate_sampling_s": sample_s,
            "train_s": time.monotonic() - t0 - sample_s, "final": terms}


def main(cfg: DictConfig) -> dict:
    from armflow.workflows.common import train_steering_model

    summary = train_steering_model(cfg, "critic", train_critic)
    print(f"[critic] {cfg.method} on {summary['transitions']} chunk transitions -> {summary['critic']}")
    return summary
