"""Reading MIDI files as the codec sees them: per-track notes on the grid, time signatures, the lead line.

`read` takes a Standard MIDI File (a path or its bytes) and returns its tracks with notes in codec grid
ticks (`codec.TICKS_PER_BEAT` per quarter note, converted with the file's own PPQ; tempo changes do not
move musical time). `pick_lead` chooses the lead material among those tracks (a corpus rule), `pick_phrase`
the phrase `leadline respond` answers. Parsing is done by symusic (C++, ~100x faster than mido on real
corpora); this module repairs what real files get wrong first:

- RIFF/RMID-wrapped files: everything before `MThd` is cut off;
- junk after the declared tracks (HTML, RIFF trailers) is ignored; a file that ends before its declared
  tracks or inside one is `truncated`, a bad event stream is `corrupt` (both raise `MidiFileError`);
- data bytes above 127 (seen as CC values and programs of 255) are clamped to 127;
- notes still sounding at the end of a track are closed there (note-offs are added before end-of-track);
- a note-on with velocity 0 is a note-off, running status is honoured (both by the parser);
- overlapping notes of the same pitch: the earlier is cut where the later starts; two notes of one pitch
  at one grid tick are one note (the longer);
- notes shorter than one grid tick, zero-length ones included, last 1 tick: they were struck and are heard,
  and a fast run would lose notes if they were dropped;
- a file with a note past `MAX_GRID_TICKS` (or whose 32-bit tick count wrapped around) is `too long`: only
  corrupt or hostile files get there (real ones end below 10^5), and encoding its rests would take gigabytes.
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

import numpy as np

from leadline.daemon import codec
from leadline.daemon.codec import Note
from leadline.daemon.errors import UserError

if TYPE_CHECKING:
    from leadline.daemon.config import DataConfig

GUITAR_WORDS = ("guitar", "gtr", "guit", "gitar")
LEAD_WORDS = ("lead", "solo")
RHYTHM_WORDS = ("rhythm", "rythm", "rhy", "chord", "strum", "backing", "accomp")
EXCLUDE_WORDS = ("bass", "drum", "perc", "kick", "snare")  # never a lead line, whatever the program
DRUM_WORDS = ("drum", "perc", "kick", "snare")  # unpitched, whatever the channel: never a phrase

_EOT = b"\xff\x2f\x00"
MAX_GRID_TICKS = 1 << 22  # ~24 hours at 120 BPM; the longest real file here (a concert) ends at 95,860
# note-offs for every pitch under running status (delta 0, pitch, velocity 0), after one status byte
_ALL_OFF = b"".join(bytes((0, p, 0)) for p in range(1, 128))


class MidiFileError(UserError, ValueError):
    """A MIDI file that cannot be read; `reason` is a short category used as a skip reason."""

    def __init__(self, source: str, reason: str, detail: str = "") -> None:
        super().__init__(f"{source}: {reason}" + (f" ({detail})" if detail else ""))
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, eq=False)
class Track:
    """One part: a track's notes on one channel with one program, as parallel arrays in grid ticks."""

    name: str
    program: int
    is_drum: bool  # channel 10 (index 9): never a lead
    onset: np.ndarray
    duration: np.ndarray
    pitch: np.ndarray
    velocity: np.ndarray
    # each note's expression from the part's pitch bend (codec.expression_from_bends): (n, 4) int8 columns
    # bend, bend_at, release, vibrato; None when the part has no pitch bend
    expression: np.ndarray | None = field(default=None)

    def __len__(self) -> int:
        return len(self.onset)

    def notes(self) -> list[Note]:
        """The notes as codec `Note`s, in time order (built on each call)."""
        cols = (self.onset, self.duration, self.pitch, self.velocity)
        if self.expression is not None:
            cols += tuple(self.expression.T)
        return [Note(*map(int, v)) for v in zip(*cols)]

    def expression_or_zeros(self) -> np.ndarray:
        return self.expression if self.expression is not None else np.zeros((len(self), 4), np.int8)

    def polyphony(self) -> float:
        """Mean notes per onset: 1.0 for a single-note line, about 3 for power chords."""
        return len(self) / max(1, len(np.unique(self.onset)))


