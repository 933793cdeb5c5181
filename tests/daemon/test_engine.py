"""Engine: model directory checks, stateful stepping vs one-run priming vs torch, batches, CUDA graphs."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from leadline.daemon import codec, engine
from leadline.daemon.config import EngineConfig
from leadline.daemon.engine import CUDA, CpuEngine, CudaGraphEngine, load_model, make_engine
from leadline.daemon.errors import UserError

REPO = Path(__file__).resolve().parents[2]

STEPS = 300


def _tokens(n: int = STEPS, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(1, codec.VOCAB_SIZE, size=n)


def _copy(tiny_model, tmp_path):
    return shutil.copytree(tiny_model.path, tmp_path / "model")


# --- loading --------------------------------------------------------------------------------------

def test_load_model_reads_shape(tiny_model):
    info = load_model(tiny_model.path)
    assert (info.vocab, info.embed, info.hidden, info.layers) == (codec.VOCAB_SIZE, 16, 32, 2)


def test_missing_dir_is_user_error(tmp_path):
    with pytest.raises(UserError, match="no such model directory"):
        load_model(tmp_path / "nope")


def test_missing_card_is_user_error(tiny_model, tmp_path):
    d = _copy(tiny_model, tmp_path)
    (d / "card.json").unlink()
    with pytest.raises(UserError, match=str(d / "card.json")):
        load_model(d)


def test_card_from_other_codec_is_user_error(tiny_model, tmp_path):
    d = _copy(tiny_model, tmp_path)
    card = json.loads((d / "card.json").read_text())
    card["codec_version"] = codec.CODEC_VERSION + 1
    (d / "card.json").write_text(json.dumps(card))
    with pytest.raises(UserError, match=f"{d / 'card.json'}.*codec {codec.CODEC_VERSION + 1}"):
        load_model(d)


def test_card_not_json_is_user_error(tiny_model, tmp_path):
    d = _copy(tiny_model, tmp_path)
    (d / "card.json").write_text("{not json")
    with pytest.raises(UserError, match="unreadable card"):
        load_model(d)


def test_truncated_onnx_is_user_error(tiny_model, tmp_path):
    d = _copy(tiny_model, tmp_path)
    data = (d / "model.onnx").read_bytes()
    (d / "model.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match=f"{d / 'model.onnx'}: does not match its card.json"):
        load_model(d)
    card = json.loads((d / "card.json").read_text())
    del card["model_sha256"]  # a card from before the hash: onnxruntime's own check still names the file
    (d / "card.json").write_text(json.dumps(card))
    with pytest.raises(UserError, match=f"{d / 'model.onnx'}: onnxruntime cannot load it"):
        load_model(d)


def test_onnx_of_another_export_is_user_error(tiny_model, tmp_path):
    """A whole, loadable model.onnx that is not the one its card describes (e.g. copied over by hand)."""
    d = _copy(tiny_model, tmp_path)
    card = json.loads((d / "card.json").read_text())
    assert card["model_sha256"] == engine.file_sha256(d / "model.onnx")
    card["model_sha256"] = "0" * 64
    (d / "card.json").write_text(json.dumps(card))
    with pytest.raises(UserError, match="sha256 differs"):
        load_model(d)


def test_the_shipped_model_matches_its_card():
    card = json.loads((REPO / "models/default/card.json").read_text())
    assert card["model_sha256"] == engine.file_sha256(REPO / "models/default/model.onnx")


def test_missing_onnx_is_user_error(tiny_model, tmp_path):
    d = _copy(tiny_model, tmp_path)
    (d / "model.onnx").unlink()
    with pytest.raises(UserError, match="model.onnx: missing"):
        load_model(d)


def test_onnx_metadata_mismatch_is_user_error(tiny_model, tmp_path):
    onnx = pytest.importorskip("onnx")
    d = _copy(tiny_model, tmp_path)
    proto = onnx.load(str(d / "model.onnx"))
    for p in proto.metadata_props:
        if p.key == "codec_version":
            p.value = str(codec.CODEC_VERSION + 1)
    onnx.save(proto, str(d / "model.onnx"))
    card = json.loads((d / "card.json").read_text())  # the card matches the edited file: the metadata check
    card["model_sha256"] = engine.file_sha256(d / "model.onnx")
    (d / "card.json").write_text(json.dumps(card))
    with pytest.raises(UserError, match="metadata codec_version"):
        load_model(d)


def test_daemon_modules_do_not_import_torch():
    code = ("import sys, leadline.daemon.engine, leadline.daemon.sampler, leadline.bench.run; "
            "bad = [m for m in sys.modules if m == 'torch' or m.startswith('training')]; "
            "sys.exit(1 if bad else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# --- CPU engine -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cpu(tiny_model):
    engine = CpuEngine(load_model(tiny_model.path))
    engine.warm_up()
    return engine


def test_steps_equal_one_run_and_torch(cpu, tiny_model):
    """With the backing's harmony changing every few steps (E minor, C major, silence, ...): stepping with
    set_harmony == one window run with the codes beside the tokens == torch."""
    torch = pytest.importorskip("torch")
    from leadline.daemon import harmony
    toks = _tokens()
    chords = [harmony.code([4, 7, 11], 4), harmony.code([0, 4, 7], 0), harmony.NONE, harmony.code([2, 6, 9], 6)]
    codes = np.array([chords[i // 7 % 4] for i in range(len(toks))])
    cpu.reset()
    stepped = []
    for t, c in zip(toks, codes):
        cpu.set_harmony(int(c))
        stepped.append(cpu.step(int(t)).copy())
    stepped = np.stack(stepped)
    cpu.set_harmony(harmony.NONE)
    h_step, c_step = cpu.state
    window, _, _ = cpu.run_window(toks, codes)
    primed = cpu.prime(toks, codes).copy()
    h_prime, c_prime = cpu.state
    assert np.abs(stepped - window).max() <= 1e-5
    assert np.abs(stepped[-1] - primed).max() <= 1e-5
    assert np.abs(h_step - h_prime).max() <= 1e-5 and np.abs(c_step - c_prime).max() <= 1e-5
    model = tiny_model.torch_model
    with torch.no_grad():
        ref, _, _ = model(torch.as_tensor(toks[None]), torch.from_numpy(harmony.features(codes[None])),
                          *model.init_state(1))
        deaf, _, _ = model(torch.as_tensor(toks[None]), torch.zeros(1, len(toks), 24), *model.init_state(1))
    assert np.abs(stepped - ref[0].numpy()).max() <= 1e-5
    assert np.abs(stepped - deaf[0].numpy()).max() > 1e-3  # the harmony was heard


def test_state_is_carried(cpu):
    a, b = codec.token("NOTE", 64), codec.token("NOTE", 67)
    cpu.reset()
    cpu.step(a)
    after_ab = cpu.step(b).copy()
    cpu.reset()
    only_b = cpu.step(b).copy()
    assert np.abs(after_ab - only_b).max() > 1e-4
    cpu.reset()
    assert np.array_equal(cpu.step(b), only_b)  # reset really gives a fresh state


def test_state_roundtrip(cpu):
    toks = _tokens(20)
    cpu.prime(toks)
    saved = cpu.state
    want = cpu.step(5).copy()
    cpu.reset()
    cpu.state = saved
    assert np.array_equal(cpu.step(5), want)


def test_batch_rows_match_single_steps(tiny_model, cpu):
    info = load_model(tiny_model.path)
    batch = CpuEngine(info, batch=4)
    toks = _tokens(30)
    batch.prime(toks[:10])
    cpu.prime(toks[:10])
    rows = np.array([3, 100, 150, 200])
    got = batch.step_batch(rows).copy()
    assert got.shape == (4, codec.VOCAB_SIZE)
    saved = cpu.state
    for i, t in enumerate(rows):
        cpu.state = saved
        assert np.abs(cpu.step(int(t)) - got[i]).max() <= 1e-6


def test_make_engine_cpu_and_auto(tiny_model, caplog):
    caplog.set_level("INFO", logger="leadline.daemon.engine")
    engine = make_engine(EngineConfig(provider="cpu"), tiny_model.path)
    assert isinstance(engine, CpuEngine)
    caplog.clear()
    engine = make_engine(EngineConfig(provider="auto"), tiny_model.path)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and lines[0].startswith("engine: ")
    if CUDA not in ort.get_available_providers():
        assert isinstance(engine, CpuEngine) and "not available" in lines[0]


def test_provider_cuda_without_cuda_is_user_error(tiny_model):
    if CUDA in ort.get_available_providers():
        pytest.skip("this onnxruntime has the CUDA execution provider")
    with pytest.raises(UserError, match="engine.provider: cuda"):
        make_engine(EngineConfig(provider="cuda"), tiny_model.path)


# --- CUDA graph engine -----------------------------------------------------------------------------

def _need_cuda() -> None:
    if CUDA not in ort.get_available_providers():
        pytest.skip(f"no CUDA execution provider: onnxruntime {ort.__version__} offers "
                    f"{', '.join(ort.get_available_providers())}")


@pytest.mark.parametrize("graph", [True, False], ids=["graph", "iobinding"])
def test_cuda_matches_cpu_greedy(tiny_model, cpu, graph):
    _need_cuda()
    gpu = CudaGraphEngine(load_model(tiny_model.path), graph=graph, strict=True)
    gpu.warm_up()
    assert gpu.session.get_providers()[0] == CUDA
    seed = _tokens(16)
    lc, lg = cpu.prime(seed).copy(), gpu.prime(seed).copy()
    worst, tok_c, tok_g = float(np.abs(lc - lg).max()), [], []
    for _ in range(STEPS):
        tok_c.append(int(lc.argmax()))
        tok_g.append(int(lg.argmax()))
        lc, lg = cpu.step(tok_c[-1]).copy(), gpu.step(tok_g[-1])
        worst = max(worst, float(np.abs(lc - lg).max()))
    assert tok_c == tok_g
    assert worst <= 1e-4
    h_c, _ = cpu.state
    h_g, _ = gpu.state
    assert np.abs(h_c - h_g).max() <= 1e-4


def test_cuda_graph_batch(tiny_model):
    _need_cuda()
    info = load_model(tiny_model.path)
    gpu, ref = CudaGraphEngine(info, batch=4, strict=True), CpuEngine(info, batch=4)
    gpu.warm_up()
    toks = _tokens(40)
    gpu.prime(toks[:8])
    ref.prime(toks[:8])
    for i in range(8, 40, 4):
        assert np.abs(gpu.step_batch(toks[i:i + 4]) - ref.step_batch(toks[i:i + 4])).max() <= 1e-4
