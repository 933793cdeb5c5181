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


def test_overlapping_notes_of_one_pitch_are_cut_where_the_later_starts():
    notes = [Note(0, 24, 60, 90), Note(12, 24, 60, 80), Note(12, 6, 64, 70), Note(12, 12, 64, 71), Note(30, 6, 67, 90)]
    assert recording.untangle(notes) == [Note(0, 12, 60, 90), Note(12, 24, 60, 80), Note(12, 12, 64, 71),
                                         Note(30, 6, 67, 90)]
    mid = recording.to_midifile({"leadline": notes}, 120)
    scale = FILE_PPQ // 24
    assert [g[:3] for g in _track_notes(mid.tracks[1])] == sorted(
        [(0, 12 * scale, 60), (12 * scale, 36 * scale, 60), (12 * scale, 24 * scale, 64), (30 * scale, 36 * scale, 67)])


def _bends(track: mido.MidiTrack) -> list[tuple[int, str, int]]:
    """(file tick, kind, value) of the note and pitchwheel messages: note pitch, or the bend."""
    now, out = 0, []
    for msg in track:
        now += msg.time
        if msg.type == "pitchwheel":
            out.append((now, "bend", msg.pitch))
        elif msg.type in ("note_on", "note_off"):
            out.append((now, "on" if msg.type == "note_on" and msg.velocity else "off", msg.note))
    return out


def test_bends_are_written_after_rpn_0_around_their_notes_and_read_back(tmp_path):
    from leadline.daemon.config import ExpressionConfig
    from leadline.daemon.expression import render

    notes = [Note(0, 24, 64, 88, bend=4, bend_at=6), Note(24, 12, 62, 88), Note(48, 24, 67, 88, bend=2, bend_at=0)]
    path = recording.write(tmp_path / "bent.mid", {"leadline": notes}, 120,
                           {"leadline": render(notes, ExpressionConfig(bend_range=12), 0)}, bend_range=12)
    track = mido.MidiFile(path).tracks[1]
    ccs = [(m.control, m.value) for m in track if m.type == "control_change"]
    assert ccs == [(101, 0), (100, 0), (6, 12), (38, 0), (101, 127), (100, 127)]
    ev, s = _bends(track), FILE_PPQ // 24
    assert ev[0] == (0, "on", 64) and ev[1][1] == "bend" and ev[-1] == (72 * s, "bend", 0), ev
    assert (24 * s, "off", 64) in ev and ev.index((24 * s, "off", 64)) < ev.index((24 * s, "bend", 0)) < \
        ev.index((24 * s, "on", 62)), "the centre after the note-off, before the plain note"
    assert ev[ev.index((48 * s, "on", 67)) - 1] == (48 * s, "bend", round(1 / 12 * 8192)), "pre-bend first"
    read = sorted(midifile.read(path).tracks[0].notes(), key=lambda n: n.onset)
    assert [(n.pitch, n.bend) for n in read] == [(64, 4), (62, 0), (67, 2)], "the reader hears other bends"


def test_a_session_keeps_the_bends_that_left(tmp_path):
    rec = Recorder(tmp_path, out_channel=0, bend_range=2)
    rec.begin(120)
    for tick, msg in [(0, (0xE0, 0, 96)), (0, (0x90, 60, 90)), (6, (0xE0, 127, 127)), (12, (0x80, 60, 0)),
                      (12, (0xE0, 0, 64)), (12, (0xE1, 0, 0))]:  # (another channel: not leadline's)
        rec.out(0, tick, msg)
    rec.end(12)
    path = rec.written[0]
    s = FILE_PPQ // 24
    assert [e for e in _bends(mido.MidiFile(path).tracks[2])] == [
        (0, "bend", 4096), (0, "on", 60), (6 * s, "bend", 8191), (12 * s, "off", 60), (12 * s, "bend", 0)]


def test_the_piano_roll_draws_a_bent_notes_bend_as_a_curve_on_it(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from leadline.daemon import plot
    from leadline.daemon.config import ExpressionConfig
    from leadline.daemon.expression import render

    notes = [Note(0, 24, 64, 88, bend=4, bend_at=6), Note(24, 12, 62, 88), Note(48, 24, 67, 88, bend=-2, bend_at=0)]
    path = recording.write(tmp_path / "bent.mid", {"leadline": notes}, 120,
                           {"leadline": render(notes, ExpressionConfig(), 0)})
    tracks = list(midifile.read(path).tracks)
    fig, ax = plt.subplots()
    plot._draw(ax, tracks, {"leadline": "#e06010"}, [0, 96], 0, 96)
    curves = [line.get_data() for line in ax.get_lines() if line.get_color() == "black"]
    plt.close(fig)
    assert len(curves) == 2, "one curve a bent note, none on the plain one"
    (x1, y1), (x2, y2) = curves
    assert x1[0] == 0 and max(y1) == 66 and x1[-1] == 1.0, "the whole step up, along the first note"
    assert set(y2) == {66} and x2[0] == 2.0, "the pre-bent note, a semitone down all along"
    assert plot.piano_roll(path, tmp_path / "bent.png").stat().st_size > 1000
