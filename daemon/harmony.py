"""What the band sounds: the backing's harmony as the model hears it at each step (codec 2).

At a grid tick, the harmony is the set of pitch classes of the backing's notes sounding there or released
less than `HOLD` ticks before (a stabbed chord still sets the harmony for an eighth), and the pitch class of
the lowest of them (the bass). Only notes struck before the tick count: a note struck at the tick itself is
not heard yet, live (leadline generates ahead of the clock) or in training (a lead note on a chord change is
predicted without that change, as it is played live).

It travels as one uint16 code a step: bits 0-11 the pitch classes (C = bit 0), bits 12-15 the bass's pitch
class + 1 (0: no backing), so silence is code 0; the model reads it as 24 numbers (`features`: 12 pitch-class
flags, 12 one-hot bass flags). A transposition rotates both (`transpose`).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

N_FEATURES = 24
HOLD = 12  # ticks a released backing note still sets the harmony
NONE = 0  # the code of silence (no backing)

_BITS = (1 << np.arange(12)).astype(np.uint16)


def code(pitch_classes, bass: int | None) -> int:
    """The code of a set of pitch classes and a bass pitch class (None: no bass, then no backing)."""
    mask = 0
    for pc in pitch_classes:
        mask |= 1 << (int(pc) % 12)
    return mask | ((int(bass) % 12 + 1) << 12 if bass is not None and mask else 0)


def features(codes, out: np.ndarray | None = None) -> np.ndarray:
    """float32 (..., 24) model inputs of uint16 `codes` (any shape): pitch-class flags, then the bass one-hot."""
    c = np.asarray(codes).astype(np.int64)
    f = np.zeros(c.shape + (N_FEATURES,), np.float32) if out is None else out
    f[..., :12] = (c[..., None] >> np.arange(12)) & 1
    bass = c >> 12
    f[..., 12:] = (bass[..., None] - 1) == np.arange(12)
    return f


def transpose(codes: np.ndarray, k: int) -> np.ndarray:
    """`codes` moved by `k` semitones (pitch classes and bass rotated)."""
    k %= 12
    if not k:
        return codes
    c = np.asarray(codes).astype(np.int64)
    mask = c & 0xFFF
    mask = ((mask << k) | (mask >> (12 - k))) & 0xFFF
    bass = c >> 12
    bass = np.where(bass > 0, (bass - 1 + k) % 12 + 1, 0)
    return (mask | (bass << 12)).astype(np.uint16)


def pitch_classes(c: int) -> list[int]:
    return [pc for pc in range(12) if c >> pc & 1]


def bass_of(c: int) -> int | None:
    return (c >> 12) - 1 if c >> 12 else None


def codes_at(ticks: np.ndarray, onset: np.ndarray, end: np.ndarray, pitch: np.ndarray) -> np.ndarray:
    """The harmony code at each of `ticks` of the notes (onset, end, pitch arrays) of the backing."""
    ticks = np.asarray(ticks, np.int64)
    out = np.zeros(len(ticks), np.uint16)
    if not len(onset) or not len(ticks):
        return out
    onset, end, pitch = (np.asarray(a, np.int64) for a in (onset, end, pitch))
    present = np.unique(pitch)
    sounding = np.zeros((len(present), len(ticks)), bool)
    for i, p in enumerate(present):
        sel = pitch == p
        ons, ends = np.sort(onset[sel]), np.sort(end[sel] + HOLD)
        # struck before the tick and not released more than HOLD before it
        sounding[i] = np.searchsorted(ons, ticks, "left") > np.searchsorted(ends, ticks, "right")
    mask = np.zeros(len(ticks), np.int64)
    for i, p in enumerate(present):
        mask |= sounding[i].astype(np.int64) << int(p % 12)
    any_ = sounding.any(axis=0)
    lowest = present[np.argmax(sounding, axis=0)]  # present is sorted: the first sounding row is the lowest
    return np.where(any_, mask | ((lowest % 12 + 1) << 12), 0).astype(np.uint16)


def backing_tracks(tracks: Sequence, lead_tracks: Sequence) -> list:
    """The tracks of a file that make its backing: pitched, not drums, not the lead, not doubling it."""
    from leadline.daemon import midifile

    lead = list(lead_tracks)
    return [t for t in tracks if len(t) and not t.is_drum and t not in lead
            and not midifile.has_words(t.name.lower(), midifile.DRUM_WORDS)
            and not (lead and midifile.doubles(t, lead))]


def backing_notes(tracks: Sequence) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(onset, end, pitch) of all the notes of `tracks`."""
    if not tracks:
        z = np.zeros(0, np.int64)
        return z, z, z
    onset = np.concatenate([t.onset for t in tracks]).astype(np.int64)
    end = onset + np.concatenate([t.duration for t in tracks])
    return onset, end, np.concatenate([t.pitch for t in tracks]).astype(np.int64)


