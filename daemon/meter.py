"""The song's meter: where bars, beats and the grid of phrase starts fall, in clock ticks (24 a quarter note).

MIDI clock carries no meter: it is a setting (`song.meter`), changed by `--set` or a CC. Bars count from the
song's start (tick 0: the first tick after Start, or Song Position 0), so a Song Position Pointer lands on the
bar it names in the meter set now. The felt beat (the pulse: respond's `after_beats`, phrase starts, count-in
clicks) is the denominator's note in a simple meter (3/4: a quarter; 7/8: an eighth) and three of them in a
compound meter (6/8, 9/8, 12/8: a dotted quarter, the eighths grouped in threes). An additive numerator
("3+2+2/8") groups the eighths as written; strong beats are the first of each group. The model's token grid
(daemon/codec.py) does not change with the meter.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from leadline.daemon.codec import TICKS_PER_BEAT

WHOLE = 4 * TICKS_PER_BEAT  # ticks in a whole note
DENOMINATORS = (2, 4, 8, 16)
CC_METERS = ("4/4", "3/4", "6/8", "12/8", "5/4", "7/8", "2/4", "9/8")  # control.meter_cc: value * 8 // 128


@dataclass(frozen=True)
class Meter:
    """A time signature as clock ticks: `groups` are the bar's beat groups in units of the denominator."""

    numerator: int
    denominator: int
    groups: tuple[int, ...]

    @property
    def unit(self) -> int:
        """Ticks of one denominator note (4: 24, 8: 12)."""
        return WHOLE // self.denominator

    @property
    def bar(self) -> int:
        """Ticks in a bar."""
        return self.numerator * self.unit

    @property
    def compound(self) -> bool:
        """6/8, 9/8, 12/8 (and /16): the beat is three units."""
        return self.denominator >= 8 and len(self.groups) > 1 and set(self.groups) == {3}

    @cached_property
    def pulse(self) -> int:
        """Ticks of the felt beat, on average: a bar over its strong beats (4/4: a quarter; 6/8: a dotted
        quarter; 7/8 as 2+2+3: 28 ticks)."""
        return self.bar // len(self.beats)

    @cached_property
    def beats(self) -> tuple[int, ...]:
        """Tick offsets in a bar of the strong beats: the start of each group (4/4: every quarter)."""
        out, t = [], 0
        for g in self.groups:
            out.append(t)
            t += g * self.unit
        return tuple(out)

    def next_beat(self, tick: int) -> int:
        """The first strong beat at or after `tick`."""
        bar_start = tick - tick % self.bar
        for b in self.beats:
            if bar_start + b >= tick:
                return bar_start + b
        return bar_start + self.bar

    def bar_of(self, tick: int) -> int:
        """The bar (from 0) that `tick` falls in."""
        return tick // self.bar

    def __str__(self) -> str:
        plain = self.groups == default_groups(self.numerator, self.denominator)
        head = str(self.numerator) if plain else "+".join(map(str, self.groups))
        return f"{head}/{self.denominator}"


def default_groups(numerator: int, denominator: int) -> tuple[int, ...]:
    """How the units of a bar group into beats when the meter does not say: quarters one by one; eighths in
    threes when they divide by three (6/8, 12/8), else in twos with a three at the end (5/8: 2+3, 7/8: 2+2+3)."""
    if denominator < 8 or numerator <= 3:
        return (1,) * numerator if denominator < 8 else (numerator,)
    if numerator % 3 == 0:
        return (3,) * (numerator // 3)
    twos = (numerator - 3) // 2
    return (2,) * twos + (3,) if numerator % 2 else (2,) * (numerator // 2)


def parse_meter(text) -> Meter:
    """'3/4', '6/8', '3+2+2/8' -> a Meter; ValueError saying what is wrong."""
    if not isinstance(text, str):
        raise ValueError("expected a time signature like \"3/4\" or \"6/8\" (quoted)")
    head, sep, den = text.strip().partition("/")
    parts = head.split("+")
    if not sep or not den.strip().isdigit() or not all(p.strip().isdigit() for p in parts):
        raise ValueError("expected a time signature like \"3/4\", \"6/8\" or \"3+2+2/8\"")
    d, groups = int(den), tuple(int(p) for p in parts)
    if d not in DENOMINATORS:
        raise ValueError(f"the denominator must be one of {', '.join(map(str, DENOMINATORS))}")
    n = sum(groups)
    if min(groups) < 1 or not 1 <= n <= 32:
        raise ValueError("1 to 32 beats a bar")
    if len(groups) == 1:
        groups = default_groups(n, d)
    bar = n * WHOLE // d
    if bar > 8 * WHOLE:
        raise ValueError("a bar longer than 8 whole notes")
    return Meter(n, d, groups)


FOUR_FOUR = parse_meter("4/4")
