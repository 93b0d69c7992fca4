"""Progress bars tell the truth: the finetune bar's total is the budget that ends the run (issue 11)."""
import pytest

from armflow.workflows.finetune import budget_percent


def test_time_budget_binds_on_a_short_wall_clock_run():
    # 90 s budget, 2 M env steps: after 45 s and 20 k steps the run is half done, not 1 % done
    assert budget_percent(20_000, 45.0, 2_000_000, 90.0) == pytest.approx(50.0)


def test_env_step_budget_binds_when_it_runs_out_first():
    assert budget_percent(1_500_000, 10.0, 2_000_000, 1800.0) == pytest.approx(75.0)


def test_progress_is_capped_at_the_end():
    assert budget_percent(3_000_000, 5000.0, 2_000_000, 90.0) == 100.0
