"""``armflow dynamics``: DynaGuide's latent dynamics model (obs window, executed chunk) -> embedding T_a steps later,
trained by regression on a dataset's episodes, for ``steering.type=dynaguide`` of the policy it was built for.

1. Every frame t of every episode: the obs window ending at t (edge frames repeated), the T_a actions from t (the
   last action repeated past the end) and the frame min(t + T_a, last) (:func:`dynamics_samples`), normalised with
   the policy's stats (``LatentDynamics.for_policy``).
2. Episodes split into train / validation (``val_fraction``); Adam on the MSE of the predicted embedding.
3. Logged: ``losses/mse``, ``eval/val_mse`` and ``eval/val_mse_static`` (predicting "nothing changes"); saved as
   ``OUT/dynamics``.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from armflow.configs import plain


def dynamics_samples(dataset, keys, t_o: int, t_a: int, episodes) -> dict:
    """obs {key: (N, T_o, D)}, action (N, T_a, D_a), target {key: (N, D)} over every frame of ``episodes``."""
    cols = {"obs": {k: [] for k in keys}, "target": {k: [] for k in keys}, "action": []}
    for i in episodes:
        ep = dataset.episode(int(i))
        n = len(ep["action"])
        t = np.arange(n)
        window = np.clip(t[:, None] + np.arange(-t_o + 1, 1)[None], 0, n - 1)  # (n, T_o)
        acts = np.clip(t[:, None] + np.arange(t_a)[None], 0, n - 1)  # (n, T_a)
        later = np.minimum(t + t_a, n - 1)
        for k in keys:
            x = np.asarray(ep[k], np.float32).reshape(n, -1)
            cols["obs"][k].append(x[window])
            cols["target"][k].append(x[later])
        cols["action"].append(np.asarray(ep["action"], np.float32).reshape(n, -1)[acts])
    return {"obs": {k: np.concatenate(v) for k, v in cols["obs"].items()},
            "target": {k: np.concatenate(v) for k, v in cols["target"].items()},
            "action": np.concatenate(cols["action"])}


def check_dataset(ds, path, policy, checkpoint, keys) -> None:
    """Refuse a dataset whose action or obs shapes are not the policy's (naming the file and the key)."""
    info = Path(path) / "meta" / "info.json"
    want = {"action": (policy.action_dim,), **{k: tuple(policy.obs_spec[k]) for k in keys}}
    for key, shape in want.items():
        if key not in ds.features:
            raise ValueError(f"{info}: features has no {key!r}; the policy {checkpoint} reads {sorted(want)}")
        got = tuple(int(d) for d in ds.features[key]["shape"])
        if got != shape:
            raise ValueError(f"{info}: features[{key!r}].shape = {got} but the policy {checkpoint} has {shape}; "
                             "train the dynamics model on data of the policy's action and observation spaces")


def load_samples(paths, policy, checkpoint, keys, val_fraction: float, seed: int) -> tuple[dict, dict]:
    """(train, validation) samples; whole episodes go to one side."""
    from armflow.data import LeRobotDataset

    rng, parts = np.random.default_rng(seed), {"train": [], "val": []}
    for path in paths:
        ds = LeRobotDataset(path, check_videos=False)
        check_dataset(ds, path, policy, checkpoint, keys)
        order = rng.permutation(ds.num_episodes)
        n_val = int(round(val_fraction * ds.num_episodes)) if ds.num_episodes > 1 else 0
        for side, eps in (("val", order[:n_val]), ("train", order[n_val:])):
            if len(eps):
                parts[side].append(dynamics_samples(ds, keys, policy.n_obs_steps, policy.n_action_steps, eps))

    def cat(rows):
        if not rows:
            return None
        return {"obs": {k: np.concatenate([r["obs"][k] for r in rows]) for k in keys},
                "target": {k: np.concatenate([r["target"][k] for r in rows]) for k in keys},
                "action": np.concatenate([r["action"] for r in rows])}

    return cat(parts["train"]), cat(parts["val"])


def to_tensors(model, samples: dict) -> dict[str, torch.Tensor]:
    """Samples -> normalised (feat (N, F), act (N, T_a * D_a), z (N, E))."""
    with torch.no_grad():
        act = model.normalizer.normalize("action", torch.as_tensor(samples["action"])).flatten(1)
        return {"feat": model.features(samples["obs"]), "act": act, "z": model.embed(samples["target"])}


