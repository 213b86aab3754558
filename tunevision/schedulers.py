"""Ray Tune's ASHA and FIFO trial schedulers, starting the newest pending trial first (trial processes are reused)."""
from __future__ import annotations

from typing import Any

from ray.tune.experiment import Trial
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler


class NewestFirst:
    """Scheduler mixin: of the pending trials, start the newest first.

    A search reuses trial processes (`reuse_actors`): Ray hands a process whose trial ended to the trial
    its scheduler chooses, and if that trial had a process of its own still starting, Ray stops that one.
    FIFO chooses the oldest pending trial, which is the one whose process is starting; when trials are
    shorter than a process's start-up (imports: 10-20 s on 2 busy cores), no second process ever finished
    starting and one core ran every trial. The newest pending trial has no process yet, so the one
    starting for the older trial lives on and takes it.
    """

    def choose_trial_to_run(self, tune_controller: Any) -> Trial | None:
        pending = [trial for trial in tune_controller.get_trials() if trial.status == Trial.PENDING]
        return pending[-1] if pending else super().choose_trial_to_run(tune_controller)


class NewestFirstASHA(NewestFirst, ASHAScheduler):
    """ASHA (early stopping at rungs) with the newest pending trial started first."""


class NewestFirstFIFO(NewestFirst, FIFOScheduler):
    """FIFO (no early stopping) with the newest pending trial started first."""
