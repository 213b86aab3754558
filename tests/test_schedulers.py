"""The search's schedulers start the newest pending trial first, and otherwise behave as Ray's ASHA and FIFO."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

from tunevision.schedulers import NewestFirstASHA, NewestFirstFIFO


def controller(*statuses: str) -> SimpleNamespace:
    trials = [SimpleNamespace(trial_id=f"t{i}", status=status) for i, status in enumerate(statuses)]
    return SimpleNamespace(get_trials=lambda: trials)


@pytest.mark.parametrize("scheduler", [NewestFirstASHA(metric="val_accuracy", mode="max", max_t=4), NewestFirstFIFO()])
def test_the_newest_pending_trial_is_started_first_and_paused_ones_only_when_none_is_pending(scheduler):
    assert isinstance(scheduler, (ASHAScheduler, FIFOScheduler))
    assert scheduler.choose_trial_to_run(controller(Trial.TERMINATED, Trial.PENDING, Trial.RUNNING, Trial.PENDING)).trial_id == "t3"
    assert scheduler.choose_trial_to_run(controller(Trial.RUNNING, Trial.PAUSED, Trial.TERMINATED)).trial_id == "t1"
    assert scheduler.choose_trial_to_run(controller(Trial.RUNNING, Trial.TERMINATED)) is None
