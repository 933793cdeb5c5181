"""Ingestion never dies on a file: mutated real MIDI files are used or skipped with a reason, fast and small.

The mutations live in bench/fuzz_ingest.py, which runs thousands of them by hand; here a few dozen (a fixed
seed, every mutation kind) plus hand-made worst cases: 2^31 ticks of rest, tempo 0, PPQ 1, stuck notes.
"""
import resource
import struct

import pytest

from leadline.bench import fuzz_ingest as fz
from leadline.daemon import midifile
from leadline.daemon.config import DataConfig
from tests.conftest import SHARED_DATA_DIR
from leadline.training import ingest

PARANOID = SHARED_DATA_DIR / "rock-o-net/b/black_sabbath/Paranoid.mid"
MAX_SECONDS = 2.0
MAX_TRACED = 64 * 2**20  # bytes Python and numpy may hold for one file at its peak
MAX_RSS_GROWTH = 256 * 2**20  # the process's high-water mark over a whole fuzz run


def lead_track(*events: bytes, ppq: int = 480) -> bytes:
    """A one-track file: 'Lead Guitar' on program 30, then `events` (raw delta-time + event bytes)."""
    body = b"\x00\xff\x03\x0bLead Guitar\x00\xc0\x1e" + b"".join(events) + b"\x00\xff\x2f\x00"
    return struct.pack(">4sIHHH", b"MThd", 6, 0, 1, ppq) + b"MTrk" + struct.pack(">I", len(body)) + body


def run_notes(n: int = 40, gap: bytes = b"\x60", length: bytes = b"\x81\x70") -> list[bytes]:
    """`n` notes of `length` ticks (default 240, an eighth at PPQ 480), the first after `gap` (delta-times)."""
    out = []
    for i in range(n):
        pitch = 52 + i % 12
        out += [(gap if i == 0 else b"\x00") + bytes((0x90, pitch, 100)), length + bytes((0x80, pitch, 0))]
    return out


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory):
    items = fz.mutants(48, seed=7)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    figures = fz.fuzz(items, tmp_path_factory.mktemp("fuzz"))
    growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss0
    print(f"\n{figures.line()}; RSS high-water mark +{growth / 2**20:.0f} MiB")
    return items, figures, growth


def test_every_mutant_is_used_or_skipped_with_a_reason(fuzzed):
    items, f, _ = fuzzed
    assert f.escaped == []
    assert f.files == len(items) == 48 and f.used + sum(f.skipped.values()) == f.files
    assert all(isinstance(r, str) and r for r in f.skipped)
    # the mutations reach every stage: parsed and used, refused by the repair, by symusic, by the lead picker
    assert f.used >= 5
    assert {"truncated", "corrupt", "unsupported", "too long"} <= set(f.skipped), f.skipped


def test_time_and_memory_per_mutant_are_bounded(fuzzed):
    _, f, rss_growth = fuzzed
    assert f.max_seconds < MAX_SECONDS, f.slowest
    assert f.peak_bytes < MAX_TRACED, f.hungriest
    assert rss_growth < MAX_RSS_GROWTH


def test_the_harness_counts_an_escaped_exception(tmp_path, monkeypatch):
    def boom(job):
        raise IndexError("a bug in the worker")
    monkeypatch.setattr(ingest, "process", boom)
    f = fz.fuzz(fz.mutants(2, seed=0), tmp_path)
    assert [e for _, e in f.escaped] == ["IndexError: a bug in the worker"] * 2


@pytest.mark.parametrize("repeats, ppq, reason", [
    (8, 480, "too long"),  # 2^31 file ticks: symusic's int32 tick count wraps negative
    (16, 0x7FFF, "too long"),  # 2^32: wraps all the way round
    (1, 1, "too long"),  # 2^28 ticks at PPQ 1: 6.4e9 grid ticks, past int32 once on the grid
    (1, 6, "too long"),  # 2^28 ticks at PPQ 6: 2^30 grid ticks, 11 M SHIFT tokens (~100 MB) if encoded
    (4, 0x7FFF, ""),  # 2^30 ticks at PPQ 32767: 786 k grid ticks (9 hours at 120 BPM), 8 k SHIFTs: kept
])
def test_rests_of_2_to_the_31_ticks_allocate_no_giant_array(tmp_path, repeats, ppq, reason):
    huge = (fz.HUGE_VLQ + b"\x90\x40\x64", b"\x60\x80\x40\x00") * repeats  # 0x0FFFFFFF ticks each
    path = tmp_path / "rest.mid"
    eighth = b"\xff\x7f" if ppq == 0x7FFF else b"\x81\x70"  # 16383 or 240 ticks
    path.write_bytes(lead_track(*run_notes(length=eighth), *huge, *run_notes(length=eighth), ppq=ppq))
    f = fz.fuzz([("rest.mid", path.read_bytes())], tmp_path / "fuzz")
    assert f.escaped == [] and f.max_seconds < MAX_SECONDS and f.peak_bytes < MAX_TRACED
    r = ingest.process((ingest.SourceFile(str(path), "rest.mid", "g", 0), DataConfig()))
    assert r.reason == reason, r
    assert reason or 8000 < len(r.sequences[0][1]) < 9000


