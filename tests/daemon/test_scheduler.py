"""Output scheduler, note tracker and sleep_until, on a fake clock (no MIDI ports, no real sleeping)."""
from __future__ import annotations

import random

import pytest

from leadline.daemon.clock import InternalClock
from leadline.daemon.scheduler import (ALL_NOTES_OFF, KIND_BEND, KIND_NOTE_OFF, KIND_NOTE_ON, KIND_OTHER, KIND_PREBEND,
                                       NoteTracker, Scheduler, bend_value, deadline, kind_of, pitch_bend,
                                       rpn_bend_range, sleep_until)

MS = 1_000_000


class FakeTime:
    """now() advances `step` ns per call; sleep(s) advances s plus an overshoot."""

    def __init__(self, start: int = 10**12, step: int = 1_000, overshoot=lambda: 80_000) -> None:
        self.t, self.step, self.overshoot = start, step, overshoot
        self.sleeps: list[float] = []
        self.now_calls = 0

    def now(self) -> int:
        self.t += self.step
        self.now_calls += 1
        return self.t

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.t += int(seconds * 1e9) + self.overshoot()


# --- scheduler --------------------------------------------------------------------------------------

def test_pops_in_deadline_order_ties_first_in_first_out():
    s = Scheduler()
    assert s.next_deadline() is None and s.peek() is None and len(s) == 0
    for d, name in [(30, "c"), (10, "a"), (20, "b1"), (20, "b2"), (40, "d")]:
        s.push(d * MS, name, KIND_OTHER)
    assert s.next_deadline() == 10 * MS
    assert [i.msg for i in s.pop_due(25 * MS)] == ["a", "b1", "b2"]
    assert s.next_deadline() == 30 * MS and len(s) == 2 and s.peek().msg == "c"
    assert s.pop_due(29 * MS) == []
    out = ["kept"]
    assert s.pop_due(10**12, out) is out and out[0] == "kept" and [i.msg for i in out[1:]] == ["c", "d"]
    assert s.next_deadline() is None
    s.push(7, "x", KIND_OTHER)
    assert s.pop().msg == "x" and len(s) == 0


def test_kinds():
    assert kind_of((0x90, 60, 100)) == KIND_NOTE_ON
    assert kind_of((0x93, 60, 0)) == KIND_NOTE_OFF  # note-on with velocity 0 is a note-off
    assert kind_of((0x80, 60, 64)) == KIND_NOTE_OFF
    assert kind_of((0xB0, 123, 0)) == KIND_OTHER
    s = Scheduler()
    s.push(0, (0x90, 60, 0))
    assert s.pop_due(0)[0].kind == KIND_NOTE_OFF


def test_late_note_ons_are_skipped_and_counted_note_offs_never():
    s = Scheduler()
    s.push(0, (0x90, 60, 100))  # 5 ms late at now=5 ms: skipped
    s.push(0, (0x80, 60, 0))  # late too, but a note-off always goes
    s.push(4 * MS, (0x90, 62, 100))  # 1 ms late: within the 2 ms allowance
    s.push(3 * MS, (0xB0, 7, 100))  # not a note: goes
    s.push(6 * MS, (0x90, 64, 100))  # not due yet
    due, skipped = s.take_due(5 * MS, late_ns=2 * MS)
    assert [i.msg for i in due] == [(0x80, 60, 0), (0xB0, 7, 100), (0x90, 62, 100)]
    assert skipped == 1 and s.late == 1 and len(s) == 1
    s.push(0, (0x90, 65, 100))
    due, skipped = s.take_due(10 * MS, late_ns=2 * MS)
    assert due == [] and skipped == 2 and s.late == 3


def test_cancel_all_returns_the_pending_in_order():
    s = Scheduler()
    for d in (5, 1, 3):
        s.push(d, (0x90, 60 + d, 100))
    pending = s.cancel_all()
    assert [i.deadline_ns for i in pending] == [1, 3, 5] and len(s) == 0 and s.next_deadline() is None


