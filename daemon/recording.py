"""Writing notes to standard MIDI files: offline answers and recorded sessions, never overwriting.

Notes are in codec grid ticks (24 a beat); files are written at 480 ticks a beat with one track per part
(e.g. "player" and "leadline"), the tempo in the first track, atomically (temporary file + rename).
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import mido

from leadline.daemon.codec import TICKS_PER_BEAT, Note

FILE_PPQ = 480
PROGRAMS = {"player": 29, "leadline": 30}  # overdriven / distortion guitar


def _track(name: str, notes: list[Note], channel: int, program: int, scale: int) -> mido.MidiTrack:
    events = []
    for n in notes:
        events.append((n.onset * scale, 1, mido.Message("note_on", channel=channel, note=n.pitch,
                                                         velocity=n.velocity)))
        events.append((n.end * scale, 0, mido.Message("note_off", channel=channel, note=n.pitch, velocity=0)))
    events.sort(key=lambda e: (e[0], e[1]))  # at the same time, note-offs before note-ons
    track = mido.MidiTrack([mido.MetaMessage("track_name", name=name),
                            mido.Message("program_change", channel=channel, program=program)])
    now = 0
    for t, _, msg in events:
        track.append(msg.copy(time=t - now))
        now = t
    return track


def to_midifile(parts: dict[str, list[Note]], bpm: float) -> mido.MidiFile:
    """A type-1 MidiFile with a tempo track and one track per part, each on its own channel."""
    mid = mido.MidiFile(type=1, ticks_per_beat=FILE_PPQ)
    mid.tracks.append(mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm)),
                                      mido.MetaMessage("time_signature", numerator=4, denominator=4)]))
    scale = FILE_PPQ // TICKS_PER_BEAT
    for ch, (name, notes) in enumerate(parts.items()):
        mid.tracks.append(_track(name, notes, ch, PROGRAMS.get(name, 29), scale))
    return mid


def write(path: str | Path, parts: dict[str, list[Note]], bpm: float) -> Path:
    """Write `parts` to `path` atomically (replacing `path` if it exists)."""
    path = Path(path)

    def replace(tmp: str) -> Path:
        os.replace(tmp, path)
        return path

    return _write(path.parent, parts, bpm, replace)


def write_new(folder: str | Path, parts: dict[str, list[Note]], bpm: float, when: float | None = None) -> Path:
    """Write `parts` atomically to a new dated file in `folder`, never over an existing one: the name is
    claimed with a hard link, which fails if another writer (another leadline on the same folder in the
    same second) took it first; then the next name is tried."""
    folder = Path(folder)

    def claim(tmp: str) -> Path:
        for path in _names(folder, when):
            try:
                os.link(tmp, path)
            except FileExistsError:
                continue
            os.unlink(tmp)
            return path

    return _write(folder, parts, bpm, claim)


def _write(folder: Path, parts: dict[str, list[Note]], bpm: float, place) -> Path:
    """Write a temporary file in `folder`; `place(tmp)` puts it where it belongs and says where."""
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".leadline.", suffix=".mid", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            to_midifile(parts, bpm).save(file=f)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o644 & ~mask)  # mkstemp makes it private; a MIDI file is for sharing
        return place(tmp)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _names(folder: Path, when: float | None):
    """leadline_<date>_<time>.mid, then _2, _3, ... for the same second."""
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S", time.localtime(when))
    yield folder / f"leadline_{stamp}.mid"
    n = 2
    while True:
        yield folder / f"leadline_{stamp}_{n}.mid"
        n += 1


class Recorder:
    """Collects a session's notes per part; `flush` writes them to a new dated file (Stop, exit)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.bpm = 120.0
        self.parts: dict[str, list[Note]] = {"player": [], "leadline": []}
        self.written: list[Path] = []

    def begin(self, bpm: float) -> None:
        self.bpm = bpm
        for notes in self.parts.values():
            notes.clear()

    def add(self, part: str, notes: list[Note]) -> None:
        self.parts[part].extend(notes)

    def flush(self) -> Path | None:
        if not any(self.parts.values()):
            return None
        path = write_new(self.folder, self.parts, self.bpm)
        self.written.append(path)
        self.begin(self.bpm)
        return path
