"""``armflow quickstart``: the main job, end to end, on a CPU in minutes.

Stages (each in its own sub-dir of ``out``; rerunning with the same ``out`` skips finished stages):
collect scripted demos -> train a flow policy -> evaluate on unseen seeds -> (fine-tune) -> (deploy)
-> ``report.md`` + ``summary.json``.

The ``obs`` group chooses what the policy reads: ``obs=state`` every observation feature of the demos
(proprioception + the simulator's object state), ``obs=vision`` cameras + proprioception only; with cameras
every stage's env renders them (``obs.cameras``, ``obs.image_size``) and the report shows the policy's own views.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from armflow.workflows.common import compose_config, write_json
from armflow.workflows.media import CAMERA_PREFIX

STAGES = ("demos", "pretrained", "finetuned", "deployed")  # the success-rate rows, in pipeline order


def _stage_cfg(name: str, out: Path, overrides: dict, groups: tuple[str, ...] = ()) -> DictConfig:
    cfg = compose_config(name, groups)
    with open_dict(cfg):
        for key, value in overrides.items():
            OmegaConf.update(cfg, key, value, merge=False)
        cfg.out = str(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    return cfg


def _cached(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def task_overrides(cfg: DictConfig) -> dict:
    """Env config every stage needs beyond the task's defaults: the cameras the policy reads and their size."""
    if not cfg.obs.cameras:
        return {}
    return {"cameras": list(cfg.obs.cameras), "image_size": int(cfg.obs.image_size)}


def obs_keys(cfg: DictConfig) -> list[str] | None:
    """``armflow train``'s ``obs_keys``: ``obs.state_keys`` + the cameras (None: every observation feature)."""
    if cfg.obs.state_keys is None:
        return None
    return [*cfg.obs.state_keys, *[f"{CAMERA_PREFIX}{cam}" for cam in cfg.obs.cameras]]


def _with_env(overrides: dict, cfg: DictConfig) -> dict:
    """``overrides`` plus ``task_overrides`` when the policy reads cameras (state runs keep their configs)."""
    env = task_overrides(cfg)
    return {**overrides, "task_overrides": env} if env else overrides


def stage_collect(cfg: DictConfig, out: Path) -> dict:
    from armflow.workflows import collect

    overrides = {"task": cfg.task, "episodes": cfg.demos, "noise_std": cfg.demo_noise_std, "seed": cfg.seed}
    if cfg.obs.cameras:
        overrides.update(cameras=list(cfg.obs.cameras), task_overrides={"image_size": int(cfg.obs.image_size)})
    return _cached(out / "collect" / "summary.json") or collect.main(_stage_cfg("collect", out / "collect", overrides))


def stage_train(cfg: DictConfig, out: Path, dataset: str) -> dict:
    from armflow.workflows import train

    overrides = {"dataset": dataset, "steps": cfg.train_steps, "seed": cfg.seed}
    overrides.update({f"policy.{k}": v for k, v in OmegaConf.to_container(cfg.policy).items()})
    if obs_keys(cfg) is not None:
        overrides["obs_keys"] = obs_keys(cfg)
    return _cached(out / "train" / "summary.json") or train.main(_stage_cfg("train", out / "train", overrides))


def stage_evaluate(cfg: DictConfig, out: Path, checkpoint: str, name: str = "evaluate") -> dict:
    from armflow.workflows import evaluate

    return _cached(out / name / "eval.json") or evaluate.main(_stage_cfg("evaluate", out / name, _with_env({
        "checkpoint": checkpoint, "task": cfg.task, "episodes": cfg.eval_episodes, "seed": cfg.eval_seed,
        "n_envs": cfg.eval_n_envs, "video_episodes": cfg.video_episodes}, cfg)))


