"""Output timing: MIDI messages due at absolute times, the sleep that meets them, the notes left sounding.

Messages are raw 3-byte tuples (status, data1, data2) as python-rtmidi's `send_message` takes them, never
mido objects, on the hot path. Times are `time.perf_counter_ns()` nanoseconds. A note goes on the grid
with `deadline(clock, tick, lookahead_ns)` = the clock's predicted time of its tick minus the lookahead,
so it leaves slightly before the tick and lands in the same audio cycle.

Lateness: `take_due(now, late_ns)` skips a note-on that is more than `late_ns` past its deadline (a
late note is worse than a missing one) and counts it in `Scheduler.late`; note-offs and everything
else are sent however late, because a skipped note-off leaves a note hanging. `NoteTracker` drops the
note-off of a note-on that was skipped, and every stop path sends `all_off_messages()`.

A note's pitch bend (codec 2 expression) travels with it: `push_note(..., bends=...)` puts a bend at the
onset (KIND_PREBEND) before the note-on, the rest (KIND_BEND) on their ticks, one at the end after the
note-off; each item carries the note's id (`Item.note`), by which the player of the channel's bend is
chosen when they leave (leadline.daemon.live).
"""
from __future__ import annotations

import heapq
import time
from typing import Callable, NamedTuple, Sequence

NOTE_OFF, NOTE_ON, CONTROL = 0x80, 0x90, 0xB0
ALL_NOTES_OFF = 123
KIND_OTHER, KIND_NOTE_ON, KIND_NOTE_OFF = 0, 1, 2
KIND_CLICK = 3  # a note-on sent however late (a count-in's click: its first is due on the tick after Start)
KIND_BEND, KIND_PREBEND = 4, 5  # a note's pitch bend; its bend at the onset (skipped when late, like the note-on)
PITCH_BEND, MODULATION = 0xE0, 1
SPIN_NS = 1_000_000  # sleep_until spins this long before a deadline (time.sleep overshoots 0.05-0.1 ms)

Message = Sequence[int]


class Item(NamedTuple):
    """One scheduled message; the heap orders by (deadline_ns, seq), so messages never get compared."""

    deadline_ns: int
    seq: int
    kind: int
    msg: Message
    tick: int  # grid tick it belongs to, or -1 for a message at a plain time (see `Scheduler.retime`)
    note: int = 0  # id of the note it belongs to (its note-on, its bends), 0 for none


def kind_of(msg: Message) -> int:
    """KIND_NOTE_ON, KIND_NOTE_OFF (note-on with velocity 0 included) or KIND_OTHER."""
    status = msg[0] & 0xF0
    if status == NOTE_ON:
        return KIND_NOTE_ON if msg[2] else KIND_NOTE_OFF
    return KIND_NOTE_OFF if status == NOTE_OFF else KIND_OTHER


def deadline(clock, tick: int, lookahead_ns: int) -> int:
    """When to send a message for grid `tick` of `clock` (a `leadline.daemon.clock.SongClock`)."""
    return clock.predict(tick) - lookahead_ns


