"""``armflow improve``: build the skills, connect to the robot, run the loop under a wall-time budget, evaluate the
forward skill on separate episodic seeds, checkpoint everything, write ``summary.json`` and the report.

Resumable: after every ``checkpoint_every_attempts`` attempts the learners (weights, optimisers, replay and
intervention buffers), counters, detector audit and evaluation history are committed atomically to
``<out>/state``; each attempt is committed to ``<out>/dataset`` as it ends. SIGKILL loses at most the attempt in
progress (the arm holds: the bridge's watchdog); ``resume=true`` reconnects to the same robot (the scene as it
was: no reset) and continues.
"""
from __future__ import annotations

import copy
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from armflow.control.client import BridgeClient
from armflow.workflows.common import MetricLogger, write_json
from armflow.workflows.improve.detector import Detector, DetectorAudit
from armflow.workflows.improve.graph import EdgeGuard, Skill, StuckDetector, TaskGraph
from armflow.workflows.improve.learner import OnlineSkillLearner
from armflow.workflows.improve.loop import Counters, ImproveLoop, SkillRuntime, count_scene_resets


def build_runtime(skill: Skill, cfg: DictConfig) -> SkillRuntime:
    from armflow.policies import load_policy
    from armflow.policies.rl import make_learner
    from armflow.workflows.rollout import PolicyRunner

    policy = load_policy(skill.checkpoint, steered=False).eval()
    learner = None
    if skill.learn:
        dsrl = make_learner("dsrl", policy, OmegaConf.to_container(cfg.algo, resolve=True), 1)
        learner = OnlineSkillLearner(dsrl, int(cfg.wsrl_steps), int(cfg.broadcast_every), float(cfg.intervention_frac))
    return SkillRuntime(skill, policy, PolicyRunner(policy, 1), learner, Detector(skill.detector, skill.instruction))


def skills_from(cfg: DictConfig) -> list[Skill]:
    out = []
    for name, s in cfg.skills.items():
        s = OmegaConf.to_container(s, resolve=True)
        out.append(Skill(name=name, checkpoint=s["checkpoint"], instruction=s["instruction"],
                         time_limit_steps=int(s["time_limit_steps"]), learn=bool(s["learn"]),
                         rest_before=str(s["rest_before"]), detector=s["detector"], audit_key=s["audit_key"],
                         requires=list(s.get("requires") or []), release_rise=list(s.get("release_rise") or [])))
    return out


def edge_guard_from(cfg: DictConfig) -> EdgeGuard | None:
    spec = cfg.get("edge_guard")
    if spec is None:
        return None
    spec = OmegaConf.to_container(spec, resolve=True)
    if spec.get("skill") not in cfg.skills:
        raise SystemExit(f"armflow improve: edge_guard.skill={spec.get('skill')!r} is not a skill ({list(cfg.skills)})")
    return EdgeGuard(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec.items()})


class ImproveClient(BridgeClient):
    """A ``BridgeClient`` with one lock around every request and a daemon thread that heartbeats whenever the
    control loop has sent nothing for ``idle_s`` (an evaluation, a checkpoint, an episode's video encode or an fsync
    stalled by other I/O): a living controller must never lose its lease (a run died at 16 min when one did)."""

    def start_heartbeat(self, idle_s: float = 1.0) -> None:
        self._io_lock, self._last_request, self._stop_beat = threading.RLock(), time.monotonic(), threading.Event()
        self._beat = threading.Thread(target=self._beat_loop, args=(idle_s,), name="improve-heartbeat", daemon=True)
        self._beat.start()

    def request(self, *args, **kwargs):
        lock = getattr(self, "_io_lock", None)
        if lock is None:
            return super().request(*args, **kwargs)
        with lock:
            try:
                return super().request(*args, **kwargs)
            finally:
                self._last_request = time.monotonic()

    def _beat_loop(self, idle_s: float) -> None:
        while not self._stop_beat.wait(idle_s / 4):
            if time.monotonic() - self._last_request >= idle_s:
                try:
                    self.heartbeat()
                except Exception:  # noqa: BLE001  the control loop sees a lost session on its next request
                    pass

    def close(self) -> None:
        if getattr(self, "_stop_beat", None) is not None:
            self._stop_beat.set()
            self._beat.join(timeout=5)
        super().close()


# -- resumable state ---------------------------------------------------------------------------------------------
def save_state(out: Path, runtimes: dict, extra: dict, step: int) -> None:
    """Every learner's state (paused while it is copied), plus ``extra``, committed atomically."""
    from armflow.workflows.train_state import commit_state_dir, save_training_state

    tensors, meta, optimizers = {}, {}, {}
    for name, rt in runtimes.items():
        if rt.learner is None:
            continue
        t, m = rt.learner.state()
        tensors.update({f"{name}/{k}": v for k, v in t.items()})
        meta[name] = m
        optimizers.update({f"{name}.{k}": v for k, v in rt.learner.learner.optimizers().items()})
    tmp = out / "state.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    save_training_state(tmp, step, optimizers, extra_tensors=tensors, extra={**extra, "learners": meta})
    commit_state_dir(tmp, out / "state", step)


