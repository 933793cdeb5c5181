"""The training loop: truncated BPTT over a cache's song streams (AdamW, clipping, warm-up + cosine LR).

`Trainer` runs the loop only; validation with early stopping (here), metrics, checkpoints, the loss plot and
the progress bar are small callbacks (training/callbacks.py); the run folder is training/rundir.py. Everything
that decides the next step is in the checkpoint (weights, optimizer, torch RNG states, carried LSTM state,
position in the epoch), and the data
order of an epoch is a function of (seed, epoch), so an interrupted run resumed with `--resume` ends with
the same weights as an uninterrupted one. Ctrl-C or SIGTERM finish the current step, save, and exit 0.
Under `torchrun` the same loop runs on every process (training/distributed.py): DDP, rank 0 alone writes.
"""
from __future__ import annotations

import json
import logging
import math
import random
import signal
import threading
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from leadline.daemon import codec, config, harmony
from leadline.daemon.errors import UserError
from leadline.training import cache as cache_mod
from leadline.training import distributed as dist_mod
from leadline.training import rundir
from leadline.training.callbacks import LN2, Callback, Checkpointer, LossPlot, Metrics, Progress
from leadline.training.dataset import IGNORE, Streams, segments, summary
from leadline.training.distributed import SINGLE, World
from leadline.training.model import LeadLSTM, ModelArgs, unpack

log = logging.getLogger(__name__)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device: 'cuda' but torch sees no CUDA GPU; use --set train.device=cpu")
    return torch.device(name)


def seed_everything(seed: int, device: torch.device) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)


def lr_at(step: int, base: float, total: int, warmup: int, final: float = 0.02) -> float:
    """Learning rate for optimizer step `step` (0-based): linear warm-up, then cosine down to base*final."""
    if step < warmup:
        return base * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (final + (1 - final) * 0.5 * (1 + math.cos(math.pi * t)))


class ChunkStep(torch.nn.Module):
    """One chunk through the model as one module call (what DDP wraps: one forward per backward)."""

    def __init__(self, model: LeadLSTM) -> None:
        super().__init__()
        self.model = model

    def forward(self, xt: torch.Tensor, segs: list, h: torch.Tensor, c: torch.Tensor):
        outs = []
        for a, b, reset in segs:
            if reset.any():
                keep = torch.from_numpy(~reset).to(h.device, h.dtype).view(1, -1, 1)
                h, c = h * keep, c * keep
            logits, h, c = self.model(*unpack(xt[:, a:b]), h, c)
            outs.append(logits)
        return torch.cat(outs, dim=1), h, c


def forward_chunk(model: LeadLSTM | torch.nn.Module, x: np.ndarray, h: torch.Tensor, c: torch.Tensor):
    """Run one chunk carrying (h, c), zeroing a stream's state where it starts a song (reads BOS).

    `model`: a LeadLSTM, or a ChunkStep (in DDP or not)."""
    step = model if not isinstance(model, LeadLSTM) else ChunkStep(model)
    return step(torch.from_numpy(x).to(h.device), segments(x), h, c)


def drop_harmony(x: np.ndarray, p: float, seed: int) -> np.ndarray:
    """`x` (packed chunk) with the harmony of each row zeroed with probability `p` (harmony dropout: the model
    also learns to play with no backing, as most live sessions have none)."""
    drop = np.random.default_rng(seed).random(x.shape[0]) < p
    if not drop.any():
        return x
    x = x.copy()
    x[drop] &= 0xFFFF
    return x


def chunk_loss(logits: torch.Tensor, y: np.ndarray) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy (nats) over a chunk's real targets, and how many there are."""
    yt = torch.from_numpy(y).to(logits.device)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), yt.reshape(-1), ignore_index=IGNORE,
                           reduction="sum")
    return loss, int((y != IGNORE).sum())


@torch.no_grad()
def evaluate(model: LeadLSTM, streams: Streams, device: torch.device, world: World = SINGLE) -> float | None:
    """Mean loss (nats per event) of `streams`, every song scored from a zero state; None if empty.

    Each process scores its own rows; the sums are added over processes."""
    if not streams.n_events:
        return None
    model.eval()
    h, c = model.init_state(streams.n_rows, device)
    total, n = 0.0, 0
    for i in range(streams.n_chunks(0)):
        x, y = streams.get(0, i)
        logits, h, c = forward_chunk(model, x, h, c)
        loss, k = chunk_loss(logits, y)
        total, n = total + float(loss), n + k
    total, n = dist_mod.all_sum(world, [total, n], device)
    return total / max(n, 1)


