"""After the trials: choose the winner on validation (one trial or an ensemble), calibrate it, set its
decision threshold, test it once and register it.

Everything here reads the validation split, except the one test of the chosen model at the end.
The order: the `choose` rule (choose.py) ranks each trial's checkpointed points; the top
`search.ensemble` trials' averaged probabilities replace the best trial when they beat it on
validation under the same rule; the chosen model's temperature is fitted on validation; with
two classes and `fnr_target`, the threshold that meets it on validation is chosen; then the test
split is scored at that threshold (`test_*`) and, when a threshold was chosen, at 0.5
(`test_at_0.5_*`), and the model is exported and registered (export.py).
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch

from tunevision.calibrate import calibration_error, choose_threshold, combine, decide, fit_temperature
from tunevision.choose import Point, Rule, best_per_trial, kept_points, pareto_front, reason
from tunevision.errors import TunevisionError
from tunevision.metrics import StageMetrics, positive_index
from tunevision.search import Search

HEADLINE = ("accuracy", "balanced_accuracy", "macro_f1", "fnr", "fpr", "loss")  # figures compared in winner.txt


@dataclass(frozen=True)
class Winner:
    """What was registered and how it scored."""

    trial_id: str  # the best single trial (an ensemble's first member)
    config: dict[str, Any]
    figures: dict[str, float]  # that trial's chosen epoch, as it reported it on validation
    test_figures: dict[str, float]  # the registered model at its threshold, once
    model_uri: str
    kind: str = "single"  # or "ensemble"
    members: list[str] = field(default_factory=list)
    temperature: float = 1.0
    threshold: float | None = None


@dataclass
class _Member:
    point: Point
    model: Any  # Classifier
    val_logits: torch.Tensor
    val_labels: torch.Tensor


def check_operating_point(search: Search, classes: Sequence[str]) -> None:
    """Before any trial: fnr_target, and FNR/FPR as metrics, need exactly two classes."""
    if len(classes) == 2:
        return
    if search.fnr_target is not None:
        raise TunevisionError(f"Search(): fnr_target needs two classes, the data has {len(classes)}")
    for metric in search.metrics:
        if metric in ("val_fnr", "val_fpr"):
            raise TunevisionError(f"Search(): metric {metric} needs two classes, the data has {len(classes)}")


def split_logits(model: Any, data: Any, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's logits and the labels of one split, at the image size it was trained at last."""
    from tunevision.data import ImageDataModule

    datamodule = ImageDataModule(data, model.config.final(), model.network.image_size)
    loader = datamodule.val_dataloader() if split == "val" else datamodule.test_dataloader()
    model.eval()
    logits, labels = [], []
    with torch.no_grad():
        for x, y in loader:
            logits.append(model(x))
            labels.append(y)
    return torch.cat(logits), torch.cat(labels)


def _load(point: Point) -> Any:
    from tunevision.models.classifier import Classifier
    from tunevision.trial import CHECKPOINT_FILE

    with point.checkpoint.as_directory() as folder:  # no copy when storage is local; a temporary one otherwise
        return Classifier.load_from_checkpoint(str(Path(folder) / CHECKPOINT_FILE), map_location="cpu", weights_only=True)


def figures(logits: torch.Tensor, labels: torch.Tensor, classes: Sequence[str], prefix: str, positive: int | None,
            threshold: float | None = None) -> dict[str, float]:
    """The contract's figures of one split (`<prefix>_accuracy`, ...) for decisions at `threshold` (None: argmax)."""
    probs = torch.softmax(logits, dim=1)
    stage = StageMetrics(classes, prefix, positive)
    stage.update(decide(probs, threshold, positive), labels)
    out = stage.compute()
    out[f"{prefix}_loss"] = float(torch.nn.functional.cross_entropy(logits, labels))
    return out


