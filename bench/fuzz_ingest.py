"""Ingestion fuzz: real MIDI files mutated in ways real folders (and hostile ones) go wrong, fed to the reader.

Every mutant goes through `leadline.daemon.midifile.read` + `pick_lead` and `leadline.training.ingest.process` (the
per-file worker). Each must be used or skipped with a reason string: no exception escapes, time and memory per file
stay bounded. Mutations: truncation, bit flips, byte insertions and deletions, wrong MThd/MTrk lengths and track
counts, absurd PPQ (0, 1, 0x7FFF, SMPTE), absurd tempi (0, 0xFFFFFF), huge delta times (VLQ 0x0FFFFFFF, up to 2^31
ticks and beyond), thousands of note-ons without note-offs, running-status garbage.

Run from the repository root: `python -m leadline.bench.fuzz_ingest [--mutants N] [--seed S]`; prints the figures
(files fuzzed, used, skipped by reason, max seconds and peak memory per file). The test suite runs a
few dozen mutants through `fuzz` (tests/training/test_fuzz_ingest.py).
"""
from __future__ import annotations

import argparse
import random
import struct
import sys
import time
import tracemalloc
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
# real files the mutants start from: clean, multi-track, RIFF-wrapped, running status, jazz, pop
SEEDS = (
    "rock-o-net/b/black_sabbath/Paranoid.mid",
    "rock-o-net/b/black_sabbath/Iron_Man.mid",
    "rock-o-net/b/black_sabbath/Tarzan.mid",  # RIFF-wrapped
    "rock-o-net/m/metallica/Call_Of_Ktulu_1.mid",  # running status throughout
    "rock-o-net/i/iron_maiden/Powerslave.mid",  # truncated
    "rock-o-net/n/nine_inch_nails/Terrible_Lie_1.MID",  # corrupt running status
    "wjd-jazz-solos/ArtPepper_Stardust-1_FINAL.mid",
    "wjd-jazz-solos/JoeHenderson_TheSidewinder_FINAL.mid",
    "pop909/001.mid",
    "pop909/002.mid",
)
HUGE_VLQ = b"\xff\xff\xff\x7f"  # 0x0FFFFFFF ticks, the largest delta a MIDI file can hold


# --- the file's structure ----------------------------------------------------------------------------

def chunks(data: bytes) -> list[tuple[int, bytes, int]]:
    """(offset, chunk id, declared length) of the chunks from MThd on, as far as they can be followed."""
    out, pos = [], max(0, data.find(b"MThd"))
    while pos + 8 <= len(data):
        cid, (length,) = data[pos:pos + 4], struct.unpack(">I", data[pos + 4:pos + 8])
        out.append((pos, cid, length))
        pos += 8 + length
    return out


def tracks(data: bytes) -> list[tuple[int, int]]:
    """(offset of the MTrk header, body length) of each track chunk that lies inside the file."""
    return [(pos, n) for pos, cid, n in chunks(data) if cid == b"MTrk" and pos + 8 + n <= len(data)]


def _set_u32(data: bytes, pos: int, value: int) -> bytes:
    return data[:pos] + struct.pack(">I", value & 0xFFFFFFFF) + data[pos + 4:]


def _insert_in_track(data: bytes, rng: random.Random, payload: bytes, at_start: bool = True) -> bytes:
    """`payload` (whole events) put at the start of a random track (or at a random byte in it), length fixed."""
    found = tracks(data)
    if not found:
        return data + payload
    pos, n = rng.choice(found)
    at = pos + 8 + (0 if at_start else rng.randrange(n + 1))
    data = data[:at] + payload + data[at:]
    return _set_u32(data, pos + 4, n + len(payload))


def _header(data: bytes) -> int:
    return max(0, data.find(b"MThd"))


# --- mutations: each takes the bytes and a Random and returns new bytes ----------------------------------

def truncate(data: bytes, rng: random.Random) -> bytes:
    return data[:rng.randrange(len(data))]


def bit_flips(data: bytes, rng: random.Random) -> bytes:
    b = bytearray(data)
    for _ in range(rng.choice((1, 2, 8, 64))):
        i = rng.randrange(len(b))
        b[i] ^= 1 << rng.randrange(8)
    return bytes(b)


def insert_bytes(data: bytes, rng: random.Random) -> bytes:
    at = rng.randrange(len(data) + 1)
    return data[:at] + rng.randbytes(rng.choice((1, 3, 16, 200))) + data[at:]


def delete_bytes(data: bytes, rng: random.Random) -> bytes:
    at = rng.randrange(len(data))
    return data[:at] + data[at + rng.choice((1, 2, 5, 100)):]


