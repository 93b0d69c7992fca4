"""``armflow bench steering``: latency of each steering method against the unsteered sample of the same policy.

Per method, ms per ``predict_chunk`` at batch 1 on one thread (p50/p99) and ``<method>_ratio`` = p50 / the base
policy's p50 measured in the same rounds (ITPS: ``itps_pr``, ``itps_bi``, ``itps_gd``, ``itps_ss``, a point goal
``itps_goal``). ``BENCH_JSON`` keys: ``base_p50_ms``, ``base_p99_ms``, and per method
``vgps`` (K=16), ``vgps_k<K>`` (every K of ``Ks``; all at ``score_step``), ``vgps_full`` (K=16 scoring the
finished chunks), ``gpc``, ``cfg``, ``dynaguide``: ``<method>_p50_ms``,
``<method>_p99_ms``, ``<method>_ratio``, and the same ratio of thread CPU time, ``<method>_cpu_ratio`` (the time
waiting for a core left out: the comparable figure on a loaded box). CFG's ratio is to its own conditioned policy sampled plainly (``cfg_base``;
a fresh policy of the same shapes plus a 2-D condition). ``vgps_sampler``: V-GPS's K=16 candidates sampled in one
batch and the first kept (no critic): the part of V-GPS's cost that is the policy's own K-row sampling;
``vgps_ens3``: K=16 scored by a 3-critic ensemble (at ``score_step``).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

LIFT_SPEC = {"observation.state": (8,), "observation.environment_state": (10,)}
CONDITION = "observation.condition"


def fresh_policy(seed: int, condition: bool = False):
    """A flow policy of lift's shapes at the default sizes; ``condition``: plus a 2-D condition key for CFG."""
    from armflow.policies import make_policy

    torch.manual_seed(seed)
    spec = {**LIFT_SPEC, **({CONDITION: (2,)} if condition else {})}
    stats = {k: {"min": -np.ones(s[0]), "max": np.ones(s[0])} for k, s in spec.items()}
    stats["action"] = {"min": -np.ones(7), "max": np.ones(7)}
    extra = {"condition_key": CONDITION, "condition_dropout": 0.1} if condition else {}
    return make_policy("flow", spec, 7, stats, **extra).eval()


class CandidatesOnly:
    """The base policy sampling K candidates in one batch and keeping the first: V-GPS without its critic."""

    def __init__(self, base, k: int):
        from armflow.policies.sampler import SamplerHooks

        self.base, self.hooks = base, SamplerHooks(reranker=self.first, n_candidates=k)

    @staticmethod
    def first(obs, candidates: torch.Tensor) -> torch.Tensor:
        return torch.zeros(len(candidates), dtype=torch.long)

    def predict_chunk(self, obs, noise=None):
        return self.base.predict_chunk(obs, noise, hooks=self.hooks)


def build_methods(cfg: DictConfig, out: Path) -> dict:
    """name -> policy: the base and each steered variant."""
    from armflow.policies import load_policy
    from armflow.policies.steering import ChunkCritic, steer

    base = load_policy(cfg.checkpoint, steered=False) if cfg.checkpoint else fresh_policy(int(cfg.seed))
    critic = cfg.critic or str(ChunkCritic.for_policy(base).save_pretrained(out / "bench_critic"))
    methods = {"base": base}
    step = None if cfg.score_step is None else int(cfg.score_step)
    for k in cfg.Ks:
        methods[f"vgps_k{int(k)}"] = steer(base, {"type": "vgps", "critic": critic, "K": int(k), "score_step": step})
    methods["vgps_full"] = steer(base, {"type": "vgps", "critic": critic, "K": 16})
    methods["vgps_sampler"] = CandidatesOnly(base, 16)
    # a 3-critic ensemble at K=16 (bench vgps's default); three copies cost what three seeds' critics cost
    methods["vgps_ens3"] = steer(base, {"type": "vgps", "critic": [critic] * 3, "K": 16, "score_step": step})
    members = []
    for i in range(int(cfg.gpc_members) - 1):  # same architecture, other weights
        torch.manual_seed(int(cfg.seed) + 1 + i)
        other = type(base)(base.cfg, base.obs_spec, base.action_dim, None)
        other.normalizer.load_state_dict(base.normalizer.state_dict())
        members.append(str(other.save_pretrained(out / f"bench_gpc_member_{i + 1}")))
    n = len(members) + 1
    methods["gpc"] = steer(base, {"type": "gpc", "policies": members, "weights": [1.0 / n] * n})
    for strategy in ("pr", "bi", "gd", "ss"):  # ITPS at its defaults (K 32, guidance 60, 4 MCMC steps)
        methods[f"itps_{strategy}"] = steer(base, {"type": "itps", "goal": list(cfg.itps_goal), "strategy": strategy})
    conditioned = fresh_policy(int(cfg.seed), condition=True)
    methods["cfg_base"] = conditioned
    methods["cfg"] = steer(conditioned, {"type": "cfg", "w": 2.0, "value": [1.0, 0.0]})
    from armflow.workflows.dynamics import untrained_dynaguide  # DynaGuide: untrained model, 8 + 8 random goals

    methods["dynaguide"] = untrained_dynaguide(base, out, int(cfg.seed))
    return methods


