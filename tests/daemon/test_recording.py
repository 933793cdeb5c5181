"""Recording sessions: dated files that never overwrite, one track a part, the tempo kept, atomic writes."""
from __future__ import annotations

import re
import time

import mido
import pytest

from leadline.daemon import midifile, recording
from leadline.daemon.codec import Note
from leadline.daemon.recording import FILE_PPQ, Recorder

PLAYER = [Note(0, 12, 64, 90), Note(12, 12, 67, 80), Note(24, 48, 69, 100), Note(24, 48, 72, 100)]
LEAD = [Note(96, 6, 76, 70), Note(102, 6, 74, 75), Note(108, 90, 71, 110)]
NAME = re.compile(r"leadline_(\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d)(_\d+)?\.mid")


def _session(folder, bpm: float = 97.5) -> Recorder:
    rec = Recorder(folder)
    rec.begin(bpm)
    rec.add("player", PLAYER)
    rec.add("leadline", LEAD)
    return rec


def _track_notes(track: mido.MidiTrack) -> list[tuple[int, int, int, int, int]]:
    """(onset, end, pitch, velocity, channel) in file ticks, from note-on/note-off pairs."""
    now, on, out = 0, {}, []
    for msg in track:
        now += msg.time
        if msg.type == "note_on" and msg.velocity > 0:
            on[msg.note] = (now, msg.velocity, msg.channel)
        elif msg.type in ("note_on", "note_off"):
            start, vel, ch = on.pop(msg.note)
            out.append((start, now, msg.note, vel, ch))
    assert not on, "every note is closed"
    return sorted(out)


def test_flush_writes_a_dated_file_with_one_track_a_part_and_the_tempo(tmp_path):
    rec = _session(tmp_path)
    before = time.strftime("%Y-%m-%d")
    path = rec.flush()
    assert path is not None and path.parent == tmp_path and rec.written == [path]
    m = NAME.fullmatch(path.name)
    assert m and m.group(1).split("_")[0] in (before, time.strftime("%Y-%m-%d"))

    mid = mido.MidiFile(path)
    assert mid.type == 1 and mid.ticks_per_beat == FILE_PPQ
    tempos = [msg.tempo for msg in mid.tracks[0] if msg.type == "set_tempo"]
    assert tempos == [mido.bpm2tempo(97.5)]
    named = {t.name: t for t in mid.tracks if t.name}
    assert list(named) == ["player", "leadline"]
    scale = FILE_PPQ // 24
    for name, notes in (("player", PLAYER), ("leadline", LEAD)):
        got = _track_notes(named[name])
        assert [g[:4] for g in got] == sorted((n.onset * scale, n.end * scale, n.pitch, n.velocity) for n in notes)
    channels = {name: {g[4] for g in _track_notes(t)} for name, t in named.items()}
    assert len(channels["player"]) == len(channels["leadline"]) == 1
    assert channels["player"] != channels["leadline"], "the parts play on separate channels"


def test_recording_reads_back_on_the_grid(tmp_path):
    path = _session(tmp_path).flush()
    tracks = {t.name: t.notes() for t in midifile.read(path).tracks}
    assert tracks == {"player": sorted(PLAYER, key=lambda n: (n.onset, n.pitch)), "leadline": LEAD}


def test_never_overwrites_a_file_of_the_same_second(tmp_path):
    now = time.time()
    taken = {}
    for dt in range(-1, 6):  # whichever second the flush falls in, its plain name is already taken
        name = f"leadline_{time.strftime('%Y-%m-%d_%H-%M-%S', time.localtime(now + dt))}.mid"
        (tmp_path / name).write_bytes(b"older take " + name.encode())
        taken[name] = (tmp_path / name).read_bytes()
    path = _session(tmp_path).flush()
    assert path.name not in taken
    m = NAME.fullmatch(path.name)
    assert m and m.group(2) == "_2" and f"leadline_{m.group(1)}.mid" in taken
    for name, data in taken.items():
        assert (tmp_path / name).read_bytes() == data, f"{name} was overwritten"
    second = _session(tmp_path).flush()  # the same second again: a third name
    assert second not in (path, *[tmp_path / n for n in taken]) and mido.MidiFile(second).tracks


def test_flush_without_notes_writes_nothing_and_begin_clears(tmp_path):
    rec = Recorder(tmp_path)
    assert rec.flush() is None
    rec = _session(tmp_path)
    rec.begin(120.0)
    assert rec.flush() is None
    assert list(tmp_path.iterdir()) == []


def test_write_leaves_no_temporary_file(tmp_path):
    out = recording.write(tmp_path / "take.mid", {"player": PLAYER, "leadline": LEAD}, 120.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["take.mid"]
    assert mido.MidiFile(out).tracks


def test_failed_write_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "take.mid"
    recording.write(target, {"player": PLAYER}, 120.0)
    old = target.read_bytes()

    def half_save(self, filename=None, file=None):
        file.write(b"MThd\x00\x00")  # a crash half way through the file
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(mido.MidiFile, "save", half_save)
    with pytest.raises(OSError):
        recording.write(target, {"player": PLAYER, "leadline": LEAD}, 140.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["take.mid"]
    assert target.read_bytes() == old


def test_writers_racing_for_the_same_second_each_get_their_own_file(tmp_path):
    """Sixteen writers (as two leadlines recording into one folder would) flush in the same second at
    once: sixteen files, each with its own take, and no temporary file left."""
    import threading

    when, n = time.time(), 16
    barrier = threading.Barrier(n)
    paths: list = [None] * n

    def flush(i: int) -> None:
        take = {"player": [Note(0, 24, 40 + i, 100)]}
        barrier.wait()
        paths[i] = recording.write_new(tmp_path, take, 120.0, when=when)

    threads = [threading.Thread(target=flush, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(paths)) == n and len(list(tmp_path.iterdir())) == n
    pitches = sorted(m.note for p in paths for m in mido.MidiFile(p).tracks[1] if m.type == "note_on")
    assert pitches == list(range(40, 40 + n)), "a take was overwritten"
