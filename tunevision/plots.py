"""Pictures a person reads: the labelled confusion-matrix heat map, the Pareto front of two metrics."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence


def confusion_matrix_png(cm: Sequence[Sequence[int]], classes: Sequence[str], path: Path, title: str = "") -> None:
    """Draw `cm` (rows = true, columns = predicted) as a heat map with counts and class names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    matrix = np.asarray(cm)
    k = len(classes)
    side = max(4.0, 0.6 * k + 2.5)
    fig, ax = plt.subplots(figsize=(side, side * 0.9))
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
    plt.close(fig)


def pareto_png(table: Any, metrics: Sequence[str], modes: Sequence[str], rule: Any, path: Path) -> None:
    """Every epoch of every trial in the two metrics' plane: checkpointed ones, their Pareto front, the chosen one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
