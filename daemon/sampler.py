"""Sampling the next token from logits: grammar, note-range and key masks, repetition control, temperature,
top-p; key estimation.

Masks are built once (again only when the key changes) as additive biases (0 or -inf) over the vocabulary:
- grammar: after a NOTE only its DUR may follow; a DUR never comes anywhere else; BOS is never sampled; a note's
  expression keeps its order ([BEND BAT [REL]] [VIB] NOTE: after BEND only BAT, after VIB only a NOTE, ...) and
  `expression` mode ("full", "bends": no VIB, "off": no expression) removes what is off;
- range: NOTE tokens outside `sampling.low..high` are masked;
- key: NOTE tokens whose pitch class is outside the scale are masked (`set_key`, or none).
Repetition control, a third additive bias over the NOTE tokens, rebuilt once per onset: the pitches of the
previous onset lose `repeat_penalty` logits times the length of the run of onsets that struck that same pitch
set (a second identical double stop costs 1x, a third 2x, ...), so no line hammers one pitch set for ever,
while a single repeat stays cheap (real lead lines repeat ~13 % of their onsets). The sampler follows the
onsets from the `prev_token` of each call (a NOTE joins the current onset, a SHIFT ends it), so tokens it did
not sample itself (the player's) count only as far as they arrive as `prev_token`.
`sample` works in preallocated float64 buffers: no per-token arrays beyond numpy's scalar results.
Velocity scaling happens at the output, not here.
"""
from __future__ import annotations

import numpy as np

from leadline.daemon import codec
from leadline.daemon.config import SCALES, SamplingConfig, note_number, parse_key

_IS_NOTE = codec.TOKEN_KIND == codec.K_NOTE
_IS_DUR = codec.TOKEN_KIND == codec.K_DUR
_PITCH = np.where(_IS_NOTE, codec.TOKEN_VALUE, -1)
_IS_EXPRESSION = np.isin(codec.TOKEN_KIND, codec.EXPRESSION_KINDS)
_NOTE0 = codec.OFFSETS["NOTE"] - codec.PITCH_LO  # token id of pitch p: _NOTE0 + p

# Krumhansl & Kessler (1982) probe-tone profiles, tonic first.
KK_MAJOR = (6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88)
KK_MINOR = (6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17)


