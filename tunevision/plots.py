"""Pictures a person reads: confusion matrices, learning curves, importances, parallel coordinates, Pareto fronts."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence


def confusion_matrix_png(cm: Sequence[Sequence[int]], classes: Sequence[str], path: Path, title: str = "") -> None:
    """Draw `cm` (rows = true, columns = predicted) as a heat map with counts and class names.

    It uses no pyplot state, so a thread may draw while another does (tracking.TrialRecorder draws in one).
    """
    import numpy as np
    from matplotlib.figure import Figure

    matrix = np.asarray(cm)
    k = len(classes)
    side = max(4.0, 0.6 * k + 2.5)
    fig = Figure(figsize=(side, side * 0.9))
    ax = fig.add_subplot()
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(k), labels=[str(c) for c in classes], rotation=45, ha="right")
    ax.set_yticks(range(k), labels=[str(c) for c in classes])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title} (n = {int(matrix.sum())})")
    threshold = matrix.max() / 2 if matrix.size else 0
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center",
                    color="white" if matrix[i, j] > threshold else "black", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def learning_curves_png(curves: Sequence[tuple[str, Sequence[tuple[int, float]], int | None]], metric: str, path: Path,
                        title: str = "") -> None:
    """Draw `metric` per epoch for each (trial name, [(epoch, value)], best epoch); the best epoch gets a dot."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 4.8))
    for name, points, best_epoch in curves:
        epochs, values = [e for e, _ in points], [v for _, v in points]
        (line,) = ax.plot(epochs, values, marker=".", label=name)
        if best_epoch is not None and best_epoch in epochs:
            ax.plot([best_epoch], [values[epochs.index(best_epoch)]], "o", color=line.get_color(), markersize=9)
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title(title or f"{metric} per epoch (large dot: the trial's best epoch)")
    ax.grid(alpha=0.3)
    ax.xaxis.get_major_locator().set_params(integer=True)
    if curves:
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def importances_png(importances: dict[str, float], path: Path, title: str = "") -> None:
    """Draw parameter importances (shares of the metric's variance) as horizontal bars, the largest on top."""
    plt = _pyplot()
    names = list(importances)[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(names) + 1.5))
    bars = ax.barh(names, [importances[n] for n in names], color="tab:blue")
    ax.bar_label(bars, labels=[f"{importances[n]:.2f}" for n in names], padding=3, fontsize=9)
    ax.set_xlim(0, max(1.0, max(importances.values(), default=0) * 1.15))
    ax.set_xlabel("importance (share of the metric's variance explained, fANOVA)")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parallel_coordinates_png(study: object, metric: str, path: Path, title: str = "") -> None:
    """Draw Optuna's parallel-coordinate plot of `study` (one line per trial, the metric on the first axis)."""
    import warnings

    plt = _pyplot()
    from optuna.visualization.matplotlib import plot_parallel_coordinate

    with warnings.catch_warnings():  # Optuna marks its matplotlib plots experimental
        warnings.simplefilter("ignore")
        ax = plot_parallel_coordinate(study, target_name=metric)
    for lines in ax.collections:  # Optuna's white-to-blue map draws the worst trial white, unseen
        lines.set_cmap("viridis")
    fig = ax.figure
    fig.set_size_inches(max(7.0, 1.8 * (len(study.best_trial.params) + 1) + 2), 5)
    ax.set_title(title or f"{metric} against the sampled parameters")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def pareto_png(table: Any, metrics: Sequence[str], modes: Sequence[str], rule: Any, path: Path) -> None:
    """Every epoch of every trial in the two metrics' plane: checkpointed ones, their Pareto front, the chosen one."""
    plt = _pyplot()
    x, y = metrics
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.scatter(table[x], table[y], s=12, color="0.75", label="epoch (no checkpoint)")
    kept = table[table["checkpoint"]]
    ax.scatter(kept[x], kept[y], s=22, color="tab:blue", label="checkpointed epoch")
    front = kept[kept["pareto"]].sort_values(x)
    ax.plot(front[x], front[y], "-o", color="tab:orange", ms=5, label="Pareto front")
    chosen = table[table["chosen"]]
    ax.scatter(chosen[x], chosen[y], s=160, marker="*", color="tab:red", zorder=5, label="chosen")
    if rule.constraint is not None:
        line = ax.axhline if rule.constraint == y else ax.axvline
        line(rule.bound, color="tab:red", ls="--", lw=1, label=f"{rule.constraint} {rule.op} {rule.bound:g}")
    ax.set_xlabel(f"{x} ({modes[0]})")
    ax.set_ylabel(f"{y} ({modes[1]})")
    ax.set_title(f"choose: {rule}", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
