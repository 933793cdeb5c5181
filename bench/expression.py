"""How guitar parts bend in the data: the measurements behind codec 2's expression tokens (daemon/codec.py).

Run from the repository root: `python -m leadline.bench.expression [--files 300] [--seed 0]`. Reads a seeded
sample of rock-o-net files with symusic, and for every guitar track (programs 24-31, 32+ notes) that has pitch
bend: each note's bend in semitones (the track's RPN 0 range honoured, 2 when it sets none), whether it is bent
(0.2 semitones or more at its onset or during it), the deepest point, pre-bends (already bent at the onset), the
time the deepest point is reached, releases (back under 0.2 before the note ends, and when) and vibrato (3+ turns
of the bend in one note). Then the same on the lead lines leadline trains on (`midifile.pick_lead`, codec 2's
reading: `codec.expression_from_bends`). Prints the figures and writes bench/results/expression.json.
"""
from __future__ import annotations

import argparse
import collections
import json
import random
import sys
from pathlib import Path

import numpy as np

from leadline.daemon import codec, midifile
from leadline.daemon.config import DataConfig

REPO = Path(__file__).resolve().parents[1]
ROCK = REPO.parent / "shared" / "data" / "rock-o-net"


def raw_bends(files: list[Path]) -> dict:
    """Per-note bend figures of the guitar tracks with pitch bend in `files` (see the module docstring)."""
    import symusic

    st: collections.Counter = collections.Counter()
    depth, reach, rel_at, vib_ptp = [], [], [], []
    ranges: collections.Counter = collections.Counter()
    for f in files:
        try:
            s = symusic.Score(str(f))
        except Exception:  # noqa: BLE001 (a corrupt file: not counted)
            continue
        tpq = s.ticks_per_quarter
        for t in s.tracks:
            if t.is_drum or not 24 <= t.program <= 31 or len(t.notes) < 32:
                continue
            pb = t.pitch_bends.numpy()
            if not len(pb["time"]):
                st["tracks without bends"] += 1
                continue
            st["tracks with bends"] += 1
            r = midifile.bend_range(t)
            ranges[r] += 1
            bt = pb["time"].astype(np.int64) * codec.TICKS_PER_BEAT / tpq
            bv = pb["value"].astype(float) / 8192 * r
            n = t.notes.numpy()
            for a, b in zip(n["time"] * codec.TICKS_PER_BEAT / tpq,
                            (n["time"] + n["duration"]) * codec.TICKS_PER_BEAT / tpq):
                st["notes"] += 1
                i0, i1 = np.searchsorted(bt, a, "right"), np.searchsorted(bt, b, "left")
                at_on = bv[i0 - 1] if i0 > 0 else 0.0
                seg, tt = bv[i0:i1], bt[i0:i1]
                vals = np.r_[at_on, seg]
                if np.max(np.abs(vals)) < 0.2:
                    continue
                st["bent"] += 1
                k = int(np.argmax(np.abs(vals)))
                depth.append(float(vals[k]))
                if abs(at_on) >= 0.2:
                    st["pre-bent"] += 1
                else:
                    reach.append(float(tt[k - 1] - a) if k > 0 else 0.0)
                if abs(vals[-1]) < 0.2 and k < len(vals) - 1:
                    st["released"] += 1
                    rel_at.append(float((tt[-1] - a) / max(b - a, 1)))
                d = np.diff(seg)
                sgn = np.sign(d[d != 0])
                if len(sgn) > 1 and int(np.sum(sgn[1:] != sgn[:-1])) >= 3:
                    st["vibrato"] += 1
                    vib_ptp.append(float(np.ptp(seg)))
    bent = max(st["bent"], 1)
    hist = collections.Counter(np.clip(np.round(np.array(depth) * 2) / 2, -2.5, 2.5).tolist())
    q = lambda v, p: [round(float(x), 3) for x in np.percentile(v, p)] if len(v) else None  # noqa: E731
    return {"counts": dict(st), "bend_ranges": {str(k): v for k, v in sorted(ranges.items())},
            "bent_share_of_notes": st["bent"] / max(st["notes"], 1),
            "depth_share_by_half_semitone": {str(k): round(v / bent, 4) for k, v in sorted(hist.items())},
            "prebend_share": st["pre-bent"] / bent, "release_share": st["released"] / bent,
            "release_at_share_of_duration_q25_50_75": q(rel_at, [25, 50, 75]),
            "reach_ticks_q10_25_50_75_90": q(reach, [10, 25, 50, 75, 90]),
            "vibrato_share": st["vibrato"] / bent, "vibrato_width_q10_50_90": q(vib_ptp, [10, 50, 90])}


def lead_expression(files: list[Path]) -> dict:
    """Codec 2's reading of the lead lines of `files`: shares of notes bent / with vibrato, token histograms."""
    e = []
    for f in files:
        try:
            lead = midifile.pick_lead(midifile.read(f).tracks, DataConfig())
        except midifile.MidiFileError:
            continue
        if lead is not None:
            e.append(lead.line.expression_or_zeros())
    x = np.concatenate(e) if e else np.zeros((0, 4), np.int8)
    bent = x[x[:, 0] != 0]
    count = lambda v: {str(k): int(c) for k, c in zip(*np.unique(v, return_counts=True))}  # noqa: E731
    return {"notes": len(x), "bent_share": float((x[:, 0] != 0).mean()) if len(x) else None,
            "vibrato_share": float((x[:, 3] != 0).mean()) if len(x) else None,
            "bend_quarter_tones": count(bent[:, 0]), "bend_at_ticks": count(bent[:, 1]),
            "release": count(bent[:, 2])}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m leadline.bench.expression", description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    files = sorted(p for p in ROCK.rglob("*") if p.suffix.lower() in (".mid", ".midi"))
    random.Random(args.seed).shuffle(files)
    files = files[:args.files]
    out = {"files": len(files), "seed": args.seed, "guitar_tracks": raw_bends(files), "lead_lines": lead_expression(files)}
    print(json.dumps(out, indent=1))
    dest = REPO / "bench" / "results" / "expression.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
