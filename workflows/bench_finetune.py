"""``armflow bench finetune``: DPPO, FPO, DSRL and Gaussian PPO from the same demos on the hard task,
one wall-clock budget each. Prints a table and a final ``BENCH_JSON`` line with, per algorithm,
start/final/best success, env steps, and env steps + wall time to reach 90% success (null if never).
"""
from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from armflow.workflows.common import bench_line, compose_config, write_json

POLICY_FOR_ALGO = {"dppo": "diffusion", "fpo": "flow", "dsrl": "flow", "ppo": "gaussian"}


def ensure_checkpoints(cfg: DictConfig, out: Path, needed: set[str]) -> dict[str, str]:
    """Given checkpoints are reused; missing ones are trained (``armflow train``) on one shared dataset."""
    ckpts = {k: v for k, v in OmegaConf.to_container(cfg.checkpoints).items() if v}
    missing = sorted(needed - set(ckpts))
    if not missing:
        return ckpts
    from armflow.workflows.collect import collect_scripted
    from armflow.workflows.train import train

    dataset = cfg.pretrain.dataset
    if not dataset:
        dataset = str(out / "demos")
        if not (out / "demos" / "meta" / "info.json").is_file():
            collect_scripted(cfg.task, dataset, int(cfg.pretrain.demos), float(cfg.pretrain.demo_noise_std), int(cfg.seed))
    for ptype in missing:
        run = out / f"pretrain_{ptype}"
        final = run / "checkpoint"
        if not (final / "model.safetensors").is_file():
            train(compose_config("train", [f"policy={ptype}", f"dataset={dataset}", f"steps={cfg.pretrain.train_steps}",
                                           f"seed={cfg.seed}", f"out={run}"]))
        ckpts[ptype] = str(final)
    return ckpts


def finetune_overrides(cfg: DictConfig, algo: str, checkpoint: str, out: Path) -> list[str]:
    """The ``armflow finetune`` overrides of one algorithm's run."""
    common = [f"{k}={cfg[k]}" for k in ("task", "budget_s", "env_steps", "reward", "n_envs", "n_workers",
                                        "n_eval_envs", "eval_every_iters", "eval_episodes", "seed")]
    return [f"algo={algo}", f"checkpoint={checkpoint}", *common, "progress=false", f"out={out / algo}",
            *list(cfg.algo_overrides.get(algo, []) or [])]


def run_algo(cfg: DictConfig, algo: str, checkpoint: str, out: Path) -> dict:
    from armflow.workflows.finetune import run_finetune

    return result_row(run_finetune(compose_config("finetune", finetune_overrides(cfg, algo, checkpoint, out))))


def run_parallel(cfg: DictConfig, algos: list[str], ckpts: dict[str, str], out: Path) -> dict[str, dict]:
    """Each algorithm as its own ``armflow finetune`` process, ``cfg.parallel`` at a time (one torch thread
    each: on a 2-core box two runs side by side finish the bench in half the wall time). Logs go to
    ``<out>/<algo>.log``; a failed run raises naming its log."""
    import subprocess
    import sys
    import time

    pending, running, results = list(algos), {}, {}
    while pending or running:
        while pending and len(running) < int(cfg.parallel):
            algo = pending.pop(0)
            (out / algo).mkdir(parents=True, exist_ok=True)
            log = open(out / f"{algo}.log", "w")
            cmd = [sys.executable, "-m", "armflow.workflows.cli", "finetune",
                   *finetune_overrides(cfg, algo, ckpts[POLICY_FOR_ALGO[algo]], out)]
            running[algo] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), log)
            print(f"[bench finetune] started {algo} (log {out / f'{algo}.log'})", flush=True)
        time.sleep(2.0)
        for algo, (proc, log) in list(running.items()):
            if proc.poll() is None:
                continue
            log.close()
            del running[algo]
            if proc.returncode != 0:
                for p, lg in running.values():
                    p.kill()
                    lg.close()
                raise RuntimeError(f"bench finetune: {algo} exited {proc.returncode}; see {out / f'{algo}.log'}")
            results[algo] = result_row(json.loads((out / algo / "summary.json").read_text()))
            print(f"[bench finetune] {algo} done: {results[algo]}", flush=True)
    return {a: results[a] for a in algos}


def result_row(s: dict) -> dict:
    r90 = s["reach_90"] or {}
    return {"start": s["success_rate"]["start"], "final": s["success_rate"]["final"], "best": s["success_rate"]["best"],
            "env_steps": s["env_steps"], "wall_time_s": s["wall_time_s"],
            "env_steps_to_90": r90.get("env_steps"), "wall_time_s_to_90": r90.get("wall_time_s")}


def format_table(results: dict[str, dict]) -> str:
    head = f"{'algo':6} {'start':>6} {'final':>6} {'best':>6} {'env steps':>10} {'wall s':>8} {'steps@90%':>10} {'s@90%':>8}"
    lines = [head, "-" * len(head)]
    for algo, r in results.items():
        fmt = lambda v: "-" if v is None else (f"{v:.0f}" if isinstance(v, (int, float)) else str(v))  # noqa: E731
        lines.append(f"{algo:6} {r['start']:6.2f} {r['final']:6.2f} {r['best']:6.2f} {r['env_steps']:10d} "
                     f"{r['wall_time_s']:8.0f} {fmt(r['env_steps_to_90']):>10} {fmt(r['wall_time_s_to_90']):>8}")
    return "\n".join(lines)


def main(cfg: DictConfig) -> dict:
    out = Path(cfg.out or "runs/bench_finetune/latest")
    algos = list(cfg.algos)
    unknown = [a for a in algos if a not in POLICY_FOR_ALGO]
    if unknown:
        raise SystemExit(f"bench finetune: unknown algos {unknown}; valid: {', '.join(POLICY_FOR_ALGO)}")
    ckpts = ensure_checkpoints(cfg, out, {POLICY_FOR_ALGO[a] for a in algos})
    if int(cfg.parallel) > 1:
        results = run_parallel(cfg, algos, ckpts, out)
    else:
        results = {a: run_algo(cfg, a, ckpts[POLICY_FOR_ALGO[a]], out) for a in algos}
    print(format_table(results))
    payload = {"task": cfg.task, "budget_s": float(cfg.budget_s), "checkpoints": ckpts, "results": results}
    write_json(out / "bench.json", payload)
    print(bench_line(payload))
    return payload
