"""DDP under torchrun (gloo, CPU): 2 processes train the weights 1 process trains over the same global batch, and
a run resumes under another world size. Each run is the real `leadline train` command, launched as a user does."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import torch

from leadline.training import distributed
from leadline.training.dataset import Streams
from tests.conftest import TINY_DATA

# dropout 0: dropout masks are drawn per process, so with dropout the runs agree in distribution only
SETTINGS = TINY_DATA + ["train.embed=16", "train.hidden=32", "train.layers=2", "train.batch=4", "train.chunk=32",
                        "train.lr=0.01", "train.epochs=2", "train.dropout=0", "train.device=cpu"]
# float32 gradients summed in another order (two halves, then gloo's all-reduce); Adam's normalised steps of
# lr 0.01 carry the rounding into the weights: 4 steps differ by ~1e-5 at most (7.4e-6 measured).
ATOL = 1e-4


def _train(cache, out, procs: int, steps: int, resume: bool = False) -> None:
    sets = [a for kv in SETTINGS + [f"train.max_steps={steps}"] for a in ("--set", kv)]
    args = ["-m", "leadline.daemon.cli", "train", "--data", str(cache), "--out", str(out), *sets]
    args += ["--resume"] if resume else []
    if procs > 1:
        args = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs), *args]
    env = dict(os.environ, OMP_NUM_THREADS="1")  # as torchrun sets it for each of its processes
    done = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]


def _checkpoint(run) -> dict:
    return torch.load(run / "checkpoint.pt", weights_only=True)


def _max_diff(a: dict, b: dict) -> float:
    return max(float((a["state_dict"][k] - b["state_dict"][k]).abs().max()) for k in a["state_dict"])


def test_rows_split_the_global_batch_and_count_all_targets():
    rng = np.random.default_rng(0)
    songs = [np.r_[1, rng.integers(3, 50, rng.integers(5, 60))] for _ in range(30)]
    whole = Streams(songs, batch=4, chunk=16, seed=2)
    parts = [Streams(songs, 4, 16, seed=2, rows=distributed.World(r, 2).rows(4)) for r in range(2)]
    assert np.array_equal(np.concatenate([p.layout(1)[0] for p in parts]), whole.layout(1)[0])
    for i in range(whole.n_chunks(1)):
        n = int((whole.get(1, i)[1] != -100).sum())
        assert whole.n_targets(1, i) == parts[0].n_targets(1, i) == parts[1].n_targets(1, i) == n


def test_two_processes_train_the_weights_of_one(tiny_cache, tmp_path):
    _train(tiny_cache, tmp_path / "one", 1, 4)
    _train(tiny_cache, tmp_path / "two", 2, 4)
    one, two = _checkpoint(tmp_path / "one"), _checkpoint(tmp_path / "two")
    assert two["world_size"] == 2 and two["processes"]["per_process_batch"] == 2 and two["step"] == 4
    assert _max_diff(one, two) < ATOL
    assert abs(one["val_loss"] - two["val_loss"]) < 1e-4  # validation is sharded too, its sums all-reduced
    assert two["acc"]["events"] == one["acc"]["events"]  # the epoch's events over both processes
    for a, b in zip(one["lstm_state"], two["lstm_state"]):  # the global state, gathered from both ranks
        assert a.shape == b.shape == (2, 4, 32) and torch.allclose(a, b, atol=ATOL)
    assert not list((tmp_path / "two").glob(".*.tmp"))
    assert len((tmp_path / "two" / "metrics.jsonl").read_text().splitlines()) == 1  # rank 0 alone wrote


def test_a_one_process_checkpoint_resumes_on_two(tiny_cache, tmp_path):
    _train(tiny_cache, tmp_path / "base", 1, 2)
    shutil.copytree(tmp_path / "base", tmp_path / "as_two")
    _train(tiny_cache, tmp_path / "base", 1, 4, resume=True)
    _train(tiny_cache, tmp_path / "as_two", 2, 4, resume=True)
    one, two = _checkpoint(tmp_path / "base"), _checkpoint(tmp_path / "as_two")
    assert one["step"] == two["step"] == 4 and two["world_size"] == 2
    assert _max_diff(one, two) < ATOL
    rows = [json.loads((tmp_path / run / "metrics.jsonl").read_text().splitlines()[-1]) for run in ("base", "as_two")]
    assert rows[0]["step"] == rows[1]["step"] == 4
    assert abs(rows[0]["train_loss"] - rows[1]["train_loss"]) < 1e-4  # the epoch's events counted once each
