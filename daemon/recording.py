"""Writing notes to standard MIDI files: offline answers and recorded sessions, never overwriting.

Notes are in codec grid ticks (24 a beat); files are written at 480 ticks a beat with one track per part
(e.g. "player" and "leadline"), the tempo in the first track, atomically (temporary file + rename).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
import time
from pathlib import Path

import mido

from leadline.daemon.codec import TICKS_PER_BEAT, Note
from leadline.daemon.scheduler import bend_value, rpn_bend_range

log = logging.getLogger(__name__)

FILE_PPQ = 480
PROGRAMS = {"player": 29, "leadline": 30, "backing": 4}  # overdriven / distortion guitar; electric piano


def untangle(notes: list[Note]) -> list[Note]:
    """`notes` in onset order with no two of one pitch overlapping: an answer can strike a pitch again while
    it still sounds, and overlapping note-ons of one pitch are paired wrongly by readers, so the earlier is cut
    where the later starts; two of one pitch at one tick are one (the longer)."""
    kept: list[Note] = []
    last: dict[int, int] = {}  # pitch -> index in kept
    for n in sorted(notes, key=lambda n: (n.onset, n.pitch, -n.duration)):
        j = last.get(n.pitch)
        if j is not None and kept[j].end > n.onset:
            if kept[j].onset == n.onset:
                continue
            kept[j] = dataclasses.replace(kept[j], duration=n.onset - kept[j].onset)
        last[n.pitch] = len(kept)
        kept.append(n)
    return kept


def _track(name: str, notes: list[Note], channel: int, program: int, scale: int, bends=(),
           bend_range: int = 2) -> mido.MidiTrack:
    """A part's track; `bends`: (grid tick, pitch bend message) on its channel, after RPN 0 (`bend_range`)."""
    events = []
    for n in untangle(notes):
        events.append((n.onset * scale, 2, mido.Message("note_on", channel=channel, note=n.pitch,
                                                         velocity=n.velocity)))
        events.append((n.end * scale, 0, mido.Message("note_off", channel=channel, note=n.pitch, velocity=0)))
    for t, msg in bends:  # at one time: note-offs, then bends (a centre after its note-off), then note-ons
        events.append((t * scale, 1, mido.Message("pitchwheel", channel=channel, pitch=bend_value(msg))))
    events.sort(key=lambda e: (e[0], e[1]))
    track = mido.MidiTrack([mido.MetaMessage("track_name", name=name),
                            mido.Message("program_change", channel=channel, program=program)])
    if bends:
        track.extend(mido.Message("control_change", channel=channel, control=cc, value=v)
                     for _, cc, v in rpn_bend_range(channel, bend_range))
    now = 0
    for t, _, msg in events:
        track.append(msg.copy(time=t - now))
        now = t
    return track


def to_midifile(parts: dict[str, list[Note]], bpm: float, bends: dict | None = None,
                bend_range: int = 2) -> mido.MidiFile:
    """A type-1 MidiFile with a tempo track and one track per part, each on its own channel; `bends`: a part's
    pitch bends, {name: [(grid tick, pitch bend message)]} (see `leadline.daemon.expression.render`)."""
    mid = mido.MidiFile(type=1, ticks_per_beat=FILE_PPQ)
    mid.tracks.append(mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm)),
                                      mido.MetaMessage("time_signature", numerator=4, denominator=4)]))
    scale = FILE_PPQ // TICKS_PER_BEAT
    for ch, (name, notes) in enumerate(parts.items()):
        mid.tracks.append(_track(name, notes, ch, PROGRAMS.get(name, 29), scale, (bends or {}).get(name, ()),
                                 bend_range))
    return mid


def write(path: str | Path, parts: dict[str, list[Note]], bpm: float, bends: dict | None = None,
          bend_range: int = 2) -> Path:
    """Write `parts` (and their `bends`, see `to_midifile`) to `path` atomically (replacing `path` if it exists)."""
    path = Path(path)

    def replace(tmp: str) -> Path:
        os.replace(tmp, path)
        return path

    return _write(path.parent, to_midifile(parts, bpm, bends, bend_range), replace)


def write_new(folder: str | Path, parts: dict[str, list[Note]], bpm: float, when: float | None = None,
              bends: dict | None = None, bend_range: int = 2) -> Path:
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

    return _write(folder, to_midifile(parts, bpm, bends, bend_range), claim)


def _write(folder: Path, mid: mido.MidiFile, place) -> Path:
    """Write `mid` to a temporary file in `folder`; `place(tmp)` puts it where it belongs and says where."""
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".leadline.", suffix=".mid", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            mid.save(file=f)
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


def _free_log_name(folder: Path) -> Path:
    """A dated .log name in `folder` taken by neither a take nor a log (a log of a take without notes)."""
    for path in _names(folder, None):
        if not path.exists() and not path.with_suffix(".log").exists():
            return path.with_suffix(".log")


