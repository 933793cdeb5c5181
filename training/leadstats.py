"""Lead statistics of a short window of notes: how repetitive, wide, busy and phrased a line is (pure numpy).

A window is a list of `codec.Note` (any order) covering `WINDOW` ticks (2 bars of 4/4). Notes that share an
onset form one onset (a double stop, a power chord); its pitch set is what repeats or not. Per window:

    repeat_share      share of onsets (after the first) whose pitch set equals the previous onset's
    longest_run       longest run of consecutive onsets with one pitch set (1: nothing repeats)
    range             highest - lowest pitch, semitones
    top_interval      mean |step| between the highest pitches of successive onsets, semitones
    onsets_per_beat   distinct onsets / the window's beats
    chord_share       share of onsets holding more than one note
    notes_per_phrase  notes / phrases; a phrase ends at a rest of at least `PHRASE_REST` ticks

`PHRASE_REST` is one beat: shorter silences are articulation inside a phrase (staccato eighths and
sixteenths leave rests of under a beat; the corpora's median onset gap is an eighth, p90 about a beat),
and one beat of silence is also what `respond` takes as the player having stopped (respond.after_beats).

`echo_share` measures quoting: the share of a window's pitch 4-grams found in the song before it.

`shape_features` adds what the realness judge sees beyond those: how varied the line's pitches, intervals,
rhythm and dynamics are, and how predictable its contour is.
"""
from __future__ import annotations

import numpy as np

from leadline.daemon import codec

WINDOW = 8 * codec.TICKS_PER_BEAT  # 2 bars of 4/4
PHRASE_REST = codec.TICKS_PER_BEAT
STATS = ("repeat_share", "longest_run", "range", "top_interval", "onsets_per_beat", "chord_share",
         "notes_per_phrase")
SHAPE = ("distinct_pitch_share", "pitch_class_entropy", "interval_pair_share", "contour_entropy",
         "ioi_distinct_share", "offbeat_share", "legato", "velocity_std", "direction_changes")
FEATURES = STATS + SHAPE
ECHO_N = 4  # pitch n-grams of `echo_share`


def window(notes: list[codec.Note], start: int | None = None, length: int = WINDOW) -> list[codec.Note]:
    """The notes with an onset in [start, start + length); start defaults to the first onset."""
    if not notes:
        return []
    t0 = min(n.onset for n in notes) if start is None else start
    return sorted((n for n in notes if t0 <= n.onset < t0 + length), key=lambda n: (n.onset, n.pitch))


def onsets(notes: list[codec.Note]) -> tuple[np.ndarray, list[tuple[int, ...]]]:
    """Distinct onset ticks (sorted) and the sorted pitch set struck at each."""
    by: dict[int, list[int]] = {}
    for n in notes:
        by.setdefault(n.onset, []).append(n.pitch)
    ticks = sorted(by)
    return np.array(ticks, np.int64), [tuple(sorted(set(by[t]))) for t in ticks]


def runs(sets: list[tuple[int, ...]]) -> np.ndarray:
    """Lengths of the runs of equal consecutive items."""
    if not sets:
        return np.zeros(0, np.int64)
    change = np.r_[True, [a != b for a, b in zip(sets[:-1], sets[1:])]]
    starts = np.flatnonzero(change)
    return np.diff(np.r_[starts, len(sets)])


def phrases(notes: list[codec.Note], rest: int = PHRASE_REST) -> int:
    """Number of phrases: a new one starts where an onset comes `rest` ticks or more after every earlier
    note has ended."""
    if not notes:
        return 0
    notes = sorted(notes, key=lambda n: n.onset)
    count, end = 1, notes[0].end
    for n in notes[1:]:
        if n.onset - end >= rest:
            count += 1
        end = max(end, n.end)
    return count