def header_length(data: bytes, rng: random.Random) -> bytes:
    return _set_u32(data, _header(data) + 4, rng.choice((0, 5, 7, 100, 0x7FFFFFFF, 0xFFFFFFFF)))


def track_length(data: bytes, rng: random.Random) -> bytes:
    found = tracks(data)
    if not found:
        return header_length(data, rng)
    pos, n = rng.choice(found)
    value = rng.choice((0, 1, n - 1, n + 1, n * 2, len(data), 0x7FFFFFFF, 0xFFFFFFFF))
    return _set_u32(data, pos + 4, value)


def track_count(data: bytes, rng: random.Random) -> bytes:
    at = _header(data) + 10
    return data[:at] + struct.pack(">H", rng.choice((0, 1, 200, 0xFFFF))) + data[at + 2:]


def division(data: bytes, rng: random.Random) -> bytes:
    """PPQ 0, 1, 0x7FFF or an SMPTE division (negative frames per second, ticks per frame)."""
    at = _header(data) + 12
    value = rng.choice((0, 1, 0x7FFF, 0xE728, 0xE250, 0xFFFF, 0x8000))
    return data[:at] + struct.pack(">H", value) + data[at + 2:]


def tempo(data: bytes, rng: random.Random) -> bytes:
    """Every set_tempo set to 0 or 0xFFFFFF microseconds a beat (one added if the file has none)."""
    value = rng.choice((b"\x00\x00\x00", b"\xff\xff\xff", b"\x00\x00\x01"))
    if b"\xff\x51\x03" not in data:
        return _insert_in_track(data, rng, b"\x00\xff\x51\x03" + value)
    parts = data.split(b"\xff\x51\x03")
    return (b"\xff\x51\x03").join([parts[0]] + [value + p[3:] for p in parts[1:]])


def huge_deltas(data: bytes, rng: random.Random) -> bytes:
    """Note events after deltas of 0x0FFFFFFF ticks: 1 (2^28 ticks) to 16 of them (2^32, past int32)."""
    pitch = rng.randrange(40, 90)
    on_off = HUGE_VLQ + bytes((0x90, pitch, 100)) + b"\x60" + bytes((0x80, pitch, 0))
    data = _insert_in_track(data, rng, on_off * rng.choice((1, 2, 8, 9, 16)))
    return division(data, rng) if rng.random() < 0.3 else data


def stuck_notes(data: bytes, rng: random.Random) -> bytes:
    """Thousands of note-ons (one status, running status after) that are never released."""
    n = rng.choice((2000, 5000, 20000))
    ch = rng.randrange(16)
    body = bytes((0, 0x90 | ch, 60, 100)) + b"".join(
        bytes((rng.choice((0, 0, 1, 12)), rng.randrange(24, 108), rng.randrange(1, 128))) for _ in range(n))
    return _insert_in_track(data, rng, body + b"\x00\xff\x03\x04Lead", at_start=False)


def running_status_garbage(data: bytes, rng: random.Random) -> bytes:
    """Data bytes with no status in force (at a track's start) or a run of random bytes below 0x80."""
    junk = bytes(rng.randrange(0x80) for _ in range(rng.choice((2, 3, 30, 300))))
    return _insert_in_track(data, rng, junk, at_start=rng.random() < 0.5)


MUTATIONS = (truncate, bit_flips, insert_bytes, delete_bytes, header_length, track_length, track_count,
             division, tempo, huge_deltas, stuck_notes, running_status_garbage)


def mutants(n: int, seed: int = 0, data: Path = DATA) -> list[tuple[str, bytes]]:
    """`n` mutants (name, bytes): every mutation in turn over the seed files, one or two mutations each."""
    rng = random.Random(seed)
    originals = [(s, (data / s).read_bytes()) for s in SEEDS if (data / s).is_file()]
    out = []
    for i in range(n):
        src, raw = originals[i % len(originals)]
        chosen = [MUTATIONS[i % len(MUTATIONS)]] + ([rng.choice(MUTATIONS)] if rng.random() < 0.25 else [])
        for mutate in chosen:
            raw = mutate(raw, rng) if raw else raw
        out.append((f"{i:05d}-{'+'.join(m.__name__ for m in chosen)}-{Path(src).stem}.mid", raw))
    return out


# --- running them --------------------------------------------------------------------------------------

