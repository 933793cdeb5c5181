"""`leadline bench`: measured speed of each part, printed as a table and written as JSON with machine info.

Each section is a function taking a `Bench` context and returning a dict, registered in `SECTIONS` with
`@section(name)`; more sections (JACK timing, ingestion, training) register the same way. Timings are
per call with `time.perf_counter_ns`, the garbage collector off during timing loops, after a warm-up.
"""
from __future__ import annotations

import datetime
import functools
import gc
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import onnxruntime as ort

from leadline.daemon import codec
from leadline.daemon.engine import CpuEngine, CudaGraphEngine, ModelInfo, cuda_missing_reason, load_model
from leadline.daemon.errors import UserError

WINDOW = 64  # the seed window of the old (windowed) way, and the priming window
SECTIONS: dict[str, Callable[["Bench"], dict]] = {}


def section(name: str):
    """Register a bench section under `name` (run in registration order)."""
    def register(fn: Callable[["Bench"], dict]) -> Callable[["Bench"], dict]:
        SECTIONS[name] = fn
        return fn
    return register


class Bench:
    """What a section needs: the parsed arguments, step counts, the model (loaded on first use)."""

    def __init__(self, args) -> None:
        self.args = args
        self.quick = bool(args.quick)
        self.steps = 200 if self.quick else 2000
        self.tokens = np.random.default_rng(0).integers(1, codec.VOCAB_SIZE, size=max(self.steps, 4096))

    @functools.cached_property
    def model(self) -> ModelInfo:
        return load_model(self.args.model)


# --- timing -------------------------------------------------------------------------------------------

def time_calls(fn: Callable[[int], object], n: int, warmup: int = 20) -> dict:
    """Call fn(i) n times after `warmup` calls; latency stats in milliseconds."""
    for i in range(warmup):
        fn(i)
    ns = np.empty(n, np.int64)
    enabled = gc.isenabled()
    gc.disable()
    try:
        for i in range(n):
            t0 = time.perf_counter_ns()
            fn(i)
            ns[i] = time.perf_counter_ns() - t0
    finally:
        if enabled:
            gc.enable()
    return stats(ns)


