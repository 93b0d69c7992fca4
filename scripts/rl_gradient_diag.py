"""Where does an on-policy actor gradient point? A diagnostic for DPPO / FPO on one rollout batch.

    python scripts/rl_gradient_diag.py CHECKPOINT ALGO [TASK] ['{"state_baseline": false}']

Fits the critic for a few iterations (actor frozen), collects one batch of 32 envs x 13 chunks with the
benchmark's settings, and prints cosines between actor gradients:

- ``halves``: two disjoint halves of the batch. ~0 means per-batch noise (signal only accumulates over
  iterations); clearly > 0 means a component every sample agrees on.
- ``unexecuted`` (FPO): the same advantages put on a fresh, never-executed sample at each state. Whatever
  this shares with the real gradient depends on the state only: it cannot say which action was better.
"""
import json
import sys

import torch

from armflow.policies import load_policy
from armflow.policies.rl import make_learner, normalize
from armflow.workflows.finetune_rollout import EnvSpec, RolloutWorker


def main(ckpt: str, algo: str, task: str = "lift", extra: str = "{}") -> dict:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    params = dict(gamma=0.99, reward_scale=False, time_limit="terminal", critic_time=True,
                  minibatch_size=416, critic_warmup_iters=10**6)          # the actor never steps here
    if algo == "fpo":
        params.update(n_mc=16, asymmetric=False, per_sample_ratio=True)
    params.update(json.loads(extra))
    policy = load_policy(ckpt)
    learner = make_learner(algo, policy, params, 32)
    policy = learner.policy                                                # the learner's own (trained) copy
    worker = RolloutWorker(EnvSpec(task, 32, 0, {}, seed=0, reward_mode="shaped"), policy.n_obs_steps,
                           tuple(policy.obs_spec), policy.n_action_steps, learner=learner)
    for _ in range(4):                                                     # fit the critic
        learner.update(worker.collect(13)[0])
    data, _ = learner.prepare(worker.collect(13)[0])
    adv = data.pop("adv")
    params_ = [p for m in learner.actor_modules() for p in m.parameters() if p.requires_grad]

    def grad(idx, d):
        mb = {k: ({kk: vv[idx] for kk, vv in x.items()} if isinstance(x, dict) else x[idx]) for k, x in d.items()}
        loss, _ = learner.actor_loss(mb, normalize(adv[idx]))   # per-minibatch normalised, as in update()
        return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params_, allow_unused=True)
                          if g is not None])

    def cos(a, b):
        return round(float(torch.nn.functional.cosine_similarity(a, b, dim=0)), 3)

    n = len(adv)
    out = {"algo": algo, "params": json.loads(extra), "halves": []}
    for _ in range(4):
        perm = torch.randperm(n)
        out["halves"].append(cos(grad(perm[: n // 2], data), grad(perm[n // 2:], data)))
    if algo == "fpo":
        with torch.no_grad():
            cond = policy.encode_obs(data["obs"])
            fresh = dict(data, action=policy.sample(cond, torch.randn_like(data["action"])))
            fresh["loss_old"] = policy.cfm_loss_pairs(cond, fresh["action"], data["tau"], data["eps"])
            if "action_ref" in fresh:                                  # a fresh baseline sample too
                fresh["action_ref"] = policy.sample(cond, torch.randn_like(data["action"]))
                fresh["loss_old_ref"] = policy.cfm_loss_pairs(cond, fresh["action_ref"], data["tau"], data["eps"])
        full = torch.arange(n)
        out["unexecuted"] = cos(grad(full, data), grad(full, fresh))
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main(*sys.argv[1:])