def test_a_long_but_real_rest_is_kept(tmp_path):
    """2^20 ticks at PPQ 480 (2,185 beats, 18 minutes at 120 BPM) between two phrases: used, every note kept."""
    path = tmp_path / "pause.mid"
    path.write_bytes(lead_track(*run_notes(20), *run_notes(20, gap=b"\xc0\x80\x00")))
    r = ingest.process((ingest.SourceFile(str(path), "pause.mid", "g", 0), DataConfig(min_notes=16)))
    assert r.reason == "" and len(midifile.read(path).tracks[0]) == 40


@pytest.mark.parametrize("value", [b"\x00\x00\x00", b"\xff\xff\xff"])
def test_absurd_tempo_changes_nothing_musical(tmp_path, value):
    path = tmp_path / "tempo.mid"
    path.write_bytes(lead_track(b"\x00\xff\x51\x03" + value, *run_notes()))
    plain = midifile.read(lead_track(*run_notes())).tracks[0]
    assert [n.onset for n in midifile.read(path).tracks[0].notes()] == [n.onset for n in plain.notes()]
    assert ingest.process((ingest.SourceFile(str(path), "t.mid", "g", 0), DataConfig())).reason == ""


@pytest.mark.parametrize("division, reason", [
    (0, "corrupt"), (0xE728, "unsupported"),  # SMPTE: -25 frames a second, 40 ticks a frame
    (1, "too long"),  # PPQ 480 read as 1: the song 480 times longer, 5.1 M grid ticks
    (0x7FFF, "no lead track"),  # squeezed 68 times: the solo's runs land on shared grid ticks, chords
])
def test_absurd_division(division, reason, tmp_path):
    raw = bytearray(PARANOID.read_bytes())
    raw[12:14] = struct.pack(">H", division)
    path = tmp_path / "ppq.mid"
    path.write_bytes(bytes(raw))
    r = ingest.process((ingest.SourceFile(str(path), "ppq.mid", "g", 0), DataConfig(min_notes=1)))
    assert r.reason == reason and isinstance(r.detail, str)


def test_twenty_thousand_stuck_notes(tmp_path):
    # an eighth apart, running status, never released: closed at the end of the track, so a melodic line
    ons = b"".join(b"\x81\x70" + bytes((40 + i % 60, 100)) for i in range(20_000))
    path = tmp_path / "stuck.mid"
    path.write_bytes(lead_track(b"\x00\x90\x40\x64" + ons))
    f = fz.fuzz([("stuck.mid", path.read_bytes())], tmp_path / "fuzz")
    assert f.escaped == [] and f.used == 1 and f.max_seconds < MAX_SECONDS and f.peak_bytes < MAX_TRACED


def test_a_build_over_mutants_adds_up(tmp_path):
    src = tmp_path / "mutants"
    src.mkdir()
    for name, raw in fz.mutants(36, seed=11) + [("0-clean.mid", PARANOID.read_bytes())] * 1:
        (src / name).write_bytes(raw)
    (src / "copy.mid").write_bytes(PARANOID.read_bytes())  # a duplicate of 0-clean.mid
    m = ingest.build([str(src)], DataConfig(), jobs=2, progress=False).manifest  # 2 jobs: the worker pool
    f = m["files"]
    assert f["seen"] == 38 == f["used"] + f["duplicates"] + f["skipped"]
    assert f["used"] >= 2 and f["duplicates"] >= 1 and sum(m["skipped"].values()) == f["skipped"]
    per = m["per_file"].values()
    assert all(isinstance(e["reason"], str) and e["reason"] for e in per if e["status"] == "skipped")
    assert sum(e["status"] == "used" for e in per) == f["used"]
