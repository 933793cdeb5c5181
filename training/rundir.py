"""A training run's folder: the settings it runs with, what it starts from, and its last checkpoint read back.

`leadline train --out RUN` writes config.json, metrics.jsonl, checkpoint.pt, best.pt and loss.png there;
under several processes only rank 0 has the folder, and the checkpoint it reads reaches the others by broadcast.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from leadline.daemon import codec, config
from leadline.daemon.errors import UserError
from leadline.training import cache as cache_mod
from leadline.training import distributed as dist_mod
from leadline.training.callbacks import CHECKPOINT, METRICS, read_metrics, write_atomic
from leadline.training.dataset import summary

log = logging.getLogger(__name__)


def data_summary(data: cache_mod.Cache, data_path: str | Path) -> dict:
    """Where the training data came from and how much of it there is, per split."""
    splits = {}
    for i, s in enumerate(cache_mod.SPLITS):
        songs = len(np.unique(data.index["song"][data.index["split"] == i]))
        splits[s] = {"songs": songs, **summary(data.sequences(s))}
    return {"cache": str(data_path), "cache_abs": str(Path(data_path).resolve()) if data_path else "",
            "sources": data.manifest.get("sources", []), "splits": splits}


def run_meta(cfg: config.Config, data: cache_mod.Cache, data_path, t) -> dict:
    """The parts of a checkpoint that do not change during a run."""
    return {"model_args": t.model.args.as_dict(), "config": config.as_dict(cfg),
            "codec_version": codec.CODEC_VERSION, "data": data_summary(data, data_path),
            "device": str(t.device), "torch": str(torch.__version__),
            "processes": {"world_size": t.world.size, "backend": t.world.backend or None,
                          "global_batch": t.data.batch, "per_process_batch": t.data.n_rows}}


def start_run_dir(out: Path, cfg: config.Config) -> None:
    if (out / CHECKPOINT).exists():
        raise UserError(f"{out} already holds a run; continue it with --resume or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    (out / METRICS).write_text("")
    (out / "config.json").write_text(json.dumps(config.as_dict(cfg), indent=1) + "\n")


def restore(t, out: Path, meta: dict) -> None:
    """Load the run's last checkpoint into trainer `t`, and drop metrics lines written after it."""
    from leadline.training.export import load_checkpoint

    ck = dist_mod.broadcast(t.world, load_checkpoint(out / CHECKPOINT) if t.world.main else None)
    if ck["model_args"] != meta["model_args"]:
        raise UserError(f"{out}: the checkpoint's model {ck['model_args']} differs from the config's "
                        f"{meta['model_args']}; resume without changing train.embed/hidden/layers/dropout")
    t.load_state_dict(ck)
    if "init" in ck:  # a run started with --init says so in every checkpoint
        meta["init"] = ck["init"]
    log.info("resumed %s at step %d (epoch %.2f), saved by %d process(es)", out, t.step, t.epochs_done,
             ck.get("world_size", 1))
    if not t.world.main:
        return
    for stale in out.glob(".*.tmp"):  # a save_atomic/write_atomic cut off by a kill
        stale.unlink(missing_ok=True)
    rows = [r for r in read_metrics(out / METRICS) if r["step"] <= t.step]
    write_atomic(out / METRICS, "".join(json.dumps(r) + "\n" for r in rows))  # a kill here must not lose them
    write_atomic(out / "config.json", json.dumps(meta["config"], indent=1) + "\n")


def resolve_config(args) -> config.Config:
    """The run's settings: --config and --set, or on --resume the run's config.json with --set on top."""
    if not args.resume:
        return config.load(args.config, args.overrides)
    if args.config:
        raise UserError("--resume continues with the run's own config.json; change settings with --set")
    path = Path(args.out) / "config.json"
    if not path.exists():
        raise UserError(f"{args.out}: no run to resume (no config.json); start one without --resume")
    return config.load(path, args.overrides)
