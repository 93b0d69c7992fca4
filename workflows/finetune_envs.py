"""Chunked vector env for RL fine-tuning: one RL step = one action chunk of T_a env steps.

Each env runs its chunk to the end *inside its own slot*, stopping early when its episode ends, so
an episode end mid-chunk never leaks the leftover actions into the next episode:

    chunk reward   = sum of the executed steps' rewards (steps after the episode end are not run)
    terminated     = success/failure ended the episode inside the chunk (no bootstrap)
    truncated      = the time limit ended it (bootstrap from ``next_obs``, the true final obs window)
    next_obs       = obs window of the state the chunk reached (before any reset)
    obs            = what the policy sees next: ``next_obs``, or the new episode's first obs
                     (repeated T_o times) after an autoreset

Envs live in-process (``n_workers=0``) or in ``n_workers`` spawned subprocesses, each holding a
contiguous share of the N envs and stepping them one after the other (one IPC round-trip per chunk).
Obs windows stay raw numpy: state float32 (T_o, D_s), images uint8 (T_o, H, W, 3).

``reward_mode="success"`` replaces the chunk reward by 1.0 when the chunk ends in success (else 0):
sparse rewards as in DPPO/DSRL's manipulation runs, and immune to shaped terms that pay more for
hovering until the time limit than for finishing (episode returns in the stats stay the env's).
``reward_mode="shaped"`` adds potential-based shaping to that sparse reward (Ng et al. 1999):
``shaping_scale * (phi(s_end) - phi(s_start))`` per chunk, with phi the sum of the env's non-success
reward terms (``info["reward_terms"]``; lift: reach + grasp + lift) and phi = 0 at reset. The shaping
telescopes over an episode, so finishing still pays the most, but every chunk gets a signal.
"""
from __future__ import annotations

import multiprocessing as mp
from collections import deque
from dataclasses import dataclass

import numpy as np

REWARD_MODES = ("env", "success", "shaped")


@dataclass
class ChunkStep:
    """Result of one chunk step over N envs; every array has leading dim N."""

    obs: dict[str, np.ndarray]       # (N, T_o, ...) next policy input (after autoreset)
    next_obs: dict[str, np.ndarray]  # (N, T_o, ...) state reached by the chunk (final obs if done)
    reward: np.ndarray               # (N,) float32, sum over executed steps
    terminated: np.ndarray           # (N,) bool
    truncated: np.ndarray            # (N,) bool
    success: np.ndarray              # (N,) bool, success on the chunk's last executed step
    n_steps: np.ndarray              # (N,) int, env steps executed (< T_a when the episode ended)
    elapsed: np.ndarray              # (N,) int, env steps into the episode at ``next_obs``
    episodes: list[dict]             # finished episodes: {"return" (env reward), "rl_return" (the RL reward),
                                     # "length", "success"}