class Scheduler:
    """A min-heap of messages keyed by absolute deadline; ties leave in the order they were pushed."""

    __slots__ = ("_heap", "_seq", "late")

    def __init__(self) -> None:
        self._heap: list[Item] = []
        self._seq = 0
        self.late = 0  # note-ons skipped for lateness, for the status line

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, deadline_ns: int, msg: Message, kind: int | None = None, tick: int = -1, note: int = 0) -> None:
        """Schedule `msg` at `deadline_ns` (kind: from the message unless given)."""
        self._seq += 1
        heapq.heappush(self._heap, Item(deadline_ns, self._seq, kind_of(msg) if kind is None else kind,
                                        msg, tick, note))

    def push_note(self, clock, channel: int, pitch: int, velocity: int, onset: int, end: int,
                  lookahead_ns: int, note: int = 0, bends: Sequence[tuple[int, Message]] = ()) -> None:
        """Schedule a note from grid tick `onset` to `end` on `clock` (0-based `channel`), with id `note` and
        its pitch `bends` as (tick, message) in tick order: one at `onset` leaves before the note-on, one at
        `end` after the note-off."""
        on = (NOTE_ON | channel, pitch, velocity)
        i = 0
        if bends and bends[0][0] == onset:
            self.push(deadline(clock, onset, lookahead_ns), bends[0][1], KIND_PREBEND, onset, note)
            i = 1
        self.push(deadline(clock, onset, lookahead_ns), on, KIND_NOTE_ON, onset, note)
        while i < len(bends) and bends[i][0] < end:
            self.push(deadline(clock, bends[i][0], lookahead_ns), bends[i][1], KIND_BEND, bends[i][0], note)
            i += 1
        self.push(deadline(clock, end, lookahead_ns), (NOTE_OFF | channel, pitch, 0), KIND_NOTE_OFF, end, note)
        for tick, msg in bends[i:]:
            self.push(deadline(clock, tick, lookahead_ns), msg, KIND_BEND, tick, note)

    def peek(self) -> Item | None:
        """The earliest pending item, None when nothing is pending."""
        return self._heap[0] if self._heap else None

    def pop(self) -> Item:
        """Remove and return the earliest pending item (IndexError when none)."""
        return heapq.heappop(self._heap)

    def next_deadline(self) -> int | None:
        """Deadline of the earliest pending message, None when nothing is pending."""
        return self._heap[0].deadline_ns if self._heap else None

    def pop_due(self, now_ns: int, out: list | None = None) -> list[Item]:
        """Every item due at `now_ns`, earliest first (appended to `out` if given, to spare a list)."""
        out = [] if out is None else out
        heap = self._heap
        while heap and heap[0].deadline_ns <= now_ns:
            out.append(heapq.heappop(heap))
        return out

    def take_due(self, now_ns: int, late_ns: int, out: list | None = None) -> tuple[list[Item], int]:
        """Like `pop_due`, minus note-ons more than `late_ns` late; returns (due, how many were skipped)."""
        out = [] if out is None else out
        heap, skipped = self._heap, 0
        while heap and heap[0].deadline_ns <= now_ns:
            item = heapq.heappop(heap)
            if item.kind == KIND_NOTE_ON and now_ns - item.deadline_ns > late_ns:
                skipped += 1
            else:
                out.append(item)
        self.late += skipped
        return out, skipped

    def cancel_all(self) -> list[Item]:
        """Drop everything pending and return it, earliest first (send the note-offs via `NoteTracker`)."""
        pending, self._heap = sorted(self._heap), []
        return pending

    def retime(self, when: Callable[[int], int]) -> int:
        """Recompute the deadline of every item that has a tick as `when(tick)` (after a tempo change).

        Returns how many moved. O(n): call it when the clock reports a change, not per tick.
        """
        moved = 0
        for i, item in enumerate(self._heap):
            if item.tick >= 0:
                new = when(item.tick)
                if new != item.deadline_ns:
                    self._heap[i] = item._replace(deadline_ns=new)
                    moved += 1
        if moved:
            heapq.heapify(self._heap)
        return moved


def pitch_bend(channel: int, value: int) -> tuple[int, int, int]:
    """A pitch bend message: `value` -8192..8191 (0: centre), clipped to that range."""
    v = min(max(int(value), -8192), 8191) + 8192
    return (PITCH_BEND | channel, v & 0x7F, v >> 7)


def bend_value(msg: Message) -> int:
    """The value -8192..8191 of pitch bend message `msg`."""
    return (msg[2] << 7 | msg[1]) - 8192


def rpn_bend_range(channel: int, semitones: int) -> list[tuple[int, int, int]]:
    """RPN 0 (pitch bend sensitivity) set to `semitones`, then the null RPN (a later CC 6 changes nothing)."""
    c = CONTROL | channel
    return [(c, 101, 0), (c, 100, 0), (c, 6, semitones), (c, 38, 0), (c, 101, 127), (c, 100, 127)]


