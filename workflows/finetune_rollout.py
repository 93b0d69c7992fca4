"""Rollout worker, learner host and deterministic evaluation for ``armflow finetune``.

The same two classes run in-process (``backend=local``) and as Ray actors (``backend=ray``):

- :class:`LearnerHost` loads the checkpoint, builds the learner, and exposes ``update``/``acting_state``.
- :class:`RolloutWorker` owns a :class:`ChunkVecEnv` and an acting learner (shared with the host
  locally, its own copy under Ray, refreshed with ``set_acting_state`` every iteration).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from armflow.workflows.chunk_env import ChunkVecEnv


@dataclass
class LearnerSpec:
    """Everything needed to rebuild a learner in another process (plain data only)."""

    algo: str
    checkpoint: str
    params: dict = field(default_factory=dict)
    n_envs: int = 1
    threads: int = 1


@dataclass
class EnvSpec:
    task: str
    n_envs: int
    n_workers: int = 0
    overrides: dict = field(default_factory=dict)
    seed: int = 0
    reward_mode: str = "env"
    shaping_scale: float = 0.1
    reward_model: dict = field(default_factory=dict)  # reward_mode=model: backend, path, cameras, options, ...
    reward_noise: tuple = (0.0, 0.0)  # injected detector errors: (false-negative rate, false-positive rate)


IMAGE_PREFIX = "observation.images."


def reward_cameras(spec: EnvSpec) -> list[str]:
    """Cameras the reward model looks at (the envs render them even for a policy that reads no camera)."""
    return list(spec.reward_model.get("cameras") or []) if spec.reward_mode == "model" else []


def build_reward(spec: EnvSpec):
    """The RL reward of ``spec``: a ``REWARDS`` name, or (``model``) a reward model from ``armflow.rewards`` scoring
    the chunk's last camera frames, never the simulator's state; with ``reward_noise`` detector errors injected."""
    from armflow.rewards.registry import make_reward_model
    from armflow.rewards.rl import NoisyReward, RewardModelFn
    from armflow.workflows.chunk_env import reward_function

    noise_fn, noise_fp = (float(x) for x in spec.reward_noise)
    if spec.reward_mode == "model":
        rm = dict(spec.reward_model)
        if not rm.get("backend") or not reward_cameras(spec):
            raise ValueError("reward=model needs reward_model.backend (classifier, openai, hf_vlm, embedding) and "
                             f"reward_model.cameras (the cameras it looks at); got {rm}")
        options = {**({"path": rm["path"]} if rm.get("path") else {}), **dict(rm.get("options") or {})}
        model = make_reward_model(rm["backend"], **options)
        return RewardModelFn(model, reward_cameras(spec), instruction=str(rm.get("instruction") or ""),
                             on_invalid=str(rm.get("on_invalid", "hold")), output=str(rm.get("output", "success")),
                             terminal=bool(rm.get("terminal", False)),
                             noise_fn=noise_fn, noise_fp=noise_fp, seed=spec.seed)
    fn = reward_function(spec.reward_mode, spec.shaping_scale)
    if noise_fn or noise_fp:
        if spec.reward_mode != "success":
            raise ValueError(f"reward_noise flips success labels: use it with reward=success or reward=model, "
                             f"not reward={spec.reward_mode}")
        fn = NoisyReward(fn, noise_fn, noise_fp, seed=spec.seed)
    return fn


def build_learner(spec: LearnerSpec):
    from armflow.policies import load_policy
    from armflow.policies.rl import make_learner

    torch.set_num_threads(max(1, int(spec.threads)))
    return make_learner(spec.algo, load_policy(spec.checkpoint, steered=False), dict(spec.params), spec.n_envs)


class LearnerHost:
    """Owns the learner: updates, weights for workers, resumable state, export."""

    def __init__(self, spec: LearnerSpec, learner=None):
        self.learner = learner if learner is not None else build_learner(spec)

    def update(self, batch: dict) -> dict[str, float]:
        return self.learner.update(batch)

    def acting_state(self) -> dict[str, torch.Tensor]:
        return self.learner.acting_state()

    def load(self, directory: str) -> tuple[int, dict]:
        """Restore weights, optimizers, scalers, buffer and this process's RNGs; returns (step, extra)."""
        from armflow.workflows.train_state import load_training_state

        step, extra, tensors = load_training_state(directory, self.learner.optimizers())
        self.learner.load_train_state(tensors, extra.pop("learner"))
        return step, extra

    def save(self, directory: str, step: int, extra: dict) -> None:
        from armflow.workflows.train_state import save_training_state

        tensors, meta, optimizers = self.learner.train_state()
        save_training_state(directory, step, optimizers, extra_tensors=tensors, extra={**extra, "learner": meta})

    def export(self, out_dir: str) -> None:
        self.learner.export(out_dir)


