"""Scale benchmark: ingestion of a synthetic corpus of 100,000+ files, and training events/s on 1 and 2 processes.

`python -m leadline.bench.scale corpus --out DIR [--variants 37]` writes variants of every file of ../shared/data
into DIR/vNN/ (one folder a variant, the same tree below it): variant k transposes every non-drum note by a
semitone shift and scales tempo and velocities, and renames the file (`<stem> tNNxJ.mid`), so each copy is a song
of its own with a line of its own. The bytes are patched where a one-time parse of each file found its notes'
keys, velocities and tempos: 2,762 files x 37 variants = 102,194 files (about 2.7 GB) in a minute or two.
Never commit DIR.

`python -m leadline.bench.scale ingest --corpus DIR --variants 4 37` ingests the first 4 and then the first 37
variant folders, each in a fresh process (`leadline data build` as a user runs it), and reports files/s, files/s
per core, files per CPU-second (what a core does on a shared machine) and the peak RSS of the main process and
of a worker. `train --data CACHE` measures training events/s with 1 process and with 2 (torchrun, gloo). Results go to bench/results/scale-<host>.json (merged by section).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
SHIFTS = [0, 3, -4, 5, -2, 1, -5, 4, -1, 2, -3, 6, -6]  # semitones; with 3 tempo/velocity scalings: 39 variants
SCALES = [(1.0, 1.0), (1.25, 0.8), (0.8, 0.65)]  # (tempo: microseconds per beat, velocity)
LAKH_FILES = 176_581


# --- the synthetic corpus ---------------------------------------------------------------------------------

def positions(data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Byte offsets of the key of every non-drum note-on/off, of its note-ons' velocities, of every tempo."""
    keys, vels, tempos = [], [], []
    pos = data.find(b"MThd")  # RIFF-wrapped files (RMID) start later
    if pos < 0:
        raise ValueError("no MThd")
    pos += 8 + int.from_bytes(data[pos + 4:pos + 8], "big")
    while pos + 8 <= len(data) and data[pos:pos + 4] == b"MTrk":
        end = min(len(data), pos + 8 + int.from_bytes(data[pos + 4:pos + 8], "big"))
        _track(data, pos + 8, end, keys, vels, tempos)
        pos = end
    return np.array(keys, np.int64), np.array(vels, np.int64), np.array(tempos, np.int64)


def _varlen(data: bytes, pos: int) -> tuple[int, int]:
    value = 0
    while True:
        b = data[pos]
        pos += 1
        value = (value << 7) | (b & 0x7F)
        if not b & 0x80:
            return value, pos


def _track(data: bytes, pos: int, end: int, keys: list, vels: list, tempos: list) -> None:
    running = 0
    while pos < end:
        _, pos = _varlen(data, pos)
        status = data[pos]
        if status & 0x80:
            pos += 1
            running = status if status < 0xF0 else running
        else:
            status = running
        if status == 0xFF:
            kind = data[pos]
            length, pos = _varlen(data, pos + 1)
            if kind == 0x51 and length == 3:
                tempos.append(pos)
            pos += length
        elif status in (0xF0, 0xF7):
            length, pos = _varlen(data, pos)
            pos += length
        elif status & 0xF0 in (0x80, 0x90) and status & 0x0F != 9:
            keys.append(pos)
            if status & 0xF0 == 0x90:
                vels.append(pos + 1)
            pos += 2
        else:
            pos += 1 if status & 0xF0 in (0xC0, 0xD0) else 2