def time_round_robin(methods: dict, obs: dict, warmup: int, iters: int) -> tuple[dict, dict]:
    """Wall and thread-CPU ms per call of each method, one call of each per round (the same load on all). The CPU
    time leaves out the time the thread waited for a core, which on a loaded box inflates long calls the most."""
    wall = {name: np.empty(iters) for name in methods}
    cpu = {name: np.empty(iters) for name in methods}
    with torch.inference_mode():
        for r in range(warmup + iters):
            for name, policy in methods.items():
                t0, c0 = time.perf_counter(), time.thread_time()
                policy.predict_chunk(obs)
                if r >= warmup:
                    wall[name][r - warmup] = (time.perf_counter() - t0) * 1e3
                    cpu[name][r - warmup] = (time.thread_time() - c0) * 1e3
    return wall, cpu


def main(cfg: DictConfig) -> dict:
    from armflow.workflows.common import bench_line, write_json

    torch.set_num_threads(int(cfg.num_threads))
    out = Path(cfg.out)
    methods = build_methods(cfg, out)
    base = methods["base"]
    gen = torch.Generator().manual_seed(int(cfg.seed))
    obs = {k: torch.rand(1, base.n_obs_steps, *s, generator=gen) * 2 - 1 for k, s in base.obs_spec.items()}
    obs[CONDITION] = torch.tensor([[[1.0, 0.0]] * base.n_obs_steps])  # read by cfg_base only
    times, cpu = time_round_robin(methods, obs, int(cfg.warmup), int(cfg.iters))
    p50 = lambda t: float(np.percentile(t, 50))  # noqa: E731
    result = {"base_p50_ms": p50(times["base"]), "base_p99_ms": float(np.percentile(times["base"], 99)),
              "base_cpu_p50_ms": p50(cpu["base"])}
    for name, t in times.items():
        if name != "base":
            ref = "cfg_base" if name == "cfg" else "base"
            result.update({f"{name}_p50_ms": p50(t), f"{name}_p99_ms": float(np.percentile(t, 99)),
                           f"{name}_ratio": p50(t) / p50(times[ref]), f"{name}_cpu_p50_ms": p50(cpu[name]),
                           f"{name}_cpu_ratio": p50(cpu[name]) / p50(cpu[ref])})
    if "vgps_k16" in times:
        result.update({f"vgps_{s}": result[f"vgps_k16_{s}"] for s in ("p50_ms", "p99_ms", "ratio", "cpu_p50_ms", "cpu_ratio")})
    result.update({"iters": int(cfg.iters), "num_threads": int(cfg.num_threads), "vgps_score_step": cfg.score_step,
                   "checkpoint": str(cfg.checkpoint) if cfg.checkpoint else "fresh lift-shaped flow"})
    for name in times:
        print(f"[bench steering] {name:12s} p50 {np.percentile(times[name], 50):7.2f} ms  "
              f"p99 {np.percentile(times[name], 99):7.2f} ms  x{result.get(f'{name}_ratio', 1.0):.2f}  "
              f"(CPU p50 {p50(cpu[name]):6.2f} ms x{result.get(f'{name}_cpu_ratio', 1.0):.2f})")
    write_json(out / "bench_steering.json", result)
    print(bench_line(result))
    return result
