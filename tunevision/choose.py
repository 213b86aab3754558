"""Which trial wins: the `choose` rule, the points a search can choose from, and its Pareto front.

A rule reads `max val_accuracy` or `max val_accuracy where val_fnr <= 0.08`: the target metric and
its direction, then at most one constraint on the search's other metric. A point meets the rule
when its constraint holds; the winner is the point that meets it with the best target. When no
point meets it, the one closest to meeting it wins (smallest violation), and the search says so.
Points the rule ties (common on small validation splits) go to the lower validation log-loss.

Early stopping (ASHA, `patience`) and each trial's kept checkpoint need one number per epoch. With a
constraint it is `val_objective` = target minus the violation for `max` (plus it, for `min`), in the
metrics' own units: an epoch that meets the constraint is ranked by its target alone, one that
misses it is pushed down by how far it misses. Without a constraint it is the target itself.
"""
from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

from tunevision.errors import TunevisionError

OBJECTIVE = "val_objective"  # what trials report when the rule has a constraint
TIE_BREAK = "val_loss"  # what decides between points the rule ties
_OPS: dict[str, Callable[[float, float], bool]] = {"<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt}
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_RULE = re.compile(rf"(max|min) +([\w.\-/]+)(?: +where +([\w.\-/]+) *(<=|>=|<|>) *({_NUMBER}))?")


@dataclass(frozen=True)
class Rule:
    """`mode metric [where constraint op bound]`, parsed; see the module docstring.

    Example:
        >>> rule = Rule.parse("max val_accuracy where val_fnr <= 0.08")
        >>> rule.meets({"val_accuracy": 0.9, "val_fnr": 0.05}), rule.score({"val_accuracy": 0.9, "val_fnr": 0.1})
        (True, 0.88)
    """

    mode: str
    metric: str
    constraint: str | None = None
    op: str | None = None
    bound: float | None = None

    @classmethod
    def parse(cls, text: str) -> Rule:
        """Parse a rule strictly; anything else is one TunevisionError naming `choose`."""
        match = _RULE.fullmatch(text.strip()) if isinstance(text, str) else None
        if match is None:
            raise TunevisionError(f"choose {text!r}: expected 'max|min METRIC' or 'max|min METRIC where METRIC <=|<|>=|> "
                                  "NUMBER', e.g. 'max val_accuracy where val_fnr <= 0.08'")
        mode, metric, constraint, op, bound = match.groups()
        return cls(mode, metric, constraint, op, float(bound) if bound is not None else None)

    def __str__(self) -> str:
        where = f" where {self.constraint} {self.op} {self.bound:g}" if self.constraint else ""
        return f"{self.mode} {self.metric}{where}"

    @property
    def rank_metric(self) -> str:
        """The one number per epoch that ASHA, patience and kept checkpoints rank on."""
        return OBJECTIVE if self.constraint else self.metric

    def violation(self, figures: Mapping[str, float]) -> float:
        """How far `figures` miss the constraint (0 when met or when there is none)."""
        if self.constraint is None or self.meets(figures):
            return 0.0
        value = float(figures[self.constraint])
        return max(abs(value - self.bound), 1e-12)  # a strict bound that is hit exactly still misses

    def meets(self, figures: Mapping[str, float]) -> bool:
        """True when the constraint holds (always, without one)."""
        return self.constraint is None or _OPS[self.op](float(figures[self.constraint]), self.bound)

    def score(self, figures: Mapping[str, float]) -> float:
        """The target, worsened by the violation: what `val_objective` reports."""
        penalty = self.violation(figures)
        target = float(figures[self.metric])
        return target - penalty if self.mode == "max" else target + penalty

    def key(self, figures: Mapping[str, float]) -> tuple[float, ...]:
        """Sort key, larger is better: meets, smaller violation, better target, more room on the constraint, lower val_loss.

        The last place matters: on a few dozen validation images accuracy and FNR take few values,
        so many epochs tie on them; the log-loss still tells the more confident correct model apart.
        """
        sign = 1.0 if self.mode == "max" else -1.0
        room = 0.0
        if self.constraint is not None:
            room = float(figures[self.constraint]) * (-1.0 if self.op in ("<=", "<") else 1.0)
        loss = float(figures.get(TIE_BREAK, math.inf))
        return (float(self.meets(figures)), -self.violation(figures), sign * float(figures[self.metric]), room,
                -loss if math.isfinite(loss) else -math.inf)

    def metrics(self) -> tuple[str, ...]:
        """The metrics the rule reads."""
        return (self.metric, self.constraint) if self.constraint else (self.metric,)


@dataclass(frozen=True)
class Point:
    """One epoch of one trial that left a checkpoint: a model the search can choose."""

    trial_id: str
    epoch: int
    figures: dict[str, float]
    checkpoint: Any  # a ray.tune.Checkpoint
    config: dict[str, Any]


def kept_points(results: Iterable[Any], rule: Rule) -> list[Point]:
    """Every checkpointed epoch of every trial (Ray keeps each trial's best and latest) with the rule's figures."""
    points = []
    for result in results:
        pairs = list(result.best_checkpoints or [])
        if result.checkpoint is not None:
            pairs.append((result.checkpoint, result.metrics))
        seen = set()
        for checkpoint, figures in pairs:
            epoch = int(figures.get("epoch") or figures.get("training_iteration", 0))
            values = [figures.get(m) for m in rule.metrics()]
            if epoch in seen or any(v is None or not math.isfinite(float(v)) for v in values):
                continue
            seen.add(epoch)
            trial_id = str(figures.get("trial_id") or result.metrics.get("trial_id", ""))
            numbers = {k: float(v) for k, v in figures.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            points.append(Point(trial_id, epoch, numbers, checkpoint, dict(result.config)))
    return points


def best_per_trial(points: Sequence[Point], rule: Rule) -> list[Point]:
    """Each trial's best point by the rule, best trial first (full ties, val_loss included: the earlier trial id)."""
    best: dict[str, Point] = {}
    for p in points:
        if p.trial_id not in best or rule.key(p.figures) > rule.key(best[p.trial_id].figures):
            best[p.trial_id] = p
    return sorted(best.values(), key=lambda p: (tuple(-v for v in rule.key(p.figures)), p.trial_id))


def pareto_front(values: Sequence[Sequence[float]], modes: Sequence[str]) -> list[bool]:
    """For each row of metric values, True when no other row is at least as good in every metric and better in one."""
    signed = [[v if m == "max" else -v for v, m in zip(row, modes)] for row in values]

    def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
        return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))

    return [not any(dominates(other, row) for other in signed) for row in signed]


def reason(rule: Rule, chosen: Mapping[str, float], points: int) -> str:
    """One sentence on why the chosen point won, for the search run."""
    figures = ", ".join(f"{m} = {chosen[m]:.4f}" for m in rule.metrics())
    if rule.meets(chosen):
        return f"'{rule}': the best {rule.metric} of the {points} checkpointed points that meet it ({figures})"
    return (f"'{rule}': no checkpointed point of {points} meets {rule.constraint} {rule.op} {rule.bound:g}; "
            f"the closest one was chosen ({figures})")
