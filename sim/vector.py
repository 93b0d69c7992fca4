"""Vector envs: N copies of a registered env as ``gymnasium.vector.VectorEnv`` subclasses (same-step autoreset).

- ``SubprocVectorEnv``: worker processes (multiprocessing "forkserver" or "spawn"),
  each hosting a contiguous block of envs; one pipe message per worker per step
  carrying numpy arrays. A worker exception is re-raised in the parent as
  ``WorkerError`` with the worker's traceback; workers exit when the parent dies
  (their pipe closes) and ignore Ctrl-C (the parent handles it and closes them).
- ``SyncVectorEnv``: the same API in-process (``n_workers=0``), for debugging/tests.

Both: ``reset(seed=None | int | list[int], options=None) -> (obs, info)`` (``options`` go to every
env's reset; gymnasium's ``options["reset_mask"]`` (N,) bool resets only those envs);
``step(actions (N, D_a)) -> (obs, reward (N,), terminated (N,), truncated (N,), info)``
with same-step autoreset and the info keys documented in ``armflow.sim.wrappers``;
``step_chunk(actions (N, T_a, D_a), active, autoreset, keys, keep) -> dict`` (each env's whole chunk, one
message per worker: ``EnvGroup.step_chunk``, for RL rollouts);
``call(name, *args, **kwargs) -> list`` (one result per env), ``get_attr(name) -> tuple``,
``call_at(i, name, ...)``, ``render(env_index=None, camera=None)``, ``close()`` (also via ``with``
and ``__del__``). ``metadata["autoreset_mode"]`` is ``AutoresetMode.SAME_STEP``, so gymnasium's
vector wrappers (``RecordEpisodeStatistics``, ...) count episodes right.

Next to gymnasium's own Sync/AsyncVectorEnv (``gym.make_vec(..., vectorization_mode="sync"/"async")`` on
the same ids): ``AsyncVectorEnv`` runs one process per env, here a worker steps a block of envs and
answers with one message, and ``info`` carries armflow's stacked keys. Whether that block layout is
faster than ``AsyncVectorEnv`` has not been measured on an idle machine yet.
"""
from __future__ import annotations

import functools
import multiprocessing as mp
import os
import signal
import traceback
from typing import Any, Sequence

import gymnasium as gym
import numpy as np

from armflow.sim.registry import make_env
from armflow.sim.wrappers import EnvGroup, concat_tree

_CONTEXTS = ("forkserver", "spawn")


class WorkerError(RuntimeError):
    """An env raised inside a vector-env worker; the message carries the worker's traceback."""