def register_winner(results: Iterable[Any], data: Any, search: Search, search_run: Any, log: Callable[[str], None] = print) -> Winner:
    """Choose, calibrate, threshold, test once and register; every figure goes on the search run."""
    from tunevision.export import ModelCard, ServedClassifier, register

    rule = search.rule
    results = list(results)
    points = kept_points(results, rule)
    if not points:
        raise TunevisionError(f"no trial reported {' and '.join(rule.metrics())} with a checkpoint: every trial failed "
                              "(see the trial runs in MLflow)")
    ranked = best_per_trial(points, rule)
    best = ranked[0]
    choice = reason(rule, best.figures, len(points))
    log(f"chosen by {choice}")
    if len(search.metrics) == 2:
        _log_pareto(results, points, best, search, search_run)
    classes = list(data.classes)
    positive = positive_index(classes, search.positive_class)
    members = []
    for point in ranked[: search.ensemble]:
        model = _load(point)
        members.append(_Member(point, model, *split_logits(model, data, "val")))
    chosen, why = _single_or_ensemble(members, rule, classes, positive, search, search_run)
    log(why)

    temperature, threshold, calibration = _operating_point(chosen, classes, positive, search.fnr_target)
    log(f"calibration: temperature {temperature:.3f}, val ECE {calibration['val_ece_uncalibrated']:.4f} -> "
        f"{calibration['val_ece']:.4f}" + (f"; threshold {threshold:.4f} on P({classes[positive]}) for val FNR <= "
                                         f"{search.fnr_target:g} (val FNR {calibration['val_fnr_at_threshold']:.4f})"
                                         if threshold is not None else ""))

    test = [split_logits(m.model, data, "test") for m in chosen]
    test_logits, test_labels = combine([z for z, _ in test]) / temperature, test[0][1]
    test_figures = figures(test_logits, test_labels, classes, "test", positive, threshold)
    test_figures["test_ece"] = calibration_error(torch.softmax(test_logits, 1), test_labels)
    search_run.log_best(best.config, best.trial_id, test_figures, classes)
    if threshold is not None:
        search_run.log_figures(figures(test_logits, test_labels, classes, "test_at_0.5", positive, 0.5))
    search_run.log_figures(calibration)

    kind = "ensemble" if len(chosen) > 1 else "single"
    trial_ids = [m.point.trial_id for m in chosen]
    search_run.set_tags({"tunevision.choose": str(rule), "tunevision.choice": choice, "tunevision.model": kind,
                         "tunevision.model_trials": ",".join(trial_ids), "tunevision.model_reason": why})
    search_run.log_text(_report(rule, choice, why, chosen, calibration, test_figures), "winner.txt")
    card = ModelCard(classes, data.source.channels, [m.model.trained_size() for m in chosen], temperature, threshold,
                     classes[positive] if positive is not None else None, trial_ids, kind)
    module = ServedClassifier([m.model.network for m in chosen], card.image_sizes, temperature)
    model_uri = register(search_run, module, card, search.name)
    return Winner(best.trial_id, dict(best.config), best.figures, test_figures, model_uri, kind, trial_ids,
                  temperature, threshold)


def _operating_point(chosen: list[_Member], classes: list[str], positive: int | None,
                     fnr_target: float | None) -> tuple[float, float | None, dict[str, float]]:
    """Temperature and (with `fnr_target`) threshold fitted on validation, and the figures that show them."""
    labels = chosen[0].val_labels
    val_logits = combine([m.val_logits for m in chosen])
    temperature = fit_temperature(val_logits, labels)
    calibrated = torch.softmax(val_logits / temperature, 1)
    calibration = {"temperature": temperature,
                   "val_ece_uncalibrated": calibration_error(torch.softmax(val_logits, 1), labels),
                   "val_ece": calibration_error(calibrated, labels)}
    if fnr_target is None or positive is None:
        return temperature, None, calibration
    threshold = choose_threshold(calibrated[:, positive], labels == positive, fnr_target)
    at = figures(val_logits / temperature, labels, classes, "val", positive, threshold)
    return temperature, threshold, {**calibration, "threshold": threshold, "fnr_target": fnr_target,
                                    "val_fnr_at_threshold": at["val_fnr"], "val_fpr_at_threshold": at["val_fpr"]}


