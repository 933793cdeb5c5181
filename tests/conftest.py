"""Shared test fixtures: small real-data caches built from a few files of ../shared/data."""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA_DIR = REPO.parent / "shared" / "data"
WJD = SHARED_DATA_DIR / "wjd-jazz-solos"
# 16 solos (14 songs) split by ingest's song hash with these settings: 7 train, 4 val, 3 test songs
TINY_DATA = ["data.split=[0.6, 0.2, 0.2]", "data.seed=3", "data.transpose=[]", "data.snap_below=0"]


@pytest.fixture(scope="session")
def wjd16(tmp_path_factory) -> Path:
    """A folder named wjd16 holding copies of the first 16 jazz solos (the name is part of the split hash)."""
    files = sorted(WJD.glob("*.mid"))[:16]
    if len(files) < 16:
        pytest.skip(f"needs 16 MIDI files in {WJD}")
    out = tmp_path_factory.mktemp("midi") / "wjd16"
    out.mkdir()
    for f in files:
        shutil.copyfile(f, out / f.name)
    return out


@pytest.fixture(scope="session")
def tiny_cache(wjd16, tmp_path_factory) -> Path:
    """A cache directory of `wjd16`, ingested with `TINY_DATA`."""
    from leadline.daemon import config
    from leadline.training import cache, ingest

    built = ingest.build([str(wjd16)], config.load(None, TINY_DATA).data, jobs=1, progress=False)
    assert all(built.sequences(s) for s in cache.SPLITS), "the fixture needs songs in every split"
    return cache.write(built, tmp_path_factory.mktemp("cache") / "tiny")


# --- a tiny exported model (engine, sampler and bench tests) -------------------------------------------

@dataclass(frozen=True)
class TinyModel:
    """A tiny random LeadLSTM exported as a model directory, with the torch module it came from."""

    path: Path
    torch_model: object  # leadline.training.model.LeadLSTM, eval mode, dropout 0


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> TinyModel:
    """A model directory (embed 16, hidden 32, 2 layers, random weights, seed 0), exported once per session."""
    import torch

    from leadline.training.export import write_model_dir
    from leadline.training.model import LeadLSTM, ModelArgs

    torch.manual_seed(0)
    model = LeadLSTM(ModelArgs(embed=16, hidden=32, layers=2, dropout=0.0)).eval()
    torch.nn.init.normal_(model.harmony.weight, std=0.5)  # (zero in a fresh model): the harmony input is heard
    torch.nn.init.normal_(model.harmony_out.weight, std=0.5)
    path = write_model_dir(model, tmp_path_factory.mktemp("models") / "tiny", {"note": "random test model"})
    return TinyModel(path, model)


@pytest.fixture(scope="session")
def bendy_model(tmp_path_factory) -> TinyModel:
    """`tiny_model` with its BEND and VIB logits raised by 3: about four notes in five bent (the stop-path
    tests need bends in flight; the interim shipped model plays almost none)."""
    import torch

    from leadline.daemon import codec
    from leadline.training.export import write_model_dir
    from leadline.training.model import LeadLSTM, ModelArgs

    torch.manual_seed(0)
    model = LeadLSTM(ModelArgs(embed=16, hidden=32, layers=2, dropout=0.0)).eval()
    torch.nn.init.normal_(model.harmony.weight, std=0.5)
    with torch.no_grad():
        for kind in ("BEND", "VIB"):
            model.head.bias[torch.from_numpy(codec.kind_mask(kind))] += 3.0
    path = write_model_dir(model, tmp_path_factory.mktemp("models") / "bendy", {"note": "random test model, bends"})
    return TinyModel(path, model)


# --- a tiny trained run and its export (training tests) -----------------------------------------------

TINY_TRAIN = ["train.embed=16", "train.hidden=32", "train.layers=2", "train.batch=4", "train.chunk=32",
              "train.lr=0.01", "train.epochs=2", "train.dropout=0.1", "train.device=cpu"]


@pytest.fixture(scope="session")
def tiny_run(tiny_cache, tmp_path_factory) -> Path:
    """A run directory: a tiny LSTM trained for two epochs on `tiny_cache` (CPU, a few seconds)."""
    import torch

    from leadline.daemon import config
    from leadline.training import cache, trainer

    torch.set_num_threads(1)  # a tiny model: threads only add overhead (and the test machine is shared)
    out = tmp_path_factory.mktemp("runs") / "tiny"
    trainer.train(config.load(None, TINY_DATA + TINY_TRAIN), cache.load(tiny_cache), out, tiny_cache,
                  progress=False)
    return out


@pytest.fixture(scope="session")
def trained_model(tiny_run, tmp_path_factory) -> Path:
    """`tiny_run` exported with `leadline export` to a model directory."""
    from leadline.daemon.cli import main

    out = tmp_path_factory.mktemp("models") / "trained"
    assert main(["export", str(tiny_run), "--out", str(out)]) == 0
    return out