class Sampler:
    """Draws tokens that keep the codec's grammar, the note range and (optionally) a key."""

    def __init__(self, cfg: SamplingConfig, seed: int | None = None, expression: str = "full") -> None:
        self.rng = np.random.default_rng(cfg.seed if seed is None else seed)
        self.low, self.high = note_number(cfg.low), note_number(cfg.high)
        self.temperature, self.top_p = cfg.temperature, cfg.top_p
        self.auto_key = cfg.key == "auto"  # the caller feeds `estimate_key` results to `set_key`
        v = codec.VOCAB_SIZE
        self._buf, self._sorted, self._cum = np.empty(v), np.empty(v), np.empty(v)
        self._keep = np.empty(v, bool)
        self._after_note = np.where(_IS_DUR, 0.0, -np.inf)
        self._other = np.empty(v)
        self._after = [self._other] * len(codec.KINDS)  # the grammar's mask after each kind of token
        self.expression = expression
        self.repeat_penalty = cfg.repeat_penalty
        self._penalty = np.zeros(v)  # the repetition bias, 0 or negative on NOTE tokens
        self._penalise = False
        self._onset: list[int] = []  # pitches of the onset being struck
        self._last: tuple[int, ...] = ()  # pitch set of the last complete onset
        self._run = 0  # onsets in a row that struck it
        self.key: tuple[int, tuple[int, ...]] | None = None
        if cfg.key in (None, "auto"):
            self.set_key(None)
        else:
            self.set_key(*parse_key(cfg.key))

    def set_key(self, tonic: int | None, scale: str | tuple[int, ...] = "major") -> None:
        """Constrain NOTEs to `scale` (a config.SCALES name or intervals) on pitch class `tonic`; None: any."""
        allowed = _IS_NOTE & (_PITCH >= self.low) & (_PITCH <= self.high)
        if tonic is None:
            self.key = None
        else:
            intervals = SCALES[scale.lower()] if isinstance(scale, str) else tuple(scale)
            self.key = (tonic % 12, intervals)
            in_scale = np.zeros(12, bool)
            in_scale[[(tonic + i) % 12 for i in intervals]] = True
            allowed &= in_scale[_PITCH % 12]
        kind = codec.TOKEN_KIND
        bend, vib = self.expression != "off", self.expression == "full"
        note = np.where(allowed, 0.0, -np.inf)  # only a NOTE (in range and key)
        vib_or_note = np.where(allowed | ((kind == codec.K_VIB) & vib), 0.0, -np.inf)
        ok = allowed | ~(_IS_NOTE | _IS_DUR | np.isin(kind, codec.EXPRESSION_KINDS))
        ok |= (kind == codec.K_BEND) & bend | (kind == codec.K_VIB) & vib
        ok[codec.BOS] = False
        self._other = np.where(ok, 0.0, -np.inf)
        self._after = [self._other] * len(codec.KINDS)
        self._after[codec.K_NOTE] = self._after_note
        self._after[codec.K_BEND] = np.where(kind == codec.K_BAT, 0.0, -np.inf)
        self._after[codec.K_BAT] = np.where(np.isfinite(vib_or_note) | (kind == codec.K_REL), 0.0, -np.inf)
        self._after[codec.K_REL] = vib_or_note
        self._after[codec.K_VIB] = note

    def set_temperature(self, temperature: float) -> None:
        self.temperature = min(max(float(temperature), 0.05), 5.0)

    def sample(self, logits: np.ndarray, prev_token: int) -> int:
        """A token id drawn from `logits` (vocab,) given the previous token."""
        buf = self._buf
        after_note = _IS_NOTE[prev_token]
        if after_note:
            self._onset.append(int(_PITCH[prev_token]))
        elif self._onset and codec.TOKEN_KIND[prev_token] == codec.K_SHIFT:
            self._end_onset()
        np.add(logits, self._after[codec.TOKEN_KIND[prev_token]], out=buf)
        if self._penalise and not after_note:
            buf += self._penalty
        buf -= buf.max()
        buf *= 1.0 / self.temperature
        np.exp(buf, out=buf)
        if self.top_p < 1.0:
            self._nucleus(buf)
        cum = np.cumsum(buf, out=self._cum)
        i = int(cum.searchsorted(self.rng.random() * cum[-1], "right"))
        return i if i < buf.size else int(buf.argmax())  # u rounded up to the total: the likeliest token

    def reset_repetition(self) -> None:
        """Forget the onsets seen (no repetition bias until new ones come)."""
        self._onset.clear()
        self._last, self._run = (), 0
        self._penalty.fill(0.0)
        self._penalise = False

    def _end_onset(self) -> None:
        """The current onset is complete: update the run and rebuild the repetition bias."""
        struck = tuple(sorted(self._onset))
        self._onset.clear()
        self._run = self._run + 1 if struck == self._last else 1
        pen = self._penalty
        for p in self._last:
            pen[_NOTE0 + p] = 0.0
        self._last = struck
        if self.repeat_penalty:
            cost = -self.repeat_penalty * self._run
            for p in struck:
                pen[_NOTE0 + p] = cost
            self._penalise = True

    def _nucleus(self, probs: np.ndarray) -> None:
        """Zero every token outside the smallest set holding top_p of the mass (unnormalised `probs`), except
        expression tokens: a bend is rare at any one step (2.5 % of rock lead notes are bent), so a nucleus of
        0.99 cut most of them (rock validation: 0.7 % of the answers' notes bent against 1.6 % real)."""
        s = self._sorted
        np.copyto(s, probs)
        s.sort()
        desc = s[::-1]
        cum = np.cumsum(desc, out=self._cum)
        k = int(cum.searchsorted(self.top_p * cum[-1]))
        np.greater_equal(probs, desc[min(k, desc.size - 1)], out=self._keep)
        self._keep |= _IS_EXPRESSION
        probs *= self._keep


BAND_WEIGHT = 2.0  # the band's pitch classes count this much more than the player's in key_histogram


def key_histogram(player, band=None) -> np.ndarray:
    """The pitch-class histogram a key is estimated from: the player's, with the band's (the backing, when
    there is one) weighted in, each normalised, the band's times BAND_WEIGHT: the band sets the song's key."""
    out = np.zeros(12)
    for hist, weight in ((player, 1.0), (band, BAND_WEIGHT)):
        if hist is not None and (total := float(np.sum(hist))) > 0:
            out += weight / total * np.asarray(hist, np.float64)
    return out


def estimate_key(histogram) -> tuple[int, str] | None:
    """(tonic pitch class, "major" | "minor") best correlated with a 12-bin pitch-class histogram.

    Krumhansl-Kessler key finding: Pearson correlation with the 24 rotated profiles. None when the
    histogram carries no information (empty or flat).
    """
    x = np.asarray(histogram, np.float64).reshape(12)
    x = x - x.mean()
    if not np.any(x):
        return None
    best, best_r = None, -np.inf
    for name, profile in (("major", KK_MAJOR), ("minor", KK_MINOR)):
        p = np.asarray(profile) - np.mean(profile)
        for tonic in range(12):
            q = np.roll(p, tonic)
            r = float(x @ q) / float(np.linalg.norm(x) * np.linalg.norm(q))
            if r > best_r:
                best, best_r = (tonic, name), r
    return best
