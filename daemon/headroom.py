"""The safe tempo: the fastest song at which the engine's measured p99 step time still leaves margin.

Leadline generates a beat ahead, one model step (inference + sampling) per token. The densest beats the
shipped model generates take 18 steps (p99 12, median 8: its Improviser over 1,801 beats of filled, duet-like
phrases, seeds 1-3), so generation needs STEPS_PER_TICK = 0.75 steps a clock tick at worst; MARGIN = 2
keeps half of each tick for everything else (the player's notes heard, clock, sending). Safe while STEPS_PER_TICK * MARGIN * p99 step <= one tick's time; above it answers may start
late or thin out. The figure comes at start (from the steps timed there) and in the status line (from the
live steps once enough have run); `TempoGuard` warns once each time the song crosses above it.
"""
from __future__ import annotations

import logging
import time

import numpy as np

from leadline.daemon import codec
from leadline.daemon.clock import MAX_BPM, NS_PER_MINUTE

log = logging.getLogger(__name__)

STEPS_PER_TICK = 0.75
MARGIN = 2.0
REARM = 0.97  # after a warning, the song must come back below this share of the safe tempo to warn again


def safe_bpm(step_p99_ms: float) -> float:
    """The highest tempo (BPM) at which a step of `step_p99_ms` leaves the margin (inf for 0)."""
    if step_p99_ms <= 0:
        return float("inf")
    tick_ms = STEPS_PER_TICK * MARGIN * step_p99_ms
    return NS_PER_MINUTE / 1e6 / (codec.TICKS_PER_BEAT * tick_ms)


def describe(bpm: float, words: str = "safe to") -> str:
    """'safe to 212 BPM', or 'safe to 400+ BPM' beyond the clock's range."""
    return f"{words} {MAX_BPM:.0f}+ BPM" if bpm >= MAX_BPM else f"{words} {bpm:.0f} BPM"


def measure_p99_ms(engine, sampler, steps: int = 200) -> float:
    """p99 milliseconds of a step as the live loop takes it (engine step + sampling); leaves a fresh state."""
    times = np.empty(steps)
    logits = engine.step(codec.BOS)
    tok = codec.BOS
    for i in range(steps):
        t0 = time.perf_counter_ns()
        tok = sampler.sample(logits, tok)
        logits = engine.step(tok)
        times[i] = time.perf_counter_ns() - t0
    engine.reset()
    sampler.reset_repetition()
    return float(np.percentile(times, 99)) / 1e6


class TempoGuard:
    """Warns once when the song goes faster than the safe tempo, again only after it came back below."""

    def __init__(self) -> None:
        self.over = False
        self.warnings = 0

    def check(self, bpm: float, safe: float, p99_ms: float) -> None:
        if not self.over and bpm > safe:
            self.over = True
            self.warnings += 1
            log.warning("the song's tempo %.1f BPM is above the safe tempo %.0f BPM (model step p99 %.2f ms): "
                        "answers may come late or thin", bpm, safe, p99_ms)
        elif self.over and bpm < safe * REARM:
            self.over = False
