"""`leadline respond IN.mid -o OUT.mid`: the live engine offline, answering the lead material of a file.

The file's lead line (picked as ingestion does, else its busiest pitched track: a DAW clip) is the player's
phrase: it goes through the same stateful engine, and leadline answers after `respond.after_beats` of
silence, on the next beat, for `respond.bars` bars. The band's harmony (`--backing FILE`: its pitched,
non-drum tracks; without it, the input's own other pitched tracks, when it has any) is heard at every step,
the phrase's and the answer's, exactly at the step's tick. OUT.mid holds the phrase, the answer and the
backing (up to the answer's end) on their own tracks at the input's tempo, the answer's pitch bends with it
as the live output sends them (RPN 0 first; none with expression.mode off).
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from leadline.daemon import config, expression, harmony, midifile, recording
from leadline.daemon.codec import TICKS_PER_BEAT, Note
from leadline.daemon.engine import make_engine
from leadline.daemon.errors import UserError
from leadline.daemon.improviser import Improviser
from leadline.daemon.modes import BAR
from leadline.daemon.sampler import Sampler, estimate_key, key_histogram

log = logging.getLogger(__name__)


def file_bpm(path: str | Path) -> float:
    """The first tempo of a MIDI file in quarter notes a minute (120 when it has none)."""
    try:
        import symusic

        tempos = symusic.Score(str(path)).tempos
        bpm = float(tempos[0].qpm) if len(tempos) else 120.0
        return bpm if 20.0 <= bpm <= 400.0 else 120.0  # a tempo of 0 or absurd: the MIDI default
    except Exception:  # the notes were readable; a tempo we cannot read is not worth failing for
        return 120.0


def player_phrase(path: str | Path, data_cfg) -> list[Note]:
    """The phrase in `path` (see `midifile.pick_phrase`), from its first bar on (UserError when none)."""
    return read_input(path, data_cfg)[0]


def read_input(path: str | Path, data_cfg, backing_path: str | Path | None = None) -> tuple[list[Note], list[Note]]:
    """(the phrase, the backing's notes), both from the phrase's first bar on: the backing is the pitched,
    non-drum tracks of `backing_path` (the same timeline as `path`), else the other ones of `path` (not the
    phrase's, not doubling it; none: an empty list). UserError when there is no phrase, or a backing file
    has no backing."""
    data = midifile.read(path)
    lead = midifile.pick_lead(data.tracks, data_cfg)
    line = lead.line if lead is not None else midifile.pick_phrase(data.tracks, data_cfg)
    if line is None:
        raise UserError(f"{path}: no notes to answer (only drum tracks, or none with notes); "
                        "give it a track with the phrase to answer")
    notes = sorted(line.notes(), key=lambda n: (n.onset, n.pitch))
    first = data.bar_start(notes[0].onset)
    phrase = [Note(n.onset - first, n.duration, n.pitch, n.velocity) for n in notes]
    if backing_path is not None:
        tracks = harmony.backing_tracks(midifile.read(backing_path).tracks, [])
        if not tracks:
            raise UserError(f"{backing_path}: no backing to hear (only drum tracks, or none with notes); "
                            "give --backing a file with the band's chords or bass")
    else:
        tracks = harmony.backing_tracks(data.tracks, lead.tracks if lead is not None else [line])
    band = [Note(max(n.onset - first, 0), n.end - max(n.onset, first), n.pitch, n.velocity)
            for t in tracks for n in t.notes() if n.end > first]
    return phrase, sorted(band, key=lambda n: (n.onset, n.pitch))


def harmony_source(band: list[Note], last_tick: int):
    """harmony(tick) -> the band's code at that tick (daemon/harmony.py), looked up in a table to `last_tick`
    (later ticks: the code there); None when there is no band."""
    if not band:
        return None
    onset, end, pitch = (np.array([getattr(n, k) for n in band], np.int64) for k in ("onset", "end", "pitch"))
    table = harmony.codes_at(np.arange(last_tick + 1), onset, end, pitch)
    return lambda tick: int(table[min(max(tick, 0), last_tick)])


def answer(improviser: Improviser, phrase: list[Note], after_beats: float, bars: int,
           sampler: Sampler | None = None, auto_key: bool = False, band: list[Note] = ()) -> list[Note]:
    """Feed `phrase`, then generate the answer: it starts on the first beat after the silence. With a `band`
    (the backing's notes), every step hears its harmony, and an automatic key weighs the band's notes in."""
    last_end = max(n.end for n in phrase)
    trigger = last_end + round(after_beats * TICKS_PER_BEAT)
    start = -(-trigger // TICKS_PER_BEAT) * TICKS_PER_BEAT
    improviser.harmony = harmony_source(list(band), start + bars * BAR)
    improviser.hear(phrase)
    if auto_key and sampler is not None:
        hist = np.bincount([n.pitch % 12 for n in phrase], minlength=12)
        heard = np.bincount([n.pitch % 12 for n in band if n.onset < start], minlength=12)
        key = estimate_key(key_histogram(hist, heard))
        sampler.set_key(*(key or (None,)))
    improviser.begin(start, start + bars * BAR)
    out = []
    while improviser.playing:
        note = improviser.next_note()
        if note is not None:
            out.append(note)
    return out


def run(args) -> int:
    overrides = list(args.overrides) + ([f"engine.model={args.model}"] if args.model else [])
    cfg = config.load(args.config, overrides)
    phrase, band = read_input(args.input, cfg.data, args.backing)
    engine = make_engine(cfg.engine)
    sampler = Sampler(cfg.sampling, seed=args.seed, expression=cfg.expression.mode)
    imp = Improviser(engine, sampler, cfg.seed.window, cfg.sampling.echo_player)
    bars = args.bars or cfg.respond.bars
    notes = answer(imp, phrase, cfg.respond.after_beats, bars, sampler, cfg.sampling.key == "auto", band)
    scale = cfg.sampling.velocity_scale
    notes = recording.untangle([dataclasses.replace(n, velocity=min(127, max(1, round(n.velocity * scale))))
                                for n in notes])
    bpm = file_bpm(args.input)
    end = imp.phrase_end
    parts = {"player": phrase, "leadline": notes}
    if band:
        parts["backing"] = [n for n in band if n.onset < end]
    bends = {"leadline": expression.render(notes, cfg.expression, 1)}
    out = recording.write(args.output, parts, bpm, bends, cfg.expression.bend_range)
    heard = f", over the backing's {len(parts['backing'])} notes" if band else ""
    print(f"{out}: the player's {len(phrase)} notes and leadline's answer, {len(notes)} notes in {bars} bars "
          f"({bpm:.0f} BPM){heard}")
    if args.png:
        from leadline.daemon.plot import piano_roll

        print(f"{piano_roll(out, args.png)}: piano roll")
    if args.wav:
        from leadline.daemon.audio import render

        print(f"{render(out, args.wav)}: audio")
    return 0
