"""Jam modes: when leadline plays (respond, trade, duet), decided from musical time and the player.

A pure class: it is told the player's note-ons/offs and the current tick, and answers with the phrase
(start tick, end tick) leadline should be playing now, or None. Ticks are MIDI clock ticks (24 a quarter
note), counted from the song's start; bars and beats are the meter's (leadline.daemon.meter): respond waits
`after_beats` of its beats and answers `bars` of its bars from a strong beat, trade turns change on its bar
lines. Nothing is played before `origin` (the end of a count-in), and trade's turns count from there.
Whether the player interrupts leadline is decided here, per mode: only respond stops when the player
plays; duet plays on while listening, and a trade turn is leadline's whatever the player does in it.
"""
from __future__ import annotations

from dataclasses import dataclass

from leadline.daemon.codec import TICKS_PER_BEAT
from leadline.daemon.meter import FOUR_FOUR, Meter

BAR = FOUR_FOUR.bar  # a 4/4 bar (offline answers)
FOREVER = 1 << 62
MODES = ("respond", "trade", "duet")


@dataclass(frozen=True)
class Phrase:
    start: int
    end: int
    fill: bool = False  # keep playing through it (duet, a trade turn); an answer in respond may breathe


class Conductor:
    """Tracks the player's activity and the mode's rules; `phrase(now)` says what leadline should play."""

    def __init__(self, mode: str, respond_cfg, trade_cfg, horizon: int = TICKS_PER_BEAT,
                 meter: Meter = FOUR_FOUR) -> None:
        self.respond_cfg, self.trade_cfg = respond_cfg, trade_cfg
        self.horizon = horizon  # generate this many ticks ahead of the phrase start
        self.mode = mode
        self.meter = meter
        self.origin = 0  # leadline is silent before this tick (a count-in); trade's turns start here
        self.reset()

    def set_meter(self, meter: Meter) -> None:
        self.meter = meter
        self.reset()

    def reset(self) -> None:
        """Forget the player's activity and the current phrase (Start, Stop, mode change)."""
        self.sounding = 0
        self.last_off = None  # tick of the player's last note-off while nothing sounds
        self.pending_answer = False
        self.current: Phrase | None = None
        self.answered_turn = -1

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.reset()

    def player_on(self, tick: int, held: int) -> bool:
        """A player note-on (`held`: the player's notes sounding now, this one included); True when
        leadline must stop now (respond: the player plays again)."""
        self.sounding = held
        self.pending_answer = True
        self.last_off = None
        if self.mode == "respond" and self.current is not None:
            self.current = None
            return True
        return False

    def player_off(self, tick: int, held: int) -> None:
        """A player note ended (`held`: the player's notes still sounding)."""
        self.sounding = held
        if held == 0:
            self.last_off = tick

    def phrase(self, now: int) -> Phrase | None:
        """The phrase leadline should be generating/playing at tick `now` (None: be silent)."""
        if self.current is not None and now >= self.current.end:
            self.current = None
        if now + self.horizon < self.origin:
            return None
        if self.mode == "duet":
            if self.current is None:
                self.current = Phrase(_next_grid(max(now + 1, self.origin), TICKS_PER_BEAT // 2), FOREVER,
                                      fill=True)  # an 8th ahead
        elif self.mode == "respond":
            self._respond(now)
        else:
            self._trade(now)
        return self.current

    def _respond(self, now: int) -> None:
        if self.current is not None or not self.pending_answer or self.sounding or self.last_off is None:
            return
        trigger = self.last_off + round(self.respond_cfg.after_beats * self.meter.pulse)
        if now >= trigger:
            start = self.meter.next_beat(max(now, trigger, self.origin - 1) + 1)
            self.current = Phrase(start, start + self.respond_cfg.bars * self.meter.bar)
            self.pending_answer = False

    def _trade(self, now: int) -> None:
        turn_len = self.trade_cfg.bars * self.meter.bar
        turn = (now + self.horizon - self.origin) // turn_len  # generated a little before leadline's turn
        if turn % 2 == 1 and turn != self.answered_turn:
            self.answered_turn = turn
            start = self.origin + turn * turn_len
            self.current = Phrase(start, start + turn_len, fill=True)

    def owner(self, tick: int) -> str:
        """Whose turn it is at `tick` in trade mode ('player' or 'leadline')."""
        turn = (tick - self.origin) // (self.trade_cfg.bars * self.meter.bar)
        return "leadline" if turn % 2 else "player"


def _next_grid(tick: int, grid: int) -> int:
    """The first multiple of `grid` at or after `tick`."""
    return -(-tick // grid) * grid
