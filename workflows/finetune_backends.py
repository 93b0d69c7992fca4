"""Backends for ``armflow finetune``: the same LearnerHost / RolloutWorker classes, in-process or as Ray actors.

Both expose: ``collect(n_steps, reseed) -> (batch, stats)``, ``update(batch) -> metrics``,
``evaluate(seeds, eval_seed) -> metrics``, ``save(dir, step, extra)``, ``load(dir) -> (step, extra)``,
``export(dir)``, ``close()``.
"""
from __future__ import annotations

import os

from armflow.workflows.finetune_rollout import EnvSpec, LearnerHost, LearnerSpec, RolloutWorker

def ray_init_kwargs(num_cpus: int, address: str | None = None) -> dict:
    """``ray.init`` arguments: join the cluster the user names (``address`` or ``RAY_ADDRESS``), else start a
    private one-machine Ray with Ray's token authentication.

    Ray moves cloudpickled objects between its processes: whoever reaches its ports can run code. Ray cannot
    be bound to loopback (2.60 measured: ``ray.init`` resolves a loopback node address to the routable one,
    and the GCS and raylet listen on every interface), so token authentication, Ray's default for a new
    cluster, is what keeps other hosts out; a private Ray with ``RAY_AUTH_MODE=disabled`` is refused.
    Securing a named cluster is its owner's job."""
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        return {"address": address, "log_to_driver": False}
    mode = os.environ.get("RAY_AUTH_MODE", "token")  # unset: Ray turns token auth on for a new cluster
    if mode.lower() != "token":
        raise RuntimeError(f"backend=ray: RAY_AUTH_MODE={mode!r} would start Ray without authentication on ports "
                           "that listen on every interface; unset it (Ray then uses token authentication) or name "
                           "a cluster you secured with RAY_ADDRESS")
    return {"address": "local", "num_cpus": num_cpus, "include_dashboard": False, "log_to_driver": False}


class LocalBackend:
    """Learner and workers in this process; workers share the learner's acting networks."""

    def __init__(self, spec: LearnerSpec, train_env: EnvSpec, eval_env: EnvSpec, window: dict):
        self.host = LearnerHost(spec)
        self.worker = RolloutWorker(train_env, learner=self.host.learner, **window)
        self.eval_worker = RolloutWorker(eval_env, learner=self.host.learner, **window)

    def collect(self, n_steps: int, reseed: int | None = None):
        return self.worker.collect(n_steps, reseed)

    def update(self, batch: dict) -> dict[str, float]:
        return self.host.update(batch)

    def evaluate(self, seeds: list[int], eval_seed: int) -> dict[str, float]:
        return self.eval_worker.evaluate(seeds, eval_seed)

    def save(self, directory: str, step: int, extra: dict) -> None:
        self.host.save(directory, step, extra)

    def load(self, directory: str):
        return self.host.load(directory)

    def export(self, out_dir: str) -> None:
        self.host.export(out_dir)

    def close(self) -> None:
        self.worker.close()
        self.eval_worker.close()


class RayBackend:
    """Ray Core actors: one LearnerHost, one training RolloutWorker, one evaluation RolloutWorker.

    A private Ray with token authentication unless ``address`` (or ``RAY_ADDRESS``) names a cluster to join.
    Workers hold their own acting copy of the learner (built from the same checkpoint) and receive
    the learner's acting weights before every collection / evaluation.
    """

    def __init__(self, spec: LearnerSpec, train_env: EnvSpec, eval_env: EnvSpec, window: dict, num_cpus: int = 2,
                 address: str | None = None):
        import ray

        self.ray = ray
        if not ray.is_initialized():
            ray.init(**ray_init_kwargs(num_cpus, address))
        host_cls = ray.remote(num_cpus=0)(LearnerHost)
        worker_cls = ray.remote(num_cpus=0)(RolloutWorker)
        self.host = host_cls.remote(spec)
        self.worker = worker_cls.remote(train_env, learner_spec=spec, **window)
        self.eval_worker = worker_cls.remote(eval_env, learner_spec=spec, **window)

    def _sync(self, worker) -> None:
        self.ray.get(worker.set_acting_state.remote(self.host.acting_state.remote()))

    def collect(self, n_steps: int, reseed: int | None = None):
        self._sync(self.worker)
        return self.ray.get(self.worker.collect.remote(n_steps, reseed))

    def update(self, batch: dict) -> dict[str, float]:
        return self.ray.get(self.host.update.remote(batch))

    def evaluate(self, seeds: list[int], eval_seed: int) -> dict[str, float]:
        self._sync(self.eval_worker)
        return self.ray.get(self.eval_worker.evaluate.remote(seeds, eval_seed))

    def save(self, directory: str, step: int, extra: dict) -> None:
        self.ray.get(self.host.save.remote(directory, step, extra))

    def load(self, directory: str):
        return self.ray.get(self.host.load.remote(directory))

    def export(self, out_dir: str) -> None:
        self.ray.get(self.host.export.remote(out_dir))

    def close(self) -> None:
        for actor in (self.worker, self.eval_worker):
            self.ray.get(actor.close.remote())
        self.ray.shutdown()


BACKENDS = {"local": LocalBackend, "ray": RayBackend}