def lead_stats(notes: list[codec.Note], length: int = WINDOW) -> dict[str, float]:
    """The seven lead statistics of one window (NaN where undefined: no notes, or one onset for the
    statistics of successive onsets)."""
    nan = float("nan")
    if not notes:
        return dict.fromkeys(STATS, nan)
    ticks, sets = onsets(notes)
    pitch = np.array([n.pitch for n in notes])
    same = [a == b for a, b in zip(sets[:-1], sets[1:])]
    top = np.array([s[-1] for s in sets], np.float64)
    return {"repeat_share": float(np.mean(same)) if same else nan,
            "longest_run": float(runs(sets).max()),
            "range": float(pitch.max() - pitch.min()),
            "top_interval": float(np.abs(np.diff(top)).mean()) if len(top) > 1 else nan,
            "onsets_per_beat": len(ticks) * codec.TICKS_PER_BEAT / length,
            "chord_share": float(np.mean([len(s) > 1 for s in sets])),
            "notes_per_phrase": len(notes) / phrases(notes)}


def echo_share(notes: list[codec.Note], earlier: list[codec.Note], n: int = ECHO_N) -> float:
    """Share of the window's pitch n-grams (n successive onsets' pitch sets; rhythm ignored) that also occur in
    `earlier` (the song before the window): how much a line quotes what came before. NaN below n onsets."""
    mine = _grams(onsets(notes)[1], n)
    if not mine:
        return float("nan")
    seen = set(_grams(onsets(earlier)[1], n))
    return sum(g in seen for g in mine) / len(mine)


def _grams(sets: list[tuple[int, ...]], n: int) -> list[tuple]:
    return [tuple(sets[i:i + n]) for i in range(len(sets) - n + 1)]


def _entropy(labels) -> float:
    """Shannon entropy (bits) of the empirical distribution of `labels` (0 for none)."""
    if len(labels) == 0:
        return 0.0
    _, counts = np.unique(np.asarray(labels), return_counts=True, axis=0)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def shape_features(notes: list[codec.Note]) -> dict[str, float]:
    """Melodic-shape and n-gram features of one window (0 where undefined)."""
    if not notes:
        return dict.fromkeys(SHAPE, 0.0)
    ticks, sets = onsets(notes)
    pitch = np.array([n.pitch for n in notes])
    top = np.array([s[-1] for s in sets], np.int64)
    step = np.diff(top)
    pairs = np.stack([step[:-1], step[1:]], 1) if len(step) > 1 else np.zeros((0, 2), np.int64)
    direction = np.sign(step[step != 0])
    ioi = np.diff(ticks)
    sounding = sum(min(n.duration, WINDOW) for n in notes)
    return {"distinct_pitch_share": len(np.unique(pitch)) / len(pitch),
            "pitch_class_entropy": _entropy(pitch % 12),
            "interval_pair_share": len(np.unique(pairs, axis=0)) / len(pairs) if len(pairs) else 0.0,
            "contour_entropy": _entropy(np.sign(step)),
            "ioi_distinct_share": len(np.unique(ioi)) / len(ioi) if len(ioi) else 0.0,
            "offbeat_share": float(np.mean(ticks % (codec.TICKS_PER_BEAT // 2) != 0)),
            "legato": min(sounding / max(len(notes), 1) / max(float(np.mean(ioi)) if len(ioi) else WINDOW, 1.0),
                          4.0),
            "velocity_std": float(np.std([n.velocity for n in notes])),
            "direction_changes": float(np.mean(direction[1:] != direction[:-1])) if len(direction) > 1 else 0.0}


def features(notes: list[codec.Note], length: int = WINDOW) -> np.ndarray:
    """The judge's feature vector of one window (`FEATURES` order); NaN statistics become 0."""
    f = lead_stats(notes, length) | shape_features(notes)
    return np.nan_to_num(np.array([f[k] for k in FEATURES], np.float64))


def summary(windows: list[list[codec.Note]], length: int = WINDOW) -> dict[str, dict[str, float]]:
    """Per statistic: median, 25th and 75th percentile over the windows (NaNs left out) and the count."""
    table = [lead_stats(w, length) for w in windows if w]
    out = {}
    for k in STATS:
        v = np.array([t[k] for t in table], np.float64)
        v = v[~np.isnan(v)]
        q = np.percentile(v, [25, 50, 75]) if len(v) else [float("nan")] * 3
        out[k] = {"median": float(q[1]), "q25": float(q[0]), "q75": float(q[2]), "n": int(len(v))}
    return out
