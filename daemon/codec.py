"""The event codec: what a lead-line event is, its token ids and its time grid (the training/daemon contract).

A lead line is a list of `Note`s (onset, duration, pitch, velocity) on a grid of MIDI clock ticks,
24 per quarter note (`TICKS_PER_BEAT`), so a model trained on it plays in time at any tempo and the
daemon can put every note on an incoming MIDI clock tick. Notes struck together (double stops, power
chords, chords) share an onset.

Token stream, one token per model step:
    BOS                      start of a song or phrase (the state is fresh)
    SHIFT n     n=1..96      move the time cursor n ticks forward (longer rests: several SHIFTs)
    VEL v       v=0..15      velocity bin for the notes that follow (emitted only when it changes)
    NOTE p      p=24..107    a note at the cursor; always followed by its DUR
    DUR k       k=0..47      its duration, `DURATIONS[k]` ticks

Choices (measured on the lead lines of ../shared/data, 1.03 M notes, by bench/ingest.py):
- grid 24 ticks/beat = one MIDI clock tick: holds 16ths (6), 32nds (3), 16th triplets (4), 32nd triplets (2);
- SHIFT up to 96 ticks = one 4/4 bar: 98.6% of onset gaps are no longer (median 12, p90 25); longer rests
  cost one token per bar;
- durations: every tick up to a beat (90% of notes), then coarser (3, 6, 12 ticks) up to 8 beats; 95% of
  notes fall exactly on a step; longer notes are cut at 8 beats (0.11% of notes, 0.19% in rock);
- velocity: 16 bins of 8, decoded to the bin's centre: rock transcriptions use a median of 2 velocities a
  line, jazz 42; a step of 8 is below what a listener tells apart between adjacent hits;
- pitch C1..B7 (24..107): the guitar range E2..E6 with room to spare (0.014% of notes fall outside and are
  moved by octaves into range).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

from leadline.daemon.errors import UserError

CODEC_VERSION = 1
TICKS_PER_BEAT = 24  # one MIDI clock tick per grid step

MAX_SHIFT = 96
PITCH_LO, PITCH_HI = 24, 107
VEL_BINS = 16
VEL_STEP = 128 // VEL_BINS
DURATIONS: tuple[int, ...] = tuple(
    list(range(1, 25)) + list(range(27, 49, 3)) + list(range(54, 97, 6)) + list(range(108, 193, 12))
)
MAX_DURATION = DURATIONS[-1]

# The vocabulary: one ordered table of ranges (kind, lo, hi), inclusive.
RANGES: tuple[tuple[str, int, int], ...] = (
    ("BOS", 0, 0),
    ("SHIFT", 1, MAX_SHIFT),
    ("VEL", 0, VEL_BINS - 1),
    ("NOTE", PITCH_LO, PITCH_HI),
    ("DUR", 0, len(DURATIONS) - 1),
)
OFFSETS: dict[str, int] = {}
_off = 0
for _kind, _lo, _hi in RANGES:
    OFFSETS[_kind] = _off
    _off += _hi - _lo + 1
VOCAB_SIZE = _off
del _off

# Lookup arrays, built once: token id -> kind index and value.
KINDS = tuple(k for k, _, _ in RANGES)
TOKEN_KIND = np.empty(VOCAB_SIZE, np.int8)
TOKEN_VALUE = np.empty(VOCAB_SIZE, np.int16)
for _i, (_kind, _lo, _hi) in enumerate(RANGES):
    _o = OFFSETS[_kind]
    TOKEN_KIND[_o:_o + _hi - _lo + 1] = _i
    TOKEN_VALUE[_o:_o + _hi - _lo + 1] = np.arange(_lo, _hi + 1)
K_BOS, K_SHIFT, K_VEL, K_NOTE, K_DUR = range(len(KINDS))
BOS = OFFSETS["BOS"]
# duration in ticks -> nearest DUR index (ties go to the shorter); index MAX_DURATION covers the cut.
_DUR_ARR = np.array(DURATIONS)
DUR_INDEX = np.array([int(np.argmin(np.abs(_DUR_ARR - t))) for t in range(MAX_DURATION + 1)], np.int16)


class CodecError(UserError, ValueError):
    """A token sequence or event that the codec cannot represent."""


@dataclass(frozen=True, slots=True)
class Note:
    """One note: onset and duration in grid ticks, MIDI pitch and velocity."""

    onset: int
    duration: int
    pitch: int
    velocity: int

    def __post_init__(self) -> None:
        if self.onset < 0:
            raise CodecError(f"note onset must be >= 0 ticks, got {self.onset}")
        if not 1 <= self.duration:
            raise CodecError(f"note duration must be >= 1 tick, got {self.duration}")
        if not 0 <= self.pitch <= 127:
            raise CodecError(f"note pitch must be 0..127, got {self.pitch}")
        if not 1 <= self.velocity <= 127:
            raise CodecError(f"note velocity must be 1..127, got {self.velocity}")

    @property
    def end(self) -> int:
        return self.onset + self.duration


# --- single tokens -------------------------------------------------------------------------------

def token(kind: str, value: int) -> int:
    """Token id of `kind` with `value`."""
    for k, lo, hi in RANGES:
        if k == kind:
            if not lo <= value <= hi:
                raise CodecError(f"{kind} value must be {lo}..{hi}, got {value}")
            return OFFSETS[kind] + value - lo
    raise CodecError(f"unknown token kind {kind!r}")


def describe(tok: int) -> tuple[str, int]:
    """(kind, value) of token id `tok`."""
    if not 0 <= tok < VOCAB_SIZE:
        raise CodecError(f"token id must be 0..{VOCAB_SIZE - 1}, got {tok}")
    return KINDS[TOKEN_KIND[tok]], int(TOKEN_VALUE[tok])


def kind_mask(kind: str) -> np.ndarray:
    """Boolean mask over the vocabulary of the tokens of one kind."""
    return TOKEN_KIND == KINDS.index(kind)


# --- value conversions (tiny pure functions) ---------------------------------------------------------

def velocity_bin(velocity: int) -> int:
    return min(max(velocity, 1), 127) // VEL_STEP


def bin_velocity(b: int) -> int:
    """Centre of velocity bin `b`, never 0 (a note-on with velocity 0 is a note-off)."""
    return max(1, b * VEL_STEP + VEL_STEP // 2)


def fold_pitch(pitch: int) -> int:
    """Move `pitch` by octaves into PITCH_LO..PITCH_HI."""
    while pitch < PITCH_LO:
        pitch += 12
    while pitch > PITCH_HI:
        pitch -= 12
    return pitch


def quantize_duration(ticks: int) -> int:
    """Nearest representable duration in ticks (at least 1, at most MAX_DURATION)."""
    return DURATIONS[DUR_INDEX[min(max(int(ticks), 1), MAX_DURATION)]]


def ticks_to_beats(ticks: int | float) -> float:
    return ticks / TICKS_PER_BEAT


def beats_to_ticks(beats: float) -> int:
    return int(round(beats * TICKS_PER_BEAT))


def ticks_to_seconds(ticks: int | float, bpm: float) -> float:
    return ticks * 60.0 / (bpm * TICKS_PER_BEAT)


def seconds_to_ticks(seconds: float, bpm: float) -> float:
    return seconds * bpm * TICKS_PER_BEAT / 60.0


def file_ticks_to_grid(file_ticks: int, ppq: int) -> int:
    """A MIDI file time (in its own ticks per quarter) to the nearest grid tick."""
    return (file_ticks * TICKS_PER_BEAT * 2 + ppq) // (2 * ppq)


# --- sequences ----------------------------------------------------------------------------------------

def encode(notes: Iterable[Note], start: int = 0, bos: bool = True) -> list[int]:
    """Tokens for `notes` (any order), the time cursor starting at tick `start`.

    Pitches are folded into range, durations quantized and velocities binned, so encode is lossless
    exactly on notes that are already representable (see `representable`).
    """
    out = [BOS] if bos else []
    cursor, vel = start, -1
    for n in sorted(notes, key=lambda n: (n.onset, n.pitch, n.duration)):
        if n.onset < cursor:
            raise CodecError(f"note at tick {n.onset} is before the cursor at tick {cursor}")
        out.extend(shift_tokens(n.onset - cursor))
        cursor = n.onset
        b = velocity_bin(n.velocity)
        if b != vel:
            out.append(OFFSETS["VEL"] + b)
            vel = b
        out.append(OFFSETS["NOTE"] + fold_pitch(n.pitch) - PITCH_LO)
        out.append(OFFSETS["DUR"] + int(DUR_INDEX[min(n.duration, MAX_DURATION)]))
    return out


def shift_tokens(ticks: int) -> list[int]:
    """SHIFT tokens that move the cursor `ticks` forward (none for 0)."""
    full, rest = divmod(int(ticks), MAX_SHIFT)
    return [OFFSETS["SHIFT"] + MAX_SHIFT - 1] * full + ([OFFSETS["SHIFT"] + rest - 1] if rest else [])


def representable(n: Note) -> bool:
    """True when `n` survives encode/decode unchanged."""
    return (PITCH_LO <= n.pitch <= PITCH_HI and n.duration in DURATIONS
            and n.velocity == bin_velocity(velocity_bin(n.velocity)))


class Decoder:
    """Streams tokens back into notes; feed one token at a time (the daemon) or use `decode` (offline).

    A NOTE waits for its DUR; a DUR without a NOTE, or a NOTE followed by anything but DUR, is dropped
    and counted in `errors` (a sampled sequence can be ill-formed; the daemon never raises on it).
    """

    __slots__ = ("cursor", "velocity", "pending", "errors")

    def __init__(self, start: int = 0, velocity: int = 80) -> None:
        self.cursor = start
        self.velocity = velocity
        self.pending = -1  # pitch waiting for its DUR
        self.errors = 0

    def feed(self, tok: int) -> Note | None:
        kind, value = TOKEN_KIND[tok], int(TOKEN_VALUE[tok])
        if kind == K_DUR:
            if self.pending < 0:
                self.errors += 1
                return None
            note = Note(self.cursor, DURATIONS[value], self.pending, self.velocity)
            self.pending = -1
            return note
        if self.pending >= 0:
            self.errors += 1
            self.pending = -1
        if kind == K_NOTE:
            self.pending = value
        elif kind == K_SHIFT:
            self.cursor += value
        elif kind == K_VEL:
            self.velocity = bin_velocity(value)
        return None


def decode(tokens: Iterable[int], start: int = 0) -> list[Note]:
    """Notes of a token sequence (ill-formed pieces are dropped)."""
    d = Decoder(start)
    return [n for n in map(d.feed, map(int, tokens)) if n is not None]

