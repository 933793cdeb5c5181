"""The inference engine: loads a model directory and steps its ONNX LSTM one event at a time, carrying h/c.

The state is carried between runs, never recomputed from a window: every `step` is one run of the step
graph with time = 1. Inputs and outputs are bound once to preallocated buffers (IO binding); the state
ping-pongs between two buffer sets (set 0: h0,c0 -> h1,c1; set 1: h1,c1 -> h0,c0), so no run reads and
writes the same buffer and nothing is allocated per step on the CPU. `prime` runs a whole seed window
(time = T) in one run. `CudaGraphEngine` keeps the state on the GPU and replays two captured CUDA graphs,
one per buffer set. One thread owns an engine; nothing here is thread-safe.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as _ortc

from leadline.daemon import codec, harmony
from leadline.daemon.config import EngineConfig
from leadline.daemon.errors import UserError

log = logging.getLogger(__name__)

INPUTS = ("events", "harmony", "h", "c")  # the ONNX contract (training/export.py, which the daemon must not import)
OUTPUTS = ("logits", "h_out", "c_out")
CUDA = "CUDAExecutionProvider"
# onnxruntime's pybind exceptions derive from Exception, not RuntimeError; these are the ones a bad file
# or a provider that fails to load raise.
_ORT_ERRORS = (RuntimeError, OSError) + tuple(getattr(_ortc, n) for n in (
    "Fail", "InvalidArgument", "NoSuchFile", "NoModel", "EngineError", "RuntimeException", "InvalidProtobuf",
    "ModelLoaded", "NotImplemented", "InvalidGraph", "EPFail") if hasattr(_ortc, n))


class ProviderUnavailable(UserError):
    """The requested execution provider cannot run this model here."""


@dataclass(frozen=True)
class ModelInfo:
    """A checked model directory: where it is, its card and its shape."""

    path: Path
    onnx: Path
    card: dict
    vocab: int
    embed: int
    hidden: int
    layers: int

    def state_shape(self, batch: int) -> tuple[int, int, int]:
        return (self.layers, batch, self.hidden)


# --- loading and checking a model directory ------------------------------------------------------------

def load_model(path: str | Path) -> ModelInfo:
    """Check the model directory `path` against the codec and the ONNX contract; raise UserError if unusable."""
    d = Path(path)
    if not d.is_dir():
        raise UserError(f"{d}: no such model directory; export one with `leadline export RUN --out {d}` "
                        f"or point engine.model (or --model) at one")
    card = _read_card(d / "card.json")
    onnx_path = d / "model.onnx"
    if not onnx_path.is_file():
        raise UserError(f"{onnx_path}: missing; re-export the model with `leadline export RUN --out {d}`")
    want = card.get("model_sha256")  # (cards written before it was added have none)
    if want is not None and file_sha256(onnx_path) != want:
        raise UserError(f"{onnx_path}: does not match its card.json (sha256 differs: a partial copy or another "
                        f"export's file); copy the model directory whole or re-export it")
    model = card.get("model")
    shape = ("embed", "hidden", "layers")
    if not isinstance(model, dict) or not all(isinstance(model.get(k), int) for k in shape):
        raise UserError(f"{d / 'card.json'}: no model shape (model.embed/hidden/layers); re-export the model")
    info = ModelInfo(d, onnx_path, card, codec.VOCAB_SIZE, model["embed"], model["hidden"], model["layers"])
    _check_onnx(info, session(onnx_path, cpu_options(1, optimize=False), ["CPUExecutionProvider"]))
    return info


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file (model.onnx: 4 MB, ~10 ms)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_card(path: Path) -> dict:
    try:
        card = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: missing; a model directory holds model.onnx and card.json "
                        f"(re-export it with `leadline export`)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: unreadable card ({type(e).__name__}); re-export the model") from None
    if not isinstance(card, dict):
        raise UserError(f"{path}: expected a JSON object; re-export the model")
    if card.get("codec_version") != codec.CODEC_VERSION:
        raise UserError(f"{path}: model made for codec {card.get('codec_version')!r}, this leadline uses codec "
                        f"{codec.CODEC_VERSION}; retrain it on a rebuilt cache or use a matching leadline")
    if card.get("vocab_size") != codec.VOCAB_SIZE:
        raise UserError(f"{path}: vocabulary of {card.get('vocab_size')!r} tokens, the codec has "
                        f"{codec.VOCAB_SIZE}; retrain the model with this leadline")
    return card


def _check_onnx(info: ModelInfo, sess: ort.InferenceSession) -> None:
    meta = sess.get_modelmeta().custom_metadata_map
    want = {"codec_version": codec.CODEC_VERSION, "vocab_size": codec.VOCAB_SIZE,
            "layers": info.layers, "hidden": info.hidden}
    for key, value in want.items():
        if meta.get(key) != str(value):
            raise UserError(f"{info.onnx}: metadata {key}={meta.get(key)!r}, expected {value} (from the codec "
                            f"and card.json); re-export the model with `leadline export`")
    ins = {i.name: i for i in sess.get_inputs()}
    outs = {o.name: o for o in sess.get_outputs()}
    if set(ins) != set(INPUTS) or set(outs) != set(OUTPUTS):
        raise UserError(f"{info.onnx}: graph has inputs {sorted(ins)} and outputs {sorted(outs)}, expected "
                        f"{list(INPUTS)} -> {list(OUTPUTS)}; re-export the model with `leadline export`")
    shapes = [ins["events"].type == "tensor(int64)", ins["h"].type == ins["c"].type == "tensor(float)",
              ins["harmony"].type == "tensor(float)" and ins["harmony"].shape[-1] == harmony.N_FEATURES,
              outs["logits"].shape[-1] == codec.VOCAB_SIZE,
              [ins["h"].shape[0], ins["h"].shape[2]] == [info.layers, info.hidden]]
    if not all(shapes):
        raise UserError(f"{info.onnx}: input/output types or shapes differ from the contract (events int64, "
                        f"harmony float32 (batch, time, {harmony.N_FEATURES}), h/c float32 (layers, batch, hidden), "
                        f"logits (batch, time, {codec.VOCAB_SIZE})); re-export the model")


def session(path: Path, options: ort.SessionOptions, providers: list) -> ort.InferenceSession:
    """An onnxruntime session; a corrupt file or a provider that fails to load is a UserError."""
    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except _ORT_ERRORS as e:
        raise UserError(f"{path}: onnxruntime cannot load it ({_why(e)}); "
                        f"re-export the model with `leadline export`") from None


def _why(e: Exception) -> str:
    """An onnxruntime exception in one short line."""
    return f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:200]}"


def cpu_options(threads: int = 1, spin: bool = False, optimize: bool = True) -> ort.SessionOptions:
    """Session options for the live path: `threads` intra-op threads (0 = one per core), sequential."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                   else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    so.log_severity_level = 3
    if not spin:  # a spinning pool keeps a core busy that the MIDI and scheduler threads need
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so