def load_state(out: Path, runtimes: dict) -> dict | None:
    from armflow.workflows.train_state import load_training_state, newest_state_dir

    state = newest_state_dir(out / "state")
    if state is None:
        return None
    optimizers = {f"{name}.{k}": v for name, rt in runtimes.items() if rt.learner is not None
                  for k, v in rt.learner.learner.optimizers().items()}
    _, extra, tensors = load_training_state(state, optimizers)
    for name, rt in runtimes.items():
        if rt.learner is not None:
            own = {k[len(name) + 1:]: v for k, v in tensors.items() if k.startswith(name + "/")}
            rt.learner.load_state(own, extra["learners"][name])
    return extra


# -- evaluation ------------------------------------------------------------------------------------------------
def acting_policy(rt: SkillRuntime):
    """What the skill runs now, deterministically: the base before the first broadcast, else base + noise actor."""
    from armflow.policies.rl.dsrl import DSRLPolicy

    if rt.learner is None or rt.learner.version == 0:
        return rt.policy
    return DSRLPolicy(rt.policy, copy.deepcopy(rt.learner.acting))


def final_videos(rt: SkillRuntime, cfg: DictConfig, out: Path) -> list[str]:
    """The improved forward skill on the first ``eval.video_episodes`` evaluation seeds (third-person MP4s)."""
    from armflow.workflows.evaluate import record_videos

    seeds = [int(cfg.eval.seed) + i for i in range(int(cfg.eval.get("video_episodes", 2)))]
    return record_videos(acting_policy(rt), cfg.task, seeds, out / "videos", dict(cfg.env or {}))["videos"]


def evaluate_skill(rt: SkillRuntime, cfg: DictConfig, episodes: int) -> dict:
    from armflow.workflows.evaluate import evaluate_policy

    res = evaluate_policy(acting_policy(rt), cfg.task, episodes, seed=int(cfg.eval.seed), n_envs=int(cfg.eval.n_envs),
                          n_workers=0, progress=False, source=f"improve skill {rt.skill.name}",
                          env_overrides=dict(cfg.env or {}))
    return {"success_rate": res["success_rate"], "episodes": res["episodes"],
            "policy_version": rt.learner.version if rt.learner else 0}


# -- the run -------------------------------------------------------------------------------------------------
def run_improve(cfg: DictConfig, client, intervention=None, log=print) -> dict:
    from armflow.workflows.improve.recorder import StreamRecorder

    torch.set_num_threads(int(cfg.num_threads))
    torch.manual_seed(int(cfg.seed))
    out = Path(cfg.out)
    skills = skills_from(cfg)
    runtimes = {s.name: build_runtime(s, cfg) for s in skills}
    graph = TaskGraph(skills, str(cfg.preset), int(cfg.switch_every_steps))
    forward = runtimes[graph.start]
    extra = load_state(out, runtimes) if cfg.resume else None
    if cfg.resume and extra is None:
        log(f"[improve] resume=true but no state in {out / 'state'}: starting fresh")
    if extra is None and (out / "state").exists():
        raise SystemExit(f"armflow improve: {out} holds a run (state/); pass resume=true or choose another out=")
    counters = Counters(**extra["counters"]) if extra else Counters(skill=graph.start)
    audit = DetectorAudit()
    if extra:
        audit.counts, audit.recent = extra["audit"]["counts"], extra["audit"]["recent"]
    history = extra["history"] if extra else {"eval": [], "audit": []}
    if extra is None:  # the only scene reset of the run (sim); a resumed run finds the scene as it was left
        client.reset(int(cfg.seed))
    first = client.latest_state()
    count_scene_resets(counters, first.extras)  # fresh run: the baseline; resumed: a restarted server's resets
    rest = cfg.rest_pose if cfg.rest_pose is not None else (extra["rest_pose"] if extra else
                                                            np.asarray(first.ee_pos_m).tolist())
    fps = int(round(client.welcome["servo_rate_hz"]))
    recorder = StreamRecorder(out / "dataset", fps, first.extras, 7, [s.name for s in skills])
    rest_quat = extra["rest_quat"] if extra and "rest_quat" in extra else np.asarray(first.ee_quat_wxyz).tolist()
    loop = ImproveLoop(client, runtimes, graph, StuckDetector(int(cfg.max_failures)), recorder, audit, intervention,
                       counters, rest, str(cfg.human_reset), log=log, rest_quat=rest_quat, edge_guard=edge_guard_from(cfg))
    if not history["eval"]:
        start = evaluate_skill(forward, cfg, int(cfg.eval.episodes))
        history["eval"].append({"wall_s": 0.0, "robot_steps": 0, **start})
        log(f"[improve] start: forward success {history['eval'][0]['success_rate']:.2f}")
    logger = MetricLogger(out, tensorboard=False)
    for rt in runtimes.values():
        if rt.learner is not None:
            rt.learner.start()
    budget_s, t_last = float(cfg.budget_minutes) * 60.0, time.monotonic()
    since_eval, attempts_since_save = 0.0, 0
    try:
        while counters.wall_s < budget_s:
            result = loop.step()
            now = time.monotonic()
            counters.wall_s += now - t_last
            since_eval += now - t_last
            t_last = now
            for rt in runtimes.values():
                if rt.learner is not None and rt.learner.error is not None:
                    raise RuntimeError(f"improve: the {rt.skill.name} learner crashed") from rt.learner.error
            if result is None:
                continue
            logger.log(counters.robot_steps, attempt_metrics(result, counters, audit, runtimes))
            attempts_since_save += 1
            if since_eval >= float(cfg.eval.every_minutes) * 60.0:
                client.disarm()  # the arm holds still while the learner's copy is evaluated in sim
                now_eval = evaluate_skill(forward, cfg, int(cfg.eval.episodes))
                history["eval"].append({"wall_s": counters.wall_s, "robot_steps": counters.robot_steps, **now_eval})
                history["audit"].append({"wall_s": counters.wall_s, **audit.summary()})
                log(f"[improve] {counters.wall_s / 60:.1f} min: forward success {history['eval'][-1]['success_rate']:.2f}"
                    f" (policy v{forward.learner.version if forward.learner else 0}); detector {audit.summary()['recent']}")
                since_eval = 0.0  # the evaluation's time counts in wall_s: the budget is wall time
            if attempts_since_save >= int(cfg.checkpoint_every_attempts):
                count_scene_resets(counters, client.latest_state().extras)
                save_state(out, runtimes, _extra(counters, audit, history, rest, rest_quat),
                           counters.robot_steps)
                attempts_since_save = 0
    finally:
        for rt in runtimes.values():
            if rt.learner is not None:
                rt.learner.stop()
        recorder.drop()
        recorder.close()
        logger.close()
    client.disarm()
    count_scene_resets(counters, client.latest_state().extras)
    save_state(out, runtimes, _extra(counters, audit, history, rest, rest_quat), counters.robot_steps)
    final = evaluate_skill(forward, cfg, int(cfg.eval.final_episodes))
    final["videos"] = final_videos(forward, cfg, out)
    if forward.learner is not None:
        forward.learner.learner.export(str(out / "policy"))
    return summarise(out, client, counters, audit, history, final, intervention, recorder)


