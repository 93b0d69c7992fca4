"""The reset skill's scripted rise after it lets go (``Skill.release_rise``): when it fires and when not (the loop's
decision on ``observation.state`` at chunk ends; the motion itself runs in the e2e runs through the bridge)."""
from types import SimpleNamespace

from armflow.workflows.improve.graph import Skill
from armflow.workflows.improve.loop import Attempt, ImproveLoop

HELD = [{"index": 7, "op": ">", "threshold": 0.03}, {"index": 7, "op": "<", "threshold": 0.06}]
OPEN = [{"index": 7, "op": ">", "threshold": 0.06}]


def _loop(opening_m: float, rises: list) -> ImproveLoop:
    loop = ImproveLoop.__new__(ImproveLoop)  # the decision only: no bridge
    loop.state = SimpleNamespace(extras={"observation.state": [0.5, 0.0, 0.1, 1, 0, 0, 0, opening_m]})
    loop.release_rise = lambda rt: rises.append(rt.skill.name)
    return loop


def _rt(release=OPEN):
    return SimpleNamespace(skill=Skill("reset", "ckpt", requires=HELD, release_rise=release))


def test_rises_once_the_held_cube_is_let_go():
    rises, att = [], Attempt("reset", holding=False)
    assert not _loop(0.08, rises).check_release(_rt(), att)  # open from the start: nothing was held yet
    assert not _loop(0.04, rises).check_release(_rt(), att) and att.holding and att.ready  # fingers on the cube
    assert _loop(0.075, rises).check_release(_rt(), att)  # let go: rise
    assert rises == ["reset"] and not att.holding and att.ready
    assert not _loop(0.08, rises).check_release(_rt(), att) and rises == ["reset"]  # still open: no second rise


def test_no_rise_when_the_gripper_closes_on_nothing_or_the_skill_has_no_gates():
    rises = []
    att = Attempt("reset", holding=True)
    assert not _loop(0.01, rises).check_release(_rt(), att)  # slipped, fingers shut: not a release
    att = Attempt("reset", holding=True)
    assert not _loop(0.08, rises).check_release(_rt(release=[]), att)  # release_rise off
    assert rises == []


def test_a_release_mid_chunk_stops_the_chunk_at_that_step():
    rises, att = [], Attempt("reset")
    loop, rt = _loop(0.08, rises), _rt()
    states = [SimpleNamespace(extras={"observation.state": [0.5, 0.0, 0.1, 1, 0, 0, 0, g]}) for g in (0.08, 0.04, 0.07)]
    assert [loop.released(rt, att, st) for st in states] == [False, False, True]  # open, holds, lets go: stop
    assert att.ready
    frozen = SimpleNamespace(skill=Skill("forward", "ckpt"))  # no release_rise: never stops a chunk
    assert not loop.released(frozen, Attempt("forward", holding=True), states[2])
