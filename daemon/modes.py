"""Jam modes: when leadline plays (respond, trade, duet), decided from musical time and the player.

A pure class: it is told the player's note-ons/offs and the current tick, and answers with the phrase
(start tick, end tick) leadline should be playing now, or None. Ticks are MIDI clock ticks (24 a beat).
Whether the player interrupts leadline is decided here, per mode: only respond stops when the player
plays; duet plays on while listening, and a trade turn is leadline's whatever the player does in it.
"""
from __future__ import annotations

from dataclasses import dataclass

from leadline.daemon.codec import TICKS_PER_BEAT

BEATS_PER_BAR = 4
BAR = BEATS_PER_BAR * TICKS_PER_BEAT
FOREVER = 1 << 62
MODES = ("respond", "trade", "duet")


@dataclass(frozen=True)
class Phrase:
    start: int
    end: int
    fill: bool = False  # keep playing through it (duet, a trade turn); an answer in respond may breathe


class Conductor:
    """Tracks the player's activity and the mode's rules; `phrase(now)` says what leadline should play."""

    def __init__(self, mode: str, respond_cfg, trade_cfg, horizon: int = TICKS_PER_BEAT) -> None:
        self.respond_cfg, self.trade_cfg = respond_cfg, trade_cfg
        self.horizon = horizon  # generate this many ticks ahead of the phrase start
        self.mode = mode
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
        if self.mode == "duet":
            if self.current is None:
                self.current = Phrase(_next_grid(now + 1, TICKS_PER_BEAT // 2), FOREVER, fill=True)  # an 8th ahead
        elif self.mode == "respond":
            self._respond(now)
        else:
            self._trade(now)
        return self.current

    def _respond(self, now: int) -> None:
        if self.current is not None or not self.pending_answer or self.sounding or self.last_off is None:
            return
        trigger = self.last_off + round(self.respond_cfg.after_beats * TICKS_PER_BEAT)
        if now >= trigger:
            start = _next_grid(max(now, trigger) + 1, TICKS_PER_BEAT)
            self.current = Phrase(start, start + self.respond_cfg.bars * BAR)
            self.pending_answer = False

    def _trade(self, now: int) -> None:
        turn_len = self.trade_cfg.bars * BAR
        turn = (now + self.horizon) // turn_len  # start generating a little before leadline's turn
        if turn % 2 == 1 and turn != self.answered_turn:
            self.answered_turn = turn
            self.current = Phrase(turn * turn_len, (turn + 1) * turn_len, fill=True)

    def owner(self, tick: int) -> str:
        """Whose turn it is at `tick` in trade mode ('player' or 'leadline')."""
        return "leadline" if (tick // (self.trade_cfg.bars * BAR)) % 2 else "player"


def _next_grid(tick: int, grid: int) -> int:
    """The first multiple of `grid` at or after `tick`."""
    return -(-tick // grid) * grid