@dataclass
class Figures:
    """What a fuzz run found: outcomes by reason, the slowest and the hungriest file, escaped errors."""

    files: int = 0
    used: int = 0
    skipped: Counter = field(default_factory=Counter)
    read_errors: Counter = field(default_factory=Counter)  # midifile.read's MidiFileError reasons
    escaped: list = field(default_factory=list)  # (name, 'Type: message'): must stay empty
    max_seconds: float = 0.0
    slowest: str = ""
    peak_bytes: int = 0
    hungriest: str = ""

    def line(self) -> str:
        reasons = ", ".join(f"{n} {r}" for r, n in sorted(self.skipped.items())) or "none"
        return (f"{self.files} files fuzzed: {self.used} used, {sum(self.skipped.values())} skipped ({reasons}); "
                f"{len(self.escaped)} exceptions escaped; max {self.max_seconds:.3f} s per file ({self.slowest}); "
                f"peak {self.peak_bytes / 2**20:.1f} MiB traced ({self.hungriest})")


def fuzz_one(name: str, raw: bytes, folder: Path, cfg, figures: Figures) -> None:
    """Both paths over one mutant, timed and traced; the outcome is counted in `figures`."""
    from leadline.daemon import midifile
    from leadline.training import ingest

    path = folder / name
    path.write_bytes(raw)
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    t0 = time.perf_counter()
    try:
        try:
            midifile.pick_lead(midifile.read(path).tracks, cfg)
        except midifile.MidiFileError as e:
            figures.read_errors[e.reason] += 1
        result = ingest.process((ingest.SourceFile(str(path), name, name, 0), cfg))
    except Exception as e:  # the one thing this fuzz exists to find
        figures.escaped.append((name, f"{type(e).__name__}: {e}"[:300]))
        result = None
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] - base
    figures.files += 1
    if result is not None and not result.reason:
        figures.used += 1
    elif result is not None:
        if not isinstance(result.reason, str):
            figures.escaped.append((name, f"reason is not a string: {result.reason!r}"))
        figures.skipped[result.reason] += 1
    if seconds > figures.max_seconds:
        figures.max_seconds, figures.slowest = seconds, name
    if peak > figures.peak_bytes:
        figures.peak_bytes, figures.hungriest = peak, name


def fuzz(items: list[tuple[str, bytes]], folder: Path, cfg=None) -> Figures:
    """Run every mutant through both paths (under tracemalloc), writing each into `folder` first."""
    from leadline.daemon.config import DataConfig

    cfg = cfg or DataConfig()
    folder.mkdir(parents=True, exist_ok=True)
    figures = Figures()
    started = tracemalloc.is_tracing()
    if not started:
        tracemalloc.start()
    try:
        for name, raw in items:
            fuzz_one(name, raw, folder, cfg, figures)
    finally:
        if not started:
            tracemalloc.stop()
    return figures


def main(argv: list[str] | None = None) -> int:
    import resource
    import tempfile

    p = argparse.ArgumentParser(prog="python -m leadline.bench.fuzz_ingest", description=__doc__.split("\n")[0])
    p.add_argument("--mutants", type=int, default=2000, help="how many mutants (default 2000)")
    p.add_argument("--seed", type=int, default=1, help="random seed of the mutations (default 1)")
    p.add_argument("--data", type=Path, default=DATA, help="corpora folder holding the seed files")
    p.add_argument("--jobs", type=int, default=1, help="worker processes of the final build (0: every core)")
    args = p.parse_args(argv)
    from leadline.daemon.config import DataConfig
    from leadline.training import ingest

    items = mutants(args.mutants, args.seed, args.data)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        figures = fuzz(items, Path(tmp) / "mutants")
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t1 = time.perf_counter()
        m = ingest.build([str(Path(tmp) / "mutants")], DataConfig(), jobs=args.jobs, progress=False).manifest
    print(figures.line())
    print(f"reader's own reasons: {dict(sorted(figures.read_errors.items()))}")
    print(f"{t1 - t0:.1f} s for the fuzz; max RSS {rss1 / 1024:.0f} MiB (+{(rss1 - rss0) / 1024:.0f} MiB over it)")
    f = m["files"]
    adds_up = f["seen"] == f["used"] + f["duplicates"] + f["skipped"] == len(items)
    print(f"ingest.build over the mutants ({time.perf_counter() - t1:.1f} s, {args.jobs or 'every'} job(s)): {f} "
          f"{'adds up' if adds_up else 'DOES NOT ADD UP'}; skipped {m['skipped']}")
    for name, error in figures.escaped[:20]:
        print(f"ESCAPED {name}: {error}")
    return 1 if figures.escaped or not adds_up else 0


if __name__ == "__main__":
    sys.exit(main())