class Interrupts:
    """Ctrl-C and SIGTERM set `requested`, which the loop checks between steps; a second Ctrl-C raises."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict = {}

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("stopping after this step (signal %d); Ctrl-C again to stop at once", signum)

    def __enter__(self) -> "Interrupts":
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


class Trainer:
    """The loop over epochs and chunks; callbacks get `on_step`, `on_epoch_end` and `on_stop(reason)`."""

    def __init__(self, model: LeadLSTM, opt: torch.optim.Optimizer, data: Streams, cfg: config.TrainConfig,
                 device: torch.device, world: World = SINGLE) -> None:
        self.model, self.opt, self.data, self.cfg, self.device, self.world = model, opt, data, cfg, device, world
        self.step_fn = dist_mod.wrap(ChunkStep(model), world, device)
        steps = cfg.epochs * data.n_chunks(0)
        self.total = min(steps, cfg.max_steps) if cfg.max_steps else steps
        self.warmup = max(1, min(1000, self.total // 20))
        self.epoch = self.batch = self.step = 0
        self.elapsed = 0.0
        self.state = model.init_state(data.n_rows, device)
        self.acc = {"loss": 0.0, "events": 0, "seconds": 0.0}  # this epoch's training so far
        self.val_loss: float | None = None
        self.best = {"val_loss": None, "epoch": 0, "step": 0}
        self.bad_epochs = 0
        self.improved = False
        self.finished = False  # early stop, epochs or max_steps reached
        self.lr = lr_at(0, cfg.lr, self.total, self.warmup)
        self._t0 = time.perf_counter()

    @property
    def epochs_done(self) -> float:
        return self.epoch + self.batch / max(1, self.data.n_chunks(self.epoch))

    def now_elapsed(self) -> float:
        return self.elapsed + time.perf_counter() - self._t0

    def train_step(self, x: np.ndarray, y: np.ndarray, n_all: int | None = None) -> float:
        """One optimizer step on one chunk (this process's rows of it); returns this process's share of the
        chunk's mean loss (nats per event). `n_all`: targets in the chunk over every process's rows."""
        t = time.perf_counter()
        self.model.train()
        if self.cfg.harmony_dropout > 0:
            x = drop_harmony(x, self.cfg.harmony_dropout, rank_seed(self.cfg.seed, self.world.rank, self.step))
        logits, h, c = forward_chunk(self.step_fn, x, *self.state)
        loss_sum, n = chunk_loss(logits, y)
        # DDP averages gradients over processes: scaled by their number, the sum over the global batch's targets
        loss = loss_sum * self.world.size / max(n if n_all is None else n_all, 1)
        self.lr = lr_at(self.step, self.cfg.lr, self.total, self.warmup)
        for g in self.opt.param_groups:
            g["lr"] = self.lr
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip)
        self.opt.step()
        self.state = (h.detach(), c.detach())
        self.step += 1
        self.acc["loss"] += float(loss_sum.detach())
        self.acc["events"] += n
        self.acc["seconds"] += time.perf_counter() - t
        return float(loss.detach()) / self.world.size

    def fit(self, callbacks: list) -> str:
        """Train until done or interrupted; returns why it stopped ('done', 'early stop', 'interrupted')."""
        self._t0 = time.perf_counter()
        with Interrupts() as stop:
            while not self.finished:
                n = self.data.n_chunks(self.epoch)
                while self.batch < n and not self._out_of_steps():
                    e, i = self.epoch, self.batch
                    self.train_step(*self.data.get(e, i), self.data.n_targets(e, i))
                    self.batch += 1
                    for cb in callbacks:
                        cb.on_step(self)
                    if self._stopping(stop):
                        return self._stop(callbacks, "interrupted")
                self._end_epoch(n, callbacks)
                if self._stopping(stop) and not self.finished:
                    return self._stop(callbacks, "interrupted")
        return self._stop(callbacks, "early stop" if self.bad_epochs >= self.cfg.patience else "done")

    def _stopping(self, stop: Interrupts) -> bool:
        """Every process stops after the same step, whichever of them got the signal."""
        return dist_mod.any_flag(self.world, stop.requested, self.device)

    def _out_of_steps(self) -> bool:
        return bool(self.cfg.max_steps) and self.step >= self.cfg.max_steps

    def _end_epoch(self, n: int, callbacks: list) -> None:
        if self.batch >= n:
            self.epoch, self.batch = self.epoch + 1, 0
            self.state = self.model.init_state(self.data.n_rows, self.device)
        self.finished = self.epoch >= self.cfg.epochs or self._out_of_steps()
        self.acc = self._acc_total()  # the epoch over every process, for metrics (on rank 0)
        for cb in callbacks:  # validation first: it may finish the run (early stopping)
            cb.on_epoch_end(self)
        self.acc = {"loss": 0.0, "events": 0, "seconds": 0.0}

    def _stop(self, callbacks: list, reason: str) -> str:
        for cb in callbacks:
            cb.on_stop(self, reason)
        return reason

    # --- checkpoint state -----------------------------------------------------------------------------

    def state_dict(self) -> dict:
        """Everything the next step depends on, as tensors and plain values (loads with weights_only)."""
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        if self.world.size > 1:  # collectives: every process calls state_dict, rank 0 writes it
            rng["ranks"] = dist_mod.gather_objects(self.world, torch.get_rng_state())
        state = [dist_mod.gather_rows(self.world, t.detach()).cpu() for t in self.state]
        acc = self._acc_total()
        return {"world_size": self.world.size,"state_dict": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "scheduler": {"kind": "warmup_cosine", "base_lr": self.cfg.lr, "total": self.total,
                              "warmup": self.warmup, "lr": self.lr},
                "step": self.step, "epoch": self.epoch, "batch": self.batch, "rng": rng,
                "lstm_state": state, "acc": acc,
                "val_loss": self.val_loss, "best_val": self.best["val_loss"], "best": dict(self.best),
                "bad_epochs": self.bad_epochs, "finished": self.finished, "elapsed": self.now_elapsed()}

    def load_state_dict(self, ck: dict) -> None:
        self.model.load_state_dict(ck["state_dict"])
        self.opt.load_state_dict(ck["optimizer"])
        self.step, self.epoch, self.batch = ck["step"], ck["epoch"], ck["batch"]
        if ck["lstm_state"][0].shape[1] != self.data.batch:
            raise UserError(f"train.batch: {self.data.batch}, but the run was trained with "
                            f"{ck['lstm_state'][0].shape[1]}; resume with the same global batch")
        self.state = tuple(t[:, self.data.rows].to(self.device) for t in ck["lstm_state"])
        self.acc = dict(ck["acc"]) if self.world.main else {"loss": 0.0, "events": 0, "seconds": 0.0}
        self.val_loss, self.best = ck["val_loss"], dict(ck["best"])
        self.bad_epochs, self.elapsed = ck["bad_epochs"], ck["elapsed"]
        self.finished = (self.epoch >= self.cfg.epochs or self._out_of_steps()  # --set may extend a run
                         or (self.bad_epochs >= self.cfg.patience and ck["finished"]))
        self._set_rng(ck["rng"], ck["step"])
        if "cuda" in ck["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state_all(ck["rng"]["cuda"])
        self.lr = lr_at(self.step, self.cfg.lr, self.total, self.warmup)

    def _acc_total(self) -> dict:
        """This epoch's training so far over every process (collective): on rank 0 the totals, on the others
        zeros, so that the sum over processes stays the total whenever it is taken again (rank 0's seconds)."""
        if self.world.size == 1:
            return dict(self.acc)
        loss, events = dist_mod.all_sum(self.world, [self.acc["loss"], self.acc["events"]], self.device)
        if not self.world.main:
            loss = events = 0
        return {"loss": loss, "events": int(events), "seconds": self.acc["seconds"]}

    def _set_rng(self, rng: dict, step: int) -> None:
        """Each process's own RNG state (dropout) when the world size is the one saved; under another world
        size rank 0 continues the saved state and the others draw fresh streams (seed, rank, step)."""
        ranks = rng.get("ranks", [rng["torch"]])
        if len(ranks) == self.world.size:
            torch.set_rng_state(ranks[self.world.rank])
        elif self.world.main:
            torch.set_rng_state(rng["torch"])
        else:
            torch.manual_seed(rank_seed(self.cfg.seed, self.world.rank, step))


def rank_seed(seed: int, rank: int, step: int = 0) -> int:
    """The dropout seed of a process other than rank 0 (rank 0 keeps the run's seed: one process == rank 0)."""
    return (seed * 1_000_003 + rank * 7919 + step) % 2**63


# --- callbacks ------------------------------------------------------------------------------------------

class Validator(Callback):
    """Validation loss after every epoch; tracks the best and stops after `patience` epochs without one."""

    def __init__(self, val: Streams) -> None:
        self.val = val

    def on_epoch_end(self, t: Trainer) -> None:
        t.val_loss = evaluate(t.model, self.val, t.device, t.world)
        best = t.best["val_loss"]
        t.improved = t.val_loss is not None and (best is None or t.val_loss < best)
        if t.improved:
            t.best, t.bad_epochs = {"val_loss": t.val_loss, "epoch": t.epochs_done, "step": t.step}, 0
        elif t.val_loss is not None:
            t.bad_epochs += 1
            if t.bad_epochs >= t.cfg.patience:
                log.info("early stop: no better validation loss for %d epochs", t.bad_epochs)
                t.finished = True


def make_optimizer(model: LeadLSTM, cfg: config.TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on the weight matrices only (not biases, not the embedding)."""
    decay, rest = [], []
    for name, p in model.named_parameters():
        (decay if p.dim() >= 2 and not name.startswith("embed") else rest).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.99))


def build(cfg: config.Config, data: cache_mod.Cache, device: torch.device,
          world: World = SINGLE) -> tuple[Trainer, Streams]:
    """A fresh trainer (seeded model and optimizer) over `data`'s train split, and the validation streams;
    under several processes each keeps its own rows of both."""
    tc = cfg.train
    seed_everything(tc.seed, device)
    train_seqs = data.packed("train")
    if not train_seqs:
        raise UserError("the cache has no training sequences; rebuild it with more MIDI files or another "
                        "data.split")
    args = ModelArgs(codec.VOCAB_SIZE, tc.embed, tc.hidden, tc.layers, tc.dropout, harmony.N_FEATURES)
    model = LeadLSTM(args).to(device)
    rows = world.rows(tc.batch)
    streams = Streams(train_seqs, tc.batch, tc.chunk, seed=tc.seed, rows=rows)
    val = Streams(data.packed("val", transposed=False), tc.batch, tc.chunk, shuffle=False, rows=rows)
    if world.rank:  # the same weights everywhere, dropout masks of its own
        torch.manual_seed(rank_seed(tc.seed, world.rank))
    return Trainer(model, make_optimizer(model, tc), streams, tc, device, world), val


def train(cfg: config.Config, data: cache_mod.Cache, out: str | Path, data_path: str | Path = "",
          resume: bool = False, progress: bool = True, extra: tuple = (), init: str | Path | None = None) -> Trainer:
    """Train (or resume) a run in directory `out`; `extra` callbacks are added after the standard ones.

    `init`: a model directory whose weights a new run starts from (`leadline.training.warmstart`).
    Under torchrun this process joins the others (`leadline.training.distributed`)."""
    out = Path(out)
    world, device = dist_mod.init(cfg.train.device, cfg.train.batch)
    try:
        trainer, val = build(cfg, data, device, world)
        trainer.stop_reason = _fit(trainer, val, cfg, data, out, data_path, resume, progress, extra, init)
    finally:
        dist_mod.close(world)
    return trainer


def _fit(trainer: Trainer, val: Streams, cfg, data, out: Path, data_path, resume, progress, extra, init) -> str:
    meta = rundir.run_meta(cfg, data, data_path, trainer)
    if init is not None and not resume:
        from leadline.training import warmstart

        meta["init"] = warmstart.load_into(trainer.model, init)
        trainer.model.to(trainer.device)
        log.info("starting from the weights of %s", init)
    if resume:
        rundir.restore(trainer, out, meta)
    elif trainer.world.main:
        rundir.start_run_dir(out, cfg)
    t, tc = trainer, cfg.train
    log.info("training %s on %s, %s: global batch %d streams x %d events (%d per process), lr %g; "
             "%d train events, %d val events, %d steps planned", meta["model_args"], t.device, t.world.describe(),
             tc.batch, tc.chunk, t.data.n_rows, tc.lr, t.data.n_events, val.n_events, t.total)
    main = t.world.main
    callbacks = [Validator(val), *([Metrics(out), LossPlot(out)] if main else []), Checkpointer(out, meta),
                 Progress(progress and main), *extra]
    return t.fit(callbacks)


def run(args) -> int:
    """`leadline train --data CACHE --out RUN [--resume | --init MODEL_DIR] [--config FILE] [--set k=v]`;
    the same under `torchrun --nproc_per_node N` (rank 0 prints)."""
    cfg = rundir.resolve_config(args)
    data = cache_mod.load(args.data)
    if args.init and args.resume:
        raise UserError("--init starts a new run from a model's weights; --resume continues a run: give one")
    t = train(cfg, data, args.out, data_path=args.data, resume=args.resume, init=args.init)
    if not t.world.main:
        return 0
    best = t.best["val_loss"]
    best_txt = f"best val {best / LN2:.4f} bits/event at step {t.best['step']}" if best is not None else "no val"
    print(f"{t.stop_reason} at step {t.step} (epoch {t.epochs_done:.2f}, {t.now_elapsed():.0f} s); {best_txt}")
    if t.stop_reason == "interrupted":
        print(f"resume with: leadline train --data {args.data} --out {args.out} --resume")
    return 0
