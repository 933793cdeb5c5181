"""MIDI learn: move a knob or press a pad (sending a CC) and it becomes temperature, mode, on/off, panic or expression.

`leadline serve --learn`, or the control.learn_cc button while playing, walks through TARGETS in order:
one prompt line each, then the first control change that moves on control.channel becomes that target's
CC (any other target that had that CC loses it), at once; a target with nothing moved within
control.learn_timeout_s is skipped and keeps its CC, and pressing learn_cc again skips it too. A control
learned in this round is not taken for a later target (a knob sends a stream of values while it turns).
Pads that send notes cannot be learned: set them to send a CC. The daemon keeps each learned CC in the
config file (leadline.daemon.configfile, comments kept).

The last target is expression depth (control.expression_cc): how far leadline's bends and vibrato go.
"""
from __future__ import annotations

import dataclasses
import logging

log = logging.getLogger(__name__)

# (control.<key>, what to move for it)
TARGETS = (
    ("temperature_cc", "temperature: a knob or fader"),
    ("mode_cc", "mode (respond / trade / duet): a knob"),
    ("enable_cc", "on/off: a button or pad sending a CC"),
    ("panic_cc", "panic: a button or pad sending a CC"),
    ("expression_cc", "expression depth (bends, vibrato): a knob or fader"),
)
CC_KEYS = tuple(key for key, _ in TARGETS) + ("learn_cc", "meter_cc")  # a learned CC is taken off these


class Learn:
    """One learn round on the engine thread: `feed` each control change, `poll` for the timeout."""

    def __init__(self, timeout_s: float, now_ns: int, targets=TARGETS) -> None:
        self.timeout_ns = int(timeout_s * 1e9)
        self.targets = list(targets)
        self.i = 0
        self.taken: set[int] = set()
        self.learned: dict[str, int] = {}
        self.deadline = 0
        log.warning("MIDI learn: %d controls, %g s each (nothing moved: skipped, its CC kept)",
                    len(self.targets), timeout_s)
        self._prompt(now_ns)

    @property
    def done(self) -> bool:
        return self.i >= len(self.targets)

    def _prompt(self, now_ns: int) -> None:
        if self.done:
            got = ", ".join(f"{k} = CC {v}" for k, v in self.learned.items()) or "nothing"
            log.warning("MIDI learn done: %s", got)
            return
        self.deadline = now_ns + self.timeout_ns
        key, what = self.targets[self.i]
        log.warning("MIDI learn %d/%d: move the control for %s (control.%s)", self.i + 1, len(self.targets),
                    what, key)

    def feed(self, cc: int, value: int, now_ns: int, control):
        """A control change on the control channel: the new ControlConfig when it was learned, else None
        (learn_cc pressed: the target is skipped; a control learned in this round: not taken again)."""
        if self.done or cc in self.taken:
            return None
        key = self.targets[self.i][0]
        if cc == control.learn_cc:
            if value > 0:
                log.warning("MIDI learn: %s skipped (control.%s stays %s)", key, key, getattr(control, key))
                self.i += 1
                self._prompt(now_ns)
            return None
        change = {k: None for k in CC_KEYS if getattr(control, k) == cc and k != key}
        for k in change:
            log.warning("MIDI learn: CC %d was control.%s: that one is now off", cc, k)
        change[key] = cc
        self.taken.add(cc)
        self.learned[key] = cc
        log.warning("MIDI learn: control.%s = CC %d, in use now", key, cc)
        self.i += 1
        self._prompt(now_ns)
        return dataclasses.replace(control, **change)

    def poll(self, now_ns: int) -> bool:
        """Skip the target whose time is up; True once the round is over."""
        if not self.done and now_ns >= self.deadline:
            key = self.targets[self.i][0]
            log.warning("MIDI learn: nothing moved for %s: skipped", key)
            self.i += 1
            self._prompt(now_ns)
        return self.done
