"""The count-in: `song.count_in.bars` bars of clicks on the meter's beats after Start, before leadline plays.

Clicks are notes (`song.count_in.note` on `song.count_in.channel`, the bar's first one louder) scheduled on
their clock ticks like leadline's own, a beat ahead, so every stop path that cancels and releases leadline's
notes ends them too (Live.all_off). A click is never skipped as late: the first is due on the first tick after
Start, known only when that tick comes (after Start re-primes the model), and a count-in without its first
click miscounts the bar. The conductor keeps leadline silent until the count-in's last tick.
"""
from __future__ import annotations

from leadline.daemon.music import note_number
from leadline.daemon.meter import Meter
from leadline.daemon.scheduler import KIND_CLICK, KIND_NOTE_OFF, NOTE_OFF, NOTE_ON, deadline

CLICK = 6  # ticks a click sounds (a 16th)


class CountIn:
    """Which clicks are still to be scheduled; `due(until)` hands out those up to tick `until`."""

    def __init__(self, cfg, meter: Meter) -> None:
        self.bars, self.channel = cfg.bars, cfg.channel - 1
        self.note, self.velocity = note_number(cfg.note), cfg.velocity
        self.meter = meter
        self.clicks: list[int] = []  # ticks of the clicks not yet scheduled, latest first

    @property
    def ticks(self) -> int:
        """How long the count-in lasts from the song's start (0: none)."""
        return self.bars * self.meter.bar

    def start(self) -> None:
        """From the top of the song (Start)."""
        bar = self.meter.bar
        self.clicks = sorted((b * bar + t for b in range(self.bars) for t in self.meter.beats), reverse=True)

    def stop(self) -> None:
        self.clicks = []

    def schedule(self, queue, clock, until: int, lookahead_ns: int) -> None:
        """Put the clicks up to tick `until` on `queue` (a leadline.daemon.scheduler.Scheduler) on `clock`."""
        while self.clicks and self.clicks[-1] <= until:
            t = self.clicks.pop()
            vel = self.velocity if t % self.meter.bar == 0 else max(1, self.velocity * 3 // 4)
            queue.push(deadline(clock, t, lookahead_ns), (NOTE_ON | self.channel, self.note, vel), KIND_CLICK, t)
            queue.push(deadline(clock, t + CLICK, lookahead_ns), (NOTE_OFF | self.channel, self.note, 0),
                       KIND_NOTE_OFF, t + CLICK)