class _VectorEnvBase(gym.vector.VectorEnv):
    """Shared API of the vector envs; subclasses implement ``_reset/_step/_call_at/_call_all/close_extras``."""

    num_envs: int

    def _init_spec(self, spec: dict[str, Any]) -> None:
        self.metadata = {**spec["metadata"], "autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}
        self.render_mode = spec["render_mode"]
        self.single_observation_space = spec["observation_space"]
        self.single_action_space = spec["action_space"]
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, self.num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, self.num_envs)
        self.ctrl_dt, self.sim_dt = spec["ctrl_dt"], spec["sim_dt"]
        self.max_episode_steps, self.task_name = spec["max_episode_steps"], spec["task_name"]

    def _seeds(self, seed: int | Sequence[int] | None) -> list[int | None]:
        if seed is None:
            return [None] * self.num_envs
        if isinstance(seed, (int, np.integer)):
            return [int(seed) + i for i in range(self.num_envs)]
        seeds = list(seed)
        if len(seeds) != self.num_envs:
            raise ValueError(f"reset(seed=...): got {len(seeds)} seeds for {self.num_envs} envs")
        return seeds

    def _check_actions(self, actions) -> np.ndarray:
        actions = np.asarray(actions, dtype=np.float32)
        expected = (self.num_envs,) + tuple(self.single_action_space.shape)
        if actions.shape != expected:
            raise ValueError(f"step(actions): expected shape {expected} (N, D_a), got {actions.shape}")
        return actions

    def _reset_mask(self, options: dict) -> np.ndarray | None:
        """Pop and check gymnasium's ``options["reset_mask"]`` (bool (N,), at least one True)."""
        mask = options.pop("reset_mask", None)
        if mask is None:
            return None
        mask = np.asarray(mask)
        if mask.shape != (self.num_envs,) or mask.dtype != np.bool_ or not mask.any():
            raise ValueError(f"reset(options={{'reset_mask': ...}}): expected a bool array of shape ({self.num_envs},) "
                             f"with at least one True, got {mask.dtype} {mask.shape} {mask}")
        return mask

    def reset(self, *, seed: int | Sequence[int | None] | None = None, options: dict | None = None):
        """Reset all envs (or those in ``options["reset_mask"]``); an int seed gives env i ``seed + i``,
        a list one seed per env; the other ``options`` go to every env's ``reset``."""
        options = dict(options or {})
        mask = self._reset_mask(options)
        return self._reset(self._seeds(seed), options or None, mask)

    def step(self, actions):
        """Step all envs with ``actions (N, D_a)``; finished envs autoreset in the same step."""
        return self._step(self._check_actions(actions))

    def step_chunk(self, actions, active=None, autoreset: bool = True, keys: Sequence[str] | None = None,
                   keep: int = 1) -> dict[str, Any]:
        """Run one chunk ``actions (N, T_a, D_a)`` per env (those in ``active``, default all), each until its episode
        ends, returning obs ``keys`` (default all) of the last ``keep`` steps; see ``EnvGroup.step_chunk``."""
        actions = np.asarray(actions, dtype=np.float32)
        expected = (self.num_envs, "T_a") + tuple(self.single_action_space.shape)
        if actions.ndim != 3 or (actions.shape[0], actions.shape[2:]) != (self.num_envs, expected[2:]):
            raise ValueError(f"step_chunk(actions): expected shape {expected} (N, T_a, D_a), got {actions.shape}")
        active = np.ones(self.num_envs, dtype=bool) if active is None else np.asarray(active, dtype=bool)
        keys = tuple(self.single_observation_space.spaces) if keys is None else tuple(keys)
        return self._step_chunk(actions, active, bool(autoreset), keys, int(keep))

    def call(self, name: str, *args, **kwargs) -> list:
        """Call method (or read attribute) ``name`` on every env; one result per env."""
        return self._call_all(name, args, kwargs)

    def get_attr(self, name: str) -> tuple:
        """Attribute ``name`` of every env (gymnasium's ``VectorEnv.get_attr``)."""
        return tuple(self._call_all(name, (), {}))

    def call_at(self, index: int, name: str, *args, **kwargs) -> Any:
        """Call method (or read attribute) ``name`` on env ``index``."""
        if not 0 <= index < self.num_envs:
            raise IndexError(f"env index {index} out of range for {self.num_envs} envs")
        return self._call_at(index, name, args, kwargs)

    def render(self, env_index: int | None = None, camera: str | None = None):
        """Frame uint8 (H, W, 3) of env ``env_index`` (for videos); with no index, gymnasium's tuple of
        every env's frame."""
        if env_index is None:
            return tuple(self.call("render", camera=camera))
        return self.call_at(env_index, "render", camera=camera)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - never raise from a finaliser
            pass