class RolloutWorker:
    """Collects (S, N) chunk transitions with exploration; evaluates deterministically on its envs."""

    def __init__(self, env_spec: EnvSpec, n_obs_steps: int, obs_keys, n_action_steps: int,
                 learner=None, learner_spec: LearnerSpec | None = None):
        self.agent = learner if learner is not None else build_learner(learner_spec)
        self.T_a, self.obs_keys = int(n_action_steps), tuple(obs_keys)
        cams = reward_cameras(env_spec)
        overrides = dict(env_spec.overrides)
        if cams:  # the reward's cameras are rendered and windowed beside the policy's inputs, never stored
            overrides["cameras"] = list(dict.fromkeys([*(overrides.get("cameras") or []), *cams]))
        env_keys = tuple(dict.fromkeys([*self.obs_keys, *(IMAGE_PREFIX + c for c in cams)]))
        self.env = ChunkVecEnv(env_spec.task, env_spec.n_envs, n_obs_steps, env_keys, env_spec.n_workers,
                               overrides, reward_mode=build_reward(env_spec))
        self.seed = int(env_spec.seed)
        self.obs = None
        self.elapsed = np.zeros(self.env.n_envs, dtype=np.int64)  # env steps into each env's episode

    def set_acting_state(self, tensors: dict[str, torch.Tensor]) -> None:
        self.agent.load_acting_state(tensors)

    def collect(self, n_steps: int, reseed: int | None = None) -> tuple[dict, dict]:
        """Run ``n_steps`` chunks in every env. Returns (batch of (S, N, ...) arrays, stats)."""
        if self.obs is None or reseed is not None:
            base = self.seed if reseed is None else reseed
            self.obs = self.env.reset([base + i for i in range(self.env.n_envs)])
            self.elapsed[:] = 0
        rows: dict[str, list] = {}
        limit = float(self.env.max_episode_steps)
        episodes, env_steps, logged = [], 0, {}
        for _ in range(n_steps):
            obs = self._policy_obs(self.obs)
            env_action, record = self.agent.act(obs, explore=True)
            step = self.env.step(env_action[:, : self.T_a])
            for key, value in {"obs": obs, "next_obs": self._policy_obs(step.next_obs), "reward": step.reward,
                               "terminated": step.terminated, "truncated": step.truncated,
                               "success": step.success, "time": (self.elapsed / limit).astype(np.float32),
                               "next_time": (step.elapsed / limit).astype(np.float32), **record}.items():
                rows.setdefault(key, []).append(value)
            episodes += step.episodes
            env_steps += int(step.n_steps.sum())
            add_reward_log(logged, step)
            self.obs = step.obs
            self.elapsed = np.where(step.terminated | step.truncated, 0, step.elapsed)
        batch = {k: ({kk: np.stack([v[kk] for v in vs]) for kk in vs[0]} if isinstance(vs[0], dict) else np.stack(vs))
                 for k, vs in rows.items()}
        return batch, {"env_steps": env_steps, "episodes": episodes, "rewards": reward_log(logged, env_steps)}

    def _policy_obs(self, obs: dict) -> dict:
        return {k: obs[k] for k in self.obs_keys}

    def evaluate(self, seeds: list[int], eval_seed: int) -> dict[str, float]:
        return evaluate(self.agent, self.env, seeds, self.T_a, eval_seed, self.obs_keys)

    def close(self) -> None:
        self.env.close()


def add_reward_log(sums: dict, step) -> None:
    """Accumulate what the reward log reports: each env reward term over the executed steps, the RL reward per
    chunk, and the RL reward as a success detector against the simulator's success (the audit: a reward model's
    false positives are what RL exploits)."""
    for name, per_step in step.reward_terms.items():
        sums[f"terms/{name}"] = sums.get(f"terms/{name}", 0.0) + float(per_step.sum())
    stepped = step.n_steps > 0
    said, true = (step.reward >= 0.5)[stepped], step.success[stepped]
    for key, value in (("chunks", stepped.sum()), ("rl", step.reward[stepped].sum()), ("tp", (said & true).sum()),
                       ("fp", (said & ~true).sum()), ("fn", (~said & true).sum()), ("tn", (~said & ~true).sum())):
        sums[key] = sums.get(key, 0.0) + float(value)


def reward_log(sums: dict, env_steps: int) -> dict[str, float]:
    """``rewards/<term>`` per env step, ``rewards/rl`` per chunk, ``rewards/detector_fp_rate`` (among chunks not
    ending in success) and ``rewards/detector_fn_rate`` (among successes) of the RL reward read as success >= 0.5."""
    out = {f"rewards/{k[6:]}": v / max(env_steps, 1) for k, v in sums.items() if k.startswith("terms/")}
    if sums.get("chunks"):
        out["rewards/rl"] = sums["rl"] / sums["chunks"]
        out["rewards/detector_fp_rate"] = sums["fp"] / max(sums["fp"] + sums["tn"], 1.0)
        if sums["tp"] + sums["fn"]:
            out["rewards/detector_fn_rate"] = sums["fn"] / (sums["tp"] + sums["fn"])
    return out


def evaluate(agent, env: ChunkVecEnv, seeds: list[int], n_action_steps: int, eval_seed: int,
             obs_keys=None) -> dict[str, float]:
    """Deterministic evaluation (``act(explore=False)``: eta=0 / actor mean / Gaussian mean; sampler noise
    drawn from a fixed torch seed) over fixed env ``seeds`` with the rollout core's ``run_episodes``; the
    training RNG is left untouched. The env's obs windows and episode counters restart on the next ``collect``."""
    from armflow.workflows.rollout import run_episodes

    keys = tuple(obs_keys or env.obs_keys)  # what the policy reads (the env may also window the reward's cameras)

    def act(obs, rows):
        return agent.act({k: obs[k][rows] for k in keys}, explore=False)[0]

    with torch.random.fork_rng():
        torch.manual_seed(eval_seed)
        episodes = run_episodes(env, act, seeds, n_action_steps)
    return {"success_rate": float(np.mean([e["success"] for e in episodes])),
            "return_mean": float(np.mean([e["return"] for e in episodes])),
            "rl_return_mean": float(np.mean([e["rl_return"] for e in episodes])),
            "length_mean": float(np.mean([e["length"] for e in episodes])),
            "episodes": float(len(episodes))}