def variant(data: bytes, where: tuple[np.ndarray, ...], k: int) -> bytes:
    """Variant `k` of a file: notes shifted, tempo and velocities scaled (note-offs by velocity 0 kept)."""
    keys, vels, tempos = where
    shift, (tempo, velocity) = SHIFTS[k % len(SHIFTS)], SCALES[k // len(SHIFTS) % len(SCALES)]
    b = np.frombuffer(data, np.uint8).copy()
    keys, vels = keys[keys < len(b)], vels[vels < len(b)]
    b[keys] = np.clip(b[keys].astype(np.int64) + shift, 0, 127)
    v = b[vels].astype(np.int64)
    b[vels] = np.where(v > 0, np.clip(np.round(v * velocity), 1, 127), 0)
    for t in tempos[tempos + 3 <= len(b)]:
        us = min(0xFFFFFF, int(int.from_bytes(b[t:t + 3].tobytes(), "big") * tempo))
        b[t:t + 3] = np.frombuffer(us.to_bytes(3, "big"), np.uint8)
    return b.tobytes()


def _write_variants(job: tuple[Path, str, Path, int]) -> int:
    src, rel, out, n = job
    data = src.read_bytes()
    try:
        where = positions(data)
    except (ValueError, IndexError):  # a corrupt file stays corrupt in every variant (its skip is work too)
        where = (np.zeros(0, np.int64),) * 3
    stem, suffix = os.path.splitext(rel)
    for k in range(n):
        path = out / f"v{k:02d}" / f"{stem} t{k % len(SHIFTS):02d}x{k // len(SHIFTS)}{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(variant(data, where, k))
    return n


def make_corpus(out: Path, variants: int, data: Path = DATA, jobs: int = 0) -> dict:
    """Write `variants` variant folders of every MIDI file under `data` into `out`."""
    from leadline.training.ingest import SUFFIXES

    files = sorted(p for p in data.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file())
    t0 = time.perf_counter()
    work = [(p, p.relative_to(data).as_posix(), out, variants) for p in files]
    with multiprocessing.get_context("fork").Pool(jobs or os.cpu_count()) as pool:
        written = sum(pool.imap_unordered(_write_variants, work, chunksize=8))
    size = sum(f.stat().st_size for f in files) * variants
    return {"files": written, "source_files": len(files), "variants": variants, "bytes": size,
            "seconds": round(time.perf_counter() - t0, 1)}


# --- ingestion at 10k and 100k files ------------------------------------------------------------------------

def ingest_once(sources: list[str], jobs: int) -> dict:
    """`leadline data build` of `sources` into a temporary folder, in this process; timing and peak RSS (MiB)
    of this (the main) process and of the largest worker."""
    import resource

    from leadline.daemon.config import DataConfig
    from leadline.training import ingest

    with tempfile.TemporaryDirectory(prefix="leadline-scale-") as tmp:
        t0 = time.perf_counter()
        manifest = ingest.build_to(Path(tmp), sources, DataConfig(), jobs=jobs, progress=False)
        seconds = time.perf_counter() - t0
        cache_mb = sum(f.stat().st_size for f in Path(tmp).iterdir()) / 2**20
    rss = lambda who: round(resource.getrusage(who).ru_maxrss / 1024, 1)  # noqa: E731  (Linux: KiB)
    cpu = sum(getattr(resource.getrusage(w), k) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
              for k in ("ru_utime", "ru_stime"))  # a shared machine's cores: what a core does, in CPU time
    f = manifest["files"]
    return {"files": f["seen"], "used": f["used"], "duplicates": f["duplicates"], "skipped": f["skipped"],
            "events": sum(s["events"] for s in manifest["splits"].values()), "jobs": jobs,
            "seconds": round(seconds, 1), "files_per_s": round(f["seen"] / seconds, 1),
            "files_per_s_per_core": round(f["seen"] / seconds / jobs, 1), "cache_mib": round(cache_mb, 1),
            "cpu_s": round(cpu, 1), "files_per_cpu_s": round(f["seen"] / cpu, 1),
            "peak_rss_main_mib": rss(resource.RUSAGE_SELF), "peak_rss_worker_mib": rss(resource.RUSAGE_CHILDREN)}


def ingest_sizes(corpus: Path, counts: list[int], jobs: int) -> dict:
    """`ingest_once` over the first n variant folders for each n in `counts`, each in a fresh process."""
    rows = []
    for n in counts:
        sources = [str(corpus / f"v{k:02d}") for k in range(n)]
        code = ("import json, sys; from leadline.bench.scale import ingest_once; "
                "print(json.dumps(ingest_once(sys.argv[2:], int(sys.argv[1]))))")
        done = subprocess.run([sys.executable, "-c", code, str(jobs), *sources], capture_output=True, text=True,
                              check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"{rows[-1]['files']} files: {rows[-1]}", flush=True)
    small, big = rows[0], rows[-1]
    per_core = big.get("files_per_cpu_s", big["files_per_s_per_core"])
    return {"rows": rows, "growth": {
        "files": round(big["files"] / small["files"], 2),
        "files_per_s": round(big["files_per_s"] / small["files_per_s"], 3),
        "peak_rss_main": round(big["peak_rss_main_mib"] / small["peak_rss_main_mib"], 3),
        "peak_rss_worker": round(big["peak_rss_worker_mib"] / small["peak_rss_worker_mib"], 3)},
        "lakh_16_cores_s": round(LAKH_FILES / (per_core * 16), 1), "lakh_per_core_rate": per_core}


# --- training events/s ----------------------------------------------------------------------------------

def train_rate(data: str, procs: int, threads: int, steps: int, sets: list[str]) -> dict:
    """Events/s of `leadline train` on `procs` processes (torchrun, gloo) of `threads` threads over `steps`
    steps (the run's metrics line: global events over rank 0's time in training steps)."""
    with tempfile.TemporaryDirectory(prefix="leadline-scale-train-") as tmp:
        args = ["-m", "leadline.daemon.cli", "train", "--data", data, "--out", f"{tmp}/run"]
        for kv in ["train.device=cpu", f"train.max_steps={steps}", *sets]:
            args += ["--set", kv]
        if procs > 1:
            args = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs), *args]
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        subprocess.run([sys.executable, *args], env=env, check=True, capture_output=True, text=True)
        row = json.loads(Path(f"{tmp}/run/metrics.jsonl").read_text().splitlines()[-1])
    return {"processes": procs, "threads_per_process": threads, "steps": steps,
            "events_per_s": round(row["events_per_s"], 1)}


