"""Learning-curve PNGs for the demo (matplotlib, headless)."""
from __future__ import annotations

from pathlib import Path


def learning_curve(progressive: list[dict[str, float]], tested: list[dict[str, float]], path: str | Path,
                   baseline: dict[str, float] | None = None, title: str = "hashbridge on UCI Adult") -> Path:
    """Logloss and AUC against records seen: the trainer's progressive validation (each record
    scored before it was learned), each published model on the test file, and the exact baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, metric in ((ax1, "logloss"), (ax2, "auc")):
        if progressive:
            ax.plot([p["records"] for p in progressive], [p[metric] for p in progressive], marker=".",
                    label="progressive validation (trainer, train stream)")
        if tested:
            ax.plot([p["records"] for p in tested], [p[metric] for p in tested], marker="o",
                    label="published model on adult.test")
        if baseline:
            ax.axhline(baseline[metric], ls="--", c="gray", label="exact one-hot LR on adult.test")
        ax.set(xlabel="training records seen", ylabel=metric.upper() if metric == "auc" else metric,
               title="AUC (higher is better)" if metric == "auc" else "logloss (lower is better)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if progressive:  # the first few hundred records are noise; keep the interesting range in view
        tail = [p["auc"] for p in progressive[len(progressive) // 10:]] + ([baseline["auc"]] if baseline else [])
        ax2.set_ylim(max(0.5, min(tail) - 0.02), min(1.0, max(tail) + 0.01))
    fig.suptitle(title)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def read_curve(path: str | Path) -> list[dict[str, float]]:
    """The trainer's ``progress.jsonl`` as a list of points (empty if it does not exist)."""
    import json

    p = Path(path)
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