def stats(ns: np.ndarray) -> dict:
    ms = np.asarray(ns, np.float64) / 1e6
    return {"n": int(ms.size), "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "max_ms": float(ms.max()), "mean_ms": float(ms.mean())}


def _step_stats(engine, tokens: np.ndarray, n: int) -> dict:
    engine.warm_up()
    out = time_calls(lambda i: engine.step(tokens[i]), n)
    out["engine"] = engine.describe()
    return out


def _cuda(make: Callable[[], dict]) -> dict:
    """make() when onnxruntime has a working CUDA provider, else {"skipped": reason}."""
    reason = cuda_missing_reason()
    if reason:
        return {"skipped": reason}
    try:
        return make()
    except UserError as e:
        return {"skipped": str(e)}


# --- sections ---------------------------------------------------------------------------------------

@section("step")
def bench_step(b: Bench) -> dict:
    """One inference step, batch 1, state carried: CPU 1 thread, CPU default threads, CUDA (plain, graph)."""
    m, toks, n = b.model, b.tokens, b.steps
    return {
        "cpu_1_thread": _step_stats(CpuEngine(m, threads=1), toks, n),
        "cpu_default_threads": _step_stats(CpuEngine(m, threads=0, spin=True), toks, n),
        "cuda_iobinding": _cuda(lambda: _step_stats(CudaGraphEngine(m, graph=False, strict=True), toks, n)),
        "cuda_graph": _cuda(lambda: _step_stats(CudaGraphEngine(m, graph=True, strict=True), toks, n)),
    }


def _windowed(engine, tokens: np.ndarray, n: int) -> dict:
    """The seeds' way: every new event re-runs the model over the last WINDOW events from a zero state."""
    windows = np.lib.stride_tricks.sliding_window_view(tokens, WINDOW)
    out = time_calls(lambda i: engine.run_window(windows[i]), n, warmup=5)
    stateful = _step_stats(engine, tokens, n)
    out["stateful_p50_ms"] = stateful["p50_ms"]
    out["ratio_p50"] = out["p50_ms"] / stateful["p50_ms"]
    return out


@section("windowed")
def bench_windowed(b: Bench) -> dict:
    """Windowed (T=64 from zero per event) vs stateful stepping, same provider; ratio of the medians."""
    n = 50 if b.quick else 1000
    return {"window": WINDOW, "cpu_1_thread": _windowed(CpuEngine(b.model, threads=1), b.tokens, n),
            "cuda": _cuda(lambda: _windowed(CudaGraphEngine(b.model, strict=True), b.tokens, n))}


def _priming(engine, tokens: np.ndarray, n: int) -> dict:
    window = tokens[:WINDOW]

    def steps(_: int) -> None:
        engine.reset()
        for t in window:
            engine.step(t)

    engine.warm_up()
    one = time_calls(lambda i: engine.prime(window), n, warmup=3)
    many = time_calls(steps, n, warmup=3)
    one["speedup_p50"] = many["p50_ms"] / one["p50_ms"]  # one run over the window vs stepping through it
    return {"one_run": one, "single_steps": many, "speedup_p50": one["speedup_p50"]}


@section("priming")
def bench_priming(b: Bench) -> dict:
    """Priming the state from a 64-event window: one run (time = 64) vs 64 single steps."""
    n = 5 if b.quick else 50
    return {"window": WINDOW, "cpu_1_thread": _priming(CpuEngine(b.model, threads=1), b.tokens, n),
            "cuda": _cuda(lambda: _priming(CudaGraphEngine(b.model, strict=True), b.tokens, n))}


def _candidates(engine, tokens: np.ndarray, n: int) -> dict:
    engine.warm_up()
    engine.prime(tokens[:WINDOW])
    rows = np.resize(tokens, (16, engine.batch))
    out = time_calls(lambda i: engine.step_batch(rows[i % 16]), n, warmup=5)
    out["per_candidate_us"] = out["p50_ms"] * 1000.0 / engine.batch
    out["engine"] = engine.describe()
    return out


@section("candidates")
def bench_candidates(b: Bench) -> dict:
    """Several continuations at once: one step of batch 16 and 256 (state carried), CPU 1 thread and CUDA."""
    n = 20 if b.quick else 300
    out: dict = {}
    for batch in (16, 256):
        out[f"cpu_1_thread_b{batch}"] = _candidates(CpuEngine(b.model, threads=1, batch=batch), b.tokens, n)
        out[f"cuda_graph_b{batch}"] = _cuda(
            lambda: _candidates(CudaGraphEngine(b.model, batch=batch, strict=True), b.tokens, n))
    return out


# --- machine, output ----------------------------------------------------------------------------------

def machine() -> dict:
    """Where the numbers were taken."""
    return {"hostname": socket.gethostname(), "cpu": _cpu_model(), "cores": os.cpu_count(), "gpu": _gpu_name(),
            "platform": platform.platform(), "python": platform.python_version(),
            "onnxruntime": ort.__version__,
            "onnxruntime_providers": ort.get_available_providers(), "numpy": np.__version__,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _gpu_name() -> str | None:
    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out.splitlines()[0] if out else None


def table(results: dict) -> list[str]:
    """Printable lines: one per timed entry (p50/p99/max ms), skipped entries with their reason."""
    lines = [f"{'measure':<44} {'p50 ms':>9} {'p99 ms':>9} {'max ms':>9}  note"]
    for sec, body in results.items():
        for key, val in _entries(sec, body):
            if "skipped" in val:
                lines.append(f"{key:<44} {'-':>9} {'-':>9} {'-':>9}  skipped: {val['skipped']}")
            elif "p50_ms" not in val:
                facts = ", ".join(f"{k}={v}" for k, v in val.items() if not isinstance(v, (dict, list)))
                lines.append(f"{key:<44} {'-':>9} {'-':>9} {'-':>9}  {facts}")
            else:
                notes = ", ".join(f"{k}={v:.3g}" for k, v in val.items() if k in ("ratio_p50", "speedup_p50",
                                                                                    "per_candidate_us"))
                lines.append(f"{key:<44} {val['p50_ms']:>9.4f} {val['p99_ms']:>9.4f} {val['max_ms']:>9.4f}  "
                             f"{val.get('engine', '')} {notes}".rstrip())
    return lines


def _entries(prefix: str, body: dict):
    """(dotted name, dict) for every nested dict that holds timings or a skip reason."""
    for key, val in body.items():
        if isinstance(val, dict):
            if "p50_ms" in val or "skipped" in val:
                yield f"{prefix}.{key}", val
            else:
                if any(not isinstance(v, (dict, list)) for v in val.values()):
                    yield f"{prefix}.{key}", val  # plain facts (counts, rates, errors)
                yield from _entries(f"{prefix}.{key}", val)
        elif prefix.count(".") == 0 and key == next(iter(body)) and not isinstance(val, (dict, list)):
            yield prefix, body  # a section that is one flat dict of facts


def run(args) -> int:
    """Run the chosen sections (default: all), print the table, write the JSON."""
    names = list(args.only) or list(SECTIONS)
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        raise UserError(f"bench --only {unknown[0]}: unknown section (known: {', '.join(SECTIONS)})")
    b = Bench(args)
    results = {}
    for name in names:
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        results[name] = SECTIONS[name](b)
    path = Path(args.json) if args.json else Path("bench/results") / f"{socket.gethostname()}.json"
    report = {"machine": machine(), "quick": b.quick, "sections": results}
    if "model" in b.__dict__:  # loaded by a section
        report["model"] = {"path": str(b.model.path), "embed": b.model.embed, "hidden": b.model.hidden,
                           "layers": b.model.layers, "vocab": b.model.vocab}
    _write(path, report, merge=bool(args.only))
    print("\n".join(table(results)))
    print(f"written: {path}")
    return 0


def _write(path: Path, report: dict, merge: bool) -> None:
    """Write `report`; with `merge` (an --only run) keep the other sections already in the file."""
    if merge and path.is_file():
        try:
            old = json.loads(path.read_text())
            report["sections"] = {**old.get("sections", {}), **report["sections"]}
        except (OSError, ValueError, AttributeError):
            pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=1) + "\n")
    os.replace(tmp, path)


from leadline.bench import jack  # noqa: E402,F401  registers the "jack" section
from leadline.bench import jam  # noqa: E402,F401  registers the "jam" section
from leadline.bench import offline  # noqa: E402,F401  registers "ingest" and "train"
from leadline.bench import echo  # noqa: E402,F401  registers the "echo" section
