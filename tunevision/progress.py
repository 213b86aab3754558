"""Live progress of a search in the driver's terminal: trials done / running / pending / failed, the best so far, time left."""
from __future__ import annotations

import math
import os
import shutil
import sys
import time
from typing import Any

from ray.tune import Callback

from tunevision.names import trial_name

def ray_verbosity(output: str) -> int:
    """Ray Tune's `verbose` for an output choice: its own trial tables only with --verbose.

    Ray's newer output engine prints its experiment box and result paths even at verbose=0; its older
    one prints nothing, so any other choice selects that one (RAY_AIR_NEW_OUTPUT=0, read when a Tuner fits).
    """
    if output == "verbose":
        return 2
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    return 0


def callbacks(metric: str, mode: str, max_epochs: int, output: str) -> list:
    """The Tune callbacks that show a search's progress: for "progress" (the CLI's default), not "quiet" or "verbose"."""
    if output != "verbose":
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # its "new study created" line is Ray's plumbing
    return [Progress(metric, mode, max_epochs)] if output == "progress" else []


def clock(seconds: float) -> str:
    """`1:05`, or `1:02:03` past an hour."""
    minutes, s = divmod(int(round(seconds)), 60)
    hours, m = divmod(minutes, 60)
    return f"{hours}:{m:02d}:{s:02d}" if hours else f"{m}:{s:02d}"


