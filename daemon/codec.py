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
    BEND q      q=0..7       the next note is bent to `BEND_STEPS[q]` quarter tones (-2..+2 semitones)...
    BAT a       a=0..4       ...reaching it `BEND_AT[a]` ticks after its onset (0: bent before it is struck)
    REL r       r=0..1       ...and released back to its pitch at `RELEASE_AT[r]` of its duration
    VIB d       d=1..2       the next note has vibrato of +-`VIB_DEPTH[d]` semitones, one cycle per `VIB_PERIOD` ticks
A note's expression comes just before its NOTE, in the order [VEL] [BEND BAT [REL]] [VIB] NOTE DUR, and
belongs to that one note: a sampler picks the pitch knowing how it will be bent (codec 2).

Expression (codec 2), measured by bench/expression.py (bench/results/expression.json) on 300 rock-o-net files:
317 guitar tracks carry pitch bend (each file's RPN 0 range honoured: 2 semitones in 215 of them, 12 in 88).
3.7 % of their notes are bent (0.2 semitones or more); the deepest point is +2 semitones (a whole-step bend) for
24 % of them, +1 for 19 %, +0.5 for 10 %, and below the note (a release from a pre-bend, a dive) -2 for 17 %,
-1 for 12 %; 7 % go deeper than 2 semitones (whammy, 12-semitone ranges) and are clipped to 2, so BEND holds
-2..+2 semitones in quarter tones. 39 % are bent before the note is struck (BAT 0, a pre-bend); the others
reach their depth after a median 9 ticks (quartiles 6 and 12, p10 5, p90 27: BAT 3, 6, 12, 24). 42 % come back
within the note, at a median 58 % of it (quartiles 24 % and 89 %: REL at 1/4 or 3/4). 8 % of bent notes have
vibrato (3+ turns of the bend), a median 1 semitone wide (p10 0.4): VIB +-0.25 or +-0.5. On the lead lines
leadline trains on, 2.5 % of notes are bent and 0.08 % have vibrato. The bend is the channel's: a bent double
stop bends both strings (the daemon has one channel).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

from leadline.daemon.errors import UserError

CODEC_VERSION = 2
TICKS_PER_BEAT = 24  # one MIDI clock tick per grid step

MAX_SHIFT = 96
PITCH_LO, PITCH_HI = 24, 107
VEL_BINS = 16
VEL_STEP = 128 // VEL_BINS
DURATIONS: tuple[int, ...] = tuple(
    list(range(1, 25)) + list(range(27, 49, 3)) + list(range(54, 97, 6)) + list(range(108, 193, 12))
)
MAX_DURATION = DURATIONS[-1]
BEND_STEPS: tuple[int, ...] = (-4, -3, -2, -1, 1, 2, 3, 4)  # quarter tones
BEND_AT: tuple[int, ...] = (0, 3, 6, 12, 24)  # ticks after the onset at which the bend is reached
RELEASE_AT: tuple[float, ...] = (0.25, 0.75)  # share of the duration at which the bend is back at 0
VIB_DEPTH: tuple[float, ...] = (0.0, 0.25, 0.5)  # semitones either side
VIB_PERIOD = 8  # ticks per vibrato cycle (6 Hz at 120 BPM)

# The vocabulary: one ordered table of ranges (kind, lo, hi), inclusive.
RANGES: tuple[tuple[str, int, int], ...] = (
    ("BOS", 0, 0),
    ("SHIFT", 1, MAX_SHIFT),
    ("VEL", 0, VEL_BINS - 1),
    ("NOTE", PITCH_LO, PITCH_HI),
    ("DUR", 0, len(DURATIONS) - 1),
    ("BEND", 0, len(BEND_STEPS) - 1),
    ("BAT", 0, len(BEND_AT) - 1),
    ("REL", 0, len(RELEASE_AT) - 1),
    ("VIB", 1, len(VIB_DEPTH) - 1),
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
K_BOS, K_SHIFT, K_VEL, K_NOTE, K_DUR, K_BEND, K_BAT, K_REL, K_VIB = range(len(KINDS))
EXPRESSION_KINDS = (K_BEND, K_BAT, K_REL, K_VIB)
BOS = OFFSETS["BOS"]
# duration in ticks -> nearest DUR index (ties go to the shorter); index MAX_DURATION covers the cut.
_DUR_ARR = np.array(DURATIONS)
DUR_INDEX = np.array([int(np.argmin(np.abs(_DUR_ARR - t))) for t in range(MAX_DURATION + 1)], np.int16)


class CodecError(UserError, ValueError):
    """A token sequence or event that the codec cannot represent."""


@dataclass(frozen=True, slots=True)
class Note:
    """One note: onset and duration in grid ticks, MIDI pitch and velocity; its expression (codec 2): a bend
    to `bend` quarter tones (0: none) reached `bend_at` ticks after the onset (a BEND_AT value), released at
    RELEASE_AT[release - 1] of the duration (0: held), and vibrato of depth VIB_DEPTH[vibrato] (0: none)."""

    onset: int
    duration: int
    pitch: int
    velocity: int
    bend: int = 0
    bend_at: int = 0
    release: int = 0
    vibrato: int = 0

    def __post_init__(self) -> None:
        if self.onset < 0:
            raise CodecError(f"note onset must be >= 0 ticks, got {self.onset}")
        if not 1 <= self.duration:
            raise CodecError(f"note duration must be >= 1 tick, got {self.duration}")
        if not 0 <= self.pitch <= 127:
            raise CodecError(f"note pitch must be 0..127, got {self.pitch}")
        if not 1 <= self.velocity <= 127:
            raise CodecError(f"note velocity must be 1..127, got {self.velocity}")
        if self.bend and self.bend not in BEND_STEPS or self.bend_at not in BEND_AT:
            raise CodecError(f"note bend must be 0 or one of {BEND_STEPS} quarter tones reached at one of {BEND_AT} "
                             f"ticks, got {self.bend} at {self.bend_at}")
        if not 0 <= self.release <= len(RELEASE_AT) or not 0 <= self.vibrato < len(VIB_DEPTH):
            raise CodecError(f"note release must be 0..{len(RELEASE_AT)} and vibrato 0..{len(VIB_DEPTH) - 1}, "
                             f"got {self.release} and {self.vibrato}")

    @property
    def expressive(self) -> bool:
        return bool(self.bend or self.vibrato)

    def plain(self) -> "Note":
        """This note without its expression."""
        return Note(self.onset, self.duration, self.pitch, self.velocity) if self.expressive else self

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
        out.extend(note_tokens(n))
    return out


def note_tokens(n: Note) -> list[int]:
    """The tokens of one note after its SHIFTs and VEL: its expression, NOTE and DUR."""
    out = []
    if n.bend:
        out.append(OFFSETS["BEND"] + BEND_STEPS.index(n.bend))
        out.append(OFFSETS["BAT"] + BEND_AT.index(n.bend_at))
        if n.release:
            out.append(OFFSETS["REL"] + n.release - 1)
    if n.vibrato:
        out.append(OFFSETS["VIB"] + n.vibrato - 1)
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
            and n.velocity == bin_velocity(velocity_bin(n.velocity)) and (n.bend or not (n.bend_at or n.release)))


class Decoder:
    """Streams tokens back into notes; feed one token at a time (the daemon) or use `decode` (offline).

    A NOTE waits for its DUR, expression tokens for their NOTE; a DUR without a NOTE, a NOTE followed by
    anything but DUR, or expression out of its order ([BEND BAT [REL]] [VIB] NOTE) is dropped and counted in
    `errors` (a sampled sequence can be ill-formed; the daemon never raises on it). `mid_note` is True
    between a note's first expression token and its DUR: nothing else may be fed in between.
    """

    __slots__ = ("cursor", "velocity", "pending", "errors", "bend", "bend_at", "release", "vibrato", "_last")

    def __init__(self, start: int = 0, velocity: int = 80) -> None:
        self.cursor = start
        self.velocity = velocity
        self.pending = -1  # pitch waiting for its DUR
        self.errors = 0
        self.bend = self.bend_at = self.release = self.vibrato = 0
        self._last = K_BOS  # kind of the last token fed

    @property
    def mid_note(self) -> bool:
        return self.pending >= 0 or self._last in EXPRESSION_KINDS

    def feed(self, tok: int) -> Note | None:
        kind, value = TOKEN_KIND[tok], int(TOKEN_VALUE[tok])
        last, self._last = self._last, kind
        if kind == K_DUR:
            if self.pending < 0:
                self.errors += 1
                return None
            note = Note(self.cursor, DURATIONS[value], self.pending, self.velocity,
                        self.bend, self.bend_at, self.release, self.vibrato)
            self.pending = -1
            self.bend = self.bend_at = self.release = self.vibrato = 0
            return note
        if self.pending >= 0:
            self.errors += 1
            self.pending = -1
        if kind in EXPRESSION_KINDS:
            if not _EXPRESSION_AFTER[kind][last]:
                self.errors += 1
                self._clear()
                self._last = K_BOS if kind in (K_BAT, K_REL) else kind
                if kind == K_BEND:
                    self.bend, self.bend_at = BEND_STEPS[value], 0
                elif kind == K_VIB:
                    self.vibrato = value
                return None
            if kind == K_BEND:
                self.bend = BEND_STEPS[value]
            elif kind == K_BAT:
                self.bend_at = BEND_AT[value]
            elif kind == K_REL:
                self.release = value + 1
            else:
                self.vibrato = value
            return None
        if kind == K_NOTE:
            if last == K_BEND:  # a BEND without its BAT: the note is played plain
                self.errors += 1
                self._clear()
            self.pending = value
            return None
        if last in EXPRESSION_KINDS:  # expression not followed by its note
            self.errors += 1
            self._clear()
        if kind == K_SHIFT:
            self.cursor += value
        elif kind == K_VEL:
            self.velocity = bin_velocity(value)
        return None

    def _clear(self) -> None:
        self.bend = self.bend_at = self.release = self.vibrato = 0


# _EXPRESSION_AFTER[kind][previous kind]: True where the expression token `kind` may follow
_EXPRESSION_AFTER = {k: np.zeros(len(KINDS), bool) for k in EXPRESSION_KINDS}
_EXPRESSION_AFTER[K_BEND][[K_BOS, K_SHIFT, K_VEL, K_DUR]] = True
_EXPRESSION_AFTER[K_BAT][K_BEND] = True
_EXPRESSION_AFTER[K_REL][K_BAT] = True
_EXPRESSION_AFTER[K_VIB][[K_BOS, K_SHIFT, K_VEL, K_DUR, K_BAT, K_REL]] = True


def decode(tokens: Iterable[int], start: int = 0) -> list[Note]:
    """Notes of a token sequence (ill-formed pieces are dropped)."""
    d = Decoder(start)
    return [n for n in map(d.feed, map(int, tokens)) if n is not None]



# --- expression <-> pitch bend ------------------------------------------------------------------------

def bend_curve(n: Note) -> list[tuple[int, float]]:
    """The pitch bend of note `n` as (tick after its onset, semitones) points on the tick grid, one per tick
    where it moves; empty for a plain note. The bend is the channel's: the caller recentres it after the
    note (a plain note that follows is played at its pitch, not bent)."""
    if not n.expressive:
        return []
    dur = n.duration
    target = n.bend / 2.0
    reach = min(n.bend_at, max(dur - 1, 0))
    back = max(int(round(RELEASE_AT[n.release - 1] * dur)), reach + 1) if n.release else dur
    depth = VIB_DEPTH[n.vibrato]
    vib_from = max(reach, dur // 4) if n.vibrato else dur
    points = []
    for t in range(dur):
        if t < reach:
            b = target * t / reach
        elif t < back:
            b = target
        else:
            b = 0.0
        if t >= vib_from and (t < back or not n.release):
            x = (t - vib_from) % VIB_PERIOD / VIB_PERIOD  # a triangle wave: 0, +depth, 0, -depth, 0
            b += depth * (4 * x if x < 0.25 else 2 - 4 * x if x < 0.75 else 4 * x - 4)
        if not points or abs(points[-1][1] - b) > 1e-9:
            points.append((t, round(b, 4)))
    if points and points[0][0] != 0:
        points.insert(0, (0, 0.0))
    return points


def expression_from_bends(onset: np.ndarray, end: np.ndarray, tick: np.ndarray, semis: np.ndarray,
                          min_depth: float = 0.2) -> np.ndarray:
    """Each note's expression (columns bend, bend_at, release, vibrato; int8) from a part's pitch bend:
    `tick` (grid ticks, sorted) and `semis` (semitones from the note's pitch) of its bend messages.

    A note is bent when the bend in force at its onset or any bend during it reaches `min_depth` semitones:
    3+ turns of direction inside it, no more than 1.2 semitones wide, are vibrato (depth: the nearer of
    VIB_DEPTH); otherwise the deepest point, rounded to a quarter tone and clipped to +-2 semitones, is the bend,
    reached before the onset (a pre-bend) or after the nearest BEND_AT ticks, and released when the bend is
    back under `min_depth` after its deepest point and before the note ends (the nearer of RELEASE_AT)."""
    out = np.zeros((len(onset), 4), np.int8)
    if not len(tick):
        return out
    at_arr, rel_arr = np.array(BEND_AT[1:]), np.array(RELEASE_AT)
    lo = np.searchsorted(tick, onset, "right")
    hi = np.searchsorted(tick, end, "left")
    for i in range(len(onset)):
        a, b = lo[i], hi[i]
        before = float(semis[a - 1]) if a > 0 else 0.0
        seg, times = semis[a:b], tick[a:b]
        vals = np.r_[before, seg]
        if not len(vals) or np.max(np.abs(vals)) < min_depth:
            continue
        d = np.diff(seg)
        sgn = np.sign(d[d != 0])
        turns = int(np.sum(sgn[1:] != sgn[:-1])) if len(sgn) > 1 else 0
        if turns >= 3 and np.ptp(seg) <= 2.4 and abs(before) < min_depth:
            out[i, 3] = 1 + int(np.ptp(seg) / 2 > (VIB_DEPTH[1] + VIB_DEPTH[2]) / 2)
            continue
        k = int(np.argmax(np.abs(vals)))
        q = int(np.clip(np.round(vals[k] * 2), -4, 4)) or (1 if vals[k] > 0 else -1)
        if abs(before) >= min_depth:
            at = 0
        else:
            at = int(at_arr[np.argmin(np.abs(at_arr - (times[k - 1] - onset[i])))])
        rel = 0
        if k < len(vals) - 1 and abs(vals[-1]) < min_depth:
            back = np.flatnonzero(np.abs(vals[k:]) < min_depth)[0] + k
            share = (times[back - 1] - onset[i]) / max(end[i] - onset[i], 1)
            rel = 1 + int(np.argmin(np.abs(rel_arr - share)))
        out[i, :3] = q, at, rel
    return out
