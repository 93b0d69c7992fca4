"""armflow improve's task graph, stuck detection and detector audit (pure logic)."""
import pytest

from armflow.workflows.improve.detector import DetectorAudit
from armflow.workflows.improve.graph import Skill, StuckDetector, TaskGraph


def _graph(preset, every=300):
    return TaskGraph([Skill("forward", "ckpt_f"), Skill("reset", "ckpt_r")], preset, every)


def test_serl_switches_on_success_and_retries_on_timeout():
    g = _graph("serl")
    assert g.start == "forward"
    assert g.next("forward", "success", 50) == "reset"
    assert g.next("forward", "timeout", 50) == "forward"
    assert g.next("reset", "success", 10) == "forward"
    assert g.next("reset", "timeout", 10) == "reset"


def test_robofume_alternates_every_attempt():
    g = _graph("robofume")
    assert g.next("forward", "timeout", 5) == "reset" and g.next("reset", "timeout", 5) == "forward"
    assert g.next("forward", "success", 5) == "reset"


def test_medal_switches_after_n_steps_on_a_skill():
    g = _graph("medal", every=300)
    assert g.next("forward", "success", 299) == "forward"
    assert g.next("forward", "timeout", 300) == "reset"


def test_bad_input_names_what_was_expected():
    with pytest.raises(ValueError, match="preset='nope'.*serl"):
        _graph("nope")
    with pytest.raises(ValueError, match="outcome"):
        _graph("serl").next("forward", "maybe", 0)
    with pytest.raises(ValueError, match="time_limit_steps"):
        Skill("forward", "ckpt", time_limit_steps=0)
    with pytest.raises(ValueError, match="duplicate"):
        TaskGraph([Skill("a", "x"), Skill("a", "y")])


def test_stuck_after_n_failures_in_a_row_and_out_of_workspace():
    s = StuckDetector(max_failures=3)
    assert s.attempt("forward", False) is None and s.attempt("forward", False) is None
    assert s.attempt("reset", False) is None  # counted per skill
    assert "3 failed attempts in a row" in s.attempt("forward", False)
    s.cleared()
    assert s.attempt("forward", False) is None
    s.attempt("forward", True)
    assert s.failures_in_row["forward"] == 0
    assert s.workspace(False) == "object out of the workspace"
    assert s.workspace(True) is None and s.workspace(None) is None


def test_audit_rates_against_privileged_success():
    a = DetectorAudit(window=4)
    for detected, truth in [(True, True), (True, False), (False, False), (False, False), (False, True), (True, None)]:
        a.add(detected, truth)
    s = a.summary()
    assert s["counts"] == {"tp": 1, "fp": 1, "tn": 2, "fn": 1}
    assert s["fp_rate"] == pytest.approx(1 / 3) and s["fn_rate"] == pytest.approx(1 / 2)
    assert s["recent"]["positives"] + s["recent"]["negatives"] == 4  # the window keeps the newest 4


def test_scene_resets_are_summed_over_server_restarts():
    from armflow.workflows.improve.loop import Counters, count_scene_resets

    c = Counters()
    count_scene_resets(c, {"scene_resets": 1})  # the run's own first reset: the baseline
    count_scene_resets(c, {"scene_resets": 3})  # two needs-human resets
    assert (c.scene_resets, c.scene_resets_seen) == (2, 3)
    count_scene_resets(c, {"scene_resets": 1})  # resumed on a restarted server that has reset once since
    count_scene_resets(c, {"scene_resets": 2})
    assert (c.scene_resets, c.scene_resets_seen) == (4, 2)
    count_scene_resets(c, {})  # a robot that does not count: nothing changes
    assert c.scene_resets == 4


def test_edge_guard_reads_the_observed_object_position():
    from armflow.workflows.improve.graph import EdgeGuard

    guard = EdgeGuard("reset", key="observation.environment_state", index=(0, 1), centre=(0.5, 0.0),
                      half_range=(0.15, 0.15))
    assert not guard.out({"observation.environment_state": [0.6, -0.1, 0.02]})  # inside the box
    assert guard.out({"observation.environment_state": [0.7, 0.0, 0.02]})  # pushed far out in x
    assert guard.out({"observation.environment_state": [0.5, -0.2, 0.02]})  # or in y
    assert not guard.out({"observation.state": [0.9] * 8})  # not observed: never guards
    with pytest.raises(ValueError, match="edge_guard.*half_range"):
        EdgeGuard("reset", index=(0, 1), centre=(0.5,), half_range=(0.1, 0.1))
