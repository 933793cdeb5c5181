"""Leadline's pitch bend on its output channel: each note's bend as messages, which note bends, recentring.

A note's expression (codec 2) is a bend curve (`codec.bend_curve`, semitones on the tick grid) sent as pitch
bend: value = semitones / expression.bend_range * 8192 * depth, clipped to -8192..8191. Pitch bend is the
channel's, not the note's, so one note bends it at a time: the newest that started. Its bend at the onset goes
before its note-on (a pre-bend, or the centre when the channel is still bent); a plain note that starts while
the channel is bent gets the centre before its note-on; a note's later points and the centre after its
note-off go out only while it is still the newest. Every stop path that sends All Notes Off also sends the
centre and modulation 0 (`reset`), and one that does not sends them when a bend left since the last. With
expression.mode off nothing of this is sent at all.
"""
from __future__ import annotations

import dataclasses

from leadline.daemon import codec
from leadline.daemon.codec import Note
from leadline.daemon.scheduler import CONTROL, MODULATION, Message, bend_value, pitch_bend, rpn_bend_range


class Bender:
    """Bend curves to messages and the channel's bend state; every decision runs on the engine thread."""

    __slots__ = ("on", "vibrato", "bend_range", "depth", "channel", "centre", "mod_off", "last_id", "owner",
                 "value", "sent")

    def __init__(self, cfg, channel: int) -> None:
        self.on, self.vibrato = cfg.mode != "off", cfg.mode == "full"
        self.bend_range, self.depth, self.channel = cfg.bend_range, cfg.depth, channel
        self.centre, self.mod_off = pitch_bend(channel, 0), (CONTROL | channel, MODULATION, 0)
        self.last_id = 0  # id of the last note scheduled
        self.owner = 0  # id of the note that bends the channel (the newest that started)
        self.value = 0  # the bend last sent (0: centre)
        self.sent = False  # a bend left since the last stop path's centre

    def next_id(self) -> int:
        self.last_id += 1
        return self.last_id

    def set_depth(self, cc_value: int) -> None:
        """control.expression_cc: 0..127 -> depth 0..1 (for the notes scheduled from now)."""
        self.depth = cc_value / 127

    def rpn(self) -> list[Message]:
        """RPN 0 with expression.bend_range (at start, after an output reconnect); none when off."""
        return rpn_bend_range(self.channel, self.bend_range) if self.on else []

    def curve(self, note: Note, onset: int, end: int) -> list[tuple[int, Message]]:
        """`note`'s bend, played from song tick `onset` to `end`, as (tick, message): its points before `end`
        (a cut note drops the rest), then the centre at `end`; empty for a plain note or when off."""
        if not self.on or not note.expressive:
            return []
        if not self.vibrato and note.vibrato:
            note = dataclasses.replace(note, vibrato=0)
        scale = 8192 * self.depth / self.bend_range
        out, last = [], None
        for t, semis in codec.bend_curve(note):
            if onset + t >= end:
                break
            v = min(max(round(semis * scale), -8192), 8191)
            if v != last:
                out.append((onset + t, pitch_bend(self.channel, v)))
                last = v
        if out:
            out.append((end, self.centre))
        return out

    # --- as the scheduled items leave (leadline.daemon.live.Live.dispatch) ----------------------------------
    def prebend(self, note_id: int, msg: Message) -> Message | None:
        """A note's bend at its onset, just before its note-on: it bends the channel now."""
        if note_id <= self.owner:
            return None
        self.owner = note_id
        return self._to(msg)

    def note_on(self, note_id: int) -> Message | None:
        """A note starts: the newest bends the channel; a plain one finds it centred (the centre, if bent)."""
        if note_id <= self.owner:
            return None
        self.owner = note_id
        return self._to(self.centre)

    def bend(self, note_id: int, msg: Message) -> Message | None:
        """A later point of a note's bend, or the centre after its note-off: only while it bends the channel."""
        return self._to(msg) if note_id == self.owner else None

    def _to(self, msg: Message) -> Message | None:
        v = bend_value(msg)
        if v == self.value:
            return None
        self.value, self.sent = v, True
        return msg

    def reset(self, force: bool = False) -> tuple[Message, ...]:
        """A stop path: the centre and modulation 0 when a bend left since the last, or with `force` (a stop
        path that sends All Notes Off); nothing when off."""
        if not (self.sent or force and self.on):
            return ()
        self.value, self.sent = 0, False
        return (self.centre, self.mod_off)


def render(notes: list[Note], cfg, channel: int) -> list[tuple[int, Message]]:
    """(tick, pitch bend message) of `notes` as the live output sends them, for a MIDI file (offline respond):
    the same curves, the same choice of which note bends the channel, the centre after each (and at the end)."""
    bender, items = Bender(cfg, channel), []
    for n in sorted(notes, key=lambda n: n.onset):
        i = bender.next_id()
        curve = bender.curve(n, n.onset, n.end)
        pre = curve[0][1] if curve and curve[0][0] == n.onset else None
        items.append((n.onset, len(items), "on", i, pre))
        items.extend((t, len(items), "bend", i, msg) for t, msg in curve[pre is not None:])
    items.sort()
    out = []
    for tick, _, kind, i, msg in items:
        if kind == "on":
            sent = bender.prebend(i, msg) if msg is not None else bender.note_on(i)
        else:
            sent = bender.bend(i, msg)
        if sent is not None:
            out.append((tick, sent))
    if bender.value:
        out.append((max(n.end for n in notes), bender.centre))
    return out
