"""Training callbacks and the run directory's files: metrics, checkpoints, the loss plot, the progress bar.

They hang off `leadline.training.trainer.Trainer` (the loop itself); each writes what it owns atomically, so a kill
at any moment leaves the previous file or the new one.
"""
from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from leadline.training.trainer import Trainer

log = logging.getLogger(__name__)
LN2 = math.log(2.0)
CHECKPOINT, BEST, METRICS = "checkpoint.pt", "best.pt", "metrics.jsonl"


class Callback:
    def on_step(self, t: Trainer) -> None: ...
    def on_epoch_end(self, t: Trainer) -> None: ...
    def on_stop(self, t: Trainer, reason: str) -> None: ...


class Metrics(Callback):
    """Appends one JSON line per epoch to metrics.jsonl."""

    def __init__(self, out: Path) -> None:
        self.path = out / METRICS

    def on_epoch_end(self, t: Trainer) -> None:
        a = t.acc
        train = a["loss"] / a["events"] if a["events"] else None
        row = {"epoch": round(t.epochs_done, 4), "step": t.step, "train_loss": train,
               "train_bits": None if train is None else train / LN2, "val_loss": t.val_loss,
               "val_bits": None if t.val_loss is None else t.val_loss / LN2,
               "events_per_s": a["events"] / a["seconds"] if a["seconds"] else None, "lr": t.lr,
               "elapsed": round(t.now_elapsed(), 2)}
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        log.info("epoch %.2f step %d: train %s val %s bits/event", row["epoch"], t.step,
                 _fmt(row["train_bits"]), _fmt(row["val_bits"]))


class Checkpointer(Callback):
    """checkpoint.pt after every epoch and on interrupt; best.pt whenever validation improves."""

    def __init__(self, out: Path, meta: dict) -> None:
        self.out, self.meta = out, meta

    def save(self, t: Trainer, name: str) -> None:
        state = t.state_dict()  # on every process: it gathers the LSTM state; rank 0 writes
        if t.world.main:
            save_atomic({**self.meta, **state}, self.out / name)

    def on_epoch_end(self, t: Trainer) -> None:
        self.save(t, CHECKPOINT)
        if t.improved:
            self.save(t, BEST)

    def on_stop(self, t: Trainer, reason: str) -> None:
        if reason == "interrupted":
            self.save(t, CHECKPOINT)
            if t.world.main:
                log.warning("interrupted at step %d; checkpoint saved in %s", t.step, self.out)


class LossPlot(Callback):
    """loss.png redrawn from metrics.jsonl after every epoch."""

    def __init__(self, out: Path) -> None:
        self.out = out

    def on_epoch_end(self, t: Trainer) -> None:
        from leadline.training.plots import loss_curve

        rows = read_metrics(self.out / METRICS)
        if rows:
            loss_curve(rows, self.out / "loss.png", title=f"{t.model.args.layers}x{t.model.args.hidden} LSTM")


class Progress(Callback):
    """tqdm bar over optimizer steps with this epoch's mean loss (bits/event) and training events/s (on rank 0
    alone under torchrun)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled, self.bar = enabled, None

    def on_step(self, t: Trainer) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=t.total, initial=t.step - 1, unit="step", disable=not self.enabled,
                            dynamic_ncols=True, desc="train")
        self.bar.update(1)
        a = t.acc
        loss = a["loss"] / max(a["events"], 1) / LN2
        if t.step % 10 == 0 or t.step == 1:
            # rank 0's share of the batch times the processes: events/s of the whole run
            ev_s = a["events"] * t.world.size / max(a["seconds"], 1e-9)
            self.bar.set_postfix(bits=f"{loss:.3f}", ev_s=f"{ev_s:.0f}",
                                 epoch=f"{t.epochs_done:.2f}", refresh=False)

    def on_stop(self, t: Trainer, reason: str) -> None:
        if self.bar is not None:
            self.bar.close()


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


def save_atomic(obj: dict, path: Path) -> None:
    """torch.save to a temporary sibling, then rename: a crash never leaves a half-written checkpoint."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: Path, text: str) -> None:
    """`path.write_text(text)` through a temporary sibling: a crash leaves the old file or the new one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_metrics(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
