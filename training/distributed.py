"""Training on several processes: torch DistributedDataParallel as `torchrun` launches it (gloo on CPU, NCCL on GPUs).

`leadline train` runs unchanged under `torchrun --nproc_per_node N [--nnodes M ...]`: `init` reads the
rank and world size torchrun puts in the environment and joins the process group. `train.batch` stays the
global batch: every process lays out the same epoch (a function of the seed and the epoch) and keeps its
own `batch / world` streams, so each rank trains on its own share of the songs, the loss is divided by the
global count of targets, and DDP's gradient average gives the gradient of one process over the whole batch.
A checkpoint holds the global LSTM state (gathered from every rank), so a run resumes under another world size.
Only rank 0 writes files, logs at INFO and shows progress.
"""
from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from leadline.daemon.errors import UserError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (rank 0 of 1 without torchrun)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str = ""

    @property
    def main(self) -> bool:
        return self.rank == 0

    def rows(self, batch: int) -> slice:
        """The streams (rows of the global batch) this process trains on."""
        per = batch // self.size
        return slice(self.rank * per, (self.rank + 1) * per)

    def describe(self) -> str:
        return "1 process" if self.size == 1 else f"{self.size} processes ({self.backend})"


SINGLE = World()


def launched() -> bool:
    """Whether torchrun started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device_name: str, batch: int) -> tuple[World, torch.device]:
    """Join torchrun's process group (if launched by it) and pick this rank's device."""
    from leadline.training.trainer import pick_device

    device = pick_device(device_name)
    if not launched():
        return SINGLE, device
    rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if batch % size:
        raise UserError(f"train.batch: {batch} is not a multiple of the {size} training processes "
                        f"(train.batch is the global batch; each process takes batch / processes streams)")
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
    if rank:  # one voice: the others warn and fail, rank 0 tells the story
        logging.getLogger("leadline").setLevel(logging.WARNING)
    return World(rank, size, local, backend), device


def close(world: World) -> None:
    if world.size > 1 and dist.is_initialized():
        dist.destroy_process_group()


def wrap(module: torch.nn.Module, world: World, device: torch.device) -> torch.nn.Module:
    """`module` in DistributedDataParallel when there are several processes (weights broadcast from rank 0)."""
    if world.size == 1:
        return module
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)


def all_sum(world: World, values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum of `values` over every process (float64)."""
    if world.size == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def any_flag(world: World, flag: bool, device: torch.device) -> bool:
    """True on every process when `flag` is true on any (a signal reaches ranks at different steps)."""
    if world.size == 1:
        return flag
    t = torch.tensor([int(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def gather_rows(world: World, t: torch.Tensor) -> torch.Tensor:
    """The global (layers, batch, hidden) LSTM state from every rank's (layers, batch / world, hidden) rows."""
    if world.size == 1:
        return t
    parts = [torch.empty_like(t) for _ in range(world.size)]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts, dim=1)


def gather_objects(world: World, obj) -> list:
    """`obj` from every rank, in rank order (small things: RNG states)."""
    if world.size == 1:
        return [obj]
    out = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def broadcast(world: World, obj):
    """Rank 0's `obj` on every rank (a checkpoint read where only rank 0 may have the run folder)."""
    if world.size == 1:
        return obj
    box = [obj if world.main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(world: World) -> None:
    if world.size > 1:
        dist.barrier()
