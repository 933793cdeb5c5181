"""Training plots: the loss curve (train and validation bits per event against epochs), drawn headless."""
from __future__ import annotations

import os
from pathlib import Path


def loss_curve(rows: list[dict], path: str | Path, title: str = "") -> Path:
    """Draw train and validation bits/event of `rows` (metrics.jsonl lines) to a PNG, atomically."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    path = Path(path)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    try:
        epochs = [r["epoch"] for r in rows]
        ax.plot(epochs, [r["train_bits"] for r in rows], "o-", label="train")
        val = [(r["epoch"], r["val_bits"]) for r in rows if r.get("val_bits") is not None]
        if val:
            ax.plot(*zip(*val), "s-", label="validation")
            best = min(val, key=lambda v: v[1])
            ax.annotate(f"best {best[1]:.3f}", best, textcoords="offset points", xytext=(0, 8), ha="center")
        ax.set_xlabel("epoch")
        ax.set_ylabel("bits / event")
        ax.set_title(title or "lead-line LSTM loss")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        tmp = path.with_name(f".{path.name}.tmp")
        fig.savefig(tmp, format="png")
        os.replace(tmp, path)
    finally:
        plt.close(fig)
    return path
