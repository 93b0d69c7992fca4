"""``armflow bench realtime``: chunk executors under inference delay, RTI-DP warm starts, RTC's cost.

1. A lift checkpoint: ``checkpoint=DIR``, or collect ``demos`` scripted demos and train a flow policy briefly.
2. The table, on ``episodes`` unseen seeds through ``armflow evaluate``'s simulated delay (deterministic): lockstep
   at the policy's own n_action_steps (today's lockstep deploy) and at the bench's ``exec_horizon`` s, then
   ``naive``, ``ensemble`` and ``rtc`` at each of ``delays_ms`` with s; the chunk-switch discontinuity at 100 ms.
3. RTI-DP: the lockstep executor at s with warm-started chunks (denoiser evaluations per chunk over whole episodes,
   the cold first chunk included; success delta to lockstep at the same s).
4. RTC's sampling time per chunk over the unguided sample (batch 1, one thread, a real observation).
5. Optionally (``bridge_episodes > 0``) the same seeds through the real bridge: ``armflow serve mode=realtime`` (its
   own process, loopback) and ``armflow deploy`` with ``bridge_executors`` at each of ``bridge_delays_ms`` of
   injected inference delay, the same s (``realtime.exec_horizon``); wall clock: a loaded machine adds its own delay.

Prints ``BENCH_JSON`` with ``lockstep_success``, ``<executor>_success_at_<d>ms``,
``rtc_discontinuity_ratio_100ms`` (RTC / naive, the switch's own jump: the executed action vs the running plan's
action for that step, :func:`armflow.policies.executors.switch_discontinuity`; ``rtc_switch_jump_ratio_100ms``: the
raw max |a_t - a_{t-1}| at switches, which the task's own motion bounds from below), ``rtidp_nfe_ratio`` (full /
warm-started evaluations), ``rtidp_success_delta`` (warm - full), ``rtc_latency_ratio``.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from armflow.workflows.common import bench_line, write_json
from armflow.workflows.quickstart import stop_server

LOCKSTEP_CELLS = ("sync", "sync_s", "rtidp")  # cells of the lockstep executor (no delay)


def get_checkpoint(cfg: DictConfig, out: Path) -> str:
    """``cfg.checkpoint``, or a flow policy trained on freshly collected scripted demos."""
    if cfg.checkpoint:
        return str(cfg.checkpoint)
    from armflow.workflows.bench_vision import train_variant
    from armflow.workflows.collect import collect_scripted

    dataset = out / "dataset"
    if not (dataset / "meta" / "info.json").exists():
        collect_scripted(cfg.task, dataset, int(cfg.demos), float(cfg.noise_std), int(cfg.seed),
                         progress=bool(cfg.progress))
    keys = ["observation.state", "observation.environment_state"]
    return str(train_variant(cfg, dataset, keys, out / "train")["checkpoint"])


def run_table(cfg: DictConfig, policy, execution_kw: dict) -> dict:
    """Every (executor, delay) cell: success, time to success, discontinuity; keyed ``<executor>@<d>``."""
    from armflow.workflows.evaluate import evaluate_policy
    from armflow.workflows.realtime_exec import Execution

    def run(**kw) -> dict:
        ex = Execution(**{**execution_kw, **kw})
        res = evaluate_policy(policy, cfg.task, int(cfg.episodes), int(cfg.eval_seed), int(cfg.n_envs),
                              cfg.n_workers, progress=False, execution=ex)
        row = {"success": res["success_rate"],
               **{k: v for k, v in res["realtime"].items() if not k.startswith("trace_")}}
        print(f"[bench realtime] {ex.executor:8s} s={row['exec_horizon']} rtidp={ex.rtidp!s:5s} delay "
              f"{ex.delay_ms:5.0f} ms: success {row['success']:.2f}, switch jump {row['discontinuity_switch']:.3f} "
              f"(within {row['discontinuity_within']:.3f}), switch vs plan {row['switch_gap']:.3f}, nfe "
              f"{row['nfe_per_chunk']:.2f}", flush=True)
        return row

    cells = {"sync@0": run(executor="sync", exec_horizon=None), "sync_s@0": run(executor="sync"),
             "rtidp@0": run(executor="sync", rtidp=True)}
    for d in cfg.delays_ms:
        for name in cfg.executors:
            cells[f"{name}@{int(d)}"] = run(executor=name, delay_ms=float(d))
    return cells


def latency_ratio(cfg: DictConfig, policy, execution_kw: dict) -> dict:
    """Median per-chunk sampling time of RTC (inpainting at d = 2, the hooks built per chunk) over the unguided
    sample, the two interleaved."""
    from armflow.policies.executors import shifted, soft_mask
    from armflow.policies.realtime import rtc_hooks
    from armflow.sim import make_env

    env = make_env(cfg.task)
    obs, _ = env.reset(seed=0)
    env.close()
    window = {k: torch.as_tensor(np.stack([obs[k]] * policy.n_obs_steps)[None]) for k in policy.obs_spec}
    s = int(execution_kw.get("exec_horizon") or policy.n_action_steps)
    with torch.inference_mode():
        prev = policy.predict_chunk(window).numpy()
    d = min(2, s, policy.horizon - s)
    y, w = shifted(prev[0], s)[None], soft_mask(policy.horizon, d, s, float(cfg.rtc_overlap))[None]
    calls = {"unguided": lambda: policy.predict_chunk(window),
             "rtc": lambda: policy.predict_chunk(window, hooks=rtc_hooks(policy, y, w))}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:  # the variants take turns every iteration, so a load change on a shared machine hits both alike
        times = {name: [] for name in calls}
        for i in range(int(cfg.warmup) + int(cfg.iters)):
            for name, fn in calls.items():
                t0 = time.perf_counter()
                with torch.inference_mode():
                    fn()
                if i >= int(cfg.warmup):
                    times[name].append((time.perf_counter() - t0) * 1e3)
        ms = {name: float(np.median(t)) for name, t in times.items()}
    finally:
        torch.set_num_threads(threads)
    return {"unguided_ms": ms["unguided"], "rtc_ms": ms["rtc"], "rtc_latency_ratio": ms["rtc"] / ms["unguided"]}


def summarise(cells: dict, delays) -> dict:
    bench = {"lockstep_success": cells["sync@0"]["success"], "lockstep_success_at_s": cells["sync_s@0"]["success"],
             "exec_horizon": cells["sync_s@0"]["exec_horizon"]}
    for key, row in cells.items():
        name, d = key.split("@")
        if name not in LOCKSTEP_CELLS:
            bench[f"{name}_success_at_{d}ms"] = row["success"]
            bench[f"{name}_time_to_success_s_at_{d}ms"] = row["time_to_success_s"]
    if "rtc@100" in cells and "naive@100" in cells:
        rtc, naive = cells["rtc@100"], cells["naive@100"]
        ratio = lambda key: rtc[key] / max(naive[key], 1e-12)  # noqa: E731
        bench.update(rtc_discontinuity_ratio_100ms=ratio("switch_gap"),
                     rtc_discontinuity_mean_ratio_100ms=ratio("switch_gap_mean"),
                     rtc_switch_jump_ratio_100ms=ratio("discontinuity_switch"))
    full, warm = cells["sync_s@0"], cells["rtidp@0"]
    bench["rtidp_nfe_ratio"] = full["nfe_per_chunk"] / warm["nfe_per_chunk"]
    bench["rtidp_success_delta"] = warm["success"] - full["success"]
    bench["rtc_worst_gap_to_lockstep"] = max(
        (bench["lockstep_success"] - cells[f"rtc@{int(d)}"]["success"] for d in delays if f"rtc@{int(d)}" in cells),
        default=0.0)
    bench["rtc_worst_gap_to_lockstep_at_s"] = bench["rtc_worst_gap_to_lockstep"] + (
        bench["lockstep_success_at_s"] - bench["lockstep_success"])
    return bench


def start_realtime_server(task: str, endpoint: str, out: Path, timeout_s: float = 90.0) -> subprocess.Popen:
    """``armflow serve robot=sim_panda mode=realtime`` in its own process; returns once it wrote serve.json."""
    out.mkdir(parents=True, exist_ok=True)
    ready = out / "serve.json"
    ready.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "armflow.workflows.cli", "serve", "robot=sim_panda", f"task={task}", "mode=realtime",
           f"endpoint={endpoint}", f"out={out}"]
    proc = subprocess.Popen(cmd, stdout=open(out / "serve.log", "w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout_s
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"bench realtime: `armflow serve` did not come up; see {out / 'serve.log'}")
        time.sleep(0.1)
    return proc


def bridge_rows(cfg: DictConfig, checkpoint: str, out: Path) -> dict:
    """Realtime deploy through a served simulated arm: ``bridge_<executor>_success_at_<d>ms`` over the episodes that
    ran, the stale chunks (chunks that arrived after their first action was due), the blocks retried and the blocks
    lost (broken off twice) per cell."""
    server = {"endpoint": f"ipc:///tmp/armflow-bench-realtime-{os.getpid()}", "out": out / "serve", "task": cfg.task}
    server["proc"] = start_realtime_server(cfg.task, server["endpoint"], server["out"])
    rows = {}
    try:
        for d in cfg.bridge_delays_ms:
            for name in cfg.bridge_executors:
                per, retried, lost = _bridge_cell(cfg, checkpoint, out, server, name, float(d))
                key = f"bridge_{name}_{{}}_at_{int(d)}ms"
                rows[key.format("success")] = float(np.mean([r["success"] for r in per])) if per else None
                rows[key.format("episodes")] = len(per)
                rows[key.format("stale_chunks")] = int(sum(r.get("stale_chunks", 0) for r in per))
                rows[key.format("retried_blocks")], rows[key.format("lost_blocks")] = retried, lost
                print(f"[bench realtime] bridge {name:5s} delay {float(d):5.0f} ms: success "
                      f"{rows[key.format('success')]} over {len(per)} episodes", flush=True)
    finally:
        stop_server(server["proc"])
    return rows


def _bridge_cell(cfg, checkpoint, out, server: dict, name: str, delay_ms: float, block: int = 10):
    """One (executor, delay) cell in deploys of ``block`` episodes. A block the bridge broke off (a starved server or
    controller on a loaded machine: no HEARTBEAT answer, watchdog HOLD) runs again on a fresh server; a block that
    breaks off twice is counted lost and left out."""
    from armflow.control.client import BridgeError
    from armflow.workflows import deploy
    from armflow.workflows.common import compose_config

    per, retried, lost, n = [], 0, 0, int(cfg.bridge_episodes)
    for start in range(0, n, block):
        cell = out / f"deploy_{name}_{int(delay_ms)}ms" / f"seeds_{start}"
        cell.mkdir(parents=True, exist_ok=True)
        dcfg = compose_config("deploy", [
            f"checkpoint={checkpoint}", f"endpoint={server['endpoint']}", f"episodes={min(block, n - start)}",
            f"seed={int(cfg.eval_seed) + start}", "video_episodes=0", f"executor={name}",
            f"inject_delay_ms={delay_ms:g}", f"realtime.rtc_overlap={float(cfg.rtc_overlap)}",
            f"realtime.exec_horizon={cfg.exec_horizon or 'null'}", "t_cmd_ms=500", f"out={cell}"])
        for attempt in (0, 1):
            try:
                per += deploy.main(dcfg)["per_episode"]
                break
            except (BridgeError, SystemExit) as exc:
                retried, lost = retried + (attempt == 0), lost + (attempt == 1)
                print(f"[bench realtime] bridge {cell.parent.name}/{cell.name} broke off ({exc}); fresh server",
                      flush=True)
                stop_server(server["proc"])
                server["proc"] = start_realtime_server(server["task"], server["endpoint"], server["out"])
    return per, retried, lost


def plot_table(out: Path, cells: dict, delays) -> str:
    from armflow.workflows.media import plot_curves

    series = {name: ([float(d) for d in delays], [cells[f"{name}@{int(d)}"]["success"] for d in delays])
              for name in sorted({k.split("@")[0] for k in cells} - set(LOCKSTEP_CELLS))}
    series["lockstep"] = ([float(d) for d in delays], [cells["sync@0"]["success"]] * len(delays))
    series["lockstep at s"] = ([float(d) for d in delays], [cells["sync_s@0"]["success"]] * len(delays))
    return str(plot_curves(out / "success_vs_delay.png", series, "inference delay [ms]", "success rate",
                           "lift: executors under delay"))


def main(cfg: DictConfig) -> dict:
    from armflow.policies import load_policy

    out, t0 = Path(cfg.out), time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(int(cfg.num_threads))
    checkpoint = get_checkpoint(cfg, out)
    policy = load_policy(checkpoint).eval()
    execution_kw = {"exec_horizon": cfg.exec_horizon, "rtc_overlap": float(cfg.rtc_overlap),
                    "jitter_ms": float(cfg.jitter_ms), "rtidp_start_level": cfg.rtidp_start_level}
    cells = run_table(cfg, policy, execution_kw)
    bench = summarise(cells, list(cfg.delays_ms))
    bench.update(latency_ratio(cfg, policy, execution_kw))
    if int(cfg.bridge_episodes) > 0:
        bench.update(bridge_rows(cfg, checkpoint, out))
    bench.update({"task": cfg.task, "episodes": int(cfg.episodes), "checkpoint": checkpoint,
                  "delays_ms": list(cfg.delays_ms), "plot": plot_table(out, cells, list(cfg.delays_ms)),
                  "wall_time_s": time.monotonic() - t0})
    write_json(out / "summary.json", {**bench, "cells": cells, "config": OmegaConf.to_container(cfg, resolve=True)})
    print(bench_line(bench), flush=True)
    return bench