def stage_finetune(cfg: DictConfig, out: Path, checkpoint: str) -> dict:
    """A short RL fine-tuning run (``finetune_algo``, ``finetune_budget_s``) from the pretrained checkpoint,
    then the best checkpoint (by the fine-tuner's own deterministic evaluation) on the evaluation seeds."""
    from armflow.workflows import finetune

    ft_dir = out / "finetune"
    summary = _cached(ft_dir / "summary.json") or finetune.run_finetune(_stage_cfg("finetune", ft_dir, _with_env({
        "checkpoint": checkpoint, "task": cfg.task, "budget_s": cfg.finetune_budget_s, "seed": cfg.seed,
        "eval_seed": 200_000, "progress": True}, cfg), groups=(f"algo={cfg.finetune_algo}",)))
    summary["eval"] = stage_evaluate(cfg, out, str(ft_dir / "checkpoints" / "best"), name="evaluate_finetuned")
    return summary


def start_server(task: str, endpoint: str, out: Path, timeout_s: float = 90.0, env: dict | None = None,
                 persistent: bool = False) -> subprocess.Popen:
    """Start ``armflow serve`` (simulated Panda wrapping ``task``, lockstep) as its own process; ``env``:
    ``cameras`` it publishes with the state and further task config (``image_size``); ``persistent``: one
    continuous stream, no time limit, episodes never end (the sim task driver's ``persistent``)."""
    out.mkdir(parents=True, exist_ok=True)
    ready = out / "serve.json"
    ready.unlink(missing_ok=True)
    log = open(out / "serve.log", "w")
    cmd = [sys.executable, "-m", "armflow.workflows.cli", "serve", "robot=sim_panda", f"task={task}",
           "mode=lockstep", f"endpoint={endpoint}", f"out={out}"]
    if persistent:
        cmd.append("+robot_options.persistent=true")
    env = dict(env or {})
    if env.get("cameras"):
        cmd.append(f"cameras=[{','.join(env.pop('cameras'))}]")
    if env:
        cmd.append("+robot_options.env={" + ",".join(f"{k}:{_hydra_value(v)}" for k, v in env.items()) + "}")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout_s
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            tail = (out / "serve.log").read_text()[-2000:]
            raise RuntimeError(f"quickstart: `armflow serve` did not become ready (see {out / 'serve.log'}):\n{tail}")
        time.sleep(0.1)
    return proc


def _hydra_value(v) -> str:
    return str(v).lower() if isinstance(v, bool) else str(v)