class Progress(Callback):
    """Ray Tune callback (runs in the driver) that shows how a search stands.

    A terminal gets a few lines redrawn in place every second; without one (a pipe, `ray job submit`)
    it prints plain lines: one per finished or failed trial, and a status line every 10 s while
    something moved, at least once a minute otherwise. Restored with the experiment on `--resume`.
    """

    def __init__(self, metric: str, mode: str, max_epochs: int, tty_every: float = 1.0,
                 line_every: float = 10.0, quiet_line_every: float = 60.0) -> None:
        self.metric, self.mode, self.max_epochs = metric, mode, max_epochs
        self.tty_every, self.line_every, self.quiet_line_every = tty_every, line_every, quiet_line_every
        self.best: dict[str, tuple[float, int]] = {}  # trial id -> (best metric value, its epoch)
        self.names: dict[str, str] = {}
        self._reset()

    def _reset(self) -> None:
        self.total = 0
        self.started = time.monotonic()
        self._shown_at = float("-inf")  # when the status was last drawn or printed
        self._shown_state: tuple | None = None
        self._drawn = 0  # lines of the live block on screen (terminal only)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_drawn"] = 0
        return state

    def get_state(self) -> dict[str, Any]:
        """What Ray stores with each experiment snapshot: the best epoch of every trial."""
        return {"best": self.best, "names": self.names}

    def set_state(self, state: dict[str, Any]) -> None:
        """Take back what `get_state` stored (a resumed search)."""
        self.best.update(state.get("best", {}))
        self.names.update(state.get("names", {}))

    def setup(self, total_num_samples: int | None = None, **info: Any) -> None:
        self._reset()
        self.total = int(total_num_samples or 0)

    # --- Tune's events -------------------------------------------------------------------------------------------

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self._show(trials)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.name(trial, trials)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        value = result.get(self.metric)
        if isinstance(value, (int, float)) and not math.isnan(value):
            best = self.best.get(trial.trial_id)
            if best is None or self._better(value, best[0]):
                self.best[trial.trial_id] = (float(value), int(result.get("epoch") or result.get("training_iteration", 0)))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        best = self.best.get(trial.trial_id)
        epochs = self._epoch(trial)
        if best is None:
            self._event(trials, f"{self.name(trial, trials)} finished after {epochs} epoch(s), no {self.metric}")
            return
        leader = " (best so far)" if self._leader(trials) == trial.trial_id else ""
        ran = f"of {epochs}" if epochs >= self.max_epochs else f"(stopped after {epochs} of {self.max_epochs})"
        self._event(trials, f"{self.name(trial, trials)} finished: {self.metric} {best[0]:.4f} at epoch {best[1]} {ran}{leader}")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        from tunevision.tracking import error_reason

        self._event(trials, f"{self.name(trial, trials)} failed: {error_reason(trial)[:200]}")

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self._show(trials, final=True)
        self._drawn = 0  # the last picture stays on screen; what follows starts below it

    # --- what is shown -------------------------------------------------------------------------------------------

    def name(self, trial: Any, trials: list) -> str:
        """The trial's short name (`t03 adamw lr=4.2e-4`), by its place in the search and its sampled values."""
        if trial.trial_id not in self.names:
            index = next((i for i, t in enumerate(trials) if t.trial_id == trial.trial_id), len(self.names)) + 1
            self.names[trial.trial_id] = trial_name(index, trial.evaluated_params)
        return self.names[trial.trial_id]

    def _better(self, a: float, b: float) -> bool:
        return a > b if self.mode == "max" else a < b

    def _leader(self, trials: list) -> str | None:
        known = [t.trial_id for t in trials if t.trial_id in self.best]
        if not known:
            return None
        pick = max if self.mode == "max" else min
        return pick(known, key=lambda trial_id: self.best[trial_id][0])

    def _epoch(self, trial: Any) -> int:
        result = trial.last_result or {}
        return int(result.get("epoch") or result.get("training_iteration") or 0)

    def counts(self, trials: list) -> dict[str, int]:
        """Trials done, running, pending (including those not created yet) and failed."""
        status = [t.status for t in trials]
        done, failed = status.count("TERMINATED"), status.count("ERROR")
        running = status.count("RUNNING") + status.count("PAUSED")
        total = max(self.total, len(trials))
        return {"done": done, "running": running, "pending": total - done - failed - running, "failed": failed,
                "total": total}

    def eta(self, trials: list, elapsed: float) -> float | None:
        """Seconds left, from the share of the work done so far (a running trial counts by its epochs)."""
        counts = self.counts(trials)
        if not counts["total"]:
            return None
        running = sum(min(self._epoch(t), self.max_epochs) / self.max_epochs for t in trials if t.status == "RUNNING")
        share = (counts["done"] + counts["failed"] + running) / counts["total"]
        if share <= 0 or elapsed < 1:
            return None
        return elapsed * (1 - share) / share

    def lines(self, trials: list) -> list[str]:
        """The live block: counts and times, the best trial so far, the running trials with their epoch."""
        elapsed = time.monotonic() - self.started
        c = self.counts(trials)
        eta = self.eta(trials, elapsed)
        left = "done" if c["done"] + c["failed"] == c["total"] else (f"~{clock(eta)} left" if eta is not None else "estimating time left")
        head = (f"trials {c['done']}/{c['total']} done, {c['running']} running, {c['pending']} pending, {c['failed']} failed"
                f" | {clock(elapsed)} elapsed, {left}")
        leader = self._leader(trials)
        if leader is None:
            best = f"best: no {self.metric} yet"
        else:
            trial = next(t for t in trials if t.trial_id == leader)
            value, epoch = self.best[leader]
            best = f"best: {self.name(trial, trials)} | {self.metric} {value:.4f} at epoch {epoch}"
        running = [f"{self.name(t, trials)} (epoch {self._epoch(t)}/{self.max_epochs})" for t in trials if t.status == "RUNNING"]
        return [head, best] + (["running: " + ", ".join(running)] if running else [])

    def _state(self, trials: list) -> tuple:
        return (tuple(self.counts(trials).values()), self._leader(trials),
                tuple(sorted((t.trial_id, self._epoch(t)) for t in trials if t.status == "RUNNING")))

    def _show(self, trials: list, final: bool = False) -> None:
        now = time.monotonic()
        out = sys.stdout
        if _is_terminal(out):
            if final or now - self._shown_at >= self.tty_every:
                self._redraw(out, self.lines(trials))
                self._shown_at = now
            return
        state = self._state(trials)
        changed = state != self._shown_state
        if (final and changed) or now - self._shown_at >= (self.line_every if changed else self.quiet_line_every):
            print(" | ".join(line for line in self.lines(trials) if not line.startswith("running: ")), file=out, flush=True)
            self._shown_at, self._shown_state = now, state

    def _redraw(self, out: Any, lines: list[str]) -> None:
        width = max(20, shutil.get_terminal_size((100, 20)).columns - 1)  # a wrapped line would break the redraw
        erase = f"\x1b[{self._drawn}F\x1b[J" if self._drawn else ""
        out.write(erase + "".join(line[:width] + "\n" for line in lines))
        out.flush()
        self._drawn = len(lines)

    def _event(self, trials: list, text: str) -> None:
        """A line that stays: in a terminal, printed above the live block, which is drawn again below it."""
        out = sys.stdout
        if _is_terminal(out):
            if self._drawn:
                out.write(f"\x1b[{self._drawn}F\x1b[J")
                self._drawn = 0
            out.write(text + "\n")
            self._redraw(out, self.lines(trials))
            self._shown_at = time.monotonic()
        else:
            print(text, file=out, flush=True)


def _is_terminal(out: Any) -> bool:
    """True for a terminal that takes cursor moves (not a pipe, a file, or TERM=dumb)."""
    isatty = getattr(out, "isatty", None)
    return bool(isatty and isatty()) and os.environ.get("TERM") != "dumb"