_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")


def describe(c: int) -> str:
    """'C E G/C': the pitch classes of code `c`, then its bass; '-' for silence."""
    if not c & 0xFFF:
        return "-"
    bass = bass_of(c)
    return " ".join(_NAMES[pc] for pc in pitch_classes(c)) + (f"/{_NAMES[bass]}" if bass is not None else "")


class Backing:
    """The live backing: note-ons and note-offs on the backing input, stamped in song ticks -> the code now.

    The harmony is what sounds: a note-off while the sustain pedal (CC 64) is down ends the note when the
    pedal comes up. `pc_hist` is a decayed pitch-class histogram of the struck notes (for key estimation).
    Not thread-safe by itself: the owner calls it from one thread (the engine thread). `code` costs one
    comparison unless a note came or went, or a released note's HOLD ran out."""

    def __init__(self) -> None:
        self.sounding: dict[int, int] = {}  # pitch -> count of held notes
        self.released: dict[int, int] = {}  # pitch -> tick it was released at
        self.sustained: set[int] = set()  # pitches released while the pedal is down
        self.pedal = False
        self.pc_hist = np.zeros(12)
        self.last_code = NONE
        self._valid_until = -1  # the code is last_code up to this tick (exclusive), unless _dirty
        self._dirty = False

    def message(self, kind: int, data1: int, data2: int, tick: int) -> None:
        """A channel message of the band's (`kind`: its status & 0xF0) at song tick `tick`: notes and the
        sustain pedal set the harmony, All Notes Off / All Sound Off silence it, the rest is not heard."""
        if kind == 0x90 and data2:
            self.note_on(data1)
        elif kind == 0x80 or kind == 0x90:
            self.note_off(data1, tick)
        elif kind == 0xB0 and data1 == 64:
            self.sustain(data2 >= 64, tick)
        elif kind == 0xB0 and data1 in (120, 123):
            self.clear()

    def note_on(self, pitch: int) -> None:
        self.sounding[pitch] = self.sounding.get(pitch, 0) + 1
        self.released.pop(pitch, None)
        self.sustained.discard(pitch)
        self.pc_hist *= 0.97
        self.pc_hist[pitch % 12] += 1.0
        self._dirty = True

    def note_off(self, pitch: int, tick: int) -> None:
        n = self.sounding.get(pitch, 0) - 1
        if n > 0:
            self.sounding[pitch] = n
        elif n == 0:
            del self.sounding[pitch]
            if self.pedal:
                self.sustained.add(pitch)
            else:
                self.released[pitch] = tick
            self._dirty = True

    def sustain(self, down: bool, tick: int) -> None:
        """The sustain pedal (CC 64 >= 64: down); up releases the notes it held, at `tick`."""
        self.pedal = down
        if not down and self.sustained:
            for p in self.sustained:
                if p not in self.sounding:
                    self.released[p] = tick
            self.sustained.clear()
            self._dirty = True

    def clear(self) -> None:
        """All notes off (Stop, a lost input, panic, the band's All Notes Off): silence, at once. The key
        histogram is kept (the song's key has not changed)."""
        self.sounding.clear()
        self.released.clear()
        self.sustained.clear()
        self.pedal = False
        self.last_code = NONE
        self._valid_until, self._dirty = -1, False

    def code(self, tick: int) -> int:
        """The harmony code at song tick `tick` (released notes older than HOLD are forgotten)."""
        if not self._dirty and tick < self._valid_until:
            return self.last_code
        for p in [p for p, t in self.released.items() if tick - t >= HOLD]:
            del self.released[p]
        pitches = [*self.sounding, *self.sustained, *self.released]
        self.last_code = code((p % 12 for p in pitches), min(pitches)) if pitches else NONE
        self._valid_until = min(self.released.values(), default=1 << 62) + HOLD
        self._dirty = False
        return self.last_code