class SyncVectorEnv(_VectorEnvBase):
    """All envs in this process (same API as ``SubprocVectorEnv``)."""

    def __init__(self, name: str, n_envs: int, overrides: dict[str, Any] | None = None):
        self.num_envs = int(n_envs)
        self._group = EnvGroup([functools.partial(make_env, name, **(overrides or {}))] * self.num_envs)
        self._init_spec(self._group.spec())

    @classmethod
    def from_env_fns(cls, env_fns: Sequence) -> "SyncVectorEnv":
        """Vector env over unregistered envs built by ``env_fns`` (scripted envs in tests)."""
        self = cls.__new__(cls)
        self.num_envs, self._group = len(env_fns), EnvGroup(env_fns)
        self._init_spec(self._group.spec())
        return self

    def _reset(self, seeds, options, mask):
        return self._group.reset(seeds, options, mask)

    def _step(self, actions):
        return self._group.step(actions)

    def _step_chunk(self, actions, active, autoreset, keys, keep):
        return self._group.step_chunk(actions, active, autoreset, keys, keep)

    def _call_all(self, name, args, kwargs):
        return self._group.call(None, name, args, kwargs)

    def _call_at(self, index, name, args, kwargs):
        return self._group.call(index, name, args, kwargs)[0]

    def close_extras(self, **kwargs) -> None:
        """Close every env (``close()`` calls this once)."""
        if getattr(self, "_group", None) is not None:
            group, self._group = self._group, None
            group.close()


