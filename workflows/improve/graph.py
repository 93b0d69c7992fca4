"""The task graph of ``armflow improve``: skills (forward, reset, optionally recover) and the rule that picks the next
one, plus the virtual episodes cut out of one continuous robot stream.

A **skill** is a policy with an instruction, a success detector and a time limit. A **virtual episode** is one
attempt of one skill: it ends ``terminated`` when the skill's detector says success (no bootstrap) and
``truncated`` at the skill's time limit (bootstrapped). SERL's env merges the two; here they stay apart.

Switching presets (``../shared/design/rewards.md``):

=========  ==============================================================================================
serl       success -> the other skill; timeout -> the same skill again (the arm goes to its rest pose)
robofume   alternate after every attempt, success or not
medal      stay on a skill for ``switch_every_steps`` robot steps (attempts inside restart on success or
           timeout), then switch
=========  ==============================================================================================

Stuck detection (``StuckDetector``): ``max_failures`` failed attempts of one skill in a row, or the object out of
the workspace, raise a needs-human event; the loop counts them and asks for (or, in sim, performs) a human reset.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

PRESETS = ("serl", "robofume", "medal")
OUTCOMES = ("success", "timeout")
HUMAN_RESETS = ("auto", "wait", "none")  # what a needs-human event does (loop.ImproveLoop.needs_human)
REST_MODES = ("always", "after_failure", "never")


@dataclass(frozen=True)
class Skill:
    """One node of the graph. ``checkpoint``: the frozen base policy dir; ``learn``: its DSRL noise actor learns
    online (else the base runs as is); ``detector``: the reward model spec (``build_detector``);
    ``time_limit_steps``: robot steps per attempt; ``rest_before``: a scripted rest move (open, up, home) before
    attempts (``always``; ``after_failure``: only after a failed attempt (of any skill), e.g. a reset skill whose demos
    start holding what the forward skill lifted; ``never``), so the skill starts where its demos started; ``audit_key``: the bridge state's privileged
    success flag that audits the detector (sim only, never a reward)."""

    name: str
    checkpoint: str
    instruction: str = ""
    time_limit_steps: int = 100
    learn: bool = True
    rest_before: str = "always"
    detector: dict = field(default_factory=dict)
    audit_key: str = "success"
    requires: list = field(default_factory=list)  # gate dicts on observation.state that must all have held at some
    # chunk end of the attempt (or its start) before a detection counts: a reset skill that starts where a placed cube
    # already "looks placed" must first have held it
    release_rise: list = field(default_factory=list)  # gate dicts on observation.state: at a chunk end where they all
    # hold right after one where ``requires`` held (the skill let go of what it held), a scripted rise (gripper open,
    # straight up to the rest height) before the detector looks: the put-down is finished by the arm, not undone by
    # the policy grasping again, and the detector sees it as in its training episodes (released, arm above)

    def __post_init__(self):
        if self.time_limit_steps < 1:
            raise ValueError(f"skill {self.name!r}: time_limit_steps={self.time_limit_steps}; expected >= 1")
        if self.rest_before not in REST_MODES:
            raise ValueError(f"skill {self.name!r}: rest_before={self.rest_before!r}; valid: {', '.join(REST_MODES)}")
        if not self.checkpoint:
            raise ValueError(f"skill {self.name!r}: no checkpoint (a policy dir with config.json)")


class TaskGraph:
    """``next(skill, outcome, steps_on_skill)`` -> the skill of the next attempt (see the module table)."""

    def __init__(self, skills: list[Skill], preset: str = "serl", switch_every_steps: int = 300):
        if preset not in PRESETS:
            raise ValueError(f"improve: graph preset={preset!r}; valid: {', '.join(PRESETS)}")
        if not skills:
            raise ValueError("improve: the task graph needs at least one skill")
        names = [s.name for s in skills]
        if len(set(names)) != len(names):
            raise ValueError(f"improve: duplicate skill names {names}")
        self.skills, self.order = {s.name: s for s in skills}, names
        self.preset, self.switch_every_steps = preset, int(switch_every_steps)

    @property
    def start(self) -> str:
        return self.order[0]

    def other(self, name: str) -> str:
        return self.order[(self.order.index(name) + 1) % len(self.order)]

    def next(self, name: str, outcome: str, steps_on_skill: int) -> str:
        """The skill after an attempt of ``name`` that ended with ``outcome`` after ``steps_on_skill`` robot steps
        spent on ``name`` since the graph last switched to it."""
        if outcome not in OUTCOMES:
            raise ValueError(f"improve: outcome={outcome!r}; valid: {', '.join(OUTCOMES)}")
        if self.preset == "serl":
            return self.other(name) if outcome == "success" else name
        if self.preset == "robofume":
            return self.other(name)
        return self.other(name) if steps_on_skill >= self.switch_every_steps else name


@dataclass(frozen=True)
class EdgeGuard:
    """An observed object near the workspace's edge sends the next attempt to ``skill`` (the one that fetches it
    back), whatever the graph says: a forward attempt that fails there pushes the object further out, until a
    needs-human event. Reads the robot's observation (``key``, e.g. a tracked object position), never sim state.
    ``index``: the x, y entries of ``key``; the object is near the edge outside ``centre`` +- ``half_range`` [m]."""

    skill: str
    key: str = "observation.environment_state"
    index: tuple = (0, 1)
    centre: tuple = (0.5, 0.0)
    half_range: tuple = (0.15, 0.15)

    def __post_init__(self):
        if not (len(self.index) == len(self.centre) == len(self.half_range)) or min(self.half_range) <= 0:
            raise ValueError(f"improve: edge_guard needs index, centre and half_range of one length and half_range > 0; "
                             f"got {self.index}, {self.centre}, {self.half_range}")

    def out(self, extras: dict) -> bool:
        """The object lies outside the guarded box (False when ``key`` is not observed)."""
        if self.key not in extras:
            return False
        obs = np.asarray(extras[self.key], float).reshape(-1)
        return any(abs(float(obs[int(i)]) - float(c)) > float(h)
                   for i, c, h in zip(self.index, self.centre, self.half_range))


@dataclass
class StuckDetector:
    """Needs-human events: ``max_failures`` failed attempts in a row of one skill, or the object out of the
    workspace (a check on the observation the loop is given; ``None``: unknown, never stuck)."""

    max_failures: int = 8
    failures_in_row: dict = field(default_factory=dict)

    def attempt(self, skill: str, success: bool) -> str | None:
        """Record an attempt; returns the needs-human reason or None. Counted per skill (another skill's success in
        between does not clear it: robofume's reset succeeding every time while forward keeps failing is stuck)."""
        n = 0 if success else self.failures_in_row.get(skill, 0) + 1
        self.failures_in_row[skill] = n
        if n >= self.max_failures:
            return f"{skill}: {n} failed attempts in a row"
        return None

    def workspace(self, in_workspace: bool | None) -> str | None:
        return "object out of the workspace" if in_workspace is False else None

    def cleared(self) -> None:
        """A human reset: every skill starts counting again."""
        self.failures_in_row.clear()
