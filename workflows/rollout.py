"""Policy-in-the-loop rollouts shared by evaluate, quickstart and deploy: obs stacking and chunk execution."""
from __future__ import annotations

from collections import deque

import numpy as np
import torch


def load_checkpoint(directory):
    """Load any policy checkpoint a workflow wrote: a plain ``save_pretrained`` dir, or a DSRL export
    (the base checkpoint + ``dsrl.json`` + noise actor), which must not be mistaken for its base policy."""
    from pathlib import Path

    if (Path(directory) / "dsrl.json").is_file():
        from armflow.policies.rl import load_dsrl_policy

        return load_dsrl_policy(directory)
    from armflow.policies import load_policy

    return load_policy(directory)


def to_policy_obs(history: "deque[dict[str, np.ndarray]]", device: str = "cpu") -> dict[str, torch.Tensor]:
    """Stack T_o batched env observations into policy inputs.

    ``history`` holds T_o dicts of ``(N, ...)`` arrays (oldest first). States become float32
    ``(N, T_o, D)``; images ``(N, H, W, 3)`` uint8 become float ``(N, T_o, 3, H, W)`` in [0, 1].
    """
    out = {}
    for key in history[-1]:
        stacked = np.stack([frame[key] for frame in history], axis=1)
        if key.startswith("observation.images."):
            tensor = torch.from_numpy(stacked).permute(0, 1, 4, 2, 3).float().div_(255.0)
        else:
            tensor = torch.from_numpy(stacked.astype(np.float32, copy=False))
        out[key] = tensor.to(device)
    return out


def policy_obs_keys(policy) -> tuple[str, ...]:
    return tuple(policy.obs_spec)


class BatchedChunkRunner:
    """Runs one policy over N synchronised envs: obs history + one ActionChunker per env."""

    def __init__(self, policy, n_envs: int, device: str = "cpu", noise_fn=None):
        from armflow.policies import ActionChunker

        self.policy, self.n_envs, self.device = policy, n_envs, device
        self.noise_fn = noise_fn  # optional: (N) -> initial noise (N, T_p, D_a) for the sampler
        self.chunkers = [ActionChunker(policy.n_action_steps) for _ in range(n_envs)]
        self.history: deque = deque(maxlen=policy.n_obs_steps)

    def reset(self, obs: dict[str, np.ndarray], seeds: list[int] | None = None) -> None:
        """Start new episodes. With ``seeds``, env i's sampler noise comes from a generator seeded with
        ``seeds[i]`` (one draw per chunk), exactly as ``armflow deploy`` draws it: the same seed gives
        the same rollout in evaluation and through the bridge. Each draw is ``policy.default_noise``, so the
        policy's own noise scale holds: the Gaussian baseline and DSRL act with their means, an export with
        ``noise_scale=0`` (FPO's zero-sampling) is evaluated as it deploys."""
        self._generators = None
        if seeds is not None:
            self._generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
        keys = policy_obs_keys(self.policy)
        first = {k: obs[k] for k in keys}
        self.history.clear()
        self.history.extend([first] * self.policy.n_obs_steps)
        for chunker in self.chunkers:
            chunker.reset()

    def observe(self, obs: dict[str, np.ndarray]) -> None:
        self.history.append({k: obs[k] for k in policy_obs_keys(self.policy)})

    def _initial_noise(self) -> torch.Tensor | None:
        if getattr(self, "_generators", None):
            return torch.cat([self.policy.default_noise(1, generator=g) for g in self._generators]).to(self.device)
        return self.noise_fn(self.n_envs) if self.noise_fn is not None else None

    @torch.inference_mode()
    def act(self) -> np.ndarray:
        """Next action for every env, (N, D_a); queries the policy when chunk queues run dry."""
        if any(c.needs_chunk() for c in self.chunkers):
            noise = self._initial_noise()
            chunks = self.policy.predict_chunk(to_policy_obs(self.history, self.device), noise=noise)
            chunks = chunks.detach().cpu().numpy()
            for chunker, chunk in zip(self.chunkers, chunks):
                if chunker.needs_chunk():
                    chunker.push(chunk)
        return np.stack([c.pop() for c in self.chunkers]).astype(np.float32)
