"""Live progress: counts, the best trial by name, time left; plain lines without a terminal, redraws in one."""
from __future__ import annotations

import io
import os

import pytest
from ray.tune.experiment import Trial

from tunevision import progress
from tunevision.progress import Progress, clock


class Terminal(io.StringIO):
    """A stdout that says it is a terminal, as a console does."""

    def isatty(self) -> bool:
        return True


def trial(lr: float, optimizer: str) -> Trial:
    return Trial("run_trial", config={"lr": lr, "optimizer": optimizer, "image_size": 24},
                 evaluated_params={"lr": lr, "optimizer": optimizer}, stub=True)


def report(p: Progress, trials: list, t: Trial, epoch: int, accuracy: float) -> None:
    result = {"val_accuracy": accuracy, "epoch": epoch, "training_iteration": epoch}
    t.update_last_result(result)
    p.on_trial_result(0, trials, t, result)


@pytest.fixture
def searched(monkeypatch):
    """Three trials of four: t01 finished (0.8), t02 running at epoch 1 of 2 (0.9 so far), t03 failed, one not created."""
    trials = [trial(1e-3, "adam"), trial(4.2e-4, "adamw"), trial(5e-3, "sgd")]
    p = Progress("val_accuracy", "max", max_epochs=2, tty_every=0, line_every=0, quiet_line_every=0)
    p.setup(total_num_samples=4)
    p.started -= 30  # the search began 30 s ago
    for t in trials:
        p.on_trial_start(0, trials, t)
        t.set_status(Trial.RUNNING)
    report(p, trials, trials[0], 1, 0.7)
    report(p, trials, trials[0], 2, 0.8)
    report(p, trials, trials[1], 1, 0.9)
    trials[0].set_status(Trial.TERMINATED)
    trials[2].set_status(Trial.ERROR)
    return p, trials


def test_status_counts_every_state_and_names_the_best_trial_by_its_sampled_values(searched):
    p, trials = searched
    assert p.counts(trials) == {"done": 1, "running": 1, "pending": 1, "failed": 1, "total": 4}
    head, best, running = p.lines(trials)
    # 2.5 of 4 trials' work in 30 s: 18 s left.
    assert head == "trials 1/4 done, 1 running, 1 pending, 1 failed | 0:30 elapsed, ~0:18 left"
    assert best == "best: t02 adamw lr=4.2e-4 | val_accuracy 0.9000 at epoch 1"
    assert running == "running: t02 adamw lr=4.2e-4 (epoch 1/2)"


def test_time_left_follows_the_share_of_work_done():
    trials = [trial(1e-3, "adam"), trial(2e-3, "adam")]
    p = Progress("val_loss", "min", max_epochs=4)
    p.setup(total_num_samples=2)
    trials[0].set_status(Trial.TERMINATED)
    trials[1].set_status(Trial.RUNNING)
    trials[1].update_last_result({"epoch": 2})
    # 1 trial done + half of one = 3/4 of the work in 60 s: 20 s left.
    assert p.eta(trials, elapsed=60.0) == pytest.approx(20.0)


def test_without_a_terminal_lines_are_plain_and_trial_ends_are_announced(searched, monkeypatch):
    p, trials = searched
    out = io.StringIO()
    monkeypatch.setattr("sys.stdout", out)
    p.on_step_end(0, trials)
    p.on_trial_complete(0, trials, trials[0])
    p.on_trial_error(0, trials, trials[2])
    trials[1].set_status(Trial.TERMINATED)  # stopped by the scheduler after 1 of its 2 epochs
    p.on_trial_complete(0, trials, trials[1])
    lines = out.getvalue().splitlines()
    assert "\x1b" not in out.getvalue()
    assert lines[0].startswith("trials 1/4 done, 1 running, 1 pending, 1 failed |")
    assert "best: t02 adamw lr=4.2e-4 | val_accuracy 0.9000" in lines[0]
    assert lines[1] == "t01 adam lr=1.0e-3 finished: val_accuracy 0.8000 at epoch 2 of 2"
    assert lines[2].startswith("t03 sgd lr=5.0e-3 failed: ")
    assert lines[3] == "t02 adamw lr=4.2e-4 finished: val_accuracy 0.9000 at epoch 1 (stopped after 1 of 2) (best so far)"


def test_without_a_terminal_an_unchanged_status_is_not_repeated_within_a_minute(searched, monkeypatch):
    p, trials = searched
    p.line_every, p.quiet_line_every = 10.0, 60.0
    out = io.StringIO()
    monkeypatch.setattr("sys.stdout", out)
    for _ in range(5):
        p.on_step_end(0, trials)
    assert len(out.getvalue().splitlines()) == 1


def test_in_a_terminal_the_block_is_redrawn_in_place_and_events_stay_above_it(searched, monkeypatch):
    p, trials = searched
    out = Terminal()
    monkeypatch.setattr("sys.stdout", out)
    monkeypatch.setenv("TERM", "xterm")
    p.on_step_end(0, trials)
    first = out.getvalue()
    assert first.count("\n") == 3 and "\x1b[" not in first  # head, best, running
    p.on_step_end(0, trials)
    second = out.getvalue()[len(first):]
    assert second.startswith("\x1b[3F\x1b[J")  # back up over the 3 lines, clear, draw again
    p.on_trial_complete(0, trials, trials[0])
    third = out.getvalue()[len(first) + len(second):]
    assert third.startswith("\x1b[3F\x1b[Jt01 adam lr=1.0e-3 finished: val_accuracy 0.8000 at epoch 2 of 2\n")
    assert third.rstrip("\n").endswith("running: t02 adamw lr=4.2e-4 (epoch 1/2)")


def test_quiet_shows_no_progress_and_verbose_gives_ray_its_own_tables(monkeypatch):
    monkeypatch.delenv("RAY_AIR_NEW_OUTPUT", raising=False)
    assert progress.callbacks("val_accuracy", "max", 3, "quiet") == []
    assert progress.ray_verbosity("verbose") == 2 and "RAY_AIR_NEW_OUTPUT" not in os.environ
    assert [type(c) for c in progress.callbacks("val_accuracy", "max", 3, "progress")] == [Progress]
    assert progress.ray_verbosity("progress") == 0 and os.environ["RAY_AIR_NEW_OUTPUT"] == "0"


def test_progress_pickles_with_the_experiment_and_keeps_the_best_epochs(searched):
    import pickle

    p, trials = searched
    restored = pickle.loads(pickle.dumps(p))
    restored.set_state(p.get_state())
    assert restored.best == p.best and restored.names == p.names


def test_clock_reads_minutes_and_hours():
    assert (clock(65), clock(3723), clock(0.4)) == ("1:05", "1:02:03", "0:00")
