"""The `Search` description and loading it from a search file."""
from __future__ import annotations

import dataclasses
import re
import runpy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

from tunevision.data.base import DataSource
from tunevision.errors import TunevisionError
from tunevision.space import KEYS

SEARCHERS = ("optuna", "random", "grid")
SCHEDULERS = ("asha", "fifo")
# Metrics every trial reports each epoch; per-class ones are "<name>.<class>".
METRICS = ("val_accuracy", "val_balanced_accuracy", "val_macro_f1", "val_loss", "val_fnr", "val_fpr")
PER_CLASS_METRICS = ("val_precision", "val_recall", "val_f1")


@dataclass(frozen=True)
class Search:
    """Everything one search needs: data, model space, budget. Defined in a search file as `search`.

    Example:
        >>> from ray import tune
        >>> from tunevision.data import Digits
        >>> s = Search(name="digits", data=Digits(), space={"backbone": "cnn", "lr": tune.loguniform(1e-4, 1e-2)})
        >>> s.metric, s.mode
        ('val_accuracy', 'max')
    """

    name: str
    data: DataSource
    space: Mapping[str, Any] = field(default_factory=dict)  # space keys -> constants or tune.* domains
    metric: str | tuple[str, ...] = "val_accuracy"  # one metric, or two for Optuna's multi-objective search
    mode: str | tuple[str, ...] = "max"  # one direction per metric
    choose: str | None = None  # the winner: "max val_accuracy where val_fnr <= 0.08"; default: the first metric's best
    trials: int = 10
    max_epochs: int = 10
    patience: int | None = None  # early stopping on `metric`, in epochs; None = off
    grace_period: int = 1  # ASHA: epochs every trial gets before it can be stopped
    searcher: str = "optuna"
    scheduler: str = "asha"
    positive_class: str | None = None  # two-class data: class whose FNR/FPR are reported; default: second in sorted order
    fnr_target: float | None = None  # two classes: the decision threshold is the highest whose val FNR <= this
    ensemble: int = 3  # try the top N trials' averaged probabilities; registered when better on validation (1 = never)
    seed: int = 0  # split seed and searcher seed
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_concurrent: int | None = None
    max_failures: int = 2  # retries of a trial that crashes (node loss), from its last checkpoint
    feature_cache: bool = True  # frozen backbones: compute their features once (tunevision.data.features)

    def __post_init__(self) -> None:
        def bad(what: str) -> TunevisionError:
            return TunevisionError(f"Search(): {what}")

        if not isinstance(self.name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", self.name):
            raise bad(f"name {self.name!r} must be letters, digits, '_', '.' or '-'")
        if not isinstance(self.data, DataSource):
            raise bad(f"data must be a tunevision data source (ImageFolder, LabelTable, Digits...), got {type(self.data).__name__}")
        self._check_objectives(bad)
        for name in ("trials", "max_epochs", "grace_period"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise bad(f"{name} must be a whole number >= 1, got {value!r}")
        if self.patience is not None and (not isinstance(self.patience, int) or self.patience < 1):
            raise bad(f"patience must be None or a whole number >= 1, got {self.patience!r}")
        if self.searcher not in SEARCHERS:
            raise bad(f"searcher {self.searcher!r} is unknown (known: {', '.join(SEARCHERS)})")
        if self.scheduler not in SCHEDULERS:
            raise bad(f"scheduler {self.scheduler!r} is unknown (known: {', '.join(SCHEDULERS)})")
        if self.cpus_per_trial <= 0 or self.gpus_per_trial < 0:
            raise bad("cpus_per_trial must be > 0 and gpus_per_trial >= 0")
        if not isinstance(self.feature_cache, bool):
            raise bad(f"feature_cache must be True or False, got {self.feature_cache!r}")
        if self.fnr_target is not None and (isinstance(self.fnr_target, bool) or not isinstance(self.fnr_target, (int, float))
                                            or not 0 <= self.fnr_target < 1):
            raise bad(f"fnr_target must be None or a number from 0 to below 1, got {self.fnr_target!r}")
        if not isinstance(self.ensemble, int) or isinstance(self.ensemble, bool) or self.ensemble < 1:
            raise bad(f"ensemble must be a whole number >= 1 (1 = never an ensemble), got {self.ensemble!r}")
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise bad(f"max_concurrent must be None or >= 1, got {self.max_concurrent!r}")
        if not isinstance(self.space, Mapping):
            raise bad(f"space must be a dict, got {type(self.space).__name__}")
        for key in self.space:
            if key not in KEYS:
                raise TunevisionError(f"space[{key!r}]: unknown key (known: {', '.join(sorted(KEYS))})")
        if self.searcher == "optuna" and any(is_grid(v) for _, v in walk_space(self.space)):
            raise TunevisionError("space: tune.grid_search needs searcher='grid' or 'random' (Optuna samples, it does not enumerate)")

    def _check_objectives(self, bad: Any) -> None:
        """metric/mode: one or two known metrics, one direction each; choose: a rule on them (choose.py)."""
        for name in ("metric", "mode"):  # lists become tuples: the Search stays hashable and frozen
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        metrics, modes = self.metrics, self.modes
        if not 1 <= len(metrics) <= 2 or len(set(metrics)) != len(metrics) or not all(isinstance(m, str) for m in metrics):
            raise bad(f"metric {self.metric!r} must be one metric name or two different ones")
        for metric in metrics:
            if metric not in METRICS and metric.split(".", 1)[0] not in PER_CLASS_METRICS:
                raise bad(f"metric {metric!r} is not reported (known: {', '.join(METRICS + PER_CLASS_METRICS)})")
        if len(modes) != len(metrics) or any(m not in ("min", "max") for m in modes):
            raise bad(f"mode {self.mode!r} must be 'min' or 'max', one per metric")
        try:
            rule = self.rule
        except TunevisionError as e:
            raise bad(str(e)) from None
        where = f"choose {self.choose!r}"
        if rule.metric not in metrics:
            raise bad(f"{where}: {rule.metric} is not the search's metric {self.metric!r}")
        if rule.mode != modes[metrics.index(rule.metric)]:
            raise bad(f"{where}: the search's mode for {rule.metric} is {modes[metrics.index(rule.metric)]!r}")
        if rule.constraint is not None and (rule.constraint not in metrics or rule.constraint == rule.metric):
            raise bad(f"{where}: the constraint must be on the search's other metric (metric={self.metric!r})")

    @property
    def metrics(self) -> tuple[str, ...]:
        """The metric(s) Optuna optimises, as a tuple."""
        return (self.metric,) if isinstance(self.metric, str) else tuple(self.metric)

    @property
    def modes(self) -> tuple[str, ...]:
        """Their directions, as a tuple."""
        return (self.mode,) if isinstance(self.mode, str) else tuple(self.mode)

    @property
    def rule(self) -> Any:
        """The parsed `choose` rule (choose.Rule); without one, the first metric's best."""
        from tunevision.choose import Rule

        return Rule.parse(self.choose if self.choose is not None else f"{self.modes[0]} {self.metrics[0]}")

    def replace(self, **changes: Any) -> Search:
        """Return a copy with `changes` applied (and validated again); None values are ignored."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def candidates(self, key: str) -> list[Any]:
        """Every value the space can give `key`: a constant, a choice's categories, a grid's values."""
        value = self.space.get(key, KEYS[key].default)
        return _candidates(value)


def is_grid(value: Any) -> bool:
    """True for a `tune.grid_search([...])` value."""
    return isinstance(value, dict) and set(value) == {"grid_search"}


def walk_space(space: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Yield ("augment/hflip", value) for every leaf of a nested space."""
    for key, value in space.items():
        if isinstance(value, dict) and not is_grid(value):
            yield from walk_space(value, f"{prefix}{key}/")
        else:
            yield f"{prefix}{key}", value


def _candidates(value: Any) -> list[Any]:
    from ray.tune.search.sample import Categorical, Domain

    if is_grid(value):
        return list(value["grid_search"])
    if isinstance(value, Categorical):
        return list(value.categories)
    if isinstance(value, Domain):
        return []  # numeric ranges: nothing to enumerate
    return [value]


def load_search_file(path: str | Path) -> Search:
    """Run a search file and return its `search`; every failure is one TunevisionError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise TunevisionError(f"{path}: no such search file")
    try:
        namespace = runpy.run_path(str(path), run_name="__tunevision_search__")
    except SyntaxError as e:
        raise TunevisionError(f"{path}:{e.lineno}: syntax error: {e.msg}") from None
    except TunevisionError as e:
        raise TunevisionError(f"{path}: {e}") from None
    except TypeError as e:
        unknown = re.search(r"unexpected keyword argument '(\w+)'", str(e))
        if unknown and "Search" in str(e):
            known = ", ".join(f.name for f in dataclasses.fields(Search))
            raise TunevisionError(f"{path}: Search(): unknown option {unknown.group(1)!r} (known: {known})") from None
        raise TunevisionError(f"{path}: {type(e).__name__}: {e}") from None
    except Exception as e:  # the user's code failed: name the file and the error, skip the traceback
        raise TunevisionError(f"{path}: {type(e).__name__}: {e}") from None
    search = namespace.get("search")
    if search is None:
        raise TunevisionError(f"{path}: defines no `search` (expected: search = tunevision.Search(...))")
    if not isinstance(search, Search):
        raise TunevisionError(f"{path}: `search` is a {type(search).__name__}, expected tunevision.Search(...)")
    return search
