"""Chunk executors in the rollout core with a simulated inference delay (``armflow evaluate executor=...``).

In simulation the chunk computed from the obs at step t becomes available ``d = ceil((delay_ms + u * jitter_ms) /
ctrl_ms)`` steps later (u ~ U[0, 1) from a generator seeded with the episode's seed, so a seed gives the same
episode every run); meanwhile the previous chunk keeps executing. :class:`DelayedExecution` is the ``act``
callable of :func:`armflow.workflows.rollout.run_episodes` with ``n_action_steps = s``: each call predicts one
chunk per active env (RTC guidance and RTI-DP warm starts as sampler hooks) and returns each env's block of s
actions from its :class:`armflow.policies.executors.ChunkExecutor`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from armflow.policies.executors import EXECUTORS, DelayEstimator, make_executor, switch_discontinuity
from armflow.policies.realtime import denoiser_evals, rtc_hooks, rtidp_hooks


@dataclass
class Execution:
    """How chunks are executed; the ``executor`` / ``delay_ms`` / ... keys of evaluate and deploy."""

    executor: str = "sync"  # sync | naive | ensemble | rtc
    delay_ms: float = 0.0  # simulated inference delay [ms] (evaluate); deploy measures its own
    jitter_ms: float = 0.0  # extra delay ~ U[0, jitter_ms) per chunk [ms]
    exec_horizon: int | None = None  # s: actions per chunk before the next one is started (None: n_action_steps)
    rtc_overlap: float = 0.5  # RTC: weight of the soft mask after the frozen actions (policies.executors.soft_mask)
    ensemble_k: float = 0.01  # temporal ensembling weight exp(-k i), i = 0 the oldest chunk
    rtidp: bool = False  # RTI-DP warm start of every chunk after the first
    rtidp_start_level: int | None = None  # level the warm start enters at (None: K // 2)
    delay_window: int = 5  # delay estimator: max over this many recent inferences

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise ValueError(f"executor={self.executor!r}; expected one of {', '.join(EXECUTORS)}")
        if self.delay_ms < 0 or self.jitter_ms < 0:
            raise ValueError(f"delay_ms={self.delay_ms}, jitter_ms={self.jitter_ms}: delays must be >= 0")
        if not 0.0 <= self.rtc_overlap <= 1.0:
            raise ValueError(f"rtc.overlap={self.rtc_overlap}: expected a weight in [0, 1]")

    def check(self, policy, ctrl_dt_s: float) -> int:
        """Validate against the policy and control period; returns s."""
        kind = getattr(policy, "policy_type", "?")
        if (self.executor == "rtc" or self.rtidp) and kind not in ("flow", "diffusion"):
            what = "executor=rtc" if self.executor == "rtc" else "rtidp=true"
            raise ValueError(f"{what} needs a flow or diffusion policy (a sampling loop); the checkpoint is {kind!r}")
        s = int(self.exec_horizon or policy.n_action_steps)
        d_max = self.max_delay_steps(ctrl_dt_s)
        if self.executor != "sync" and not d_max <= s <= policy.horizon - d_max:
            raise ValueError(f"delay_ms={self.delay_ms} + jitter_ms={self.jitter_ms} is up to {d_max} control steps of "
                             f"{ctrl_dt_s * 1e3:.0f} ms; executor={self.executor} needs d <= exec_horizon={s} <= "
                             f"horizon - d ({policy.horizon} - {d_max})")
        return s

    def max_delay_steps(self, ctrl_dt_s: float) -> int:
        return math.ceil((self.delay_ms + self.jitter_ms) / (ctrl_dt_s * 1e3) - 1e-9)


class DelayedExecution:
    """``act(obs windows, rows) -> blocks (len(rows), s, D_a)`` for N envs; ``on_start(mask, seeds)`` per episode."""

    def __init__(self, runner, execution: Execution, ctrl_dt_s: float, gripper_dim: int | None = None):
        self.runner, self.policy, self.ex = runner, runner.policy, execution
        self.ctrl_dt_s, self.gripper_dim = float(ctrl_dt_s), gripper_dim
        self.s = execution.check(self.policy, ctrl_dt_s)
        n, h = runner.n_envs, self.policy.horizon
        self.executors = [make_executor(execution.executor, h, self.s, execution.ensemble_k, execution.rtc_overlap)
                          for _ in range(n)]
        d_cap = min(self.s, h - self.s)
        self.estimators = [DelayEstimator(ctrl_dt_s, d_cap, execution.delay_window) for _ in range(n)]
        self.jitter = [np.random.default_rng(0) for _ in range(n)]
        self.seed_of = [None] * n
        self.episodes: dict[int, dict] = {}  # seed -> executed actions and switch indices
        k_half = max(self.policy.num_inference_steps // 2, 1)
        self.k0 = (execution.rtidp_start_level or k_half) if execution.rtidp else 0
        self.nfe: list[int] = []  # denoiser evaluations of every chunk

    def on_start(self, mask, seeds) -> None:
        self.runner.noise.seed(mask, seeds)
        for j, i in enumerate(np.flatnonzero(mask)):
            self._stash(i)
            self.executors[i].reset()
            self.estimators[i] = DelayEstimator(self.ctrl_dt_s, self.estimators[i].d_max, self.ex.delay_window)
            self.jitter[i] = np.random.default_rng([int(seeds[j]), 7])
            self.seed_of[i] = int(seeds[j])

    def _stash(self, i: int) -> None:
        if self.seed_of[i] is not None:
            ex = self.executors[i]
            self.episodes[self.seed_of[i]] = {"actions": np.asarray(ex.actions), "switches": list(ex.switches),
                                              "planned": list(ex.planned)}

    def finish(self) -> None:
        for i in range(len(self.executors)):
            self._stash(i)

    def _delay_ms(self, i: int) -> float:
        u = self.jitter[i].random()  # drawn for every chunk, so the stream does not depend on the executor
        return self.ex.delay_ms + u * self.ex.jitter_ms

    def __call__(self, obs: dict, rows) -> np.ndarray:
        rows = np.asarray(rows)
        z = self.runner.noise(rows)  # one seeded draw per chunk per env, as in plain evaluation
        prefixes = [self.executors[i].prefix() for i in rows]
        chunks = np.zeros((len(rows), self.policy.horizon, self.policy.action_dim), np.float32)
        warm = np.array([p is not None for p in prefixes]) & bool(self.ex.rtidp)
        for group in (np.flatnonzero(~warm), np.flatnonzero(warm)):
            if len(group):
                chunks[group] = self._predict(obs, rows, group, prefixes, z, warm_start=bool(warm[group[0]]))
        blocks = []
        for j, i in enumerate(rows):
            latency_ms = self._delay_ms(i)
            d = 0 if self.ex.executor == "sync" else math.ceil(latency_ms / (self.ctrl_dt_s * 1e3) - 1e-9)
            blocks.append(self.executors[i].commit(chunks[j], d))
            self.estimators[i].record(latency_ms / 1e3, consumed_steps=d)
        return np.stack(blocks).astype(np.float32)

    def _predict(self, obs, rows, group, prefixes, z, warm_start: bool) -> np.ndarray:
        sub = rows[group]
        zg = None if z is None else z[torch.as_tensor(group)]
        hooks = None
        if warm_start:
            if zg is None:
                zg = self.policy.default_noise(len(group))
            hooks = rtidp_hooks(self.policy, np.stack([prefixes[j] for j in group]), zg, self.k0, self.gripper_dim)
            zg = None  # the hook provides the initial x
        elif self.ex.executor == "rtc":
            y, w = self._rtc_targets(rows, group, prefixes)
            hooks = rtc_hooks(self.policy, y, w)
        self.nfe.extend([denoiser_evals(self.policy, self.k0 if warm_start else 0)] * len(group))
        return self.runner.predict(obs, sub, hooks=hooks, noise=zg)

    def _rtc_targets(self, rows, group, prefixes) -> tuple[np.ndarray, np.ndarray]:
        h, dim = self.policy.horizon, self.policy.action_dim
        y, w = np.zeros((len(group), h, dim), np.float32), np.zeros((len(group), h), np.float32)
        for j, g in enumerate(group):
            if prefixes[g] is not None:
                y[j] = prefixes[g]
                w[j] = self.executors[rows[g]].weights(self.estimators[rows[g]].steps)
        return y, w

    def metrics(self, results: list[dict]) -> dict:
        """Per-episode discontinuity (arm dims: the gripper's open/close is a step by design) and time to success;
        adds keys to ``results`` in place and returns the aggregates."""
        self.finish()
        dims = None if self.gripper_dim is None else [d for d in range(self.policy.action_dim) if d != self.gripper_dim]
        for r in results:
            ep = self.episodes.get(r["seed"], {"actions": np.zeros((0, self.policy.action_dim)), "switches": []})
            r.update(switch_discontinuity(ep["actions"][: r["length"]], ep["switches"], dims, ep.get("planned")))
            r["time_to_success_s"] = r["length"] * self.ctrl_dt_s if r["success"] else None
        mean = lambda key: float(np.mean([r[key] for r in results]))  # noqa: E731
        tts = [r["time_to_success_s"] for r in results if r["time_to_success_s"] is not None]
        first = self.episodes.get(results[0]["seed"], {"actions": np.zeros((0, 1)), "switches": []})
        return {"trace_actions": first["actions"][: results[0]["length"]].tolist(),
                "trace_switches": list(first["switches"]), "ctrl_dt_s": self.ctrl_dt_s, "executor": self.ex.executor,
                "delay_ms": self.ex.delay_ms, "jitter_ms": self.ex.jitter_ms,
                "exec_horizon": self.s, "discontinuity_switch": mean("switch_max"),
                "discontinuity_within": mean("within_max"), "discontinuity_switch_mean": mean("switch_mean"),
                "discontinuity_within_mean": mean("within_mean"), "switch_gap": mean("gap_max"),
                "switch_gap_mean": mean("gap_mean"),
                "time_to_success_s": float(np.mean(tts)) if tts else None,
                "nfe_per_chunk": float(np.mean(self.nfe)) if self.nfe else 0.0}


def execution_from_cfg(cfg) -> Execution | None:
    """The ``executor`` / ``delay_ms`` / ``jitter_ms`` / ``exec_horizon`` / ``rtc`` / ``ensemble_k`` / ``rtidp`` keys
    of an evaluate or deploy config (None when it has no ``executor`` key)."""
    if cfg.get("executor") is None:
        return None
    rtc, rtidp = cfg.get("rtc") or {}, cfg.get("rtidp") or {}
    return Execution(executor=str(cfg.executor), delay_ms=float(cfg.get("delay_ms") or 0),
                     jitter_ms=float(cfg.get("jitter_ms") or 0), exec_horizon=cfg.get("exec_horizon"),
                     rtc_overlap=float(rtc.get("overlap", 0.5)),
                     ensemble_k=float(cfg.get("ensemble_k", 0.01)), rtidp=bool(rtidp.get("enabled", False)),
                     rtidp_start_level=rtidp.get("start_level"))


def plot_actions(path, actions: np.ndarray, switches, title: str, ctrl_dt_s: float):
    """One episode's executed actions per dimension over time [s], chunk switches as dotted lines (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a = np.asarray(actions)
    fig, ax = plt.subplots(figsize=(7, 3.6), dpi=110)
    t = np.arange(len(a)) * ctrl_dt_s
    for d in range(a.shape[1] if a.ndim == 2 else 0):
        ax.plot(t, a[:, d], lw=1.0, label=f"a[{d}]")
    for i in switches:
        if 0 < i < len(a):
            ax.axvline(t[i] - ctrl_dt_s / 2, color="k", ls=":", lw=0.7)
    ax.set_xlabel("time [s]")
    ax.set_ylabel("action")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=6, ncol=4, loc="upper right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
