"""One skill's online learner for ``armflow improve``: the frozen base policy, DSRL's noise actor learning in a
thread of its own, WSRL's warm start and HIL-SERL's intervention buffer.

- **Actor side** (the control loop's thread): ``act(windows)`` samples the base policy with the acting copy of the
  noise actor; while warm-starting (WSRL: ``wsrl_steps`` robot steps of the frozen policy, w ~ N(0, I), into an
  empty buffer before any update) it acts exactly as the pretrained policy. ``add(transition)`` hands one chunk
  transition to the learner; the actor never waits for a gradient step.
- **Learner side** (``start()`` runs it in a daemon thread): drains new transitions into the online buffer (or the
  intervention buffer when a human drove the chunk), then takes gradient steps, at most ``utd`` per collected
  transition; a minibatch is half online, half intervention rows once there are any (RLPD). Every
  ``broadcast_every`` updates the actor's weights go to the acting copy and ``version`` increments.
- Human chunks carry the executed actions but no noise: they train the action critic Q^A of DSRL-NA (and through
  its distillation the noise critic and the actor); under ``variant=sac`` (a critic on noise) they are stored,
  recorded and counted but cannot be learned from.
"""
from __future__ import annotations

import copy
import math
import threading
import time
from queue import Empty, SimpleQueue

import numpy as np
import torch

from armflow.policies.rl.common import to_env_action
from armflow.policies.rl.replay import ReplayBuffer


class OnlineSkillLearner:
    def __init__(self, learner, wsrl_steps: int = 5000, broadcast_every: int = 50, intervention_frac: float = 0.5):
        self.learner = learner  # a DSRLLearner (policies/rl/dsrl.py)
        self.t_a = int(learner.T_a)
        self.warmup_transitions = max(1, math.ceil(int(wsrl_steps) / self.t_a))
        self.broadcast_every, self.intervention_frac = int(broadcast_every), float(intervention_frac)
        self.interventions = ReplayBuffer(learner.cfg.buffer_size)
        self.acting = copy.deepcopy(learner.actor).eval()
        self.version, self.collected, self.budget = 0, 0, 0.0
        self.logs: dict[str, float] = {}
        self._queue: SimpleQueue = SimpleQueue()
        self._lock = threading.Lock()  # the published weights
        self._busy = threading.Lock()  # held by the learner thread while it changes buffers or weights
        self._pending: dict | None = None  # weights published by the learner, picked up by the actor
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    # -- actor side ---------------------------------------------------------------------------------------
    @property
    def warm(self) -> bool:
        return self.learner.buffer.size + self.interventions.size < self.warmup_transitions

    @torch.no_grad()
    def act(self, windows: dict[str, np.ndarray], explore: bool = True) -> tuple[np.ndarray, dict]:
        """Windows {key: (1, T_o, ...)} -> (chunk (T_p, D_a) in robot units, record {w, action})."""
        self._pick_up()
        base, bound = self.learner.base, self.learner.cfg.noise_bound
        cond = base.encode_obs(windows)
        if self.warm and explore:
            w = torch.randn(1, self.learner.w_dim).clamp(-bound, bound)
        else:
            w, _ = self.acting(cond, deterministic=not explore)
        action = base.sample(cond, self.learner.chunk_noise(w))
        record = {"w": w[0].numpy(), "action": action[0, : self.t_a].reshape(-1).numpy()}
        return to_env_action(base, action)[0].numpy(), record

    def add(self, transition: dict) -> None:
        """One chunk transition: obs / next_obs {key: (T_o, ...)}, w, action (T_a * D_a normalised), reward,
        terminated, time, next_time, intervened."""
        self._queue.put(transition)

    def _pick_up(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is not None:
            self.acting.load_state_dict(pending["actor"])
            self.version = pending["version"]

    # -- learner side -------------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="improve-learner", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.drain()  # what the actor handed over after the thread's last drain is kept, not lost

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                with self._busy:
                    self.drain()
                    did = self.step()
                if not did:
                    time.sleep(0.005)
        except BaseException as exc:  # the control loop re-raises it (a learner crash must not pass silently)
            self.error = exc

    def drain(self) -> int:
        n = 0
        while True:
            try:
                tr = self._queue.get_nowait()
            except Empty:
                return n
            n += 1
            self.collected += 1
            (self.interventions if tr["intervened"] else self.learner.buffer).add(_rows(tr))
            if not self.warm:
                self.budget += self.learner.cfg.utd

    def step(self) -> bool:
        """One gradient step if the budget allows; False when there is nothing to do."""
        cfg = self.learner.cfg
        if self.warm or self.budget < 1.0 or self.learner.buffer.size == 0:
            return False
        self.learner.warm.fill_(0.0)
        batch = self._minibatch(cfg.batch_size)
        logs = self.learner.gradient_step(batch)
        self.budget -= 1.0
        self.logs = logs
        if self.learner.n_updates % self.broadcast_every == 0:
            self.publish()
        return True

    def publish(self) -> None:
        state = {k: v.detach().clone() for k, v in self.learner.actor.state_dict().items()}
        with self._lock:
            self._pending = {"actor": state, "version": self.learner.n_updates // self.broadcast_every}

    def _minibatch(self, size: int) -> dict:
        rng, n_int = self.learner.rng, 0
        if self.interventions.size and self.learner.cfg.variant == "na":
            n_int = int(round(size * self.intervention_frac))
        online = self.learner.buffer.sample(size - n_int, rng)
        if not n_int:
            return online
        return _concat(online, self.interventions.sample(n_int, rng))

    # -- state ----------------------------------------------------------------------------------------------
    def state(self) -> tuple[dict, dict]:
        """Everything to resume (the learner thread paused meanwhile; handed-over transitions included)."""
        with self._busy:
            self.drain()
            return self._state()

    def _state(self) -> tuple[dict, dict]:
        tensors, meta, _ = self.learner.train_state()
        tensors.update({f"interventions.{k}": v for k, v in self.interventions.state_tensors().items()})
        meta.update(interventions=self.interventions.meta(), version=self.version, collected=self.collected,
                    budget=self.budget)
        return tensors, meta

    def load_state(self, tensors: dict, meta: dict) -> None:
        self.learner.load_train_state({k: v for k, v in tensors.items() if not k.startswith("interventions.")}, meta)
        self.interventions.load({k[len("interventions."):]: v for k, v in tensors.items()
                                 if k.startswith("interventions.")}, meta["interventions"])
        self.version, self.collected, self.budget = int(meta["version"]), int(meta["collected"]), float(meta["budget"])
        self.acting.load_state_dict(self.learner.actor.state_dict())


def _rows(tr: dict) -> dict:
    """A transition as one buffer row (batch axis 1)."""
    one = lambda v: np.asarray(v)[None]
    return {"obs": {k: one(v) for k, v in tr["obs"].items()}, "next_obs": {k: one(v) for k, v in tr["next_obs"].items()},
            "w": one(np.asarray(tr["w"], np.float32)), "action": one(np.asarray(tr["action"], np.float32)),
            "reward": one(np.float32(tr["reward"])), "terminated": one(np.float32(tr["terminated"])),
            "time": one(np.float32(tr["time"])), "next_time": one(np.float32(tr["next_time"]))}


def _concat(a: dict, b: dict) -> dict:
    return {k: _concat(v, b[k]) if isinstance(v, dict) else torch.cat([v, b[k]]) for k, v in a.items()}
