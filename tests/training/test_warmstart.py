"""Starting a run from an exported model: the ONNX step graph's weights read back into the torch LSTM."""
from __future__ import annotations

import json

import pytest
import torch

from leadline.daemon import config
from leadline.daemon.errors import UserError
from leadline.training import cache, trainer, warmstart
from leadline.training.model import LeadLSTM, ModelArgs
from tests.conftest import TINY_DATA, TINY_TRAIN


def test_weights_read_back_from_onnx_equal_the_exported_ones(tiny_model):
    fresh = LeadLSTM(ModelArgs(embed=16, hidden=32, layers=2, dropout=0.0))
    said = warmstart.load_into(fresh, tiny_model.path)
    want = tiny_model.torch_model.state_dict()
    got = fresh.state_dict()
    assert set(got) == set(want)
    for k in want:
        assert torch.equal(got[k], want[k]), k
    assert said["model"] == str(tiny_model.path) and len(said["sha256"]) == 64


def test_a_model_of_another_shape_is_refused_in_one_line(tiny_model):
    with pytest.raises(UserError, match="set train.embed/hidden/layers to match") as e:
        warmstart.load_into(LeadLSTM(ModelArgs(embed=16, hidden=48, layers=2)), tiny_model.path)
    assert "\n" not in str(e.value)


def test_a_run_started_from_a_trained_model_begins_where_it_left_off(trained_model, tiny_cache, tmp_path):
    """3 steps from the trained tiny model stay near its validation loss, far below 3 steps from scratch;
    the checkpoint (and so the exported card) names the model it started from."""
    cfg = config.load(None, TINY_DATA + TINY_TRAIN + ["train.max_steps=3"])
    data = cache.load(tiny_cache)
    card = json.loads((trained_model / "card.json").read_text())
    trained = card["validation"]["bits_per_event"]
    t = trainer.train(cfg, data, tmp_path / "run", tiny_cache, progress=False, init=trained_model)
    scratch = trainer.train(cfg, data, tmp_path / "scratch", tiny_cache, progress=False)
    warm_bits, scratch_bits = (x.best["val_loss"] / trainer.LN2 for x in (t, scratch))
    # (3 more steps may still improve on the trained model: codec 2's tiny run goes from 5.20 to 5.07)
    assert t.step == 3 and warm_bits - trained < 0.1 < scratch_bits - trained
    ck = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert ck["init"]["model"] == str(trained_model) and len(ck["init"]["sha256"]) == 64