class Recorder:
    """A session's takes: the player's notes as heard, leadline's as they left the output; each take
    (Start to Stop, or launch to exit) becomes a new dated .mid, with its session log beside it when
    `header` is given (leadline.daemon.session). `end` hands the writing to a background thread; `flush`
    writes at once (offline use)."""

    def __init__(self, folder: str | Path, header: dict | None = None, out_channel: int = 0,
                 bend_range: int = 2) -> None:
        self.folder = Path(folder)
        self.bpm = 120.0
        self.parts: dict[str, list[Note]] = {"player": [], "leadline": []}
        self.written: list[Path] = []
        self.header, self.out_ch = header, out_channel
        self.open: dict[int, tuple[int, int]] = {}  # leadline's sounding pitch -> (onset tick, velocity)
        self.bends: list[tuple[int, tuple]] = []  # leadline's pitch bends as they left: (tick, message)
        self.bend_range = bend_range  # (expression.bend_range: the file says it with RPN 0)
        self.log = None  # the take's SessionLog
        self.noted = False  # a note came in or went out in this take (a log without one is not kept)
        self.writer = None
        self.counters = dict  # counters() for the log: serve's status counters

    def begin(self, bpm: float, state: dict | None = None, t_ns: int = 0) -> None:
        """A new take; what the open one holds is dropped (a Start with no Stop before it begins again)."""
        if self.log is not None:
            self.log.close(t_ns, self.counters(), None)
            self.log = None
        self._clear()
        self.bpm = bpm
        self.noted = False
        if self.header is not None:
            from leadline.daemon.session import SessionLog, Writer

            self.writer = self.writer or Writer()
            try:
                self.log = SessionLog(self.folder, self.writer, {**self.header, "bpm": bpm, "t0": t_ns,
                                                                 "state": state or {}})
            except OSError as e:  # the music goes on; the take (its .mid) may still be written
                log.error("record.dir: no session log for this take (%s)", e)

    def add(self, part: str, notes: list[Note]) -> None:
        self.parts[part].extend(notes)

    # --- what came in and went out ---------------------------------------------------------------------
    def inp(self, t_ns: int, msg, backing: bool = False) -> None:
        """A message that came in (`backing`: on the band's port)."""
        if self.log is not None:
            self.log.add(["b" if backing else "i", t_ns, *msg], t_ns, self.counters)
            self.noted = self.noted or (0x80 <= msg[0] < 0xA0 and not backing)

    def step(self, t_ns: int, ns: int, code: int = 0) -> None:
        """Model steps took `ns` each (the mean of one generation call), the last hearing harmony `code`."""
        if self.log is not None:
            self.log.add(["s", t_ns, int(ns), int(code)], t_ns, self.counters)

    def out(self, t_ns: int, tick: int, msg) -> None:
        """A message that left the output at song tick `tick`: leadline's notes as they sounded."""
        if self.log is not None:
            self.log.add(["o", t_ns, *msg], t_ns, self.counters)
        status = msg[0]
        if status & 0x0F != self.out_ch or status >= 0xF0:
            return
        kind = status & 0xF0
        self.noted = True
        if kind == 0x90 and msg[2]:
            self._close(msg[1], tick)
            self.open[msg[1]] = (tick, msg[2])
        elif kind == 0x80 or kind == 0x90:
            self._close(msg[1], tick)
        elif kind == 0xB0 and msg[1] in (120, 123):
            self.close_all(tick)
        elif kind == 0xE0:
            self.bends.append((tick, tuple(msg)))

    def _close(self, pitch: int, tick: int) -> None:
        if pitch in self.open:
            onset, vel = self.open.pop(pitch)
            self.parts["leadline"].append(Note(onset, max(tick - onset, 1), pitch, vel))

    def close_all(self, tick: int) -> None:
        for pitch in list(self.open):
            self._close(pitch, tick)

    # --- writing ----------------------------------------------------------------------------------------
    def end(self, tick: int, t_ns: int = 0) -> None:
        """The take ends at `tick`: its .mid and log are written on the writer thread, in that order."""
        self.close_all(tick)
        if self.log is None:
            self.flush()
            return
        parts = {k: sorted(v, key=lambda n: (n.onset, n.pitch)) for k, v in self.parts.items()}
        placed: list = []
        if any(parts.values()):
            bpm = self.bpm  # (the next take may have begun at another tempo when the writer gets to it)
            bends = {"leadline": list(self.bends)}
            self.writer.put(lambda: placed.append(self._write(parts, bpm, bends)))
        noted, folder = self.noted, self.folder
        self.log.close(t_ns, self.counters(), lambda: placed[0].with_suffix(".log") if placed else
                       (_free_log_name(folder) if noted else None))
        self.log = None
        self._clear()

    def _clear(self) -> None:
        for notes in self.parts.values():
            notes.clear()
        self.open.clear()
        self.bends = []

    def _write(self, parts: dict, bpm: float, bends: dict) -> Path:
        path = write_new(self.folder, parts, bpm, bends=bends, bend_range=self.bend_range)
        self.written.append(path)
        return path

    def flush(self) -> Path | None:
        self.close_all(max((n.end for n in self.parts["leadline"]), default=0))
        if not any(self.parts.values()):
            return None
        path = write_new(self.folder, self.parts, self.bpm, bends={"leadline": self.bends},
                         bend_range=self.bend_range)
        self.written.append(path)
        self._clear()
        return path

    def close(self) -> None:
        """Wait for the writer thread to finish the last take."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None
