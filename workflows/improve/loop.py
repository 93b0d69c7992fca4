"""The control loop of ``armflow improve``: one continuous robot stream through the bridge, cut into virtual
episodes by the task graph, each chunk from a skill's policy (its DSRL noise actor exploring) or from the human
who took over, every step recorded, every chunk transition handed to the skill's learner.

The robot is a ``BridgeClient`` exactly as on a real arm: the only scene reset is the first (``client.reset``,
sim only), or one a needs-human event asks for. Between attempts of a skill with ``rest_before`` the arm makes a
scripted rest move (gripper open, up to the rest height, back over the rest position): arm motion only.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from armflow.workflows.deploy import send_and_follow
from armflow.workflows.improve.graph import EdgeGuard, Skill, StuckDetector, TaskGraph

ACTION_SPACE = "ee_delta"
_OPS = {">": float.__gt__, "<": float.__lt__, ">=": float.__ge__, "<=": float.__le__}


@dataclass
class SkillRuntime:
    """A skill's live parts: its base policy, obs windows (a ``PolicyRunner``), learner (or None: frozen)
    and detector."""

    skill: Skill
    policy: object
    runner: object
    learner: object | None
    detector: object


@dataclass
class Attempt:
    skill: str
    steps: int = 0
    ready: bool = False  # the skill's ``requires`` predicates have all held at a chunk end (or the start)
    holding: bool = False  # they held at the last chunk end (a release_rise follows when they stop holding)
    frames: int = 0
    intervened: bool = False


@dataclass
class Counters:
    """Everything the loop counts (saved with the learners, so a resumed run continues them)."""

    robot_steps: int = 0
    attempts: dict = field(default_factory=dict)  # skill -> attempts ended
    detected: dict = field(default_factory=dict)  # skill -> attempts ended by a detected success
    privileged: dict = field(default_factory=dict)  # skill -> attempts whose end state was a privileged success
    needs_human: int = 0
    needs_human_reasons: list = field(default_factory=list)
    interventions: int = 0  # takeovers
    intervention_steps: int = 0
    rest_moves: int = 0
    release_rises: int = 0  # scripted rises after a skill let go (Skill.release_rise)
    edge_guarded: int = 0  # attempts the edge guard sent to its skill instead of the graph's choice
    skill: str = ""
    steps_on_skill: int = 0
    wall_s: float = 0.0
    scene_resets: int = 0  # scene resets after the run's first, summed over robot-side server restarts
    scene_resets_seen: int = -1  # the robot side's own count when last read (-1: not read yet)

    def bump(self, table: str, skill: str, by: int = 1) -> None:
        getattr(self, table)[skill] = getattr(self, table).get(skill, 0) + by


def count_scene_resets(counters: Counters, extras: dict) -> None:
    """Add the scene resets the robot side made since the last read (``extras["scene_resets"]``, its count since
    its start). A count below the last one read is a restarted server (a resumed run): all of its resets are new.
    The first read only sets the baseline (the run's own first reset is not counted)."""
    if "scene_resets" not in extras:
        return
    now = int(extras["scene_resets"])
    if counters.scene_resets_seen >= 0:
        counters.scene_resets += now - counters.scene_resets_seen if now >= counters.scene_resets_seen else now
    counters.scene_resets_seen = now


class ImproveLoop:
    def __init__(self, client, runtimes: dict[str, SkillRuntime], graph: TaskGraph, stuck: StuckDetector,
                 recorder, audit, intervention=None, counters: Counters | None = None, rest_pose=None,
                 human_reset: str = "auto", workspace_key: str = "in_workspace", log=print, rest_quat=None,
                 edge_guard: EdgeGuard | None = None):
        self.client, self.rt, self.graph, self.stuck = client, runtimes, graph, stuck
        self.recorder, self.audit, self.intervention = recorder, audit, intervention
        self.counters = counters or Counters(skill=graph.start)
        self.rest_pose = rest_pose  # (ee position (3,) [m]) the arm returns to before rest_before skills
        self.human_reset, self.workspace_key, self.log = human_reset, workspace_key, log
        self.edge_guard = edge_guard
        self.dt_ns = int(round(1e9 / client.welcome["servo_rate_hz"]))
        self.state = client.latest_state()
        self.attempt: Attempt | None = None
        self.last_failed = False  # the last attempt (of any skill) failed: the scene is not what a success leaves
        self.rest_quat = np.asarray(self.state.ee_quat_wxyz, float).copy() if rest_quat is None else np.asarray(rest_quat)
        self.gripper = -1.0  # the last gripper command sent (-1 open .. 1 closed): a takeover starts from it
        # with a person watching (a takeover device), the stream runs at the control rate, not as fast as lockstep can
        self.pace_s = 0.0 if intervention is None else self.dt_ns / 1e9

    # -- one attempt at a time ------------------------------------------------------------------------------
    def begin(self) -> None:
        """Start an attempt of the current skill (rest move first when the skill asks for one)."""
        rt = self.rt[self.counters.skill]
        self.ensure_armed()
        mode = rt.skill.rest_before
        if self.rest_pose is not None and (mode == "always" or (mode == "after_failure" and self.last_failed)):
            self.rest_move()
        rt.runner.start(self._obs(rt), seeds=None)
        held = self._requires_met(rt)
        self.attempt = Attempt(rt.skill.name, ready=held, holding=held)

    def step(self) -> dict | None:
        """Run one chunk of the current attempt; returns the attempt's result when it ended."""
        if self.attempt is None:
            self.begin()
        rt, att = self.rt[self.counters.skill], self.attempt
        self.ensure_armed()
        windows = {k: v.copy() for k, v in rt.runner.history.get().items()}
        t_chunk = time.monotonic()
        first = None if self.intervention is None else self.intervention.poll(
            _frame(self.state.extras), f"POLICY ({rt.skill.name})", policy_gripper=self.gripper)
        chunk, record = (self.human_chunk(rt, first), {}) if first is not None else ([], {})
        human = len(chunk) > 0  # a human who handed back at once leaves the chunk to the policy
        if not human and rt.learner is not None:
            chunk, record = rt.learner.act(windows)
            chunk = chunk[: rt.policy.n_action_steps]
        elif not human:
            chunk = rt.runner.predict(windows)[0][: rt.policy.n_action_steps]
        version = rt.learner.version if rt.learner is not None else 0
        executed, t_before = [], att.steps / rt.skill.time_limit_steps

        def on_state(st) -> bool:
            self.recorder.add(self.state.extras, chunk[len(executed)], rt.skill.name, version,
                              rt.detector.version, human, bool(st.extras.get(rt.skill.audit_key, False)))
            executed.append(chunk[len(executed)])
            self.state = st
            rt.runner.observe(self._obs(rt, st))
            return self.released(rt, att, st)

        if human:  # the human's actions were already executed one by one (human_chunk)
            executed = list(chunk)
        else:
            self.state = send_and_follow(self.client, self.state, np.asarray(chunk, np.float64), ACTION_SPACE,
                                         self.dt_ns, on_state)
        n = len(executed)
        self.gripper = float(executed[-1][-1])
        if not human and n < len(chunk):  # let go mid-chunk (released): drop the rest of the chunk, rise
            self.client.disarm()
            self.client.arm(ACTION_SPACE)  # the cached status may still read RUNNING right after the DISARM
            self.state = self.client.latest_state()
            self.release_rise(rt)
            att.holding = False
        if not human and self.pace_s:
            time.sleep(max(0.0, n * self.pace_s - (time.monotonic() - t_chunk)))
        att.steps += n
        self.counters.robot_steps += n
        self.counters.steps_on_skill += n
        att.intervened |= human
        self.check_release(rt, att)
        value, valid = rt.detector(self.state.extras)
        detected = valid and rt.detector.success(value) and att.ready
        truth = self.state.extras.get(rt.skill.audit_key)
        self.audit.add(detected, None if truth is None else bool(truth))
        truncated = not detected and att.steps >= rt.skill.time_limit_steps
        self.recorder.amend_last(reward=float(detected), success=detected, detector_value=value,
                                 terminated=detected, truncated=truncated)
        if rt.learner is not None:
            normalise = rt.policy.normalizer.normalize
            action = record.get("action")
            if action is None:  # a human chunk: the executed actions, normalised as the policy's own
                import torch

                acts = np.asarray(executed, np.float32)[: rt.policy.n_action_steps]
                acts = np.concatenate([acts, np.repeat(acts[-1:], rt.policy.n_action_steps - len(acts), 0)])
                action = normalise("action", torch.as_tensor(acts)).reshape(-1).numpy()
            rt.learner.add({"obs": {k: v[0] for k, v in windows.items()},
                            "next_obs": {k: v[0].copy() for k, v in rt.runner.history.get().items()},
                            "w": record.get("w", np.zeros(rt.learner.learner.w_dim, np.float32)), "action": action,
                            "reward": float(detected), "terminated": detected, "time": t_before,
                            "next_time": att.steps / rt.skill.time_limit_steps, "intervened": human})
        if detected or truncated:
            return self.end(detected, truth)
        return None

    def end(self, detected: bool, truth) -> dict:
        """Close the attempt: record it, count it, check for a stuck state, pick the next skill."""
        c, name = self.counters, self.counters.skill
        episode = self.recorder.end(name)
        c.bump("attempts", name)
        c.bump("detected", name, int(detected))
        c.bump("privileged", name, int(bool(truth)))
        result = {"skill": name, "detected": detected, "privileged": None if truth is None else bool(truth),
                  "steps": self.attempt.steps, "episode": episode, "intervened": self.attempt.intervened}
        reason = self.stuck.attempt(name, detected) or self.stuck.workspace(
            self.state.extras.get(self.workspace_key) if self.workspace_key in self.state.extras else None)
        if reason:
            self.needs_human(reason)
            result["needs_human"] = reason
        nxt = self.graph.next(name, "success" if detected else "timeout", c.steps_on_skill)
        if self.edge_guard is not None and nxt != self.edge_guard.skill and self.edge_guard.out(self.state.extras):
            nxt = self.edge_guard.skill
            c.edge_guarded += 1
        self.last_failed = not detected
        if nxt != name:
            c.skill, c.steps_on_skill = nxt, 0
        self.attempt = None
        return result

    # -- the arm between attempts ----------------------------------------------------------------------------
    def ensure_armed(self) -> None:
        self.client.latest_state()
        if self.client.status.get("status") not in ("ARMED", "RUNNING"):
            self.client.arm(ACTION_SPACE)

    def check_release(self, rt: SkillRuntime, att: Attempt) -> bool:
        """At a chunk end: update the attempt's ``requires`` state; a skill that held (``requires`` at the last chunk
        end) and now meets its ``release_rise`` gates let go: rise (True)."""
        holding = self._requires_met(rt)
        rise = att.holding and not holding and bool(rt.skill.release_rise) and self._gates_met(rt.skill.release_rise)
        if rise:
            self.release_rise(rt)
        att.holding = holding
        att.ready = att.ready or holding
        return rise

    def released(self, rt: SkillRuntime, att: Attempt, st) -> bool:
        """Per executed step of a skill with ``release_rise``: it holds (``requires``: counts as ready) or, having
        held, now meets the release gates (True: stop the chunk here, before the policy closes on the cube again)."""
        if not rt.skill.release_rise:
            return False
        if self._gates_met(rt.skill.requires, st):
            att.holding = att.ready = True
            return False
        return att.holding and self._gates_met(rt.skill.release_rise, st)

    def release_rise(self, rt: SkillRuntime) -> None:
        """The skill let go: gripper open, straight up over where it is to the rest height (arm motion only); the
        skill's obs window then continues from there."""
        if self.rest_pose is None:
            return
        pos = np.asarray(self.state.ee_pos_m, float)
        self.rest_move(target=np.array([pos[0], pos[1], float(self.rest_pose[2])]), count=False)
        self.counters.release_rises += 1
        rt.runner.observe(self._obs(rt))

    def rest_move(self, tol_m: float = 0.01, tol_rad: float = 0.05, max_steps: int = 80, target=None,
                  count: bool = True) -> None:
        """Open the gripper, rise to the rest height, return over the rest position (or ``target``) with the rest
        orientation (ee_delta, one step per chunk): arm motion only, the object stays where it is."""
        from armflow.hardware.kinematics import quat_error

        info = self.client.info()
        unit_m, unit_rad = float(info.ee_delta_m_per_unit or 0.05), float(info.ee_delta_rad_per_unit or 0.5)
        target = np.asarray(self.rest_pose if target is None else target, float)
        for k in range(max_steps):
            pos = np.asarray(self.state.ee_pos_m, float)
            rot = quat_error(self.rest_quat, np.asarray(self.state.ee_quat_wxyz, float))
            if np.linalg.norm(target - pos) < tol_m and np.linalg.norm(rot) < tol_rad and k >= 3:
                break
            goal = target if pos[2] >= target[2] - 0.02 else np.array([pos[0], pos[1], target[2]])
            act = np.concatenate([np.clip((goal - pos) / unit_m, -0.7, 0.7), np.clip(rot / unit_rad, -0.5, 0.5),
                                  [-1.0]])
            self.state = send_and_follow(self.client, self.state, act[None], ACTION_SPACE, self.dt_ns,
                                         lambda st: False)
            self.counters.robot_steps += 1
        self.gripper = -1.0
        self.counters.rest_moves += int(count)

    def needs_human(self, reason: str) -> None:
        """Count the event; ``human_reset=auto`` (sim): a scene reset through the bridge stands in for the person
        (counted as a scene reset); ``wait``: hold until the operator's teleop device hands back."""
        self.counters.needs_human += 1
        self.counters.needs_human_reasons.append(reason)
        self.log(f"[improve] NEEDS HUMAN: {reason}")
        if self.human_reset == "auto":
            self.state = self.client.reset(10_000_000 + self.counters.needs_human)  # a new scene per event
        elif self.human_reset == "wait" and self.intervention is not None:
            while not self.intervention.active:  # take over, fix the scene, hand back
                self.intervention.poll(None, f"needs human: {reason}")
                self.client.heartbeat()
                time.sleep(0.05)
        self.stuck.cleared()

    def human_chunk(self, rt: SkillRuntime, first: np.ndarray) -> list[np.ndarray]:
        """The human's device actions, ``first`` (this tick's) then one per control period, up to T_a steps, each one
        bridge step; stops early when the human hands back."""
        out, version, act = [], rt.learner.version if rt.learner is not None else 0, first
        while act is not None:
            t0 = time.monotonic()
            before = self.state.extras
            self.state = send_and_follow(self.client, self.state, np.asarray(act, np.float64)[None], ACTION_SPACE,
                                         self.dt_ns, lambda st: False)
            self.recorder.add(before, act, rt.skill.name, version, rt.detector.version, True,
                              bool(self.state.extras.get(rt.skill.audit_key, False)))
            rt.runner.observe(self._obs(rt, self.state))
            out.append(np.asarray(act, np.float32))
            self.counters.intervention_steps += 1
            if len(out) == rt.policy.n_action_steps:
                break
            self.intervention.wait(self.dt_ns / 1e9 - (time.monotonic() - t0))
            act = self.intervention.poll(_frame(self.state.extras), f"HUMAN ({rt.skill.name})",
                                         policy_gripper=self.gripper)
        return out

    def _requires_met(self, rt: SkillRuntime) -> bool:
        return self._gates_met(rt.skill.requires)

    def _gates_met(self, gates: list, st=None) -> bool:
        state = np.asarray((st or self.state).extras.get("observation.state", []), float).reshape(-1)
        return all(_OPS[g.get("op", ">")](float(state[int(g["index"])]), float(g["threshold"])) for g in gates)

    def _obs(self, rt: SkillRuntime, state=None) -> dict:
        extras = (state or self.state).extras
        return {k: np.asarray(extras[k])[None] for k in rt.policy.obs_spec}


def _frame(extras: dict):
    for k in sorted(extras):
        if k.startswith("observation.images."):
            return np.asarray(extras[k])
    return None