def test_notes_on_the_grid_and_retime():
    clock = InternalClock(bpm=120)
    clock.start(10**12)
    s = Scheduler()
    look = int(1.5 * MS)
    s.push_note(clock, channel=2, pitch=64, velocity=90, onset=24, end=36, lookahead_ns=look)
    s.push(10**12 + 700 * MS, (0xB0, 1, 0))  # a plain-time message: retime leaves it alone
    assert deadline(clock, 24, look) == clock.predict(24) - look == 10**12 + 500 * MS - look
    assert len(s) == 3 and s.peek()[2:5] == (KIND_NOTE_ON, (0x92, 64, 90), 24)  # first, before 700 ms
    clock.set_bpm(60)  # the tempo halves from tick 0 on: ticks 24 and 36 move later
    assert s.retime(lambda tick: deadline(clock, tick, look)) == 2
    assert s.retime(lambda tick: deadline(clock, tick, look)) == 0
    due = s.pop_due(10**13)  # pops in heap order: the heap must have been rebuilt
    assert [i.deadline_ns for i in due] == [10**12 + 700 * MS, 10**12 + 1000 * MS - look,
                                            10**12 + 1500 * MS - look]
    assert [i.msg for i in due] == [(0xB0, 1, 0), (0x92, 64, 90), (0x82, 64, 0)]


# --- sleep_until ----------------------------------------------------------------------------------------

def test_sleep_until_meets_absolute_deadlines_without_drift():
    rng = random.Random(3)
    ft = FakeTime(overshoot=lambda: rng.randint(20_000, 400_000))  # sleep overshoots 20-400 us
    start, interval = ft.t + 5 * MS, 20_833_333  # 120 BPM ticks
    errors = []
    for n in range(500):
        d = start + n * interval
        t = sleep_until(d, now=ft.now, sleep=ft.sleep)
        errors.append(t - d)
        ft.t += rng.randint(0, 3 * MS)  # work done between deadlines
    assert min(errors) >= 0
    assert max(errors) <= ft.step  # the spin lands within one now() step, every time
    assert ft.t - (start + 499 * interval) < 4 * MS  # no drift after 500 deadlines
    assert len(ft.sleeps) == 500 and min(ft.sleeps[1:]) > 0.010  # it slept most of each wait, spun the rest


def test_sleep_until_spins_only_the_last_stretch():
    ft = FakeTime(step=1_000, overshoot=lambda: 0)
    d = ft.t + 50 * MS
    sleep_until(d, now=ft.now, sleep=ft.sleep, spin_ns=MS)
    assert len(ft.sleeps) == 1 and ft.sleeps[0] == pytest.approx(0.049, abs=1e-5)
    assert ft.now_calls <= MS // 1_000 + 3


def test_sleep_until_past_deadline_and_long_overshoot():
    ft = FakeTime()
    t = sleep_until(ft.t - 5 * MS, now=ft.now, sleep=ft.sleep)
    assert ft.sleeps == [] and ft.now_calls == 1 and t == ft.t
    ft = FakeTime(overshoot=lambda: 3 * MS)  # a stall longer than the spin: returns at once, late
    d = ft.t + 10 * MS
    t = sleep_until(d, now=ft.now, sleep=ft.sleep, spin_ns=MS)
    assert t > d and ft.now_calls == 2


def test_sleep_until_with_a_wait_that_returns_early():
    ft = FakeTime()
    calls = []

    def early(seconds):  # like queue.get(timeout=...) woken after a tenth of the time
        calls.append(seconds)
        ft.t += int(seconds * 1e8)

    d = ft.t + 100 * MS
    assert 0 <= sleep_until(d, now=ft.now, sleep=early) - d <= ft.step
    assert len(calls) > 1


# --- note tracker ---------------------------------------------------------------------------------------

def test_retrigger_and_counted_note_offs():
    nt, sent = NoteTracker(), []
    nt.filter((0x90, 60, 100), sent.append)
    nt.filter((0x90, 60, 90), sent.append)  # same pitch again: its note-off first
    assert sent == [(0x90, 60, 100), (0x80, 60, 0), (0x90, 60, 90)] and nt.count(0, 60) == 2
    sent.clear()
    nt.filter((0x80, 60, 0), sent.append)  # the first note ends: the second still sounds
    assert sent == [] and len(nt) == 1
    nt.filter((0x90, 60, 0), sent.append)  # the second ends (note-on velocity 0)
    assert sent == [(0x90, 60, 0)] and len(nt) == 0
    nt.filter((0x81, 61, 0), sent.append)  # not sounding (e.g. its note-on was late): dropped
    nt.filter((0xB0, 7, 100), sent.append)
    assert sent == [(0x90, 60, 0), (0xB0, 7, 100)]


def test_note_on_says_what_to_send_first():
    nt = NoteTracker()
    assert nt.note_on(1, 60) == () and nt.note_on(1, 60) == ((0x81, 60, 0),)
    assert not nt.note_off(1, 60) and nt.note_off(1, 60) and not nt.note_off(1, 60)
    assert len(nt) == 0


