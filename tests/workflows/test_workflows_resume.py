"""Checkpoint swaps survive a kill at every point: resume finds the newest complete checkpoint,
and metrics.jsonl holds each step once after the resume."""
import json
import os
import shutil
from pathlib import Path

import pytest

from armflow.data.synthetic import write_synthetic_dataset
from armflow.workflows import train as train_wf
from armflow.workflows.common import compose_config
from armflow.workflows.train_state import COMPLETE


class _Killed(BaseException):
    """The process 'dies' at this filesystem call (BaseException: no `except Exception` swallows it)."""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A gaussian policy trained 20 steps (checkpoint at 10 and 20, metrics every 5)."""
    root = tmp_path_factory.mktemp("resume")
    dataset = write_synthetic_dataset(root / "ds", [30, 30])
    out = root / "run"
    train_wf.main(_cfg(dataset, out, steps=20))
    return dataset, out


def _cfg(dataset, out, steps, resume=False):
    return compose_config("train", [f"dataset={dataset}", f"out={out}", f"steps={steps}", "policy=gaussian",
                                    "batch_size=8", "log_every=5", "save_every=10", "warmup_steps=2",
                                    f"resume={str(resume).lower()}"])


def _steps(out):
    return [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def _saved_step(path):
    return json.loads((path / "training_state.json").read_text())["step"]


def _arm_kill(monkeypatch, n, partial):
    """Make the n-th os.replace / shutil.rmtree of the next save the moment of death; with `partial`
    a dying rmtree has already deleted half of its files (rmtree's order is the directory's).
    Returns the kinds of the calls seen ("replace" / "rmtree")."""
    real_replace, real_rmtree, calls = os.replace, shutil.rmtree, []

    def replace(src, dst):
        calls.append("replace")
        if len(calls) == n:
            raise _Killed
        real_replace(src, dst)

    def rmtree(path, ignore_errors=False, **kw):
        calls.append("rmtree")
        if len(calls) == n:
            files = sorted(p for p in Path(path).rglob("*") if p.is_file()) if Path(path).is_dir() else []
            for p in files[: len(files) // 2] if partial else []:
                p.unlink()
            raise _Killed
        real_rmtree(path, ignore_errors=ignore_errors, **kw)

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(shutil, "rmtree", rmtree)
    return calls


def _save_at_30(dataset, out, monkeypatch, n, partial):
    """Resume the 20-step run, train to 30 and die at the n-th call of its step-30 save (0: no death).
    Returns the kinds of the save's calls."""
    calls = None
    real_save = train_wf.save_checkpoint

    def save_and_die(out_, policy, ema, optimizer, scheduler, step):
        nonlocal calls
        if step != 30:
            return real_save(out_, policy, ema, optimizer, scheduler, step)
        calls = _arm_kill(monkeypatch, n, partial)
        real_save(out_, policy, ema, optimizer, scheduler, step)
        calls = list(calls)  # only the save's own calls (not the final export's)
        monkeypatch.undo()

    monkeypatch.setattr(train_wf, "save_checkpoint", save_and_die)
    try:
        train_wf.main(_cfg(dataset, out, steps=30, resume=True))
    except _Killed:
        pass
    monkeypatch.undo()
    return calls


def _row(out, step):
    return next(line for line in (out / "metrics.jsonl").read_text().splitlines() if json.loads(line)["step"] == step)


def _kill_then_resume(dataset, base, out, monkeypatch, n, partial):
    """Die at call n of the step-30 save, resume to 40; returns the step resumed from (20 or 30)."""
    shutil.copytree(base, out)
    _save_at_30(dataset, out, monkeypatch, n, partial)
    row30 = _row(out, 30)  # logged by the killed run before its save
    summary = train_wf.main(_cfg(dataset, out, steps=40, resume=True))
    assert summary["steps"] == 40
    assert _steps(out) == [5, 10, 15, 20, 25, 30, 35, 40], (n, partial)  # each step once
    ckpts = out / "checkpoints"
    assert _saved_step(ckpts / "last") == 40
    assert not (ckpts / "last.tmp").exists() and not (ckpts / "last.old").exists()
    return 30 if _row(out, 30) == row30 else 20  # a resume from 20 logs step 30 again (new wall time)


@pytest.mark.slow
def test_every_kill_point_of_a_save_resumes_the_newest_complete_checkpoint(trained, tmp_path, monkeypatch):
    dataset, base = trained
    kinds = _save_at_30(dataset, Path(shutil.copytree(base, tmp_path / "probe")), monkeypatch, 0, False)
    assert kinds.count("replace") >= 4  # training state's two renames, the swap's two renames
    for n, kind in enumerate(kinds, start=1):
        for partial in ((False, True) if kind == "rmtree" else (False,)):
            out = tmp_path / f"kill{n}{'p' if partial else ''}"
            swap_began = n > len(kinds) - 4  # the marker is written before the swap's rmtree/replace/replace/rmtree
            resumed = _kill_then_resume(dataset, base, out, monkeypatch, n, partial)
            assert resumed == (30 if swap_began else 20), (n, kind, partial)


def test_resume_uses_the_complete_tmp_when_the_swap_was_cut(trained, tmp_path, monkeypatch):
    """Killed between `last -> last.old` and `last.tmp -> last` (the issue's window): the old code said
    "no checkpoint"; resume continues from 30, and metrics.jsonl holds each step once."""
    dataset, base = trained
    kinds = _save_at_30(dataset, Path(shutil.copytree(base, tmp_path / "probe")), monkeypatch, 0, False)
    n_swap = len(kinds) - 1  # os.replace(last.tmp, last), followed only by the rmtree of last.old
    assert kinds[n_swap - 1] == "replace"
    cut = Path(shutil.copytree(base, tmp_path / "cut"))
    _save_at_30(dataset, cut, monkeypatch, n_swap, False)
    ckpts = cut / "checkpoints"
    assert not (ckpts / "last").exists()
    assert _saved_step(ckpts / "last.tmp") == 30 and _saved_step(ckpts / "last.old") == 20
    assert _kill_then_resume(dataset, base, tmp_path / "resumed", monkeypatch, n_swap, False) == 30


def test_resume_after_a_kill_mid_cleanup_of_last_old(trained, tmp_path, monkeypatch):
    """A half-deleted last.old next to a complete last must not be chosen, whatever it still holds."""
    dataset, base = trained
    kinds = _save_at_30(dataset, Path(shutil.copytree(base, tmp_path / "probe")), monkeypatch, 0, False)
    assert kinds[-1] == "rmtree"
    assert _kill_then_resume(dataset, base, tmp_path / "k", monkeypatch, len(kinds), True) == 30