class EnvSlot:
    """One env + its obs window + episode counters; steps whole chunks."""

    def __init__(self, env, n_obs_steps: int, obs_keys: tuple[str, ...], reward_mode: str = "env",
                 shaping_scale: float = 0.1):
        if reward_mode not in REWARD_MODES:
            raise ValueError(f"reward_mode={reward_mode!r}; valid: {REWARD_MODES}")
        self.env, self.obs_keys, self.reward_mode = env, obs_keys, reward_mode
        self.shaping_scale, self.phi = float(shaping_scale), 0.0
        self.history: deque = deque(maxlen=n_obs_steps)
        self.ep_return, self.ep_length = 0.0, 0

    def _window(self) -> dict[str, np.ndarray]:
        return {k: np.stack([o[k] for o in self.history]) for k in self.obs_keys}

    def reset(self, seed: int | None) -> dict[str, np.ndarray]:
        obs, _ = self.env.reset(seed=seed)
        self.history.clear()
        self.history.extend([{k: np.asarray(obs[k]) for k in self.obs_keys}] * self.history.maxlen)
        self.ep_return, self.ep_rl_return, self.ep_length, self.phi = 0.0, 0.0, 0, 0.0
        return self._window()

    def step_chunk(self, actions: np.ndarray, autoreset: bool = True) -> dict:
        """Execute ``actions`` (T_a, D_a) until done; returns one env's share of a ChunkStep."""
        reward, term, trunc, success, k, info = 0.0, False, False, False, 0, {}
        for k in range(actions.shape[0]):
            obs, r, term, trunc, info = self.env.step(actions[k])
            reward += float(r)
            success = bool(info.get("success", False))
            self.history.append({key: np.asarray(obs[key]) for key in self.obs_keys})
            if term or trunc:
                break
        self.ep_return += reward
        self.ep_length += k + 1
        rl_reward = reward if self.reward_mode == "env" else float(success)
        if self.reward_mode == "shaped":
            terms = info.get("reward_terms", {})
            phi = float(sum(v for name, v in terms.items() if name != "success"))
            rl_reward += self.shaping_scale * (phi - self.phi)
            self.phi = phi
        self.ep_rl_return += rl_reward
        out = {"next_obs": self._window(), "reward": rl_reward, "terminated": bool(term),
               "truncated": bool(trunc), "success": success, "n_steps": k + 1, "elapsed": self.ep_length,
               "episode": None}
        if term or trunc:
            out["episode"] = {"return": self.ep_return, "rl_return": self.ep_rl_return, "length": self.ep_length,
                              "success": success}
            out["obs"] = self.reset(None) if autoreset else out["next_obs"]
        else:
            out["obs"] = out["next_obs"]
        return out


def _stack(rows: list[dict], obs_keys: tuple[str, ...]) -> ChunkStep:
    return ChunkStep(
        obs={k: np.stack([r["obs"][k] for r in rows]) for k in obs_keys},
        next_obs={k: np.stack([r["next_obs"][k] for r in rows]) for k in obs_keys},
        reward=np.array([r["reward"] for r in rows], dtype=np.float32),
        terminated=np.array([r["terminated"] for r in rows], dtype=bool),
        truncated=np.array([r["truncated"] for r in rows], dtype=bool),
        success=np.array([r["success"] for r in rows], dtype=bool),
        n_steps=np.array([r["n_steps"] for r in rows], dtype=np.int64),
        elapsed=np.array([r["elapsed"] for r in rows], dtype=np.int64),
        episodes=[r["episode"] for r in rows if r["episode"] is not None],
    )


def _make_slots(task: str, count: int, n_obs_steps: int, obs_keys, overrides: dict, reward_mode: str,
                shaping_scale: float) -> list[EnvSlot]:
    from armflow.sim import make_env

    return [EnvSlot(make_env(task, **overrides), n_obs_steps, tuple(obs_keys), reward_mode, shaping_scale)
            for _ in range(count)]


def _worker(conn, task, count, n_obs_steps, obs_keys, overrides, reward_mode, shaping_scale) -> None:
    slots = _make_slots(task, count, n_obs_steps, obs_keys, overrides, reward_mode, shaping_scale)
    conn.send(int(slots[0].env.max_episode_steps))
    while True:
        cmd, arg = conn.recv()
        if cmd == "reset":
            conn.send([s.reset(seed) for s, seed in zip(slots, arg)])
        elif cmd == "step":
            actions, active, autoreset = arg
            conn.send([s.step_chunk(a, autoreset) if on else None for s, a, on in zip(slots, actions, active)])
        elif cmd == "close":
            for s in slots:
                s.env.close()
            conn.send(None)
            return


