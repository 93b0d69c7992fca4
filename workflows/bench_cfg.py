"""``armflow bench cfg``: CFG steering measured on ``pick_either`` (both cubes are valid; the demos pick each about
half the time). 1. scripted demos, 2. each demo's condition ``observation.condition`` = one-hot of the cube it
lifted (:func:`add_lifted_cube_condition`), 3. a flow policy trained with ``condition_key`` and
``condition_dropout``, 4. for each w: success and alignment (successful episodes whose lifted cube is ``target``)
with ``steering.type=cfg value=one-hot(target)``. ``BENCH_JSON``: ``cfg_w<w>_success``, ``cfg_w<w>_alignment``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from armflow.workflows.common import bench_line, compose_config, write_json

CONDITION = "observation.condition"
CUBE_STRIDE, Z = 10, 2  # environment_state per cube: position (3), quaternion (4), cube - ee (3)


def add_lifted_cube_condition(src: Path, dst: Path, n_cubes: int = 2) -> list[int]:
    """Copy a (state-only) dataset adding ``observation.condition`` (T, n_cubes), the one-hot of the cube highest at
    the episode's end; returns the lifted cube per episode."""
    from armflow.data import LeRobotDataset, LeRobotWriter
    from armflow.data.layout import DEFAULT_FEATURES

    ds = LeRobotDataset(src)
    if ds.video_keys:
        raise ValueError(f"{src}: add_lifted_cube_condition copies state-only datasets (it has {ds.video_keys})")
    features = {k: {kk: spec[kk] for kk in ("dtype", "shape", "names")} for k, spec in ds.features.items()
                if k not in DEFAULT_FEATURES}
    features[CONDITION] = {"dtype": "float32", "shape": (n_cubes,), "names": None}
    lifted = []
    with LeRobotWriter(dst, fps=ds.fps, features=features, robot_type=ds.robot_type) as writer:
        for i in range(ds.num_episodes):
            ep = ds.episode(i)
            z = ep["observation.environment_state"][-1, [CUBE_STRIDE * c + Z for c in range(n_cubes)]]
            lifted.append(int(np.argmax(z)))
            onehot = np.eye(n_cubes, dtype=np.float32)[lifted[-1]]
            for t in range(len(ep["action"])):
                frame = {k: np.asarray(ep[k][t]).reshape(tuple(features[k]["shape"])) for k in features if k in ep}
                writer.add_frame({**frame, CONDITION: onehot})
            writer.save_episode(task=ds.episode_task(i))
    return lifted


def conditioned_policy(cfg: DictConfig, out: Path) -> tuple[str, list[int]]:
    from armflow.workflows.collect import collect_scripted
    from armflow.workflows.train import train

    raw, demos = out / "demos_raw", out / "demos"
    if not (raw / "meta" / "info.json").is_file():
        collect_scripted(cfg.task, raw, int(cfg.demos), float(cfg.demo_noise_std), int(cfg.seed), progress=False)
    if not (demos / "meta" / "info.json").is_file():
        add_lifted_cube_condition(raw, demos)
    from armflow.data import LeRobotDataset

    lifted = [int(np.argmax(LeRobotDataset(demos).episode(i)[CONDITION][0])) for i in
              range(LeRobotDataset(demos).num_episodes)]
    ckpt = out / "pretrain" / "checkpoint"
    if not (ckpt / "model.safetensors").is_file():
        train(compose_config("train", ["policy=flow", f"dataset={demos}", f"steps={cfg.train_steps}",
                                       f"seed={cfg.seed}", f"+policy.condition_key={CONDITION}",
                                       f"+policy.condition_dropout={cfg.condition_dropout}", f"out={out / 'pretrain'}"]))
    return str(ckpt), lifted


def main(cfg: DictConfig) -> dict:
    import json

    from armflow.policies import load_policy
    from armflow.policies.steering import steer
    from armflow.workflows.evaluate import evaluate_policy

    out = Path(cfg.out)
    ckpt, lifted = conditioned_policy(cfg, out)
    value = [float(i == int(cfg.target)) for i in range(2)]
    result = {"demos_per_cube": np.bincount(lifted, minlength=2).tolist(), "target": int(cfg.target)}
    for w in cfg.ws:
        path = out / f"w{float(w):g}" / "eval.json"
        if path.is_file():
            run = json.loads(path.read_text())
        else:
            policy = steer(load_policy(ckpt), {"type": "cfg", "w": float(w), "value": value})
            run = evaluate_policy(policy, cfg.task, int(cfg.episodes), int(cfg.eval_seed), int(cfg.n_envs), 0,
                                  progress=False)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json(path, run)
        wins = [r for r in run["per_episode"] if r["success"]]
        align = float(np.mean([r["mode"] == int(cfg.target) for r in wins])) if wins else float("nan")
        result.update({f"cfg_w{float(w):g}_success": run["success_rate"], f"cfg_w{float(w):g}_alignment": align})
        print(f"[bench cfg] w={float(w):g}: success {run['success_rate']:.2f}, alignment to cube {cfg.target} "
              f"{align:.2f} over {len(wins)} successes", flush=True)
    write_json(out / "bench_cfg.json", result)
    print(bench_line(result))
    return result
