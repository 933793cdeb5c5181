"""Export: the model directory from a run, torch/onnxruntime parity over hundreds of steps, atomic refusal."""
from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from leadline.daemon import codec, engine
from leadline.daemon.cli import main
from leadline.training.export import load_checkpoint, model_from_checkpoint


@pytest.fixture(scope="module")
def pair(tiny_run, trained_model):
    """(torch model from best.pt, onnxruntime session of the exported model.onnx)."""
    model = model_from_checkpoint(load_checkpoint(tiny_run / "best.pt"))
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return model, ort.InferenceSession(str(trained_model / "model.onnx"), so, providers=["CPUExecutionProvider"])


def _ort(sess, events, h, c, harm=None):
    events = np.asarray(events, np.int64)
    harm = np.zeros(events.shape + (24,), np.float32) if harm is None else harm
    return sess.run(None, {"events": events, "harmony": harm, "h": h, "c": c})


def test_export_writes_card_curve_and_a_model_the_daemon_accepts(trained_model, tiny_run, tiny_cache):
    card = json.loads((trained_model / "card.json").read_text())
    ck = torch.load(tiny_run / "best.pt", weights_only=True)
    assert card["codec_version"] == codec.CODEC_VERSION and card["model"]["hidden"] == 32
    assert card["validation"]["bits_per_event"] == pytest.approx(ck["best_val"] / np.log(2))
    assert card["validation"]["step"] == ck["best"]["step"] and card["training"]["device"] == "cpu"
    data = card["training"]["data"]
    assert data["cache"] == str(tiny_cache) and data["sources"] and data["splits"]["test"]["songs"] == 3
    assert card["training"]["seconds"] > 0 and card["config"]["data"]["seed"] == 3
    assert (trained_model / "loss.png").read_bytes() == (tiny_run / "loss.png").read_bytes()
    info = engine.load_model(trained_model)
    assert (info.layers, info.hidden) == (2, 32)


def test_torch_and_onnxruntime_agree_stepwise_for_300_steps(pair):
    """Greedy decoding stepped one token at a time in both, carrying the state: same logits, same tokens."""
    model, sess = pair
    h_t, c_t = model.init_state(1)
    h_o, c_o = h_t.numpy(), c_t.numpy()
    tok_t = tok_o = codec.BOS
    worst, toks_t, toks_o = 0.0, [], []
    with torch.no_grad():
        for _ in range(300):
            lt, h_t, c_t = model(torch.tensor([[tok_t]]), torch.zeros(1, 1, 24), h_t, c_t)
            lo, h_o, c_o = _ort(sess, [[tok_o]], h_o, c_o)
            worst = max(worst, float(np.abs(lt.numpy() - lo).max()))
            tok_t, tok_o = int(lt[0, -1].argmax()), int(lo[0, -1].argmax())
            toks_t.append(tok_t)
            toks_o.append(tok_o)
    assert worst <= 1e-4
    assert toks_t == toks_o
    assert len(set(toks_t)) > 1


def test_a_window_primes_like_steps_at_other_lengths_and_batches(pair, tiny_cache):
    """time > 1 in one run == stepping; lengths and batches unlike the export example's (2, 3)."""
    from leadline.training import cache

    from leadline.daemon import harmony

    model, sess = pair
    data = cache.load(tiny_cache)
    seqs = [np.asarray(s[:77], np.int64) for s in data.sequences("test")[:3]]
    events = np.stack(seqs)
    harm = harmony.features(np.stack([np.asarray(h[:77]) for h in data.harmonies("test")[:3]]))
    zero = np.zeros((2, 3, 32), np.float32)
    lw, hw, cw = _ort(sess, events, zero, zero, harm)
    h, c = zero, zero
    for t in range(events.shape[1]):
        ls, h, c = _ort(sess, events[:, t:t + 1], h, c, harm[:, t:t + 1])
        assert np.abs(ls[:, 0] - lw[:, t]).max() <= 1e-5
    assert np.abs(h - hw).max() <= 1e-5 and np.abs(c - cw).max() <= 1e-5
    with torch.no_grad():
        lt, _, _ = model(torch.from_numpy(events[:1]), torch.from_numpy(harm[:1]), *model.init_state(1))
    assert np.abs(lt.numpy() - lw[:1]).max() <= 1e-4


def test_an_existing_model_dir_is_refused_without_force(trained_model, tiny_run, capsys):
    before = {p.name: p.read_bytes() for p in trained_model.iterdir()}
    assert main(["export", str(tiny_run), "--out", str(trained_model)]) == 1
    assert "--force" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in trained_model.iterdir()} == before
    assert main(["export", str(tiny_run), "--out", str(trained_model), "--force"]) == 0
    assert json.loads((trained_model / "card.json").read_text())["created"]


def test_export_falls_back_to_the_last_checkpoint_and_names_a_missing_run(tiny_run, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes((tiny_run / "checkpoint.pt").read_bytes())
    assert main(["export", str(run), "--out", str(tmp_path / "m")]) == 0
    assert "checkpoint.pt" in json.loads((tmp_path / "m" / "card.json").read_text())["checkpoint"]["path"]
    assert main(["export", str(tmp_path / "nothing"), "--out", str(tmp_path / "m2")]) == 1
    assert "train first" in capsys.readouterr().err