@dataclass(frozen=True, eq=False)
class MidiData:
    """A whole file: its tracks in file order, time signatures as (grid tick, numerator, denominator)."""

    tracks: tuple[Track, ...]
    time_signatures: tuple[tuple[int, int, int], ...] = ((0, 4, 4),)
    ppq: int = 480

    def bar_ticks(self, tick: int = 0) -> int:
        """Length of the bar in force at grid tick `tick`, in grid ticks (96 in 4/4)."""
        num, den = 4, 4
        for start, n, d in self.time_signatures:
            if start > tick:
                break
            num, den = n, d
        return max(1, num * codec.TICKS_PER_BEAT * 4 // den)

    def bar_start(self, tick: int) -> int:
        """Grid tick of the start of the bar holding `tick` (time signatures are taken to change at bars)."""
        start = 0
        for begin, _, _ in self.time_signatures:
            if begin > tick:
                break
            start = begin
        bar = self.bar_ticks(start)
        return start + (tick - start) // bar * bar


@dataclass(frozen=True, eq=False)
class Lead:
    """The chosen lead material of a file: the track(s) it came from and their notes merged in `line`."""

    tracks: tuple[Track, ...]
    line: Track

    @property
    def notes(self) -> list[Note]:
        """The lead line as codec `Note`s in time order (built on each call)."""
        return self.line.notes()


# --- reading ---------------------------------------------------------------------------------------

def read(src: bytes | str | os.PathLike) -> MidiData:
    """Tracks and time signatures of a MIDI file (path or bytes); raises MidiFileError."""
    name = "<bytes>" if isinstance(src, (bytes, bytearray)) else os.fspath(src)
    if isinstance(src, (bytes, bytearray)):
        data = bytes(src)
    else:
        try:
            with open(src, "rb") as f:
                data = f.read()
        except OSError as e:
            raise MidiFileError(name, "unreadable", e.strerror or str(e)) from None
    return _parse(repair(data, name), name)


def repair(data: bytes, name: str = "<bytes>") -> bytes:
    """A clean Standard MIDI File from `data`: RIFF cut, junk dropped, open notes closed at track end."""
    start = data.find(b"MThd", 0, 4096)
    if start < 0:
        raise MidiFileError(name, "not a MIDI file", "no MThd header")
    data = data[start:]
    if len(data) < 14:
        raise MidiFileError(name, "truncated", "header cut short")
    (hlen,) = struct.unpack(">I", data[4:8])
    fmt, ntracks, division = struct.unpack(">HHH", data[8:14])
    if hlen < 6:
        raise MidiFileError(name, "corrupt", f"header length {hlen}")
    if division & 0x8000:
        raise MidiFileError(name, "unsupported", "SMPTE time division, no musical beats")
    if division == 0:
        raise MidiFileError(name, "corrupt", "0 ticks per quarter note")
    chunks = _track_chunks(data, 8 + hlen, ntracks, name)
    out = [struct.pack(">4sIHHH", b"MThd", 6, min(fmt, 1), len(chunks), division)]
    for body in chunks:
        body = _close_open_notes(body)
        out.append(b"MTrk" + struct.pack(">I", len(body)) + body)
    return b"".join(out)


def _track_chunks(data: bytes, pos: int, ntracks: int, name: str) -> list[bytes]:
    """Bodies of the first `ntracks` MTrk chunks from `pos`; other chunk types are skipped."""
    chunks: list[bytes] = []
    while len(chunks) < ntracks:
        if pos + 8 > len(data):
            raise MidiFileError(name, "truncated", f"{len(chunks)} of {ntracks} tracks present")
        cid = data[pos:pos + 4]
        (length,) = struct.unpack(">I", data[pos + 4:pos + 8])
        if not cid.isalnum():  # a track length that is off: the next header is misaligned
            raise MidiFileError(name, "corrupt", f"bad chunk header after track {len(chunks)}")
        if pos + 8 + length > len(data):
            raise MidiFileError(name, "truncated", f"track {len(chunks) + 1} of {ntracks} cut short")
        if cid == b"MTrk":
            chunks.append(data[pos + 8:pos + 8 + length])
        pos += 8 + length
    if not chunks:
        raise MidiFileError(name, "empty", "no tracks")
    return chunks


def _close_open_notes(body: bytes) -> bytes:
    """`body` with a note-off for every pitch, on every channel it may play, just before end-of-track.

    The channels are those whose note-on status byte occurs anywhere in the track (a superset: the first
    note-on of a channel needs its status byte). Note-offs for silent pitches are ignored by the parser.
    A track that does not end with end-of-track is left alone, so a cut-off one still reads as corrupt.
    """
    if not body.endswith(_EOT):
        return body
    used = np.flatnonzero(np.bincount(np.frombuffer(body, np.uint8), minlength=256)[0x90:0xA0])
    if not len(used):
        return body
    parts = [body[:-3]]  # keeps end-of-track's delta time for the first note-off
    for i, channel in enumerate(used):
        parts.append((b"\x00" if i else b"") + bytes((0x80 | int(channel), 0, 0)) + _ALL_OFF)
    parts.append(b"\x00" + _EOT)
    return b"".join(parts)


def _parse(data: bytes, name: str) -> MidiData:
    """Parse a repaired file with symusic and convert every track to the grid."""
    import symusic

    try:
        score = symusic.Score.from_midi(data, sanitize_data=True)
    except (RuntimeError, ValueError) as e:
        raise _parser_error(name, str(e)) from None
    ppq = int(score.ticks_per_quarter)
    tracks = tuple(_grid_track(t, ppq) for t in score.tracks if len(t.notes))
    for t in tracks:
        if len(t) and (int(t.onset[0]) < 0 or int((t.onset + t.duration).max()) > MAX_GRID_TICKS):
            raise MidiFileError(name, "too long", f"notes past {MAX_GRID_TICKS} grid ticks or a wrapped tick count")
    sigs = {}
    for ts in score.time_signatures:
        if ts.numerator > 0 and ts.denominator > 0:
            sigs[int(codec.file_ticks_to_grid(int(ts.time), ppq))] = (int(ts.numerator), int(ts.denominator))
    sigs.setdefault(0, (4, 4))
    return MidiData(tracks, tuple((t, n, d) for t, (n, d) in sorted(sigs.items())), ppq)


def _parser_error(name: str, message: str) -> MidiFileError:
    """symusic's message ('MiniMidi: Unexpected EOF in ...: iostream error') as a short reason."""
    detail = message.removeprefix("MiniMidi: ").removesuffix(": iostream error").split("!")[0].strip()
    if "EOF" in message or "chunk length" in message:
        return MidiFileError(name, "truncated", detail)
    return MidiFileError(name, "corrupt", detail)


def _grid_track(track, ppq: int) -> Track:
    """A symusic track's notes on the grid: same-pitch overlaps cut, repeats merged, >= 1 tick long."""
    a = track.notes.numpy()
    time = a["time"].astype(np.int64)
    onset = codec.file_ticks_to_grid(time, ppq)
    end = codec.file_ticks_to_grid(time + a["duration"].astype(np.int64), ppq)
    # symusic counts ticks in int32: a tick count past 2^31 wraps negative; keep it out of the int32 columns
    onset, end = (np.clip(x, -1, MAX_GRID_TICKS + 1) for x in (onset, end))
    pitch = a["pitch"].astype(np.int64) & 0x7F
    vel = np.clip(a["velocity"].astype(np.int64), 1, 127)
    order = np.lexsort((-end, onset, pitch))  # by pitch, then onset, the longest first
    onset, end, pitch, vel = onset[order], end[order], pitch[order], vel[order]
    keep = np.ones(len(onset), bool)
    keep[1:] = (pitch[1:] != pitch[:-1]) | (onset[1:] != onset[:-1])
    onset, end, pitch, vel = onset[keep], end[keep], pitch[keep], vel[keep]
    same = pitch[1:] == pitch[:-1]
    end[:-1] = np.where(same, np.minimum(end[:-1], onset[1:]), end[:-1])
    duration = np.maximum(end - onset, 1)
    order = np.lexsort((pitch, onset))
    cols = (onset[order], duration[order], pitch[order], vel[order])
    return Track(str(track.name).replace("\x00", "").strip(), int(track.program), bool(track.is_drum),
                 *(c.astype(np.int32) for c in cols), _expression(track, ppq, cols[0], cols[0] + cols[1]))


def _expression(track, ppq: int, onset: np.ndarray, end: np.ndarray) -> np.ndarray | None:
    """The notes' expression from the track's pitch-bend messages, scaled by its bend range (None: no bends)."""
    bends = track.pitch_bends.numpy()
    if not len(bends["time"]) or not np.any(bends["value"]):
        return None
    tick = codec.file_ticks_to_grid(bends["time"].astype(np.int64), ppq)
    semis = bends["value"].astype(np.float64) / 8192.0 * bend_range(track)
    return codec.expression_from_bends(onset, end, tick, semis)


def bend_range(track) -> float:
    """The pitch-bend range in semitones a symusic track sets with RPN 0 (CC 101 = 0, CC 100 = 0, then data
    entry CC 6 = semitones, CC 38 = cents), the first one it sets; 2 (the GM default) when it sets none."""
    c = track.controls.numpy()
    msb = lsb = -1
    for number, value in zip(c["number"].tolist(), c["value"].tolist()):
        if number == 101:
            msb = value
        elif number == 100:
            lsb = value
        elif number == 6 and msb == 0 and lsb == 0:
            return float(value) if value > 0 else 2.0
    return 2.0


# --- choosing the lead -----------------------------------------------------------------------------

def pick_lead(tracks: Sequence[Track], data_cfg: DataConfig) -> Lead | None:
    """The lead material among `tracks`, or None when no track qualifies.

    Candidates are melodic tracks (mean notes per onset <= `max_polyphony`), never drums or tracks named
    bass/drum/percussion: guitars (a program in `programs`, or a guitar word in the name) and, for corpora
    without them, fallback tracks (a name matching `name_patterns`, or when `fallback_programs` is set, a
    program in it). The best candidate wins, compared in turn on: having `min_notes` notes, being a
    guitar, a lead/solo name, not a rhythm name, a name pattern, the number of notes, file order.
    Parts of the same name and program are merged into it (a part spread over channels: one channel per
    string, or Guitar Pro's effects channel) unless the result is too polyphonic or doubles it.
    """
    ranked = [(key + (-i,), track) for i, track in enumerate(tracks) if (key := _rank(track, data_cfg))]
    if not ranked:
        return None
    best = max(ranked, key=lambda kt: kt[0])[1]
    chosen = [best]
    for track in tracks:
        if (track is not best and best.name and track.name == best.name and track.program == best.program
                and not track.is_drum and not doubles(track, chosen)
                and _merge(chosen + [track]).polyphony() <= data_cfg.max_polyphony):
            chosen.append(track)
    return Lead(tuple(chosen), _merge(chosen))


def pick_phrase(tracks: Sequence[Track], data_cfg: DataConfig) -> Track | None:
    """A player's phrase (`leadline respond`): the lead material when there is some, else the busiest
    pitched track whatever its name, program or length (a DAW clip: one "1-MIDI" track of a few notes).

    Drums (channel 10, or a drum/percussion name: a drum rack's clip plays on any channel) are never a
    phrase; None when nothing else has notes. Unlike `pick_lead`, this is not a corpus rule.
    """
    lead = pick_lead(tracks, data_cfg)
    if lead is not None:
        return lead.line
    pitched = [t for t in tracks if len(t) and not t.is_drum and not has_words(t.name.lower(), DRUM_WORDS)]
    return max(pitched, key=len, default=None)  # the first of the busiest


def _merge(tracks: Sequence[Track]) -> Track:
    """One track holding the notes of `tracks`, in time order; a repeated (onset, pitch) is kept once."""
    if len(tracks) == 1:
        return tracks[0]
    cols = [np.concatenate([getattr(t, c) for t in tracks]) for c in ("onset", "duration", "pitch", "velocity")]
    expr = (np.concatenate([t.expression_or_zeros() for t in tracks])
            if any(t.expression is not None for t in tracks) else None)
    order = np.lexsort((-cols[1], cols[2], cols[0]))
    onset, duration, pitch, velocity = (c[order] for c in cols)
    keep = np.ones(len(onset), bool)
    keep[1:] = (onset[1:] != onset[:-1]) | (pitch[1:] != pitch[:-1])
    t = tracks[0]
    return Track(t.name, t.program, t.is_drum, onset[keep], duration[keep], pitch[keep], velocity[keep],
                 None if expr is None else expr[order][keep])


def doubles(track: Track, others: Sequence[Track], slack: int = 2) -> bool:
    """True when most notes of `track` double a note of `others` (same pitch, onset within `slack`)."""
    ref = _merge(others)
    keys = np.sort(ref.pitch.astype(np.int64) << 32 | ref.onset)
    mine = track.pitch.astype(np.int64) << 32 | track.onset
    i = np.minimum(np.searchsorted(keys, mine - slack), len(keys) - 1)
    return float(np.mean(np.abs(keys[i] - mine) <= slack)) > 0.5


def _rank(track: Track, cfg: DataConfig) -> tuple | None:
    """Sort key of a lead candidate (bigger is better), None when `track` is not one."""
    name = track.name.lower()
    if track.is_drum or not len(track) or has_words(name, EXCLUDE_WORDS):
        return None
    guitar = track.program in cfg.programs or has_words(name, GUITAR_WORDS)
    named = has_words(name, cfg.name_patterns)
    fallback = track.program in cfg.fallback_programs if cfg.fallback_programs else named
    if not (guitar or fallback) or track.polyphony() > cfg.max_polyphony:
        return None
    return (len(track) >= cfg.min_notes, guitar, has_words(name, LEAD_WORDS), not has_words(name, RHYTHM_WORDS),
            named, len(track))


def has_words(name: str, words: Sequence[str]) -> bool:
    return any(w.lower() in name for w in words)
