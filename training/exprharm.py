"""Expression and harmony measures of answers for `eval` (codec 2): how a line bends, and whether it plays the
chords of its backing.

Expression, per window of notes: the share of notes bent, the share with vibrato, and the bends' depths (quarter
tones, a histogram of BEND_STEPS); pooled over a corpus's windows for generated and real continuations.

Harmony: a cut's backing is known from its sequence's harmony codes (one a token, daemon/harmony.py), looked
up at any tick as the code of the last token at or before it (`Lookup`). `chord_tone_share`: of the notes struck
on a beat while the backing sounds, the share whose pitch class is one of the backing's. The causal check answers
the same seeds over the backing moved a tritone (every code rotated by 6) and scores each answer against its
own backing: a model deaf to harmony keeps the first backing's chord tones and falls to chance on the second.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from leadline.daemon import codec, harmony

TRITONE = 6


@dataclass(frozen=True)
class Lookup:
    """The harmony code in force at each tick of a sequence: `ticks` (sorted cursor ticks of its tokens) and
    the codes beside them."""

    ticks: np.ndarray
    codes: np.ndarray
    shift: int = 0  # semitones the backing is moved by

    @classmethod
    def of(cls, tokens: np.ndarray, codes: np.ndarray) -> "Lookup":
        kind = codec.TOKEN_KIND[np.asarray(tokens, np.int64)]
        ticks = np.cumsum(np.where(kind == codec.K_SHIFT, codec.TOKEN_VALUE[np.asarray(tokens, np.int64)], 0))
        return cls(ticks, np.asarray(codes, np.uint16))

    def moved(self, k: int) -> "Lookup":
        return Lookup(self.ticks, self.codes, self.shift + k)

    def at(self, ticks) -> np.ndarray:
        """Codes at `ticks` (array or int)."""
        t = np.atleast_1d(np.asarray(ticks, np.int64))
        i = np.searchsorted(self.ticks, t, "right") - 1
        out = np.where(i >= 0, self.codes[np.maximum(i, 0)], harmony.NONE).astype(np.uint16)
        return harmony.transpose(out, self.shift) if self.shift else out


def chord_tones(notes: list[codec.Note], lookup: Lookup) -> tuple[int, int]:
    """(chord tones, notes counted) among `notes` struck on a beat while the backing sounds."""
    on_beat = [n for n in notes if n.onset % codec.TICKS_PER_BEAT == 0]
    if not on_beat:
        return 0, 0
    codes = lookup.at([n.onset for n in on_beat]).astype(np.int64)
    pitch = np.array([n.pitch for n in on_beat]) % 12
    sounding = codes != harmony.NONE
    hit = (codes >> pitch) & 1
    return int(hit[sounding].sum()), int(sounding.sum())


def chord_tone_share(windows: list[list[codec.Note]], lookups: list[Lookup]) -> dict:
    """Pooled chord-tone share of `windows` (each against its own lookup) and the notes it counts."""
    hits = np.array([chord_tones(w, lk) for w, lk in zip(windows, lookups)]).reshape(-1, 2)
    n = int(hits[:, 1].sum())
    return {"share": float(hits[:, 0].sum() / n) if n else float("nan"), "notes": n}


def expression_stats(windows: list[list[codec.Note]]) -> dict:
    """Pooled shares of notes bent and with vibrato, the depth histogram of the bends (quarter tones ->
    count) and the per-window bent share's median and quartiles."""
    notes = [n for w in windows for n in w]
    per = np.array([np.mean([n.bend != 0 for n in w]) for w in windows if w])
    q = np.percentile(per, [25, 50, 75]) if len(per) else [float("nan")] * 3
    depth = {str(s): sum(n.bend == s for n in notes) for s in codec.BEND_STEPS}
    bent = [n for n in notes if n.bend]
    return {"notes": len(notes), "bent_share": float(np.mean([n.bend != 0 for n in notes])) if notes else float("nan"),
            "vibrato_share": float(np.mean([n.vibrato != 0 for n in notes])) if notes else float("nan"),
            "prebend_share": float(np.mean([n.bend_at == 0 for n in bent])) if bent else float("nan"),
            "release_share": float(np.mean([n.release != 0 for n in bent])) if bent else float("nan"),
            "depth_histogram": depth,
            "bent_share_per_window": {"median": float(q[1]), "q25": float(q[0]), "q75": float(q[2])}}
