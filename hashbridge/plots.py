"""Learning-curve PNGs for the demo (matplotlib, headless)."""
from __future__ import annotations

from pathlib import Path


def learning_curve(points: list[dict[str, float]], path: str | Path, baseline: dict[str, float] | None = None,
                   title: str = "hashbridge on UCI Adult") -> Path:
    """Logloss and AUC against records seen; dashed lines: the exact baseline on test."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [p["records"] for p in points]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(xs, [p["logloss"] for p in points], marker=".", label="hashbridge model (test)")
    ax2.plot(xs, [p["auc"] for p in points], marker=".", label="hashbridge model (test)")
    if baseline:
        ax1.axhline(baseline["logloss"], ls="--", c="gray", label="exact one-hot LR (test)")
        ax2.axhline(baseline["auc"], ls="--", c="gray", label="exact one-hot LR (test)")
    ax1.set(xlabel="records seen", ylabel="logloss", title="logloss")
    ax2.set(xlabel="records seen", ylabel="AUC", title="AUC")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