@torch.no_grad()
def validation(model, data: dict) -> dict[str, float]:
    z_hat = model(data["feat"], data["act"])
    return {"eval/val_mse": float(((z_hat - data["z"]) ** 2).mean()),
            "eval/val_mse_static": float(((model.current(data["feat"]) - data["z"]) ** 2).mean())}


def train_dynamics(cfg: DictConfig, out: Path) -> dict:
    from armflow.policies import load_policy
    from armflow.policies.steering import LatentDynamics
    from armflow.workflows.common import MetricLogger

    torch.manual_seed(int(cfg.seed))
    policy = load_policy(cfg.checkpoint, steered=False)
    model = LatentDynamics.for_policy(policy, tuple(plain(cfg.embed_keys) or ()), int(cfg.hidden), int(cfg.n_layers))
    paths = [cfg.dataset] if isinstance(cfg.dataset, str) else list(plain(cfg.dataset))
    train_s, val_s = load_samples(paths, policy, cfg.checkpoint, tuple(model.dims), float(cfg.val_fraction),
                                  int(cfg.seed))
    if train_s is None:
        raise ValueError(f"dynamics: no training episodes in {paths} (val_fraction={cfg.val_fraction})")
    data, val = to_tensors(model, train_s), to_tensors(model, val_s) if val_s is not None else None
    opt = torch.optim.Adam(model.parameters(), lr=float(cfg.lr), weight_decay=float(cfg.weight_decay))
    n, gen = len(data["z"]), torch.Generator().manual_seed(int(cfg.seed))
    logger, t0, first, terms = MetricLogger(out, tensorboard=False), time.monotonic(), None, {}
    for step in range(1, int(cfg.steps) + 1):
        idx = torch.randint(n, (int(cfg.batch_size),), generator=gen)
        loss = ((model(data["feat"][idx], data["act"][idx]) - data["z"][idx]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
        if step % int(cfg.log_every) == 0 or step == int(cfg.steps):
            terms = {"losses/mse": loss.item(), **(validation(model, val) if val is not None else {})}
            logger.log(step, terms)
    logger.close()
    path = model.save_pretrained(out / "dynamics", extra={"trained": {
        "policy": str(cfg.checkpoint), "datasets": [str(p) for p in paths], "steps": int(cfg.steps),
        "samples": n, "final": terms}})
    return {"dynamics": str(path), "samples": n, "val_samples": 0 if val is None else len(val["z"]),
            "first_mse": first, "final": terms, "train_s": time.monotonic() - t0}


def main(cfg: DictConfig) -> dict:
    from armflow.workflows.common import train_steering_model

    summary = train_steering_model(cfg, "dynamics", train_dynamics)
    final = summary["final"]
    print(f"[dynamics] {summary['samples']} samples: mse {summary['first_mse']:.4g} -> {final['losses/mse']:.4g}"
          + (f", validation {final['eval/val_mse']:.4g} (static {final['eval/val_mse_static']:.4g})"
             if "eval/val_mse" in final else "") + f" -> {summary['dynamics']}")
    return summary


def untrained_dynaguide(base, out: Path, seed: int = 0):
    """A DynaGuide policy of ``base``'s shapes with an untrained model and 8 random goal frames (``armflow bench
    steering``: latency depends on the shapes, not on the weights)."""
    from safetensors.numpy import save_file

    from armflow.policies.steering import LatentDynamics, steer

    torch.manual_seed(seed)
    model = LatentDynamics.for_policy(base)
    torch.nn.init.normal_(model.net[-1].weight, std=0.01)
    rng = np.random.default_rng(seed)
    goals = {f"{side}/{k}": rng.uniform(-1, 1, (8, model.dims[k])).astype(np.float32)
             for side in ("goals", "negatives") for k in model.cfg.embed_keys}
    out.mkdir(parents=True, exist_ok=True)
    save_file(goals, str(out / "bench_goals.safetensors"))
    return steer(base, {"type": "dynaguide", "dynamics": str(model.save_pretrained(out / "bench_dynamics")),
                        "goals": str(out / "bench_goals.safetensors"),
                        "negatives": str(out / "bench_goals.safetensors")})
