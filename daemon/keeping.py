"""Live's bookkeeping beside the music: what left the output (takes, session logs), echoes, MIDI learn.

`Keeping` is a part of `leadline.daemon.live.Live` (a mixin: it uses Live's clock, recorder and output
hooks); `Stats` holds the status line's counters.
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np


class Stats:
    """Counters for the status line."""

    def __init__(self) -> None:
        self.notes_in = self.notes_out = self.interrupts = self.stops = 0
        self.step_ns = np.zeros(1024, np.int64)
        self.step_i = 0

    def step_time(self, ns: int) -> None:
        self.step_ns[self.step_i & 1023] = ns
        self.step_i += 1

    def step_p99_ms(self) -> float:
        n = min(self.step_i, 1024)
        return float(np.percentile(self.step_ns[:n], 99)) / 1e6 if n else 0.0


class Keeping:
    """Sending through Live (`send`), noting what left, ending takes, MIDI learn."""

    @property
    def send(self):
        """Send a message now (stop paths, echoes of the player, clock); what left is noted (`left`)."""
        return self._send_now

    @send.setter
    def send(self, fn) -> None:
        self._send = fn

    def _send_now(self, msg) -> None:
        self._send(msg)
        self._handed(self.now_ns(), msg)

    def _handed(self, t_ns: int, msg) -> None:
        """`msg` was handed to the output, due at `t_ns`: its echo is expected; without a frame-accurate
        output (which says itself what it wrote: `drain_out`) it has left."""
        self.echo.sent(t_ns, msg)
        if self.drain_out is None and self.recorder is not None:
            self.left(t_ns, msg)

    def left(self, t_ns: int, msg) -> None:
        """A message left on leadline's output at `t_ns`: the take holds what sounded."""
        if self.take_ending:  # after a Stop (whose Song Position may move the clock) or exit: at the end
            tick = self.end_tick
        elif self.running:
            tick = round(self.clock.tick_at(t_ns + self.lookahead_ns))
        else:
            tick = self.now_tick()
        self.recorder.out(t_ns, tick, msg)

    def take_state(self) -> dict:
        """What a take's session log needs to replay it: the sampler's random state and the model's seed
        window at its start, with the harmony each token heard (a Start reprimes from that window)."""
        imp = self.improviser
        return {"rng": self.sampler.rng.bit_generator.state, "window": list(imp.window), "codes": list(imp.codes),
                "cursor": imp.cursor,
                "velocity_bin": imp.velocity_bin, "temperature": self.sampler.temperature,
                "mode": self.conductor.mode, "external": self.external, "enabled": self.enabled}

    def end_take(self) -> None:
        """The take ends here (Stop, exit); it is written once what was handed over has left (`settle`)."""
        self.take_ending = self.recorder is not None
        self.end_tick, self.end_ns = self.now_tick(), self.now_ns()

    def settle(self, wait: bool = False) -> None:
        """What the output wrote goes to the take; an ending take is written once everything handed over
        has left (the stop path's note-offs included), at once with `wait` (up to 0.2 s: Start, exit)."""
        if self.drain_out is not None:
            end = time.monotonic() + 0.2
            while wait and self.out_pending() and time.monotonic() < end:
                time.sleep(0.002)
            self.drain_out(self.left)
        if self.take_ending and (wait or not self.out_pending()):
            self.take_ending = False
            self.recorder.end(self.end_tick, self.end_ns)

    def _learning(self, cc: int, value: int) -> bool:
        """MIDI learn (leadline.daemon.learn): True when the control change was taken by it."""
        if self.learn is None:
            from leadline.daemon.learn import Learn

            self.learn = Learn(self.cfg.control.learn_timeout_s, self.now_ns())
            return True
        learned = self.learn.feed(cc, value, self.now_ns(), self.cfg.control)
        if learned is None:
            return cc == self.cfg.control.learn_cc
        self.cfg = dataclasses.replace(self.cfg, control=learned)
        if self.on_learned is not None:
            self.on_learned(learned)
        return True
