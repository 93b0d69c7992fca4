"""DSRL (Wagenmaker et al. 2025): steer a FROZEN diffusion/flow policy by choosing its initial noise.

The base policy is sampled deterministically, a = pi(s, w), w (T_p, D_a) the initial noise; RL acts
in w-space with a tanh-Gaussian noise actor bounded to +-``noise_bound``.

- ``variant="sac"`` (DSRL-SAC): plain SAC on Q(s, w).
- ``variant="na"`` (DSRL-NA, noise-aliased): Q^A(s, a) on the executed action chunks (TD target runs
  the base sampler on the next state with the actor's noise); Q^W(s, w) distilled from Q^A on
  w ~ N(0, I) (plus, by default, half the batch from the actor itself, so Q^W is accurate where
  the actor looks); the actor maximises Q^W. The buffer stores real actions.
The buffer is warm-started with base-policy rollouts (w ~ N(0, I), clipped to the bound).
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from armflow.policies.rl.common import load_module_state, module_state, to_env_action
from armflow.policies.rl.nets import TanhGaussianActor, TwinQ, polyak_update
from armflow.policies.rl.onpolicy import TIME_LIMITS, feature_dim, frozen_copy
from armflow.policies.rl.replay import ReplayBuffer
from armflow.policies.sampler import SamplerHooks

VARIANTS = ("na", "sac")


@dataclass
class DSRLConfig:
    """Defaults mirror ``configs/algo/dsrl.yaml`` (what ``armflow finetune`` users see); a test keeps them equal."""

    variant: str = "na"               # "na" (noise-aliased) or "sac"
    noise_bound: float = 1.5          # |w| bound of the noise actor
    gamma: float = 0.99               # discount per chunk
    utd: float = 5.0                  # gradient steps per collected chunk transition
    batch_size: int = 128             # replay minibatch
    buffer_size: int = 200_000        # replay rows (chunk transitions)
    warmup_transitions: int = 256     # base-policy (w ~ N(0, I)) transitions before learning
    hidden: int = 256                 # critic / actor width
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    init_alpha: float = 0.1           # initial entropy temperature
    time_limit: str = "terminal"      # terminal (the limit is part of the task) | bootstrap (see OnPolicyConfig)
    critic_time: bool = True          # critics also see the elapsed episode fraction (the actor does not)
    shared_noise: bool = False        # one D_a noise vector repeated over the T_p chunk steps: a D_a-dim
                                      # RL action instead of T_p * D_a (the paper saw this break some policies)


# Never varied: temperature lr, total entropy target of the noise actor (0, the paper's), Polyak rate of the
# target critics (the paper's); NA: the share of Q^W distillation noise drawn from the actor (the rest N(0, I)).
ALPHA_LR, TARGET_ENTROPY, POLYAK, DISTILL_ACTOR_FRAC = 3e-4, 0.0, 0.005, 0.5


class DSRLLearner:
    algo = "dsrl"

    def __init__(self, policy, cfg: DSRLConfig, n_envs: int):
        ptype = getattr(policy, "policy_type", type(policy).__name__)
        if ptype not in ("flow", "diffusion") or not hasattr(policy, "sample"):
            raise ValueError(f"algo=dsrl needs a 'flow' or 'diffusion' policy checkpoint (with a deterministic "
                             f"sample(cond, noise)); got policy_type={ptype!r}")
        if cfg.variant not in VARIANTS:
            raise ValueError(f"dsrl: variant={cfg.variant!r}; valid: {VARIANTS}")
        self.cfg, self.base = cfg, frozen_copy(policy)
        self.T_p, self.D_a, self.T_a = int(policy.horizon), int(policy.action_dim), int(policy.n_action_steps)
        if cfg.time_limit not in TIME_LIMITS:
            raise ValueError(f"dsrl: time_limit={cfg.time_limit!r}; valid: {', '.join(TIME_LIMITS)}")
        f, w_dim = feature_dim(policy), (1 if cfg.shared_noise else self.T_p) * self.D_a
        self.w_dim = w_dim
        fq = f + int(cfg.critic_time)
        self.actor = TanhGaussianActor(f, w_dim, cfg.noise_bound, cfg.hidden)
        self.q_w = TwinQ(fq, w_dim, cfg.hidden)                                  # Q(s, w) (SAC) / Q^W (NA)
        self.q_a = TwinQ(fq, self.T_a * self.D_a, cfg.hidden) if cfg.variant == "na" else None
        self.q_target = copy.deepcopy(self.q_a if cfg.variant == "na" else self.q_w)
        self.log_alpha = torch.tensor(float(np.log(cfg.init_alpha)), requires_grad=True)
        critics = list(self.q_w.parameters()) + (list(self.q_a.parameters()) if self.q_a else [])
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.actor_lr)
        self.critic_opt = torch.optim.Adam(critics, lr=cfg.critic_lr)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=ALPHA_LR)
        self.buffer = ReplayBuffer(cfg.buffer_size)
        self.rng = np.random.default_rng(0)
        self.warm = torch.tensor(1.0)  # 1 while the buffer is warm-started with base-policy noise
        self.n_updates = 0

    def chunk_noise(self, w: torch.Tensor) -> torch.Tensor:
        """RL action (B, w_dim) -> sampler noise (B, T_p, D_a) (repeated over the chunk with ``shared_noise``)."""
        return expand_noise(w, self.T_p, self.D_a)

    # -- acting -------------------------------------------------------------------------------------
    @torch.no_grad()
    def act(self, obs: dict[str, np.ndarray], explore: bool = True) -> tuple[np.ndarray, dict]:
        """Env action chunk (N, T_p, D_a) + record {w (N, T_p*D_a), action (N, T_a*D_a) normalised}."""
        cond = self.base.encode_obs(obs)
        if explore and self.warm.item() > 0:
            w = torch.randn(cond.shape[0], self.w_dim).clamp(-self.cfg.noise_bound, self.cfg.noise_bound)
        else:
            w, _ = self.actor(cond, deterministic=not explore)
        action = self.base.sample(cond, self.chunk_noise(w))
        record = {"w": w.numpy(), "action": action[:, : self.T_a].reshape(len(w), -1).numpy()}
        return to_env_action(self.base, action).numpy(), record

    # -- learning -----------------------------------------------------------------------------------
    def update(self, batch: dict) -> dict[str, float]:
        """Add the (S, N) rollout to the buffer, then ``utd`` gradient steps per new transition."""
        S, N = batch["reward"].shape
        flat = lambda x: {k: v.reshape(S * N, *v.shape[2:]) for k, v in x.items()}
        ends = batch["terminated"]
        if self.cfg.time_limit == "terminal":
            ends = np.logical_or(ends, batch["truncated"])
        self.buffer.add({"obs": flat(batch["obs"]), "next_obs": flat(batch["next_obs"]),
                         "w": batch["w"].reshape(S * N, -1), "action": batch["action"].reshape(S * N, -1),
                         "reward": batch["reward"].reshape(-1).astype(np.float32),
                         "terminated": ends.reshape(-1).astype(np.float32),
                         "time": batch["time"].reshape(-1).astype(np.float32),
                         "next_time": batch["next_time"].reshape(-1).astype(np.float32)})
        if self.buffer.size < self.cfg.warmup_transitions:
            return {"charts/buffer_size": float(self.buffer.size)}
        self.warm.fill_(0.0)
        logs: dict[str, list[float]] = {}
        for _ in range(max(1, int(round(self.cfg.utd * S * N)))):
            for k, v in self.gradient_step(self.buffer.sample(self.cfg.batch_size, self.rng)).items():
                logs.setdefault(k, []).append(v)
        out = {k: float(np.mean(v)) for k, v in logs.items()}
        out["charts/buffer_size"] = float(self.buffer.size)
        return out

    def _q_in(self, f: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        """Critic input: features, plus the elapsed episode fraction with ``critic_time``."""
        return torch.cat([f, time.reshape(-1, 1).to(f.dtype)], dim=-1) if self.cfg.critic_time else f

    def gradient_step(self, mb: dict) -> dict[str, float]:
        cfg, alpha = self.cfg, self.log_alpha.exp().detach()
        with torch.no_grad():
            f, f_next = self.base.encode_obs(mb["obs"]), self.base.encode_obs(mb["next_obs"])
            w_next, lp_next = self.actor(f_next)
            fq, fq_next = self._q_in(f, mb["time"]), self._q_in(f_next, mb["next_time"])
            not_term = 1.0 - mb["terminated"]
            if cfg.variant == "na":   # 1. TD target on real action chunks: the base sampler picks a'.
                a_next = self.base.sample(f_next, self.chunk_noise(w_next))[:, : self.T_a].flatten(1)
                y = mb["reward"] + cfg.gamma * not_term * torch.min(*self.q_target(fq_next, a_next))
            else:                     # 1'. SAC target in w-space.
                y = mb["reward"] + cfg.gamma * not_term * (torch.min(*self.q_target(fq_next, w_next)) - alpha * lp_next)
        if cfg.variant == "na":
            q1, q2 = self.q_a(fq, mb["action"])
            # 2. Distil Q^W(s, w) from Q^A(s, pi(s, w)) on w ~ N(0, I).
            with torch.no_grad():
                w_d = torch.randn(len(y), self.w_dim)
                n_act = int(DISTILL_ACTOR_FRAC * len(y))   # also cover where the actor looks
                if n_act:
                    w_d[:n_act] = self.actor(f[:n_act])[0]
                a_d = self.base.sample(f, self.chunk_noise(w_d))[:, : self.T_a].flatten(1)
                qa_d = torch.min(*self.q_a(fq, a_d))
            qw1, qw2 = self.q_w(fq, w_d)
            distill = (qw1 - qa_d).pow(2).mean() + (qw2 - qa_d).pow(2).mean()
        else:
            q1, q2 = self.q_w(fq, mb["w"])
            distill = torch.zeros(())
        td = (q1 - y).pow(2).mean() + (q2 - y).pow(2).mean()
        self.critic_opt.zero_grad()
        (td + distill).backward()
        self.critic_opt.step()
        # 3. Noise actor on Q^W (or Q): max min-Q - alpha log pi; 4. temperature toward the target entropy.
        w, lp = self.actor(f)
        actor_loss = (alpha * lp - torch.min(*self.q_w(fq, w))).mean()
        self.actor_opt.zero_grad()
        actor_loss.backward()
        self.actor_opt.step()
        alpha_loss = -(self.log_alpha * (lp.detach() + TARGET_ENTROPY)).mean()
        self.alpha_opt.zero_grad()
        alpha_loss.backward()
        self.alpha_opt.step()
        polyak_update(self.q_target, self.q_a if cfg.variant == "na" else self.q_w, POLYAK)
        self.n_updates += 1
        return {"losses/td_loss": td.item(), "losses/distill_loss": distill.item(), "losses/actor_loss": actor_loss.item(),
                "losses/alpha": alpha.item(), "charts/q_mean": q1.mean().item(), "charts/entropy": -lp.mean().item()}

    # -- state ----------------------------------------------------------------------------------------
    def _modules(self) -> dict[str, torch.nn.Module]:
        mods = {"actor": self.actor, "q_w": self.q_w, "q_target": self.q_target}
        if self.q_a is not None:
            mods["q_a"] = self.q_a
        return mods

    def acting_state(self) -> dict[str, torch.Tensor]:
        return {**module_state("actor", self.actor), "warm": self.warm.clone()}

    def load_acting_state(self, tensors: dict[str, torch.Tensor]) -> None:
        load_module_state("actor", self.actor, tensors)
        self.warm.copy_(tensors["warm"])

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"actor": self.actor_opt, "critic": self.critic_opt, "alpha": self.alpha_opt}

    def train_state(self):
        tensors = {k: v for name, m in self._modules().items() for k, v in module_state(name, m).items()}
        tensors.update({"log_alpha": self.log_alpha.detach().clone().reshape(1), "warm": self.warm.clone().reshape(1)},
                       **self.buffer.state_tensors())
        meta = {"buffer": self.buffer.meta(), "n_updates": self.n_updates, "rng": self.rng.bit_generator.state}
        return tensors, meta, self.optimizers()

    def load_train_state(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        for name, m in self._modules().items():
            load_module_state(name, m, tensors)
        with torch.no_grad():
            self.log_alpha.copy_(tensors["log_alpha"].reshape(()))
            self.warm.copy_(tensors["warm"].reshape(()))
        self.buffer.load(tensors, meta["buffer"])
        self.n_updates = int(meta["n_updates"])
        self.rng.bit_generator.state = meta["rng"]

    def export(self, out_dir) -> None:
        """Base checkpoint (``save_pretrained``) + ``dsrl_noise_actor.safetensors`` + ``dsrl.json``;
        ``armflow.policies.load_policy(dir)`` rebuilds a policy whose ``predict_chunk``
        draws its noise from the actor."""
        import json
        from pathlib import Path

        from safetensors.torch import save_file

        self.base.save_pretrained(out_dir)
        save_file({k: v.contiguous() for k, v in self.actor.state_dict().items()},
                  str(Path(out_dir) / "dsrl_noise_actor.safetensors"))
        (Path(out_dir) / "dsrl.json").write_text(json.dumps(
            {"noise_bound": self.cfg.noise_bound, "hidden": self.cfg.hidden,
             "feat_dim": self.actor.net[0].in_features, "w_dim": self.w_dim}, indent=2))
        config = Path(out_dir) / "config.json"  # the config names its steering: load_policy returns the wrapper
        config.write_text(json.dumps({**json.loads(config.read_text()), "steering": {"type": "dsrl"}}, indent=2))


def expand_noise(w: torch.Tensor, horizon: int, action_dim: int) -> torch.Tensor:
    """(B, T_p * D_a) -> (B, T_p, D_a); a shared (B, D_a) noise is repeated over the T_p steps."""
    if w.shape[-1] == action_dim and horizon > 1:
        return w.view(-1, 1, action_dim).expand(-1, horizon, action_dim)
    return w.view(-1, horizon, action_dim)


class DSRLPolicy(torch.nn.Module):
    """A frozen base policy steered by a DSRL noise actor, which is the base sampler's noise provider
    (:class:`~armflow.policies.sampler.SamplerHooks`). Other attributes delegate to the base.

    ``predict_chunk(obs)``: the actor's deterministic noise w = b tanh(mu(s)). ``predict_chunk(obs, noise)``:
    ``noise`` (B, T_p, D_a) is the standard-normal draw of the actor's Gaussian, w = b tanh(mu + sigma noise)
    (with ``shared_noise`` its first D_a entries per row), so the call is deterministic given noise, zero noise
    is the deterministic w, and a N(0, I) noise samples the actor's own distribution (the Gaussian policy's
    convention). Given noise steers; it never bypasses the actor."""

    def __init__(self, base, actor: TanhGaussianActor):
        super().__init__()
        self.base, self.actor = base.eval(), actor.eval()

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("base"), name)

    def default_noise(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Zeros: evaluated and deployed, a DSRL policy acts with its actor's deterministic noise."""
        return torch.zeros(batch, self.base.horizon, self.base.action_dim, device=self.base.device)

    @torch.no_grad()
    def predict_chunk(self, obs, noise=None, hooks: SamplerHooks | None = None) -> torch.Tensor:
        """Obs window {key: (B, T_o, ...)} -> action chunk (B, T_p, D_a) in robot units (see the class)."""
        hooks = hooks or SamplerHooks()
        if hooks.noise is not None:
            raise ValueError("DSRLPolicy.predict_chunk: hooks.noise must be None (the noise actor provides it)")
        w_dim, horizon, action_dim = self.actor.net[-1].out_features // 2, self.base.horizon, self.base.action_dim

        def actor_noise(cond: torch.Tensor) -> torch.Tensor:
            eps = None if noise is None else torch.as_tensor(noise, dtype=cond.dtype, device=cond.device)
            eps = None if eps is None else eps.reshape(len(cond), -1)[:, :w_dim]
            # No noise: the deterministic w, except for K > 1 reranked candidates, which need K different draws.
            w, _ = self.actor(cond, deterministic=eps is None and hooks.n_candidates == 1, eps=eps)
            return expand_noise(w, horizon, action_dim)

        return self.base.predict_chunk(obs, hooks=dataclasses.replace(hooks, noise=actor_noise))


def load_dsrl_policy(directory) -> DSRLPolicy:
    """Load what ``DSRLLearner.export`` wrote (base checkpoint + noise actor); ``load_policy`` does the same."""
    from armflow.policies import load_policy

    return wrap_dsrl_export(directory, load_policy(directory, steered=False))


def wrap_dsrl_export(directory, base) -> DSRLPolicy:
    """``base`` steered by the noise actor saved beside it (``dsrl.json`` + ``dsrl_noise_actor.safetensors``)."""
    import json
    from pathlib import Path

    from safetensors.torch import load_file

    meta_path = Path(directory) / "dsrl.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{directory}: no dsrl.json (not a DSRL export; use load_policy for plain checkpoints)")
    meta = json.loads(meta_path.read_text())
    actor = TanhGaussianActor(int(meta["feat_dim"]), int(meta["w_dim"]), float(meta["noise_bound"]), int(meta["hidden"]))
    actor.load_state_dict(load_file(str(Path(directory) / "dsrl_noise_actor.safetensors")))
    return DSRLPolicy(base, actor)