def _single_or_ensemble(members: list[_Member], rule: Rule, classes: list[str], positive: int | None, search: Search,
                        search_run: Any) -> tuple[list[_Member], str]:
    """The best trial alone, or the top trials averaged when that is better on validation under the rule."""
    if len(members) < 2:
        why = "ensemble=1" if search.ensemble == 1 else "only one trial has a checkpoint"
        return members[:1], f"model: the best trial alone ({why})"
    labels = members[0].val_labels
    single = figures(members[0].val_logits, labels, classes, "val", positive)
    together = figures(combine([m.val_logits for m in members]), labels, classes, "val", positive)
    search_run.log_figures({f"{kind}_{k}": v for kind, f in (("single", single), ("ensemble", together))
                            for k, v in f.items() if k.split("_", 1)[1] in HEADLINE or k in rule.metrics()})

    def shown(f: dict[str, float]) -> str:
        return ", ".join(f"{m} {f[m]:.4f}" for m in rule.metrics())

    k = len(members)
    if ensemble_is_better(rule, together, single):
        return members, (f"model: ensemble of the top {k} trials (averaged probabilities), better on validation under "
                         f"'{rule}', then on val_loss: {shown(together)}, val_loss {together['val_loss']:.4f} against "
                         f"the best trial's {shown(single)}, val_loss {single['val_loss']:.4f}")
    return members[:1], (f"model: the best trial alone; the ensemble of the top {k} trials is not better on validation "
                         f"under '{rule}', then on val_loss: {shown(together)}, val_loss {together['val_loss']:.4f} "
                         f"against {shown(single)}, val_loss {single['val_loss']:.4f}")


def ensemble_is_better(rule: Rule, together: dict[str, float], single: dict[str, float]) -> bool:
    """Whether the ensemble wins on validation under the rule, whose last tie-break is the lower log-loss.

    Ties are the common case once the best trial was itself chosen for its validation accuracy (a few
    dozen images leave few values to tie on); averaging members lowers variance, and the log-loss
    still tells the better-founded probabilities apart where the decisions agree.
    """
    return rule.key(together) > rule.key(single)


def _report(rule: Rule, choice: str, why: str, chosen: list[_Member], calibration: dict[str, float],
            test_figures: dict[str, float]) -> str:
    lines = [f"rule: {rule}", f"chosen point: {choice}", why, "trials (epoch):"]
    lines += [f"  {m.point.trial_id} ({m.point.epoch}): " + ", ".join(f"{k} {m.point.figures[k]:.4f}" for k in rule.metrics())
              for m in chosen]
    lines += [f"{k}: {v:.4f}" for k, v in calibration.items()]
    lines += [f"{k}: {v:.4f}" for k, v in test_figures.items() if k.split("_", 1)[1] in HEADLINE + ("ece",)]
    return "\n".join(lines) + "\n"


def _log_pareto(results: list[Any], points: list[Point], chosen: Point, search: Search, search_run: Any) -> None:
    """pareto/front.csv (every epoch; the front among the checkpointed ones) and pareto/front.png on the search run."""
    import tempfile

    import pandas as pd

    from tunevision.plots import pareto_png

    metrics, modes = search.metrics, search.modes
    frames = [r.metrics_dataframe for r in results if r.metrics_dataframe is not None]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["trial_id", "epoch", *metrics])
    table = table.dropna(subset=list(metrics))[["trial_id", "epoch", *metrics]].copy()
    table["trial_id"] = table["trial_id"].astype(str)
    table["epoch"] = table["epoch"].astype(int)
    kept = {(p.trial_id, p.epoch) for p in points}
    table["checkpoint"] = [(t, e) in kept for t, e in zip(table["trial_id"], table["epoch"])]
    table["pareto"] = False
    candidates = table[table["checkpoint"]]
    table.loc[candidates.index, "pareto"] = pareto_front(candidates[list(metrics)].to_numpy().tolist(), modes)
    table["chosen"] = (table["trial_id"] == chosen.trial_id) & (table["epoch"] == chosen.epoch)
    table = table.sort_values(["trial_id", "epoch"])
    buffer = io.StringIO()
    table.to_csv(buffer, index=False)
    search_run.log_text(buffer.getvalue(), "pareto/front.csv")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "front.png"
        pareto_png(table, metrics, modes, search.rule, path)
        search_run.log_file(path, "pareto")