# --- CLI ----------------------------------------------------------------------------------------------------

def save(section: str, result: dict, path: Path | None = None) -> Path:
    path = path or REPO / "bench" / "results" / f"scale-{socket.gethostname()}.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    old["machine"] = {"host": socket.gethostname(), "cpus": os.cpu_count()}
    old[section] = result
    path.write_text(json.dumps(old, indent=1) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m leadline.bench.scale", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    c = sub.add_parser("corpus", help="write the synthetic corpus")
    c.add_argument("--out", required=True, type=Path)
    c.add_argument("--variants", type=int, default=37)
    i = sub.add_parser("ingest", help="ingest the first N variant folders, for each N")
    i.add_argument("--corpus", required=True, type=Path)
    i.add_argument("--variants", type=int, nargs="+", default=[4, 37])
    i.add_argument("--jobs", type=int, default=os.cpu_count())
    t = sub.add_parser("train", help="training events/s on 1 process (every core, one core) and on 2")
    t.add_argument("--data", required=True)
    t.add_argument("--steps", type=int, default=20)
    t.add_argument("--set", dest="sets", action="append", default=[])
    args = p.parse_args(argv)
    if args.what == "corpus":
        result = make_corpus(args.out, args.variants)
        print(f"{args.out}: {result}")
        return 0
    if args.what == "ingest":
        result = ingest_sizes(args.corpus, args.variants, args.jobs)
    else:
        cores = os.cpu_count() or 1
        runs = [(1, cores), (1, 1), (2, max(1, cores // 2))]  # one process on every core, on one, two on half each
        result = {"rows": [train_rate(args.data, n, t, args.steps, args.sets) for n, t in runs], "settings": args.sets}
    print(json.dumps(result, indent=1))
    print(f"wrote {save(args.what, result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