def _extra(counters: Counters, audit: DetectorAudit, history: dict, rest, rest_quat) -> dict:
    import dataclasses

    return {"counters": dataclasses.asdict(counters), "audit": {"counts": audit.counts, "recent": audit.recent},
            "history": history, "rest_pose": list(map(float, rest)),
            "rest_quat": list(map(float, rest_quat))}


def attempt_metrics(result: dict, counters: Counters, audit: DetectorAudit, runtimes: dict) -> dict:
    m = {f"attempts/{result['skill']}_detected": float(result["detected"]), "counters/needs_human": counters.needs_human,
         "counters/intervention_steps": counters.intervention_steps, "counters/wall_s": counters.wall_s}
    if result["privileged"] is not None:
        m[f"attempts/{result['skill']}_privileged"] = float(result["privileged"])
    recent = audit.summary()["recent"]
    m.update({f"detector/{k}": v for k, v in recent.items() if isinstance(v, float)})
    for name, rt in runtimes.items():
        if rt.learner is not None:
            m[f"learner/{name}_version"] = rt.learner.version
            m[f"learner/{name}_buffer"] = rt.learner.learner.buffer.size
            m[f"learner/{name}_interventions"] = rt.learner.interventions.size
            m.update({f"{name}/{k}": v for k, v in rt.learner.logs.items()})
    return m


def summarise(out: Path, client, counters: Counters, audit: DetectorAudit, history: dict, final: dict,
              intervention, recorder) -> dict:
    from armflow.workflows.improve.report import write_report

    det = audit.summary()
    summary = {
        "success_rate": {"start": history["eval"][0]["success_rate"], "final": final["success_rate"],
                         "final_episodes": final["episodes"], "start_episodes": history["eval"][0]["episodes"]},
        # scene resets after the run's first, as the robot side counted them (needs-human resets included), summed
        # over server restarts
        "scene_resets": counters.scene_resets if counters.scene_resets_seen >= 0 else None,
        "needs_human": counters.needs_human, "needs_human_reasons": counters.needs_human_reasons,
        "detector": {"fp_rate": det["fp_rate"], "fn_rate": det["fn_rate"], "counts": det["counts"]},
        "interventions": getattr(intervention, "takeovers", 0), "intervention_steps": counters.intervention_steps,
        "wall_time_s": counters.wall_s, "robot_steps": counters.robot_steps, "attempts": counters.attempts,
        "detected_successes": counters.detected, "privileged_successes": counters.privileged,
        "rest_moves": counters.rest_moves, "release_rises": counters.release_rises,
        "edge_guarded": counters.edge_guarded, "eval_history": history["eval"], "audit_history": history["audit"],
        "dataset": {"root": str(out / "dataset"), "episodes": recorder.episodes},
        "policy": str(out / "policy"), "videos": final.get("videos", []),
    }
    write_json(out / "summary.json", summary)
    summary["report"] = str(write_report(out, summary))
    return summary