def stop_server(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def stage_deploy(cfg: DictConfig, out: Path, checkpoint: str) -> dict:
    """Serve the simulated arm in a separate process and run the policy through the bridge on the eval seeds."""
    from armflow.workflows import deploy

    cached = _cached(out / "deploy" / "summary.json")
    if cached:
        return cached
    endpoint = f"ipc:///tmp/armflow-quickstart-{os.getpid()}"
    server = start_server(cfg.task, endpoint, out / "serve", env=task_overrides(cfg))
    try:  # a policy with cameras gets deploy videos of the served cameras (the frames it was sent)
        return deploy.main(_stage_cfg("deploy", out / "deploy", {
            "checkpoint": checkpoint, "endpoint": endpoint, "episodes": cfg.deploy_episodes,
            "seed": cfg.eval_seed, "video_episodes": cfg.video_episodes if cfg.obs.cameras else 0}))
    finally:
        stop_server(server)


def _video_lines(out: Path, result: dict, cameras: list[str]) -> list[str]:
    """Links to a stage's rollout videos; the policy's own views (its cameras side by side) also as a filmstrip."""
    from armflow.workflows.media import save_filmstrip

    rel = lambda p: str(Path(p).resolve().relative_to(out.resolve()))  # noqa: E731
    lines = [f"- rollout video (third person): [{Path(v).name}]({rel(v)})" for v in result.get("videos", [])]
    views = " | ".join(cameras)
    for video in result.get("policy_view_videos", []):
        strip = save_filmstrip(Path(video).with_suffix(".png"), video)
        lines += [f"- policy view ({views}, the frames the policy was given): [{Path(video).name}]({rel(video)})",
                  "", f"  ![policy view {Path(video).stem}]({rel(strip)})", ""]
    return lines


def write_report(out: Path, summary: dict, stages: dict) -> Path:
    """Human-readable report with the plots and the rollout videos linked (paths relative to ``out``)."""
    from armflow.workflows.media import plot_bars

    rel = lambda p: str(Path(p).resolve().relative_to(out.resolve()))  # noqa: E731
    cameras = summary["cameras"]
    plot_bars(out / "success.png", summary["success_rate"], "success rate", f"{summary['task']}: success by stage")
    seen = f"cameras {', '.join(cameras)} at {summary['image_size']}x{summary['image_size']}" if cameras else "no camera"
    lines = [f"# armflow quickstart: `{summary['task']}`", "",
             f"The policy reads {', '.join(f'`{k}`' for k in summary['policy_inputs'])} ({seen}).", "",
             f"Wall time: {summary['wall_time_s']:.0f} s; {summary['episodes_evaluated']} evaluation episodes "
             f"on seeds never seen in training.", "", "| stage | success rate |", "|---|---|"]
    rates, skipped = summary["success_rate"], summary.get("skipped", {})
    lines += [f"| {k} | {rates[k]:.2f} |" if k in rates else f"| {k} | skipped ({skipped[k]}) |"
              for k in STAGES if k in rates or k in skipped]
    lines += ["", "![success by stage](success.png)", ""]
    train_dir = out / "train"
    if (train_dir / "loss.png").exists():
        lines += ["## Training", "", f"![training loss]({rel(train_dir / 'loss.png')})", ""]
    ev = stages["evaluate"]
    lines += ["## Evaluation", ""] + [f"![plot]({rel(p)})" for p in ev.get("plots", [])] + [""]
    lines += _video_lines(out, ev, cameras)
    for extra in ("finetune", "deploy"):
        if extra in stages:
            lines += ["", f"## {extra.capitalize()}", "", "```json",
                      json.dumps({k: v for k, v in stages[extra].items() if not isinstance(v, (list, dict))}, indent=2),
                      "```"]
    if "deploy" in stages:  # the served cameras as the bridge delivered them to the policy
        lines += [""] + [f"- policy view through the bridge ({' | '.join(cameras)}): [{Path(v).name}]({rel(v)})"
                         for v in stages["deploy"].get("videos", [])]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def policy_inputs(checkpoint: str) -> list[str]:
    """The observation features a trained checkpoint reads (its ``obs_spec``)."""
    return list(json.loads((Path(checkpoint) / "config.json").read_text())["obs_spec"])


def main(cfg: DictConfig) -> dict:
    out = Path(cfg.out)
    t0 = time.monotonic()
    stages: dict[str, dict] = {}
    stages["collect"] = stage_collect(cfg, out)
    stages["train"] = stage_train(cfg, out, stages["collect"]["dataset"])
    stages["evaluate"] = stage_evaluate(cfg, out, stages["train"]["checkpoint"])
    success = {"demos": stages["collect"]["expert_success_rate"], "pretrained": stages["evaluate"]["success_rate"]}
    summary = {"task": cfg.task, "success_rate": success, "episodes_evaluated": stages["evaluate"]["episodes"],
               "checkpoint": stages["train"]["checkpoint"], "policy_inputs": policy_inputs(stages["train"]["checkpoint"]),
               "cameras": list(cfg.obs.cameras), "image_size": int(cfg.obs.image_size), "skipped": {}}
    if cfg.finetune_budget_s > 0:
        stages["finetune"] = stage_finetune(cfg, out, stages["train"]["checkpoint"])
        success["finetuned"] = stages["finetune"]["eval"]["success_rate"]
        summary["finetune"] = {"algo": stages["finetune"]["algo"], "env_steps": stages["finetune"]["env_steps"],
                               "wall_time_s": stages["finetune"]["wall_time_s"]}
    else:
        summary["skipped"]["finetuned"] = "finetune_budget_s=0"
    if cfg.deploy_episodes > 0:
        stages["deploy"] = stage_deploy(cfg, out, stages["train"]["checkpoint"])
        success["deployed"] = stages["deploy"]["success_rate"]
        summary["episodes_deployed"] = stages["deploy"]["episodes"]
        summary["bridge_rtt_us"] = {"p50": stages["deploy"]["rtt_p50_us"], "p99": stages["deploy"]["rtt_p99_us"]}
    else:
        summary["skipped"]["deployed"] = "deploy_episodes=0"
    summary["wall_time_s"] = time.monotonic() - t0
    write_json(out / "summary.json", summary)
    report = write_report(out, summary, stages)
    print(f"[quickstart] success: {success}; report: {report}")
    return summary
