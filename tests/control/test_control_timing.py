"""Servo timing helpers: garbage collection moved out of the tick into the slack after it."""
import gc

from armflow.control.timing import SlackGC


class _Node:
    pass


def test_slack_gc_collects_only_when_the_loop_asks_and_in_the_interpreters_schedule():
    calls = []

    def on_gc(phase, info):
        if phase == "start":
            calls.append(info["generation"])

    slack = SlackGC()
    slack.start()
    gc.callbacks.append(on_gc)
    try:
        assert not gc.isenabled()
        for _ in range(3 * slack.threshold):  # cyclic garbage: the interpreter would have collected by now
            node = _Node()
            node.me = node
        assert calls == []  # nothing ran inside the "tick"
        slack.after_tick()
        assert calls == [0]
        slack.after_tick()  # below the threshold again: nothing to do
        assert calls == [0]
        for _ in range(9):
            for _ in range(slack.threshold + 1):
                node = _Node()
                node.me = node
            slack.after_tick()
        assert calls == [0] * 9 + [1]  # every 10th collection is an older generation's, as gc would
    finally:
        gc.callbacks.remove(on_gc)
        slack.stop()
        gc.unfreeze()
    assert gc.isenabled()
