"""Training: stream layout, loss going down on real data, checkpoints, and interrupt + resume == uninterrupted."""
from __future__ import annotations

import json
import signal

import numpy as np
import pytest
import torch

from leadline.daemon import codec, config
from leadline.daemon.cli import main
from leadline.training import cache, trainer
from leadline.training.dataset import IGNORE, PAD_INPUT, Streams, segments
from tests.conftest import TINY_DATA, TINY_TRAIN


def _songs(n: int, seed: int = 0) -> list[np.ndarray]:
    """Random songs: BOS, then tokens other than BOS and PAD_INPUT."""
    rng = np.random.default_rng(seed)
    return [np.r_[codec.BOS, rng.integers(PAD_INPUT + 1, codec.VOCAB_SIZE, rng.integers(5, 60))] for _ in range(n)]


def _split_row(row: np.ndarray) -> list[tuple]:
    row = row[:len(np.trim_zeros(row != PAD_INPUT, "b"))]
    cuts = list(np.flatnonzero(row == codec.BOS)) + [len(row)]
    return [tuple(row[a:b]) for a, b in zip(cuts[:-1], cuts[1:])]


def test_streams_hold_every_song_once_and_never_predict_bos():
    songs = _songs(23)
    s = Streams(songs, batch=4, chunk=16, seed=1)
    x, y = s.layout(0)
    assert sorted(q for row in x for q in _split_row(row)) == sorted(tuple(q) for q in songs)
    assert (y != IGNORE).sum() == s.n_events == sum(len(q) - 1 for q in songs)
    assert not (y == codec.BOS).any()
    assert s.n_chunks(0) == -(-x.shape[1] // 16) and s.get(0, 1)[0].shape == (4, 16)
    assert np.array_equal(x, Streams(songs, 4, 16, seed=1).layout(0)[0])  # a function of (seed, epoch)
    assert not np.array_equal(s.layout(1)[0], x)


def test_segments_cut_where_a_song_starts():
    x = np.full((3, 10), PAD_INPUT)
    x[0, 0] = x[1, 4] = x[2, 4] = x[2, 7] = codec.BOS
    segs = segments(x)
    assert [(a, b) for a, b, _ in segs] == [(0, 4), (4, 7), (7, 10)]
    assert [r.tolist() for _, _, r in segs] == [[True, False, False], [False, True, True], [False, False, True]]


def test_reset_at_bos_scores_each_song_from_a_zero_state():
    """A chunk holding two songs gives the second song the logits it gets alone from a zero state."""
    torch.manual_seed(0)
    from leadline.training.model import LeadLSTM, ModelArgs

    model = LeadLSTM(ModelArgs(embed=8, hidden=16, layers=2, dropout=0.0)).eval()
    a, b = _songs(2, seed=3)
    x = np.concatenate([a, b])[None]
    with torch.no_grad():
        both, _, _ = trainer.forward_chunk(model, x, *model.init_state(1))
        alone, _, _ = model(torch.from_numpy(b[None]), torch.zeros(1, len(b), 24), *model.init_state(1))
    assert torch.allclose(both[0, len(a):], alone[0], atol=1e-6)


def _cfg(*extra: str) -> config.Config:
    return config.load(None, TINY_DATA + TINY_TRAIN + list(extra))


def test_training_lowers_the_loss_and_writes_the_run(tiny_run):
    rows = [json.loads(line) for line in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1.0, 2.0]
    assert rows[-1]["val_bits"] < rows[0]["val_bits"] < np.log2(codec.VOCAB_SIZE)
    assert rows[-1]["train_bits"] < rows[0]["train_bits"]
    assert all(r["events_per_s"] > 0 and r["lr"] > 0 for r in rows)
    for name in ("checkpoint.pt", "best.pt", "loss.png", "config.json"):
        assert (tiny_run / name).stat().st_size > 0
    ck = torch.load(tiny_run / "best.pt", weights_only=True)  # no pickled objects
    assert ck["codec_version"] == codec.CODEC_VERSION and ck["model_args"]["hidden"] == 32
    assert ck["config"]["train"]["hidden"] == 32 and ck["data"]["splits"]["train"]["events"] > 0
    assert {"state_dict", "optimizer", "scheduler", "rng", "step", "epoch", "best_val"} <= set(ck)
    assert json.loads((tiny_run / "config.json").read_text())["train"]["chunk"] == 32


class _InterruptAt(trainer.Callback):
    """Sends this process SIGINT after optimizer step `step`, as Ctrl-C would."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step(self, t) -> None:
        if t.step == self.step:
            signal.raise_signal(signal.SIGINT)


def test_interrupted_and_resumed_equals_uninterrupted(tiny_cache, tmp_path):
    """Ctrl-C mid-epoch twice (once in each epoch), resumed each time: the same weights and metrics."""
    torch.set_num_threads(1)
    data = cache.load(tiny_cache)
    cfg = _cfg()
    full = trainer.train(cfg, data, tmp_path / "full", tiny_cache, progress=False)
    per_epoch = full.data.n_chunks(0)
    cut = tmp_path / "cut"
    part = trainer.train(cfg, data, cut, tiny_cache, progress=False, extra=(_InterruptAt(37),))
    assert part.stop_reason == "interrupted" and part.step == 37
    assert torch.load(cut / "checkpoint.pt", weights_only=True)["step"] == 37
    part = trainer.train(cfg, data, cut, tiny_cache, resume=True, progress=False,
                         extra=(_InterruptAt(per_epoch + 20),))
    assert part.stop_reason == "interrupted" and part.epoch == 1
    resumed = trainer.train(cfg, data, cut, tiny_cache, resume=True, progress=False)
    assert resumed.stop_reason == "done" and resumed.step == full.step
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    strip = lambda p: [{k: v for k, v in json.loads(line).items() if k not in ("elapsed", "events_per_s")}
                       for line in p.read_text().splitlines()]
    assert strip(cut / "metrics.jsonl") == strip(tmp_path / "full" / "metrics.jsonl")


def test_cli_refuses_to_overwrite_a_run_and_to_resume_nothing(tiny_run, tiny_cache, tmp_path, capsys):
    assert main(["train", "--data", str(tiny_cache), "--out", str(tiny_run)]) == 1
    assert "--resume" in capsys.readouterr().err
    assert main(["train", "--data", str(tiny_cache), "--out", str(tmp_path / "none"), "--resume"]) == 1
    assert "no run to resume" in capsys.readouterr().err
    assert main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "x")]) == 1  # not a cache


def test_cli_resume_of_a_finished_run_does_nothing(tiny_run, tiny_cache, capsys):
    step = torch.load(tiny_run / "checkpoint.pt", weights_only=True)["step"]
    assert main(["train", "--data", str(tiny_cache), "--out", str(tiny_run), "--resume"]) == 0
    assert f"at step {step}" in capsys.readouterr().out
    assert torch.load(tiny_run / "checkpoint.pt", weights_only=True)["step"] == step


def test_lr_schedule_warms_up_then_decays():
    lrs = [trainer.lr_at(s, 1.0, 100, 10) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:])) and lrs[-1] < 0.05
