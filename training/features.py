"""Generation quality measures for `eval`: Yang & Lerch (2018) phrase features with overlap areas, and copying.

Features of a phrase (a list of `codec.Note`, in onset order):
    pitch_class_histogram  12 bins, normalised          pitch_range        highest - lowest pitch
    mean_abs_interval      mean |pitch step| note to note
    ioi_mean               mean gap between distinct onsets (ticks)     note_length_mean   mean duration (ticks)

Overlap area as in the paper: for each feature, the distances within the real set (intra-set, every pair)
and between the real and the generated set (inter-set) are smoothed with a Gaussian KDE; OA is the area
under the smaller of the two densities (1: the generated phrases sit among the real ones like real ones do).
The histogram's distance is Euclidean, the others' absolute difference.

Copying: `longest_copies` finds, for each generated phrase, the longest run of consecutive notes
(pitch, duration, gap from the previous onset) that occurs verbatim in the training data, with rolling
64-bit hashes of n-grams for n = 1, 2, ... until no generated n-gram is found.
"""
from __future__ import annotations

import numpy as np

from leadline.daemon import codec

SCALARS = ("pitch_range", "mean_abs_interval", "ioi_mean", "note_length_mean")
FEATURES = ("pitch_class_histogram",) + SCALARS
_P = np.uint64(0x9E3779B97F4A7C15)
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def phrase_features(notes: list[codec.Note]) -> dict[str, np.ndarray | float]:
    """The five features of one phrase (at least one note)."""
    pitch = np.array([n.pitch for n in notes], np.float64)
    onsets = np.unique([n.onset for n in notes])
    pch = np.bincount(pitch.astype(int) % 12, minlength=12).astype(np.float64)
    return {"pitch_class_histogram": pch / pch.sum(),
            "pitch_range": float(pitch.max() - pitch.min()),
            "mean_abs_interval": float(np.abs(np.diff(pitch)).mean()) if len(pitch) > 1 else 0.0,
            "ioi_mean": float(np.diff(onsets).mean()) if len(onsets) > 1 else 0.0,
            "note_length_mean": float(np.mean([n.duration for n in notes]))}


def _values(feats: list[dict], name: str) -> np.ndarray:
    return np.array([f[name] for f in feats], np.float64).reshape(len(feats), -1)


def distances(a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """Euclidean distances between the rows of `a` and `b`; with b None, every pair of distinct rows of a."""
    if b is None:
        d = np.linalg.norm(a[:, None] - a[None], axis=-1)
        return d[~np.eye(len(a), dtype=bool)]
    return np.linalg.norm(a[:, None] - b[None], axis=-1).ravel()


def overlap_area(x: np.ndarray, y: np.ndarray, points: int = 1024) -> float:
    """Area under min(KDE(x), KDE(y)), Gaussian kernels with Silverman's bandwidth."""
    lo, hi = min(x.min(), y.min()), max(x.max(), y.max())
    span = hi - lo if hi > lo else 1.0
    bw = [max(1.06 * v.std() * len(v) ** -0.2, 1e-3 * span) for v in (x, y)]
    grid = np.linspace(lo - 3 * max(bw), hi + 3 * max(bw), points)
    pdf = [_kde(v, grid, w) for v, w in zip((x, y), bw)]
    return float(np.clip(np.trapezoid(np.minimum(*pdf), grid), 0.0, 1.0))


def _kde(v: np.ndarray, grid: np.ndarray, bw: float, block: int = 4096) -> np.ndarray:
    out = np.zeros_like(grid)
    for i in range(0, len(v), block):
        z = (grid[:, None] - v[None, i:i + block]) / bw
        out += np.exp(-0.5 * z * z).sum(axis=1)
    return out / (len(v) * bw * np.sqrt(2 * np.pi))


def oa(real: list[dict], generated: list[dict]) -> dict[str, float]:
    """OA of intra-set(real) against inter-set(real, generated) per feature, and their mean."""
    out = {}
    for name in FEATURES:
        r, g = _values(real, name), _values(generated, name)
        out[name] = overlap_area(distances(r), distances(r, g))
    out["mean"] = float(np.mean([out[n] for n in FEATURES]))
    return out


def oa_reference(real: list[dict], seed: int = 0) -> dict[str, float]:
    """The same measure for real against real: the real set split in two random halves."""
    order = np.random.default_rng(seed).permutation(len(real))
    half = len(real) // 2
    return oa([real[i] for i in order[:half]], [real[i] for i in order[half:]])


# --- copying -------------------------------------------------------------------------------------------

def note_symbols(onset, pitch, dur, prev_onset: int | None = None) -> np.ndarray:
    """One int64 per note for (pitch, duration, gap from the previous onset); the first note's gap is from
    `prev_onset`, or marked unknown (it then matches no other first note's gap)."""
    onset = np.asarray(onset, np.int64)
    if not len(onset):
        return np.zeros(0, np.int64)
    gap = np.diff(onset, prepend=onset[0] if prev_onset is None else prev_onset)
    if prev_onset is None:
        gap[0] = -1
    gap = np.minimum(gap + 1, (1 << 20) - 1)
    return (np.asarray(pitch, np.int64) * 4096 + np.asarray(dur, np.int64)) * (1 << 20) + gap


def token_notes(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(onset, pitch, duration) arrays of a well-formed token sequence, vectorised (codec.decode's rules
    for the cursor; a NOTE not followed by its DUR is dropped)."""
    t = np.asarray(tokens, np.int64)
    kind, value = codec.TOKEN_KIND[t], codec.TOKEN_VALUE[t].astype(np.int64)
    cursor = np.cumsum(np.where(kind == codec.K_SHIFT, value, 0))
    note = np.flatnonzero((kind[:-1] == codec.K_NOTE) & (kind[1:] == codec.K_DUR))
    return cursor[note], value[note], np.asarray(codec.DURATIONS)[value[note + 1]]


def _ngram_hashes(sym: np.ndarray, n: int, prev: np.ndarray | None) -> np.ndarray:
    """Rolling hash of the n-grams starting at each position (valid where the n-gram stays in one sequence)."""
    size = len(sym) - n + 1
    base = np.zeros(size, np.uint64) if prev is None else prev[:size]
    with np.errstate(over="ignore"):
        h = base * _P + sym[n - 1:].astype(np.uint64)
        h = (h ^ (h >> np.uint64(31))) * _M1
        return (h ^ (h >> np.uint64(29))) * _M2


def longest_copies(generated: list[np.ndarray], training: list[np.ndarray], max_n: int = 64) -> np.ndarray:
    """For each generated symbol sequence, the length of its longest n-gram found in a training sequence."""
    def flat(seqs):
        sym = np.concatenate(seqs) if seqs else np.zeros(0, np.int64)
        ids = np.repeat(np.arange(len(seqs)), [len(s) for s in seqs])
        return sym, ids

    gs, gid = flat(generated)
    ts, tid = flat(training)
    best = np.zeros(len(generated), np.int64)
    gh = th = None
    for n in range(1, max_n + 1):
        if n > len(gs) or n > len(ts):
            break
        gh, th = _ngram_hashes(gs, n, gh), _ngram_hashes(ts, n, th)
        g_ok = gid[:len(gh)] == gid[n - 1:]
        t_ok = tid[:len(th)] == tid[n - 1:]
        hit = g_ok & np.isin(gh, th[t_ok])
        if not hit.any():
            break
        best[np.unique(gid[:len(gh)][hit])] = n
    return best
