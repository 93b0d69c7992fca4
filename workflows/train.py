"""``armflow train``: imitation pretraining of a flow / diffusion / Gaussian policy on a LeRobot v3 dataset.

EMA weights, cosine LR with warm-up, tqdm, JSONL + TensorBoard metrics, checkpoints every
``save_every`` steps under ``<out>/checkpoints/last`` (resume with ``resume=true``), and the final
EMA policy in ``<out>/checkpoint`` (config.json + model.safetensors).
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from tqdm import tqdm


def select_obs_keys(dataset, obs_keys=None) -> list[str]:
    """The observation features a policy trains on.

    ``obs_keys`` as given (each must be a dataset feature), else every ``observation.*`` feature, as LeRobot
    builds a policy's inputs from a dataset's features (``observation.environment_state`` included: name the
    keys, e.g. ``[observation.state,observation.images.agentview]``, for a policy that must not read
    privileged object state).
    """
    from armflow.workflows.config import ConfigError

    if obs_keys is None:
        keys = [k for k in dataset.features if k.startswith("observation.")]
    else:
        keys = [str(k) for k in obs_keys]
        missing = [k for k in keys if k not in dataset.features or not k.startswith("observation.")]
        if missing:
            offered = sorted(k for k in dataset.features if k.startswith("observation."))
            raise ConfigError(f"obs_keys: {missing} not observation features of {dataset.root}; it offers {offered}")
    if not keys:
        raise ConfigError(f"{dataset.root}: no observation features to train on (set obs_keys=[...]); "
                          f"features: {sorted(dataset.features)}")
    return keys


def build_policy(dataset, policy_cfg: dict, obs_keys=None, obs_std_floor: float = 0.0):
    """Make the policy named by ``policy_cfg["type"]`` for ``obs_keys`` (``select_obs_keys``) of this dataset;
    ``obs_std_floor``: see ``floor_obs_stats``."""
    from armflow.policies import make_policy

    cfg = dict(policy_cfg)
    policy_type = cfg.pop("type")
    obs_spec = {k: tuple(dataset.features[k]["shape"]) for k in select_obs_keys(dataset, obs_keys)}
    action_dim = int(dataset.features["action"]["shape"][0])
    stats = floor_obs_stats(dataset.stats, obs_spec, float(obs_std_floor))
    return make_policy(policy_type, obs_spec=obs_spec, action_dim=action_dim, stats=stats, **cfg)


def floor_obs_stats(stats: dict, obs_spec: dict, floor: float) -> dict:
    """Stats whose vector observation features have std >= ``floor`` and (max - min) / 2 >= ``floor`` (widened
    around the middle): a feature that barely varied in the demos (a cube's orientation while it sits flat) must
    not swamp the policy's input when it varies a little at deployment (1 degree of yaw was 19 std)."""
    if floor <= 0:
        return stats
    out = dict(stats)
    for key, shape in obs_spec.items():
        if len(shape) != 1 or key not in stats:
            continue
        s = {k: np.asarray(v, np.float64) for k, v in stats[key].items()}
        if "std" in s:
            s["std"] = np.maximum(s["std"], floor)
        if "min" in s and "max" in s:
            mid, half = (s["max"] + s["min"]) / 2, np.maximum((s["max"] - s["min"]) / 2, floor)
            s["min"], s["max"] = mid - half, mid + half
        out[key] = {**stats[key], **s}
    return out


def resolve_num_workers(num_workers, num_threads) -> int:
    """DataLoader workers: an int as given; ``auto``: up to 4, leaving a core per torch thread and one for the
    main process (0 on a 2-core box, where a worker would only take cycles from the training step)."""
    if num_workers != "auto":
        return int(num_workers)
    import os

    return max(0, min(4, (os.cpu_count() or 1) - int(num_threads or 1) - 1))


def infinite_batches(windows, batch_size: int, seed: int, num_workers: int = 0):
    """Yield shuffled batches forever (epoch after epoch), reproducible from ``seed``.

    The shuffle runs in this process, so workers (``num_workers > 0``, persistent across epochs) give the same
    batches as ``num_workers=0``; they fork after the windows decoded their frames and share them."""
    batch_size = min(batch_size, len(windows))
    # The sampler owns the shuffle generator; the loader's own (worker seeds) is drawn from differently with
    # and without persistent workers, so it must not be the one that orders the windows
    sampler = torch.utils.data.RandomSampler(windows, generator=torch.Generator().manual_seed(seed))
    loader = torch.utils.data.DataLoader(windows, batch_size=batch_size, sampler=sampler, drop_last=True,
                                         generator=torch.Generator().manual_seed(seed + 1),
                                         num_workers=num_workers, persistent_workers=num_workers > 0)
    while True:
        yield from loader


def save_checkpoint(out: Path, policy, ema, optimizer, scheduler, step: int) -> None:
    """Replace ``<out>/checkpoints/last`` with the current model, EMA and training state (kill-safe)."""
    from armflow.workflows.train_state import commit_state_dir, save_training_state

    ckpt_root = out / "checkpoints"
    tmp, last = ckpt_root / "last.tmp", ckpt_root / "last"
    shutil.rmtree(tmp, ignore_errors=True)
    policy.save_pretrained(tmp / "model")
    ema.model.save_pretrained(tmp / "ema")
    save_training_state(tmp, step, {"policy": optimizer}, {"policy": scheduler})
    commit_state_dir(tmp, last, step)


def resume_checkpoint(out: Path, policy, ema, optimizer, scheduler) -> int:
    """Load the newest complete checkpoint (whatever a kill mid-save left) and trim metrics.jsonl to it."""
    from armflow.policies import load_policy
    from armflow.workflows.train_state import load_training_state, newest_state_dir, truncate_metrics

    last = newest_state_dir(out / "checkpoints" / "last")
    if last is None:
        raise SystemExit(f"armflow train: resume=true but no complete checkpoint at {out / 'checkpoints' / 'last'}")
    policy.load_state_dict(load_policy(last / "model").state_dict())
    ema.model.load_state_dict(load_policy(last / "ema").state_dict())
    step, _, _ = load_training_state(last, {"policy": optimizer}, {"policy": scheduler})
    truncate_metrics(out / "metrics.jsonl", step)
    return step


def train(cfg: DictConfig) -> dict:
    """Run imitation training as configured; returns the summary dict (also written to summary.json)."""
    from armflow.data import LeRobotDataset, WindowDataset
    from armflow.policies import EMA, cosine_with_warmup
    from armflow.workflows.common import MetricLogger, write_json
    from armflow.workflows.media import plot_curves

    out = Path(cfg.out)
    torch.manual_seed(int(cfg.seed))
    np.random.seed(int(cfg.seed))
    if cfg.get("num_threads"):
        torch.set_num_threads(int(cfg.num_threads))
    dataset = LeRobotDataset(cfg.dataset)
    obs_keys = select_obs_keys(dataset, cfg.get("obs_keys"))
    with open_dict(cfg):
        cfg.obs_keys = obs_keys  # the run's config states what the policy reads
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    policy = build_policy(dataset, OmegaConf.to_container(cfg.policy, resolve=True), obs_keys,
                          float(cfg.get("obs_std_floor") or 0.0)).to(cfg.device)
    windows = WindowDataset(dataset, policy.n_obs_steps, policy.horizon, keys=obs_keys,
                            cache_mb=float(cfg.get("cache_mb", 4096)), uint8_images=True)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=float(cfg.lr), weight_decay=float(cfg.weight_decay))
    scheduler = cosine_with_warmup(optimizer, int(cfg.warmup_steps), int(cfg.steps))
    ema = EMA(policy, decay=float(cfg.ema_decay))
    step = resume_checkpoint(out, policy, ema, optimizer, scheduler) if cfg.resume else 0
    logger = MetricLogger(out)
    batches = infinite_batches(windows, int(cfg.batch_size), int(cfg.seed) + step,
                               resolve_num_workers(cfg.get("num_workers", 0), cfg.get("num_threads")))
    t0, losses = time.monotonic(), []
    bar = tqdm(total=int(cfg.steps), initial=step, desc=f"train {policy.policy_type}", unit="step")
    policy.train()
    while step < int(cfg.steps):
        batch = {k: v.to(cfg.device, non_blocking=True) for k, v in next(batches).items()}
        loss, metrics = policy.compute_loss(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), float(cfg.grad_clip))
        optimizer.step()
        scheduler.step()
        ema.update()
        step += 1
        bar.update(1)
        if step % int(cfg.log_every) == 0 or step == int(cfg.steps):
            metrics = {f"train/{k}": v for k, v in metrics.items()}
            metrics.update({"train/loss": loss.item(), "train/lr": scheduler.get_last_lr()[0],
                            "train/grad_norm": float(grad_norm)})
            logger.log(step, metrics)
            losses.append((step, loss.item()))
            bar.set_postfix(loss=f"{loss.item():.4f}")
        if step % int(cfg.save_every) == 0 or step == int(cfg.steps):
            save_checkpoint(out, policy, ema, optimizer, scheduler, step)
    bar.close()
    logger.close()
    final = out / "checkpoint"
    ema.model.save_pretrained(final)
    if losses:
        plot_curves(out / "loss.png", {"loss": tuple(zip(*losses))}, "step", "loss", f"{policy.policy_type} training", logy=True)
    summary = {"policy": policy.policy_type, "checkpoint": str(final), "steps": step,
               "final_loss": losses[-1][1] if losses else None, "wall_time_s": time.monotonic() - t0,
               "dataset": str(cfg.dataset), "train_frames": dataset.num_frames}
    write_json(out / "summary.json", summary)
    return summary


def main(cfg: DictConfig) -> dict:
    if not cfg.get("dataset"):
        raise SystemExit("armflow train: set dataset=DIR (a LeRobot v3 dataset, e.g. from armflow collect)")
    summary = train(cfg)
    print(f"[train] {summary['policy']} policy -> {summary['checkpoint']} (loss {summary['final_loss']})")
    return summary
