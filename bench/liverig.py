"""An in-process live rig: `leadline.daemon.live.Live` with a real engine and sampler, fed at synthetic times.

What is faked is the wall clock `Live` reads (`leadline.daemon.live.time.perf_counter_ns`) and its wait
(`leadline.daemon.live.sleep_until`), which jumps the fake clock to the deadline instead of sleeping there.
Everything else (clock follower, conductor, improviser, scheduler, note tracker) is the code the daemon runs.
Shared by the tests (tests/daemon) and `leadline bench --only jam` (bench/jam.py); `patch` is pytest's
monkeypatch there, a `Patches` here.
"""
from __future__ import annotations

import types

import leadline.daemon.live as live_mod
from leadline.bench.jackrig import stuck_bend, stuck_notes
from leadline.daemon import config
from leadline.daemon.clock import NS_PER_MINUTE
from leadline.daemon.codec import TICKS_PER_BEAT
from leadline.daemon.live import Live
from leadline.daemon.sampler import Sampler

CLOCK, START, CONTINUE, STOP, SPP = 0xF8, 0xFA, 0xFB, 0xFC, 0xF2
BAR = 4 * TICKS_PER_BEAT
PLAYER_CH = 1  # the player's channel (0-based) in `player_notes`; leadline plays on channel 1 (0)


class Patches:
    """`setattr` that remembers what it replaced; `undo` puts it back (pytest's monkeypatch, without pytest)."""

    def __init__(self) -> None:
        self.saved: list[tuple[object, str, object]] = []

    def setattr(self, obj, name: str, value) -> None:
        self.saved.append((obj, name, getattr(obj, name)))
        setattr(obj, name, value)

    def undo(self) -> None:
        while self.saved:
            obj, name, value = self.saved.pop()
            setattr(obj, name, value)


def player_notes(events: dict, notes, ch: int = PLAYER_CH) -> dict:
    """Add the player's notes, (onset tick, end tick, pitch), to `events` (tick -> messages) for `Rig.song`."""
    for on, off, pitch in notes:
        events.setdefault(on, []).append([0x90 | ch, pitch, 100])
        events.setdefault(off, []).append([0x80 | ch, pitch, 0])
    return events


def per_bar(onsets, bars: int) -> list[int]:
    """How many of `onsets` (ticks) fall in each of the first `bars` bars."""
    return [sum(1 for t in onsets if b * BAR <= t < (b + 1) * BAR) for b in range(bars)]


class FakeTime:
    """The wall clock Live reads; `sleep_until` moves it to the deadline (never backwards)."""

    def __init__(self, t_ns: int) -> None:
        self.t = t_ns

    def perf_counter_ns(self) -> int:
        return self.t

    def sleep_until(self, deadline_ns: int) -> int:
        self.t = max(self.t, deadline_ns)
        return self.t

    def advance(self, ns: int) -> int:
        self.t += max(0, int(ns))
        return self.t


def msg_ok(m) -> bool:
    """A complete, well-formed MIDI message as leadline may send it (no SysEx)."""
    if not m or not 0x80 <= m[0] <= 0xFF or m[0] == 0xF0:
        return False
    s = m[0]
    want = (2 if s & 0xE0 == 0xC0 else 3) if s < 0xF0 else {0xF2: 3, 0xF1: 2, 0xF3: 2}.get(s, 1)
    return len(m) == want and all(0 <= b < 0x80 for b in m[1:])


class Rig:
    """A Live with recorded output, fed at synthetic times."""

    def __init__(self, engine, patch, seed: int, *overrides: str) -> None:
        self.fake = FakeTime(10**12)
        patch.setattr(live_mod, "time", types.SimpleNamespace(perf_counter_ns=self.fake.perf_counter_ns))
        patch.setattr(live_mod, "sleep_until", self.fake.sleep_until)
        self.cfg = config.load(None, [f"sampling.seed={seed}", *overrides])
        self.sent: list[tuple[int, ...]] = []
        self.bent = 0  # pitch bends away from the centre leadline sent (its notes' expression)
        self.onsets: list[int] = []  # song tick of each of leadline's note-ons, from the time it was sent
        self.played = True  # a note-on since leadline's last All Notes Off (the first one may come any time)
        self.live = Live(self.cfg, engine, Sampler(self.cfg.sampling), send=self.record)
        self.live.start(self.fake.t)
        self.period = NS_PER_MINUTE / (120 * TICKS_PER_BEAT)
        self.stop_checks = 0

    def record(self, m) -> None:
        assert msg_ok(m), f"leadline sent a malformed message {list(m)}"
        if tuple(m[:2]) == (0xB0 | self.live.out_ch, 123):  # an All Notes Off says something new
            assert self.played, "All Notes Off again with no note-on since the last (a storm floods the port)"
            self.played = False
        elif m[0] & 0xF0 == 0x90 and m[2]:
            self.played = True
            if m[0] & 0x0F == self.live.out_ch and self.live.running:
                self.onsets.append(round(self.live.clock.tick_at(self.fake.t + self.live.lookahead_ns)))
        elif m[0] == 0xE0 | self.live.out_ch and (m[1], m[2]) != (0, 64):
            self.bent += 1
        self.sent.append(tuple(m))

    def sounding(self) -> dict:
        return stuck_notes([(i, bytes(m)) for i, m in enumerate(self.sent)])

    def silent(self, why: str) -> None:
        self.stop_checks += 1
        left = self.sounding()
        assert not left, f"after {why}: notes still sounding {left}"
        bend, mod = stuck_bend(list(enumerate(self.sent)), self.live.out_ch)
        assert not bend and not mod, f"after {why}: pitch bend left at {bend}, modulation at {mod}"
        assert len(self.live.queue) == 0, f"after {why}: {len(self.live.queue)} messages still scheduled"

    def feed(self, msg, backing: bool = False) -> None:
        """A message on the player's input, or (`backing`) on the band's port."""
        self.live.handle(self.fake.t, list(msg), backing)

    def pass_(self, ns: float = 0) -> None:
        """Time goes by, then one loop pass."""
        self.live.tick(self.fake.advance(ns))

    def ticks(self, n: int, jitter: float = 0.0, rng=None) -> None:
        for _ in range(n):
            self.fake.advance(self.period * (1 + (rng.uniform(-jitter, jitter) if rng else 0)))
            self.feed([CLOCK])
            self.pass_()

    def song(self, ticks: int, events: dict[int, list], band: dict[int, list] | None = None) -> None:
        """`ticks` clock ticks from the song position now; `events[k]` (messages) go in just after tick k,
        `band[k]` too, on the band's port (first)."""
        for k in range(ticks):
            self.ticks(1)
            for msg in (band or {}).get(k, ()):
                self.feed(msg, backing=True)
            for msg in events.get(k, ()):
                self.feed(msg)

    def answers(self) -> int:
        return sum(1 for m in self.sent if m[0] == 0x90 | self.live.out_ch and m[2] > 0)
