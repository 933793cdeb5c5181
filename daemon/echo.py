"""Echo suppression: leadline's own messages coming back on its input (a loopback) are not the player.

On a loopback setup (leadline's output routed, on purpose or by a DAW's MIDI-thru, back to its input)
every note leadline plays would arrive as a note of the player's: respond would stop to listen to it,
trade would hear its own turn, and an All Notes Off would come back as the player's panic. `EchoGuard`
remembers when each message leadline sent was due (note-on, note-off, control change per channel and
number; clock and transport messages), and an input message of the same kind, channel and number that
arrives within `midi.echo_ms` after it is an echo: ignored and counted (the status line's "echo").

MIDI clock ticks (0xF8, sent with clock.send_clock) count as echoes within CLOCK_ECHO_NS at most: ticks
come every 8-30 ms, and an external clock's must still be heard so that it can take over.
A real note of the player's on leadline's output channel, on the same pitch, within those milliseconds of
leadline's own, is taken for an echo too; 30 ms is shorter than any two notes a player means apart.
"""
from __future__ import annotations

NEVER = -(1 << 62)
CLOCK_ECHO_NS = 5_000_000
EARLY_NS = 2_000_000  # an echo stamped this much before the time its original was due still counts
_REALTIME = 3 * 16 * 128  # index of the first system message slot (0xF0..0xFF)


def slot(msg) -> int:
    """The table index of `msg`: (kind, channel, number) for notes and control changes, the status byte for
    system messages; -1 for anything leadline does not send."""
    status = msg[0]
    if status >= 0xF0:
        return _REALTIME + (status & 0x0F)
    if len(msg) < 3:
        return -1
    kind = status & 0xF0
    if kind == 0x90:
        kind = 0 if msg[2] else 1
    elif kind == 0x80:
        kind = 1
    elif kind == 0xB0:
        kind = 2
    else:
        return -1
    return (kind * 16 + (status & 0x0F)) * 128 + (msg[1] & 0x7F)


class EchoGuard:
    """When leadline's messages were due, and whether an input message is one of them coming back."""

    __slots__ = ("window_ns", "_due", "_windows", "echoes")

    def __init__(self, window_ms: float) -> None:
        self.window_ns = int(window_ms * 1e6)
        self._windows = [self.window_ns] * (_REALTIME + 16)
        self._windows[_REALTIME + 8] = min(self.window_ns, CLOCK_ECHO_NS)
        self._due = [NEVER] * (_REALTIME + 16)
        self.echoes = 0  # input messages ignored as echoes, for the status line

    def sent(self, t_ns: int, msg) -> None:
        """`msg` leaves (is due) at `t_ns`, in the timebase input is stamped in."""
        if self.window_ns:
            i = slot(msg)
            if i >= 0:
                self._due[i] = t_ns

    def echo(self, t_ns: int, msg) -> bool:
        """True (and counted) when `msg`, arriving at `t_ns`, is leadline's own message coming back."""
        if not self.window_ns:
            return False
        i = slot(msg)
        if i < 0 or not -EARLY_NS <= t_ns - self._due[i] <= self._windows[i]:
            return False
        self.echoes += 1
        return True