def sleep_until(deadline_ns: int, now: Callable[[], int] = time.perf_counter_ns,
                sleep: Callable[[float], object] = time.sleep, spin_ns: int = SPIN_NS) -> int:
    """Wait until `deadline_ns` and return the time it returns at (>= deadline_ns).

    Sleeps to `spin_ns` before the deadline, then spins on `now()` for the rest: `time.sleep` overshoots
    by 0.05-0.1 ms (milliseconds under load), the spin by well under a microsecond. The spin costs a
    core for up to `spin_ns`, so keep it short (default 1 ms) and call this only on the engine thread.
    Waiting for absolute deadlines (start + n * interval) cannot drift. `sleep` may be any wait taking
    seconds (e.g. a queue's get with a timeout); it is called again if it returns early.
    """
    t = now()
    while deadline_ns - t > spin_ns:
        sleep((deadline_ns - t - spin_ns) * 1e-9)
        t = now()
    while t < deadline_ns:
        t = now()
    return t


class NoteTracker:
    """Which notes sound, per (channel, pitch) with counts, so no note is left hanging.

    `filter(msg, send)` passes a message on, keeping the books: a note-on on a pitch that already
    sounds first sends that pitch's note-off (a retrigger) and counts one more holder; a note-off only
    goes out when the last holder lets go (and never for a pitch that is not sounding, e.g. after its
    note-on was skipped as late). Channels are the 0-based status nibble.
    """

    __slots__ = ("_count", "_offs", "_retrigger", "_sounding")

    def __init__(self) -> None:
        self._count = [0] * (16 * 128)  # index channel * 128 + pitch
        self._offs = [(NOTE_OFF | ch, p, 0) for ch in range(16) for p in range(128)]  # prebuilt
        self._retrigger = [(off,) for off in self._offs]
        self._sounding = 0  # pitches with a count > 0

    def __len__(self) -> int:
        """How many (channel, pitch) pairs sound."""
        return self._sounding

    def count(self, channel: int, pitch: int) -> int:
        return self._count[channel * 128 + pitch]

    def note_on(self, channel: int, pitch: int) -> tuple[Message, ...]:
        """Record a note-on; return what to send before it: the pitch's note-off if it already sounds,
        else () (falsy). Prebuilt tuples: nothing is allocated."""
        i = channel * 128 + pitch
        c = self._count[i]
        self._count[i] = c + 1
        if c == 0:
            self._sounding += 1
            return ()
        return self._retrigger[i]

    def note_off(self, channel: int, pitch: int) -> bool:
        """Record a note-off; True if it should be sent (the last holder let go)."""
        i = channel * 128 + pitch
        c = self._count[i]
        if c == 0:
            return False
        self._count[i] = c - 1
        if c == 1:
            self._sounding -= 1
        return c == 1

    def filter(self, msg: Message, send: Callable[[Message], object]) -> None:
        """Send `msg` through `send` as the books say (see the class docstring)."""
        status = msg[0] & 0xF0
        if status == NOTE_ON and msg[2]:
            for off in self.note_on(msg[0] & 0x0F, msg[1]):
                send(off)
            send(msg)
        elif status == NOTE_OFF or status == NOTE_ON:
            if self.note_off(msg[0] & 0x0F, msg[1]):
                send(msg)
        else:
            send(msg)

    def sounding(self) -> list[tuple[int, int]]:
        """(channel, pitch) of every sounding note."""
        return [divmod(i, 128) for i, c in enumerate(self._count) if c]

    def all_off_messages(self, channel: int | None = None) -> list[Message]:
        """Note-offs for every sounding note on `channel` (None: on all 16), then All Notes Off (CC 123)
        on that channel (on all 16); the tracker forgets those notes."""
        channels = range(16) if channel is None else (channel,)
        out: list[Message] = []
        for ch in channels:
            for i in range(ch * 128, ch * 128 + 128):
                if self._count[i]:
                    out.append(self._offs[i])
                    self._count[i] = 0
                    self._sounding -= 1
        out.extend((CONTROL | ch, ALL_NOTES_OFF, 0) for ch in channels)
        return out