def test_all_off_messages():
    nt = NoteTracker()
    for ch, p in [(0, 40), (0, 52), (3, 64), (0, 40)]:
        nt.note_on(ch, p)
    assert sorted(nt.sounding()) == [(0, 40), (0, 52), (3, 64)]
    assert nt.all_off_messages(0) == [(0x80, 40, 0), (0x80, 52, 0), (0xB0, ALL_NOTES_OFF, 0)]
    assert nt.sounding() == [(3, 64)] and nt.count(0, 40) == 0
    msgs = nt.all_off_messages()
    assert msgs[0] == (0x83, 64, 0) and msgs[1:] == [(0xB0 | ch, ALL_NOTES_OFF, 0) for ch in range(16)]
    assert len(nt) == 0 and nt.sounding() == []
    assert nt.all_off_messages(5) == [(0xB5, ALL_NOTES_OFF, 0)]


@pytest.mark.parametrize("seed", range(5))
def test_random_note_streams_never_leave_a_note_hanging(seed):
    """A model synth hears only what the tracker sends: it agrees with the books, and all-off silences it."""
    rng = random.Random(seed)
    nt, synth = NoteTracker(), {}

    def send(msg):
        status, ch, pitch = msg[0] & 0xF0, msg[0] & 0x0F, msg[1]
        if status == 0x90 and msg[2]:
            assert (ch, pitch) not in synth  # a retrigger always sends the note-off first
            synth[(ch, pitch)] = True
        elif status in (0x80, 0x90):
            assert synth.pop((ch, pitch), None), "note-off for a silent note"
        elif status == 0xB0 and msg[1] == ALL_NOTES_OFF:
            for key in [k for k in synth if k[0] == ch]:
                del synth[key]

    held = []  # note-ons the "engine" sent and will end
    for _ in range(3000):
        if held and rng.random() < 0.45:
            ch, p = held.pop(rng.randrange(len(held)))
            nt.filter((0x80 | ch, p, 0) if rng.random() < 0.5 else (0x90 | ch, p, 0), send)
        elif rng.random() < 0.05:
            nt.filter((0x80 | rng.randrange(2), rng.randrange(36, 48), 0), send)  # a stray note-off
        else:
            ch, p = rng.randrange(2), rng.randrange(36, 48)  # few pitches: many overlaps
            nt.filter((0x90 | ch, p, rng.randrange(1, 128)), send)
            held.append((ch, p))
        assert len(synth) == len(nt) and all(nt.count(*key) for key in synth)  # the same notes sound
    assert len(nt) > 0 and set(nt.sounding()) == set(synth)  # the stream ends with notes sounding
    for msg in nt.all_off_messages():
        send(msg)
    assert synth == {} and len(nt) == 0


def test_a_notes_bends_go_around_it_pre_bend_first_centre_after_the_note_off():
    clock = InternalClock(bpm=120)
    clock.start(10**12)
    s = Scheduler()
    bends = [(24, pitch_bend(0, 4096)), (27, pitch_bend(0, 8191)), (36, pitch_bend(0, 0))]
    s.push_note(clock, 0, 64, 90, onset=24, end=36, lookahead_ns=0, note=7, bends=bends)
    due = s.pop_due(10**13)
    assert [(i.kind, i.msg, i.tick, i.note) for i in due] == [
        (KIND_PREBEND, (0xE0, 0, 96), 24, 7), (KIND_NOTE_ON, (0x90, 64, 90), 24, 7),
        (KIND_BEND, (0xE0, 127, 127), 27, 7), (KIND_NOTE_OFF, (0x80, 64, 0), 36, 7), (KIND_BEND, (0xE0, 0, 64), 36, 7)]


@pytest.mark.parametrize("value, msg", [(0, (0xE3, 0, 64)), (-8192, (0xE3, 0, 0)), (8191, (0xE3, 127, 127)),
                                        (9000, (0xE3, 127, 127)), (-9000, (0xE3, 0, 0)), (1, (0xE3, 1, 64))])
def test_pitch_bend_messages_centre_at_8192_and_clip(value, msg):
    assert pitch_bend(3, value) == msg
    assert bend_value(msg) == min(max(value, -8192), 8191)


def test_rpn_0_sets_the_bend_range_then_the_null_rpn():
    assert rpn_bend_range(1, 12) == [(0xB1, 101, 0), (0xB1, 100, 0), (0xB1, 6, 12), (0xB1, 38, 0), (0xB1, 101, 127),
                                     (0xB1, 100, 127)]
