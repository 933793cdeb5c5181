"""Ingestion benchmark: files/s of `leadline data build` over ../shared/data, and the lead-line statistics
that justify the codec's choices (grid, SHIFT range, durations, velocity bins, pitch range).

Run from the repository root: `python -m leadline.bench.ingest [--jobs N] [--data DIR]`. Prints a summary and writes
bench/results/ingest-<hostname>.json. `measure()` returns the same dict (for `leadline bench`).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import socket
import sys
import time
from pathlib import Path

import numpy as np

from leadline.daemon import codec, midifile
from leadline.daemon.config import DataConfig
from leadline.training import ingest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


def measure(data: Path = DATA, jobs: int = 0, progress: bool = False) -> dict:
    """Build the cache of every corpus under `data` with `jobs` workers; timing and lead-line statistics."""
    cfg = DataConfig()
    sources = sorted(str(p) for p in Path(data).iterdir() if p.is_dir())
    t0 = time.perf_counter()
    built = ingest.build(sources, cfg, jobs=jobs, progress=progress)
    seconds = time.perf_counter() - t0
    m = built.manifest
    files = ingest.find_files(sources, cfg)
    used = [f for f in files if m["per_file"][f.name]["status"] == "used"]
    jobs = jobs or os.cpu_count() or 1
    with multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn").Pool(jobs) as pool:
        leads = pool.map(_lead_arrays, [f.path for f in used], chunksize=16)
    by_source: dict[str, list] = {}
    for f, arrays in zip(used, leads):
        by_source.setdefault(f.name.split("/")[0], []).append(arrays)
    stats = {name: lead_stats(a) for name, a in sorted(by_source.items())}
    stats["all"] = lead_stats([a for group in by_source.values() for a in group])
    return {
        "machine": {"host": socket.gethostname(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "jobs": jobs, "seconds": round(seconds, 2), "files": m["files"]["seen"],
        "files_per_s": round(m["files"]["seen"] / seconds, 1), "used": m["files"]["used"],
        "duplicates": m["files"]["duplicates"], "skipped": m["skipped"], "songs": m["songs"],
        "events": {k: v["events"] for k, v in m["splits"].items()}, "lead_lines": stats,
    }


def _lead_arrays(path: str) -> tuple[np.ndarray, ...]:
    """(onset, duration, pitch, velocity) of a file's lead line, on the grid, pitches not folded."""
    line = midifile.pick_lead(midifile.read(path).tracks, DataConfig()).line
    return line.onset, line.duration, line.pitch, line.velocity


def lead_stats(leads: list[tuple[np.ndarray, ...]]) -> dict:
    """Onset gaps, durations, velocities, pitch range and polyphony over lead lines (grid ticks)."""
    gaps = np.concatenate([np.diff(np.unique(a[0])) for a in leads])
    dur = np.concatenate([a[1] for a in leads])
    pitch = np.concatenate([a[2] for a in leads])
    vel = np.concatenate([a[3] for a in leads])
    per_file_vels = [len(np.unique(a[3])) for a in leads]
    notes, onsets = len(dur), sum(len(np.unique(a[0])) for a in leads)
    pct = lambda x, qs: {f"p{q}": round(float(np.percentile(x, q)), 1) for q in qs}  # noqa: E731
    return {
        "lines": len(leads), "notes": int(notes),
        "onset_gap_ticks": pct(gaps, (50, 90, 99, 99.5, 99.9)),
        "onset_gap_over_96_pct": round(100 * float(np.mean(gaps > codec.MAX_SHIFT)), 3),
        "duration_ticks": pct(dur, (50, 90, 99, 99.9)),
        "duration_within_24_pct": round(100 * float(np.mean(dur <= codec.TICKS_PER_BEAT)), 2),
        "duration_over_192_pct": round(100 * float(np.mean(dur > codec.MAX_DURATION)), 3),
        "duration_exact_pct": round(100 * float(np.mean(np.isin(dur, codec.DURATIONS))), 2),
        "distinct_velocities": int(len(np.unique(vel))),
        "distinct_velocities_per_line_median": float(np.median(per_file_vels)),
        "pitch_min": int(pitch.min()), "pitch_max": int(pitch.max()), **pct(pitch, (0.1, 99.9)),
        "pitch_outside_pct": round(100 * float(np.mean((pitch < codec.PITCH_LO) | (pitch > codec.PITCH_HI))), 3),
        "mean_notes_per_onset": round(notes / max(1, onsets), 3),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(DATA), help="folder of corpora (default: ../shared/data)")
    p.add_argument("--jobs", type=int, default=0, help="worker processes (default: every core)")
    p.add_argument("--json", help="output (default: bench/results/ingest-<hostname>.json)")
    args = p.parse_args(argv)
    result = measure(Path(args.data), args.jobs, progress=True)
    out = Path(args.json or REPO / "bench" / "results" / f"ingest-{socket.gethostname()}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"ingest: {result['files']} files in {result['seconds']} s with {result['jobs']} workers = "
          f"{result['files_per_s']} files/s; {result['used']} used, {result['duplicates']} duplicates, "
          f"skipped {result['skipped']}; events {result['events']}")
    for name, s in result["lead_lines"].items():
        print(f"{name}: {json.dumps(s)}")
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