# --- engines ------------------------------------------------------------------------------------------

class _Engine:
    """What both engines share: priming from a window, the state accessors, warm-up.

    A subclass sets info, batch, _window_session and defines step, step_batch, _get_state, _put_state."""

    harmony_code = harmony.NONE

    def prime(self, tokens, harmony_codes=None) -> np.ndarray:
        """Reset, then run the window `tokens` in one run (time axis T); every row gets the window's state.

        Returns the logits (vocab,) after the window's last token."""
        logits, h, c = self.run_window(tokens, harmony_codes)
        self._put_state(h, c)
        return logits[-1]

    def run_window(self, tokens, harmony_codes=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Logits (T, vocab), h, c of the window `tokens` from a zero state, the backing's harmony codes beside
        them (None: the harmony now set, `set_harmony`); the engine's state is untouched."""
        events = np.asarray(tokens, np.int64).reshape(1, -1)
        if events.size == 0:
            raise ValueError("a window needs at least one token (BOS for a fresh start)")
        codes = np.full(events.shape, self.harmony_code, np.int64) if harmony_codes is None else harmony_codes
        harm = harmony.features(np.asarray(codes).reshape(events.shape))
        zero = np.zeros(self.info.state_shape(1), np.float32)
        logits, h, c = self._window_session.run(None, {"events": events, "harmony": harm, "h": zero, "c": zero})
        return logits[0], h, c

    def set_harmony(self, code: int) -> None:
        """The backing's harmony (a daemon/harmony.py code) that every following step hears, until set again."""
        if code != self.harmony_code:
            self.harmony_code = code
            self._put_harmony(harmony.features(np.full((self.batch, 1), code)))

    def set_harmony_rows(self, codes) -> None:
        """A harmony code per row (batch,) for the following steps (`leadline eval` answers many cuts at once)."""
        self.harmony_code = -1  # (no single code: the next set_harmony writes every row)
        self._put_harmony(harmony.features(np.asarray(codes).reshape(self.batch, 1)))

    def reset(self) -> None:
        """A fresh (zero) state, as after BOS with no history."""
        self._put_state(0.0, 0.0)

    @property
    def state(self) -> tuple[np.ndarray, np.ndarray]:
        """Copies of (h, c), each (layers, batch, hidden)."""
        return self._get_state()

    @state.setter
    def state(self, hc: tuple[np.ndarray, np.ndarray]) -> None:
        """Set (h, c), each (layers, batch or 1, hidden); a single row is copied to every row."""
        self._put_state(*hc)

    def warm_up(self) -> None:
        """Run once on each buffer set (first-run allocations, CUDA graph capture), then a fresh state."""
        self.step(codec.BOS)
        self.step(codec.BOS)
        self.reset()


class CpuEngine(_Engine):
    """Steps the model on the CPU with IO binding to preallocated numpy buffers.

    Measured (2x384 LSTM, 1 thread, p50): IO binding 123 us per step, `session.run` with feeds 133 us.
    """

    provider = "cpu"

    def __init__(self, info: ModelInfo, threads: int = 1, batch: int = 1, spin: bool = False) -> None:
        self.info, self.batch, self.threads = info, batch, threads
        self.session = self._window_session = session(info.onnx, cpu_options(threads, spin),
                                                      ["CPUExecutionProvider"])
        self._events = np.zeros((batch, 1), np.int64)
        self._harm = np.zeros((batch, 1, harmony.N_FEATURES), np.float32)
        self._h = [np.zeros(info.state_shape(batch), np.float32) for _ in range(2)]
        self._c = [np.zeros(info.state_shape(batch), np.float32) for _ in range(2)]
        self._logits = np.zeros((batch, 1, info.vocab), np.float32)
        self._row, self._rows = self._logits[0, 0], self._logits[:, 0]
        ov = ort.OrtValue.ortvalue_from_numpy  # on the CPU an OrtValue shares the numpy array's memory
        self._bindings = [_binding(self.session, ov(self._events), ov(self._harm), (ov(self._h[a]), ov(self._c[a])),
                                   (ov(self._logits), ov(self._h[1 - a]), ov(self._c[1 - a]))) for a in (0, 1)]
        self._run = self.session.run_with_iobinding
        self._cur = 0  # the buffer set holding the current state

    def describe(self) -> str:
        n = "default threads" if self.threads == 0 else f"{self.threads} thread{'s' * (self.threads > 1)}"
        return f"CPU ({n})"

    def step(self, token: int) -> np.ndarray:
        """Advance every row by `token`; the next-token logits (vocab,) of row 0, valid until the next call."""
        self._events.fill(token)
        self._run(self._bindings[self._cur])
        self._cur ^= 1
        return self._row

    def step_batch(self, tokens: np.ndarray) -> np.ndarray:
        """Advance row i by tokens[i]; logits (batch, vocab), valid until the next call."""
        np.copyto(self._events[:, 0], tokens)
        self._run(self._bindings[self._cur])
        self._cur ^= 1
        return self._rows

    def _get_state(self) -> tuple[np.ndarray, np.ndarray]:
        return self._h[self._cur].copy(), self._c[self._cur].copy()

    def _put_harmony(self, features: np.ndarray) -> None:
        self._harm[...] = features  # the bound buffer itself

    def _put_state(self, h, c) -> None:
        self._cur = 0
        self._h[0][...] = h
        self._c[0][...] = c


def _binding(sess: ort.InferenceSession, events, harm, state_in, outputs) -> ort.IOBinding:
    b = sess.io_binding()
    b.bind_ortvalue_input("events", events)
    b.bind_ortvalue_input("harmony", harm)
    b.bind_ortvalue_input("h", state_in[0])
    b.bind_ortvalue_input("c", state_in[1])
    for name, value in zip(OUTPUTS, outputs):
        b.bind_ortvalue_output(name, value)
    return b


class CudaGraphEngine(_Engine):
    """Steps the model on a GPU: state on the device, two captured CUDA graphs (gpu_graph_id 1 and 2).

    `graph=False` keeps the same bound buffers but runs the graph kernel by kernel (the bench's
    "CUDA with IO binding"). `strict` disables onnxruntime's silent CPU fallback (tests).
    """

    provider = "cuda"

    def __init__(self, info: ModelInfo, batch: int = 1, graph: bool = True, device_id: int = 0,
                 strict: bool = False) -> None:
        self.info, self.batch, self.graph, self.device_id = info, batch, graph, device_id
        self.session = _cuda_session(info, {"enable_cuda_graph": "1"} if graph else {}, device_id, strict)
        # A window has a new length every time, which a CUDA graph cannot replay: windows run on a plain
        # CUDA session of the same model and `prime` copies their state into the bound buffers.
        self._window_session = _cuda_session(info, {}, device_id, strict) if graph else self.session
        dev = ("cuda", device_id)
        self._tok = np.zeros((batch, 1), np.int64)  # host side of the bound token input
        self._events = ort.OrtValue.ortvalue_from_numpy(self._tok, *dev)
        self._harm = ort.OrtValue.ortvalue_from_numpy(np.zeros((batch, 1, harmony.N_FEATURES), np.float32), *dev)
        zero = np.zeros(info.state_shape(batch), np.float32)
        self._h = [ort.OrtValue.ortvalue_from_numpy(zero, *dev) for _ in range(2)]
        self._c = [ort.OrtValue.ortvalue_from_numpy(zero, *dev) for _ in range(2)]
        self._logits = ort.OrtValue.ortvalue_from_shape_and_type((batch, 1, info.vocab), np.float32, *dev)
        self._bindings = [_binding(self.session, self._events, self._harm, (self._h[a], self._c[a]),
                                   (self._logits, self._h[1 - a], self._c[1 - a])) for a in (0, 1)]
        self._options = [ort.RunOptions(), ort.RunOptions()]
        if graph:  # one captured graph per buffer set; id 0 is reserved by onnxruntime, -1 means no graph
            self._options[0].add_run_config_entry("gpu_graph_id", "1")
            self._options[1].add_run_config_entry("gpu_graph_id", "2")
        self._cur = 0

    def describe(self) -> str:
        return f"CUDA {'graph' if self.graph else 'IO binding'} (device {self.device_id})"

    def step(self, token: int) -> np.ndarray:
        """Advance every row by `token`; row 0's logits (vocab,), a fresh host copy."""
        self._tok.fill(token)
        return self._run()[0, 0]

    def step_batch(self, tokens: np.ndarray) -> np.ndarray:
        """Advance row i by tokens[i]; logits (batch, vocab), a fresh host copy."""
        np.copyto(self._tok[:, 0], tokens)
        return self._run()[:, 0]

    def _run(self) -> np.ndarray:
        self._events.update_inplace(self._tok)  # the bound device buffer keeps its address (graph-safe)
        b = self._bindings[self._cur]
        b.synchronize_inputs()  # a pageable-memory copy may still be in flight on another stream
        self.session.run_with_iobinding(b, self._options[self._cur])
        self._cur ^= 1
        return self._logits.numpy()  # the only device -> host copy per step

    def _get_state(self) -> tuple[np.ndarray, np.ndarray]:
        return self._h[self._cur].numpy(), self._c[self._cur].numpy()

    def _put_harmony(self, features: np.ndarray) -> None:
        self._harm.update_inplace(np.ascontiguousarray(features, np.float32))  # same device buffer: graph-safe

    def _put_state(self, h, c) -> None:
        shape = self.info.state_shape(self.batch)
        self._cur = 0
        self._h[0].update_inplace(np.ascontiguousarray(np.broadcast_to(h, shape), np.float32))
        self._c[0].update_inplace(np.ascontiguousarray(np.broadcast_to(c, shape), np.float32))


def _cuda_session(info: ModelInfo, extra: dict, device_id: int, strict: bool) -> ort.InferenceSession:
    if CUDA not in ort.get_available_providers():
        raise ProviderUnavailable(cuda_missing_reason())
    if extra and tuple(int(x) for x in ort.__version__.split(".")[:2]) < (1, 18):
        raise ProviderUnavailable(f"CUDA graphs with two state buffers need onnxruntime-gpu >= 1.18 "
                                  f"(gpu_graph_id), this is {ort.__version__}")
    _preload_cuda()
    so = cpu_options(1)
    if strict:
        so.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    opts = {"device_id": str(device_id), **extra}
    try:
        sess = ort.InferenceSession(str(info.onnx), so, providers=[(CUDA, opts), "CPUExecutionProvider"])
    except _ORT_ERRORS as e:
        raise ProviderUnavailable(f"the CUDA execution provider failed to load ({_why(e)})") from None
    if sess.get_providers()[0] != CUDA:  # onnxruntime falls back to the CPU without an error
        raise ProviderUnavailable("the CUDA execution provider did not load (missing CUDA/cuDNN libraries? "
                                  "see `leadline doctor`)")
    return sess


@functools.cache
def _preload_cuda() -> None:
    """Let onnxruntime find CUDA/cuDNN from the nvidia pip wheels (as torch installs them), once."""
    if hasattr(ort, "preload_dlls"):
        ort.preload_dlls()


def cuda_missing_reason() -> str | None:
    """Why onnxruntime offers no CUDA provider here, or None when it does."""
    if CUDA in ort.get_available_providers():
        return None
    return ("CUDA execution provider not available in this onnxruntime "
            "(install onnxruntime-gpu in place of onnxruntime on a CUDA machine)")


# --- choosing ---------------------------------------------------------------------------------------

Engine = CpuEngine | CudaGraphEngine


def make_engine(cfg: EngineConfig, model: str | Path | ModelInfo | None = None, batch: int = 1) -> Engine:
    """The engine for `cfg.provider` on `model` (default cfg.model); logs one line naming it and why."""
    info = model if isinstance(model, ModelInfo) else load_model(cfg.model if model is None else model)
    if cfg.provider == "cpu":
        engine, why = CpuEngine(info, cfg.threads, batch), "engine.provider is cpu"
    elif cfg.provider == "cuda":
        reason = cuda_missing_reason()
        if reason:
            raise ProviderUnavailable(f"engine.provider: cuda, but the {reason}; or set engine.provider: auto")
        engine, why = _cuda_engine(info, batch), "engine.provider is cuda"
    else:
        engine, why = _auto(info, cfg.threads, batch)
    log.info("engine: %s: %s", engine.describe(), why)
    return engine


def _auto(info: ModelInfo, threads: int, batch: int) -> tuple[Engine, str]:
    cpu = CpuEngine(info, threads, batch)
    reason = cuda_missing_reason()
    if reason:
        return cpu, reason
    try:
        gpu = _cuda_engine(info, batch)
    except ProviderUnavailable as e:
        return cpu, str(e)
    gpu_ms = quick_step_ms(gpu)
    cpu_ms = quick_step_ms(cpu)
    if gpu_ms < cpu_ms:
        return gpu, f"faster than the CPU ({gpu_ms:.3f} vs {cpu_ms:.3f} ms per step)"
    return cpu, f"faster than CUDA graphs ({cpu_ms:.3f} vs {gpu_ms:.3f} ms per step)"


def _cuda_engine(info: ModelInfo, batch: int) -> CudaGraphEngine:
    """A warmed-up CUDA graph engine; a capture or run failure is ProviderUnavailable, not a traceback."""
    try:
        engine = CudaGraphEngine(info, batch)
        engine.warm_up()
    except _ORT_ERRORS as e:
        raise ProviderUnavailable(f"CUDA graph capture or run failed ({_why(e)})") from None
    return engine


def quick_step_ms(engine: Engine, steps: int = 50) -> float:
    """Median milliseconds per step over a short run (after warm-up); leaves a fresh state."""
    engine.warm_up()
    times = np.empty(steps)
    for i in range(steps):
        t0 = time.perf_counter_ns()
        engine.step(codec.BOS)
        times[i] = time.perf_counter_ns() - t0
    engine.reset()
    return float(np.median(times)) / 1e6