def _worker_main(conn, name: str, overrides: dict[str, Any], n_local: int) -> None:
    """Worker loop: build ``n_local`` envs, then serve (cmd, payload) messages until "close" or EOF."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent owns Ctrl-C and closes us
    os.environ.setdefault("MUJOCO_GL", "osmesa")
    os.environ.setdefault("PYOPENGL_PLATFORM", "osmesa")
    group = None
    try:
        group = EnvGroup([functools.partial(make_env, name, **overrides)] * n_local)
        conn.send(("ok", group.spec()))
    except Exception:  # noqa: BLE001 - reported to the parent, which raises WorkerError
        conn.send(("error", traceback.format_exc()))
    handlers = {
        "reset": lambda p: group.reset(*p),
        "step": lambda actions: group.step(actions),
        "step_chunk": lambda p: group.step_chunk(*p),
        "call": lambda p: group.call(*p),
    }
    while True:
        try:
            cmd, payload = conn.recv()
        except (EOFError, OSError):  # parent died or closed the pipe
            break
        if cmd == "close":
            if group is not None:
                group.close()
            conn.send(("ok", None))
            break
        try:
            conn.send(("ok", handlers[cmd](payload)))
        except Exception:  # noqa: BLE001 - reported to the parent, which raises WorkerError
            conn.send(("error", traceback.format_exc()))
    conn.close()


class SubprocVectorEnv(_VectorEnvBase):
    """Envs spread over ``n_workers`` processes, each hosting a contiguous block of envs."""

    def __init__(self, name: str, n_envs: int, n_workers: int, overrides: dict[str, Any] | None = None,
                 context: str = "forkserver"):
        if context not in _CONTEXTS:
            raise ValueError(f"unknown multiprocessing context {context!r}; valid: {_CONTEXTS}")
        if not 1 <= n_workers <= n_envs:
            raise ValueError(f"n_workers must be in [1, n_envs={n_envs}], got {n_workers}")
        self.num_envs = int(n_envs)
        sizes = [len(block) for block in np.array_split(np.arange(n_envs), n_workers)]
        self._offsets = np.cumsum([0] + sizes)  # env i lives in worker w with offsets[w] <= i < offsets[w+1]
        ctx = mp.get_context(context)
        self._conns, self.processes = [], []
        for size in sizes:
            parent_conn, child_conn = ctx.Pipe()
            proc = ctx.Process(target=_worker_main, args=(child_conn, name, dict(overrides or {}), size),
                               daemon=True, name=f"armflow-vecenv-{name}")
            proc.start()
            child_conn.close()  # only the worker holds its end, so its recv sees EOF if we die
            self._conns.append(parent_conn)
            self.processes.append(proc)
        try:
            specs = self._gather()
        except BaseException:
            self.close()
            raise
        self._init_spec(specs[0])

    def _gather(self, conns=None) -> list:
        """Receive one reply from each worker; raise ``WorkerError`` (after draining all) on failure."""
        conns = self._conns if conns is None else conns
        results, errors = [], []
        for conn in conns:
            w = self._conns.index(conn)
            try:
                status, value = conn.recv()
            except (EOFError, OSError):
                proc = self.processes[w]
                proc.join(timeout=1.0)
                errors.append(f"worker {w} (pid {proc.pid}) died, exit code {proc.exitcode}")
                continue
            if status == "error":
                errors.append(f"worker {w} (envs {self._offsets[w]}..{self._offsets[w + 1] - 1}) raised:\n{value}")
            results.append(value)
        if errors:
            raise WorkerError("\n".join(errors))
        return results

    def _send(self, w: int, message: tuple) -> None:
        if self.closed:
            raise RuntimeError("vector env is closed")
        try:
            self._conns[w].send(message)
        except (BrokenPipeError, ConnectionResetError) as exc:
            proc = self.processes[w]
            raise WorkerError(f"worker {w} (pid {proc.pid}) is gone, exit code {proc.exitcode}") from exc

    def _reset(self, seeds, options, mask):
        for w in range(len(self._conns)):
            block = slice(self._offsets[w], self._offsets[w + 1])
            self._send(w, ("reset", (seeds[block], options, None if mask is None else mask[block])))
        return concat_tree(self._gather())

    def _step(self, actions):
        for w in range(len(self._conns)):
            self._send(w, ("step", actions[self._offsets[w]:self._offsets[w + 1]]))
        return concat_tree(self._gather())

    def _step_chunk(self, actions, active, autoreset, keys, keep):
        for w in range(len(self._conns)):
            block = slice(self._offsets[w], self._offsets[w + 1])
            self._send(w, ("step_chunk", (actions[block], active[block], autoreset, keys, keep)))
        parts = self._gather()
        names = next((list(p["reward_terms"]) for p in parts if p["reward_terms"]), [])  # a block may step no env
        for p in parts:
            p["reward_terms"] = {n: p["reward_terms"].get(n, np.zeros_like(p["reward"])) for n in names}
        return concat_tree(parts)

    def _call_all(self, name, args, kwargs):
        for w in range(len(self._conns)):
            self._send(w, ("call", (None, name, args, kwargs)))
        return [item for part in self._gather() for item in part]

    def _call_at(self, index, name, args, kwargs):
        w = int(np.searchsorted(self._offsets, index, side="right") - 1)
        self._send(w, ("call", (index - int(self._offsets[w]), name, args, kwargs)))
        return self._gather([self._conns[w]])[0][0]

    def close_extras(self, timeout_s: float = 5.0) -> None:
        """Ask workers to close their envs, then join them (terminating any that hang); ``close()`` calls
        this once."""
        conns, processes = getattr(self, "_conns", []), getattr(self, "processes", [])  # [] if __init__ failed early
        for conn in conns:
            try:
                conn.send(("close", None))
            except (BrokenPipeError, OSError):
                pass  # that worker is already gone
        for conn, proc in zip(conns, processes):
            if conn.poll(timeout_s):
                try:
                    conn.recv()
                except (EOFError, OSError):
                    pass  # worker exited without acknowledging; join below reaps it
            proc.join(timeout=timeout_s)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=timeout_s)
            conn.close()


def make_vec_env(name: str, n_envs: int, n_workers: int | None = None, context: str = "forkserver",
                 **overrides: Any) -> SubprocVectorEnv | SyncVectorEnv:
    """N copies of env ``name`` (``overrides`` go to its factory).

    ``n_workers``: worker processes (default ``min(n_envs, os.cpu_count())``); 0 = in-process
    ``SyncVectorEnv``. ``context``: multiprocessing start method, "forkserver" or "spawn".
    """
    if n_envs < 1:
        raise ValueError(f"n_envs must be >= 1, got {n_envs}")
    if n_workers is None:
        n_workers = min(n_envs, os.cpu_count() or 1)
    if n_workers == 0:
        return SyncVectorEnv(name, n_envs, overrides)
    return SubprocVectorEnv(name, n_envs, min(n_workers, n_envs), overrides, context=context)
