"""Swing: how late the player's off-beats fall, estimated from their onsets, and leadline's off-beats moved to match.

The swing ratio is where the off-beat falls in a pair of eighths (or 16ths): 0.5 straight, 0.667 triplet swing
(the off-beat eighth two thirds through the beat), 0.75 dotted. `song.swing` fixes it (a number, or `off` =
0.5) or, `auto`, follows the player: each onset (fractional song tick, bar-relative in the meter) that falls
near an off-beat (0.42..0.80 of its pair) counts, at the 16th level when the player's recent onsets come
16ths apart, else at the eighth level (compound meters: 16ths, their eighths are the triplets already). The
estimate is the median of the last KEEP such onsets, less the median lag of the player's onsets near the beat
(within 0.2 of the pair: a player who lies back, or a MIDI path that delays every note, moves both alike),
straight until MIN_COUNT off-beats have come, clamped to 0.5..0.75. Leadline's notes come from the model on the straight grid (the codec's ticks do not change):
a note on an off-beat of the pair is moved to the ratio, the model's state keeps the grid.
"""
from __future__ import annotations

import logging
from collections import deque

import numpy as np

from leadline.daemon.codec import TICKS_PER_BEAT
from leadline.daemon.meter import Meter

log = logging.getLogger(__name__)

LO, HI = 0.5, 0.75  # the ratios applied
NEAR = (0.42, 0.80)  # an onset this far through its pair counts as an off-beat
MIN_COUNT = 8  # off-beat onsets needed before leaving straight
KEEP = 24  # the estimate is the median of this many recent off-beat onsets
SIXTEENTHS = 7.5  # a median gap between recent onsets below this many ticks: the player plays 16ths
EIGHTHS, SIXTEENTH_PAIRS = TICKS_PER_BEAT, TICKS_PER_BEAT // 2  # ticks in a pair of eighths, of 16ths
SAME_ONSET = 1.5  # note-ons closer than this (ticks) are one onset (a chord)
ON_BEAT = 0.2  # an onset this close to the start of its pair (a fraction of it) is on the beat: its lag counts


class Swing:
    """The swing ratio in use and where it applies (`span`: ticks in a pair); `place` moves a grid tick."""

    def __init__(self, setting, meter: Meter) -> None:
        self.fixed = None if setting == "auto" else LO if setting == "off" else float(setting)
        self.meter = meter
        self.ratio = LO if self.fixed is None else min(max(self.fixed, LO), HI)
        self.span = SIXTEENTH_PAIRS if meter.compound else EIGHTHS
        self.offbeats = {EIGHTHS: deque(maxlen=KEEP), SIXTEENTH_PAIRS: deque(maxlen=KEEP)}
        self.onbeats = {EIGHTHS: deque(maxlen=KEEP), SIXTEENTH_PAIRS: deque(maxlen=KEEP)}  # their lag (fraction)
        self.gaps: deque[float] = deque(maxlen=16)
        self.last = None  # the player's last onset (fractional tick)
        self.logged = (self.ratio, self.span)

    def set_meter(self, meter: Meter) -> None:
        self.meter = meter
        if meter.compound:
            self.span = SIXTEENTH_PAIRS

    def hear(self, tick: float) -> None:
        """The player struck a note at fractional song tick `tick` (auto: the estimate follows)."""
        if self.fixed is not None:
            return
        if self.last is not None and abs(tick - self.last) < SAME_ONSET:
            return
        if self.last is not None and tick > self.last:
            self.gaps.append(tick - self.last)
        self.last = tick
        span = SIXTEENTH_PAIRS if self.meter.compound or self._sixteenths() else EIGHTHS
        f = (tick % self.meter.bar) % span / span
        lags = self.onbeats[span]
        lag = float(np.median(lags)) if len(lags) >= 3 else 0.0
        if NEAR[0] <= f - lag <= NEAR[1]:
            self.offbeats[span].append(f)
        elif f < ON_BEAT or f > 1 - ON_BEAT:
            lags.append(f if f < 0.5 else f - 1)
        self.span = span
        seen = self.offbeats[span]
        self.ratio = float(min(max(np.median(seen) - lag, LO), HI)) if len(seen) >= MIN_COUNT else LO
        if abs(self.ratio - self.logged[0]) >= 0.02 or (span != self.logged[1] and self.ratio > LO):
            self.logged = (self.ratio, span)
            log.info("swing: %s (from the player's last %d off-beat %s)",
                     f"{self.ratio:.2f} {self.unit()}" if self.ratio > LO else "straight", len(seen), self.unit())

    def _sixteenths(self) -> bool:
        return len(self.gaps) >= 4 and float(np.median(self.gaps)) < SIXTEENTHS

    def unit(self) -> str:
        return "16ths" if self.span == SIXTEENTH_PAIRS else "8ths"

    def describe(self) -> str:
        """For the status line: 'straight', 'swing 0.64 8ths'."""
        return "straight" if self.ratio <= LO + 1e-9 else f"swing {self.ratio:.2f} {self.unit()}"

    def place(self, tick: int) -> float:
        """When leadline's grid tick `tick` sounds: an off-beat of the pair moves to the ratio."""
        if self.ratio <= LO:
            return tick
        if (tick % self.meter.bar) % self.span * 2 == self.span:
            return tick + (self.ratio - LO) * self.span
        return tick

    def note(self, onset: int, end: int) -> tuple[float, float]:
        """A note's (onset, end) as played: both placed, the end never at or before the onset."""
        on, off = self.place(onset), self.place(end)
        return on, off if off > on else on + (end - onset)
