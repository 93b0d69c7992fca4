"""``armflow quickstart``: the main job, end to end, on a CPU in minutes.

Stages (each in its own sub-dir of ``out``; rerunning with the same ``out`` skips finished stages):
collect a few scripted demos -> train a policy that is good but not good enough -> evaluate on unseen seeds ->
(steer: V-GPS, a critic trained on the demos + the policy's own episodes picks among K samples) -> (fine-tune
with RL) -> (deploy the fine-tuned policy through the bridge) -> ``report.md`` + ``summary.json``. Every stage is
evaluated on the same seeds, so each gain is paired and its 95% interval is in the report.

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

import numpy as np
from omegaconf import DictConfig, OmegaConf, open_dict

from armflow.workflows.common import compose_config, write_json
from armflow.workflows.media import CAMERA_PREFIX

STAGES = ("demos", "pretrained", "steered", "finetuned", "deployed")  # the success-rate rows, in pipeline order


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


def stage_evaluate(cfg: DictConfig, out: Path, checkpoint: str, name: str = "evaluate", **extra) -> dict:
    from armflow.workflows import evaluate

    return _cached(out / name / "eval.json") or evaluate.main(_stage_cfg("evaluate", out / name, _with_env({
        "checkpoint": checkpoint, "task": cfg.task, "episodes": cfg.eval_episodes, "seed": cfg.eval_seed,
        "n_envs": cfg.eval_n_envs, "video_episodes": cfg.video_episodes, **extra}, cfg)))


def stage_steer(cfg: DictConfig, out: Path, checkpoint: str, demos: str) -> dict:
    """V-GPS (``armflow critic`` + ``evaluate steering.type=vgps``): record ``steering.rollouts`` episodes of the
    policy on seeds 200000+ (never evaluated), train a chunk critic on the demos + them, then evaluate the same
    policy with the critic picking among ``steering.K`` samples per chunk on the evaluation seeds."""
    from armflow.workflows.critic import train_critic

    st = cfg.steering
    rollouts = out / "rollouts"
    stage_evaluate(cfg, out, checkpoint, "record", episodes=int(st.rollouts), seed=200_000, video_episodes=0,
                   record=str(rollouts))
    critic_dir = out / "critic"
    critic = _cached(critic_dir / "summary.json")
    if critic is None:
        critic = train_critic(_stage_cfg("critic", critic_dir, {
            "dataset": [demos, str(rollouts)], "checkpoint": checkpoint, "method": st.method,
            "steps": int(st.critic_steps), "seed": cfg.seed}), critic_dir)
        write_json(critic_dir / "summary.json", critic)
    spec = {"type": "vgps", "critic": critic["critic"], "K": int(st.K), "score_step": st.score_step}
    result = stage_evaluate(cfg, out, checkpoint, "evaluate_steered", steering=spec)
    return {**result, "critic": critic, "spec": spec}


def stage_finetune(cfg: DictConfig, out: Path, checkpoint: str) -> dict:
    """A short RL fine-tuning run (``finetune_algo``, ``finetune_budget_s``) from the pretrained checkpoint,
    then the best checkpoint (by the fine-tuner's own deterministic evaluation) on the evaluation seeds."""
    from armflow.workflows import finetune

    ft_dir = out / "finetune"
    summary = _cached(ft_dir / "summary.json") or finetune.run_finetune(_stage_cfg("finetune", ft_dir, _with_env({
        "checkpoint": checkpoint, "task": cfg.task, "budget_s": cfg.finetune_budget_s, "seed": cfg.seed,
        "env_steps": cfg.finetune_env_steps, "eval_seed": 300_000, "progress": True}, cfg),
        groups=(f"algo={cfg.finetune_algo}", *finetune_recipe(cfg))))
    summary["eval"] = stage_evaluate(cfg, out, str(ft_dir / "checkpoints" / "best"), name="evaluate_finetuned")
    return summary


def finetune_recipe(cfg: DictConfig) -> list[str]:
    """The measured recipe of ``finetune_algo`` as ``armflow finetune`` overrides (one source: ``armflow bench
    finetune``'s envs, reward and per-algo overrides), then the quickstart's own ``finetune_overrides``."""
    bench = compose_config("bench_finetune")
    recipe = [f"{k}={bench[k]}" for k in ("reward", "n_envs", "n_workers", "eval_every_iters", "eval_episodes",
                                          "n_eval_envs")]
    return [*recipe, *map(str, bench.algo_overrides.get(cfg.finetune_algo) or []), *map(str, cfg.finetune_overrides)]


def paired_gain(base: dict, other: dict) -> dict:
    """``other`` minus ``base`` in points over the episodes both ran (the same seeds), with the 95% interval of a
    paired difference: the evaluation's noise, so a gain outside it is not luck of the seeds."""
    a = {r["seed"]: float(r["success"]) for r in base["per_episode"]}
    pairs = np.array([(a[r["seed"]], float(r["success"])) for r in other["per_episode"] if r["seed"] in a])
    d = pairs[:, 1] - pairs[:, 0]
    half = 1.96 * d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else float("nan")
    return {"points": 100 * float(d.mean()), "ci95_points": 100 * float(half), "episodes": int(len(d)),
            "significant": bool(abs(d.mean()) > half)}


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
    n = max(int(summary["episodes_evaluated"]), 1)  # each evaluated stage's own 95% binomial interval
    errors = {k: 1.96 * float(np.sqrt(v * (1 - v) / n)) for k, v in summary["success_rate"].items() if k != "demos"}
    plot_bars(out / "success.png", summary["success_rate"], "success rate",
              f"{summary['task']}: success by stage (95% intervals)", errors=errors)
    seen = f"cameras {', '.join(cameras)} at {summary['image_size']}x{summary['image_size']}" if cameras else "no camera"
    lines = [f"# armflow quickstart: `{summary['task']}`", "",
             f"The policy reads {', '.join(f'`{k}`' for k in summary['policy_inputs'])} ({seen}).", "",
             f"Wall time: {summary['wall_time_s']:.0f} s; {summary['episodes_evaluated']} evaluation episodes "
             f"on seeds never seen in training; every stage ran the same seeds, so a gain is paired and shown with "
             f"its 95% interval (the evaluation's noise).", "",
             "| stage | success rate | gain vs pretrained [points] |", "|---|---|---|"]
    rates, skipped, gains = summary["success_rate"], summary.get("skipped", {}), summary.get("gain_vs_pretrained", {})

    def gain(k: str) -> str:
        g = gains.get(k)
        return f"{g['points']:+.0f} +- {g['ci95_points']:.0f}" + (" (beyond the noise)" if g["significant"] else
                                                                  " (within the noise)") if g else ""

    lines += [f"| {k} | {rates[k]:.2f} | {gain(k)} |" if k in rates else f"| {k} | skipped ({skipped[k]}) | |"
              for k in STAGES if k in rates or k in skipped]
    if "steering" in summary:
        st = summary["steering"]
        lines += ["", f"Steered: V-GPS, a chunk critic ({st['method'].upper()}) trained on the demos + {st['rollouts']} "
                      f"of the policy's own episodes picks the best of K = {st['K']} sampled chunks; the policy's "
                      "weights are unchanged."]
    if "finetune" in summary:
        ft = summary["finetune"]
        lines += ["", f"Fine-tuned: {ft['algo'].upper()}, {ft['env_steps']} env steps in {ft['wall_time_s']:.0f} s."]
    if "deployed_checkpoint" in summary:
        lines += ["", f"Deployed through the ZeroMQ bridge to the simulated arm (lockstep): `{summary['deployed_checkpoint']}`."]
    lines += ["", "![success by stage](success.png)", ""]
    train_dir = out / "train"
    if (train_dir / "loss.png").exists():
        lines += ["## Training", "", f"![training loss]({rel(train_dir / 'loss.png')})", ""]
    ev = stages["evaluate"]
    lines += ["## Evaluation", ""] + [f"![plot]({rel(p)})" for p in ev.get("plots", [])] + [""]
    lines += _video_lines(out, ev, cameras)
    for extra in ("finetune", "deploy"):  # the scalar outcomes of each optional stage
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


class WallClock:
    """Wall time of the quickstart in ``out``, summed over the invocations that built it (a rerun resumes from
    the finished stages, so its own time alone would understate the run), saved after every stage."""

    def __init__(self, out: Path):
        self.path, self.t0 = out / "wall_time.json", time.monotonic()
        self.before = float((_cached(self.path) or {}).get("total_s", 0.0))

    def total(self) -> float:
        total = self.before + time.monotonic() - self.t0
        write_json(self.path, {"total_s": total})
        return total


def main(cfg: DictConfig) -> dict:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    clock = WallClock(out)
    stages: dict[str, dict] = {}
    stages["collect"] = stage_collect(cfg, out)
    stages["train"] = stage_train(cfg, out, stages["collect"]["dataset"])
    clock.total()
    base_ckpt = stages["train"]["checkpoint"]
    stages["evaluate"] = stage_evaluate(cfg, out, base_ckpt)
    success = {"demos": stages["collect"]["expert_success_rate"], "pretrained": stages["evaluate"]["success_rate"]}
    summary = {"task": cfg.task, "success_rate": success, "episodes_evaluated": stages["evaluate"]["episodes"],
               "checkpoint": base_ckpt, "policy_inputs": policy_inputs(base_ckpt), "cameras": list(cfg.obs.cameras),
               "image_size": int(cfg.obs.image_size), "skipped": {}, "gain_vs_pretrained": {}}
    evals = {"pretrained": stages["evaluate"]}
    if cfg.steering.rollouts > 0:
        stages["steer"] = stage_steer(cfg, out, base_ckpt, stages["collect"]["dataset"])
        clock.total()
        evals["steered"], success["steered"] = stages["steer"], stages["steer"]["success_rate"]
        summary["steering"] = {**stages["steer"]["spec"], "rollouts": int(cfg.steering.rollouts),
                               "method": cfg.steering.method, "chunk_ms_p50": stages["steer"].get(
                                   "steering", {}).get("diagnostics", {}).get("latency_ms_p50")}
    else:
        summary["skipped"]["steered"] = "steering.rollouts=0"
    final_ckpt = base_ckpt
    if cfg.finetune_budget_s > 0 and cfg.finetune_env_steps > 0:
        stages["finetune"] = stage_finetune(cfg, out, base_ckpt)
        clock.total()
        evals["finetuned"], success["finetuned"] = stages["finetune"]["eval"], stages["finetune"]["eval"]["success_rate"]
        final_ckpt = str(out / "finetune" / "checkpoints" / "best")
        summary["finetune"] = {"algo": stages["finetune"]["algo"], "env_steps": stages["finetune"]["env_steps"],
                               "wall_time_s": stages["finetune"]["wall_time_s"]}
    else:
        summary["skipped"]["finetuned"] = "finetune_budget_s=0 or finetune_env_steps=0"
    if cfg.deploy_episodes > 0:  # the pipeline's product: the fine-tuned policy (else the pretrained one)
        stages["deploy"] = stage_deploy(cfg, out, final_ckpt)
        evals["deployed"], success["deployed"] = stages["deploy"], stages["deploy"]["success_rate"]
        summary["deployed_checkpoint"] = final_ckpt
        summary["episodes_deployed"] = stages["deploy"]["episodes"]
        summary["bridge_rtt_us"] = {"p50": stages["deploy"]["rtt_p50_us"], "p99": stages["deploy"]["rtt_p99_us"]}
    else:
        summary["skipped"]["deployed"] = "deploy_episodes=0"
    for name, result in evals.items():
        if name != "pretrained" and result.get("per_episode"):
            summary["gain_vs_pretrained"][name] = paired_gain(evals["pretrained"], result)
    summary["wall_time_s"] = clock.total()
    write_json(out / "summary.json", summary)
    report = write_report(out, summary, stages)
    gains = ", ".join(f"{k} {g['points']:+.0f} +- {g['ci95_points']:.0f}" for k, g in summary["gain_vs_pretrained"].items())
    print(f"[quickstart] success: {success}; points vs pretrained (95% interval): {gains or 'none'}; report: {report}")
    return summary
