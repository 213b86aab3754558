"""The choose rule: strict parsing, ranking with a constraint, the rank metric, the points and the Pareto front."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from tunevision.choose import OBJECTIVE, Point, Rule, best_per_trial, kept_points, pareto_front
from tunevision.errors import TunevisionError


@pytest.mark.parametrize("text", ["maximize val_accuracy", "max", "max val_accuracy where", "max val_accuracy where val_fnr",
                                  "max val_accuracy where val_fnr == 0.1", "max val_accuracy and val_fnr <= 0.1",
                                  "max val_accuracy where val_fnr <= 0.1 where val_fpr <= 0.2", ""])
def test_rule_that_does_not_parse_is_one_line_naming_choose(text):
    with pytest.raises(TunevisionError, match=r"^choose '.*': expected 'max\|min METRIC'") as info:
        Rule.parse(text)
    assert "\n" not in str(info.value)


def test_rule_parses_target_and_constraint_and_ranks_on_the_objective_only_with_a_constraint():
    rule = Rule.parse("  max val_accuracy where val_fnr<=.08 ")
    assert (rule.mode, rule.metric, rule.constraint, rule.op, rule.bound) == ("max", "val_accuracy", "val_fnr", "<=", 0.08)
    assert str(rule) == "max val_accuracy where val_fnr <= 0.08" and rule.rank_metric == OBJECTIVE
    assert Rule.parse("min val_loss").rank_metric == "val_loss"


def test_objective_is_the_target_worsened_by_how_far_the_constraint_is_missed():
    rule = Rule.parse("max val_accuracy where val_fnr <= 0.1")
    assert rule.score({"val_accuracy": 0.9, "val_fnr": 0.05}) == 0.9
    assert rule.score({"val_accuracy": 0.9, "val_fnr": 0.25}) == pytest.approx(0.75)
    low = Rule.parse("min val_loss where val_accuracy >= 0.8")
    assert low.score({"val_loss": 0.5, "val_accuracy": 0.7}) == pytest.approx(0.6)
    assert not Rule.parse("max val_accuracy where val_fnr < 0.1").meets({"val_accuracy": 1.0, "val_fnr": 0.1})


def point(trial: str, epoch: int, accuracy: float, fnr: float) -> Point:
    return Point(trial, epoch, {"val_accuracy": accuracy, "val_fnr": fnr}, None, {"trial": trial})


def test_trials_rank_by_their_best_point_meeting_the_constraint_first_then_the_smallest_violation():
    rule = Rule.parse("max val_accuracy where val_fnr <= 0.1")
    points = [point("a", 1, 0.99, 0.30), point("a", 2, 0.90, 0.08), point("b", 2, 0.95, 0.10),
              point("c", 1, 0.97, 0.20), point("d", 1, 0.98, 0.15)]
    ranked = best_per_trial(points, rule)
    assert [(p.trial_id, p.epoch) for p in ranked] == [("b", 2), ("a", 2), ("d", 1), ("c", 1)]
    assert best_per_trial([point("x", 1, 0.9, 0.4), point("y", 1, 0.8, 0.2)], rule)[0].trial_id == "y"  # none meets it


def test_kept_points_are_each_trials_checkpointed_epochs_once_without_nan_figures():
    rule = Rule.parse("max val_accuracy where val_fnr <= 0.1")
    best = {"epoch": 2, "trial_id": "t1", "val_accuracy": 0.9, "val_fnr": 0.05}
    last = {"epoch": 3, "trial_id": "t1", "val_accuracy": 0.8, "val_fnr": 0.0}
    results = [SimpleNamespace(best_checkpoints=[("ck2", best)], checkpoint="ck3", metrics=last, config={"lr": 1}),
               SimpleNamespace(best_checkpoints=[("ck1", {**best, "trial_id": "t2"})], checkpoint="ck1",
                               metrics={**best, "trial_id": "t2"}, config={"lr": 2}),
               SimpleNamespace(best_checkpoints=[("ck", {**best, "trial_id": "t3", "val_fnr": math.nan})], checkpoint=None,
                               metrics={}, config={})]
    points = kept_points(results, rule)
    assert [(p.trial_id, p.epoch, p.checkpoint) for p in points] == [("t1", 2, "ck2"), ("t1", 3, "ck3"), ("t2", 2, "ck1")]
    assert points[2].config == {"lr": 2}


def test_pareto_front_keeps_the_rows_no_other_row_dominates():
    rows = [[0.9, 0.10], [0.95, 0.20], [0.85, 0.05], [0.85, 0.15], [0.9, 0.10]]
    assert pareto_front(rows, ["max", "min"]) == [True, True, True, False, True]


def test_points_the_rule_ties_go_to_the_lower_validation_log_loss_within_and_across_trials():
    rule = Rule.parse("max val_accuracy where val_fnr <= 0.1")

    def at(trial: str, epoch: int, loss: float) -> Point:
        return Point(trial, epoch, {"val_accuracy": 0.95, "val_fnr": 0.05, "val_loss": loss}, None, {})

    ranked = best_per_trial([at("a", 1, 0.40), at("a", 2, 0.10), at("b", 1, 0.20), at("c", 3, math.nan)], rule)
    assert [(p.trial_id, p.epoch) for p in ranked] == [("a", 2), ("b", 1), ("c", 3)]  # a NaN loss ranks last
    better = {"val_accuracy": 0.96, "val_fnr": 0.05, "val_loss": 0.9}
    assert rule.key(better) > rule.key({"val_accuracy": 0.95, "val_fnr": 0.05, "val_loss": 0.01})  # the rule first