class ChunkVecEnv:
    """N envs of ``task`` stepped a chunk at a time (see module docstring).

    Args:
        task: registry name for ``armflow.sim.make_env``.
        n_envs: N parallel envs.
        n_obs_steps: T_o, obs window length.
        obs_keys: observation keys the policy reads.
        n_workers: 0 = in-process; otherwise that many spawned subprocesses.
        overrides: task config overrides passed to ``make_env``.
        reward_mode: "env" (sum of env rewards), "success" (sparse) or "shaped" (see module docstring).
        shaping_scale: weight of the potential-based shaping (``reward_mode="shaped"``).
        slots: pre-built ``EnvSlot`` list (tests; in-process only).
    """

    def __init__(self, task: str, n_envs: int, n_obs_steps: int, obs_keys, n_workers: int = 0,
                 overrides: dict | None = None, slots: list[EnvSlot] | None = None, reward_mode: str = "env",
                 shaping_scale: float = 0.1):
        self.n_envs, self.obs_keys = int(n_envs), tuple(obs_keys)
        self._slots, self._conns, self._procs = None, [], []
        overrides = dict(overrides or {})
        if slots is not None or n_workers <= 0:
            self._slots = slots or _make_slots(task, self.n_envs, n_obs_steps, self.obs_keys, overrides, reward_mode,
                                                     shaping_scale)
            self.max_episode_steps = int(self._slots[0].env.max_episode_steps)
            return
        n_workers = min(int(n_workers), self.n_envs)
        self._counts = [len(a) for a in np.array_split(np.arange(self.n_envs), n_workers)]
        ctx = mp.get_context("spawn")
        for count in self._counts:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(child, task, count, n_obs_steps, self.obs_keys, overrides,
                                                               reward_mode, shaping_scale),
                               daemon=True)
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)
        self.max_episode_steps = [conn.recv() for conn in self._conns][0]  # time limit, from the workers' envs

    def _split(self, items: list) -> list[list]:
        out, i = [], 0
        for count in self._counts:
            out.append(items[i:i + count])
            i += count
        return out

    def _call(self, cmd: str, per_env: list) -> list:
        if self._slots is not None:
            if cmd == "reset":
                return [s.reset(seed) for s, seed in zip(self._slots, per_env)]
            return [s.step_chunk(a, ar) if on else None for s, (a, on, ar) in zip(self._slots, per_env)]
        if cmd == "reset":
            for conn, part in zip(self._conns, self._split(per_env)):
                conn.send(("reset", part))
        else:
            for conn, part in zip(self._conns, self._split(per_env)):
                conn.send(("step", ([p[0] for p in part], [p[1] for p in part], part[0][2])))
        return [row for conn in self._conns for row in conn.recv()]

    def reset(self, seeds: list[int | None] | None = None) -> dict[str, np.ndarray]:
        """Reset every env (``seeds`` one per env, None = continue its RNG); returns obs (N, T_o, ...)."""
        seeds = list(seeds) if seeds is not None else [None] * self.n_envs
        if len(seeds) != self.n_envs:
            raise ValueError(f"ChunkVecEnv.reset: got {len(seeds)} seeds for {self.n_envs} envs")
        rows = self._call("reset", seeds)
        return {k: np.stack([r[k] for r in rows]) for k in self.obs_keys}

    def step(self, actions: np.ndarray, active: np.ndarray | None = None, autoreset: bool = True):
        """Run one chunk per env: ``actions`` (N, T_a, D_a). Inactive envs are not stepped and their
        rows are None (returns a list then, for evaluation); otherwise returns a ``ChunkStep``."""
        actions = np.asarray(actions, dtype=np.float32)
        if actions.ndim != 3 or actions.shape[0] != self.n_envs:
            raise ValueError(f"ChunkVecEnv.step: actions must be (N={self.n_envs}, T_a, D_a), got {actions.shape}")
        act = np.ones(self.n_envs, dtype=bool) if active is None else np.asarray(active, dtype=bool)
        rows = self._call("step", [(a, bool(on), autoreset) for a, on in zip(actions, act)])
        if active is None:
            return _stack(rows, self.obs_keys)
        return rows

    def close(self) -> None:
        if self._slots is not None:
            for s in self._slots:
                s.env.close()
            self._slots = []
            return
        for conn in self._conns:
            try:
                conn.send(("close", None))
                conn.recv()
            except (BrokenPipeError, EOFError, OSError):
                pass
        for proc in self._procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
        self._conns, self._procs = [], []
