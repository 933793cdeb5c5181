"""`leadline respond IN.mid -o OUT.mid`: the live engine offline, answering the lead material of a file.

The file's lead line (picked as ingestion does, else its busiest pitched track: a DAW clip) is the player's
phrase: it goes through the same stateful engine, and leadline answers after `respond.after_beats` of
silence, on the next beat, for `respond.bars` bars. OUT.mid holds the phrase and the answer on two tracks
at the input's tempo, the answer's pitch bends with it as the live output sends them (RPN 0 first; none with
expression.mode off).
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from leadline.daemon import config, expression, midifile, recording
from leadline.daemon.codec import TICKS_PER_BEAT, Note
from leadline.daemon.engine import make_engine
from leadline.daemon.errors import UserError
from leadline.daemon.improviser import Improviser
from leadline.daemon.modes import BAR
from leadline.daemon.sampler import Sampler, estimate_key

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
    data = midifile.read(path)
    line = midifile.pick_phrase(data.tracks, data_cfg)
    if line is None:
        raise UserError(f"{path}: no notes to answer (only drum tracks, or none with notes); "
                        "give it a track with the phrase to answer")
    notes = sorted(line.notes(), key=lambda n: (n.onset, n.pitch))
    first = data.bar_start(notes[0].onset)
    return [Note(n.onset - first, n.duration, n.pitch, n.velocity) for n in notes]


def answer(improviser: Improviser, phrase: list[Note], after_beats: float, bars: int,
           sampler: Sampler | None = None, auto_key: bool = False) -> list[Note]:
    """Feed `phrase`, then generate the answer: it starts on the first beat after the silence."""
    improviser.hear(phrase)
    if auto_key and sampler is not None:
        hist = np.bincount([n.pitch % 12 for n in phrase], minlength=12)
        key = estimate_key(hist)
        sampler.set_key(*(key or (None,)))
    last_end = max(n.end for n in phrase)
    trigger = last_end + round(after_beats * TICKS_PER_BEAT)
    start = -(-trigger // TICKS_PER_BEAT) * TICKS_PER_BEAT
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
    phrase = player_phrase(args.input, cfg.data)
    engine = make_engine(cfg.engine)
    sampler = Sampler(cfg.sampling, seed=args.seed, expression=cfg.expression.mode)
    imp = Improviser(engine, sampler, cfg.seed.window, cfg.sampling.echo_player)
    bars = args.bars or cfg.respond.bars
    notes = answer(imp, phrase, cfg.respond.after_beats, bars, sampler, cfg.sampling.key == "auto")
    scale = cfg.sampling.velocity_scale
    notes = recording.untangle([dataclasses.replace(n, velocity=min(127, max(1, round(n.velocity * scale))))
                                for n in notes])
    bpm = file_bpm(args.input)
    bends = {"leadline": expression.render(notes, cfg.expression, 1)}
    out = recording.write(args.output, {"player": phrase, "leadline": notes}, bpm, bends, cfg.expression.bend_range)
    print(f"{out}: the player's {len(phrase)} notes and leadline's answer, {len(notes)} notes in {bars} bars "
          f"({bpm:.0f} BPM)")
    if args.png:
        from leadline.daemon.plot import piano_roll

        print(f"{piano_roll(out, args.png)}: piano roll")
    if args.wav:
        from leadline.daemon.audio import render

        print(f"{render(out, args.wav)}: audio")
    return 0
