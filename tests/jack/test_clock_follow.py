"""The clock follower on a real JACK port: jack_midi_clock at 90, 120, 160 BPM and across a change.

The same input path as the daemon under JACK: leadline's own JACK client stamps each message with its JACK frame
(leadline.daemon.jacknative), a ClockFollower is fed from the queue (one test takes python-rtmidi's wall-clock
stamps, the path without that client). jackd runs with real-time scheduling (leadline.bench.jackrig.JackServer):
without it the dummy driver lost a cycle every few hundred and its clock wandered 1-8% slow in wall time. The truth
comes from an independent listener (jack_midi_dump) hearing the same clock: the tempo of the least-squares line
through its tick frames, itself within 2% of the nominal tempo (else the rig stalled). A failed check on leadline's
estimate is a rig skip only when those ticks show that the rig missed cycles meanwhile
(leadline.bench.jackrig.Beat). The target: within 0.5 BPM from one beat after a change on (the first estimate a
beat after it, and the median after); also checked with synthetic jitter in tests/daemon/test_clock.py and measured
by `leadline bench` (section jack).
"""
from __future__ import annotations

import contextlib
import itertools
import sys
import time

import numpy as np
import pytest
from leadline.bench.jackrig import RATE, Beat, Clock, Listener, RigStalled, again_if_stalled
from leadline.daemon.clock import ClockFollower
from leadline.daemon.jacknative import JackMidi
from leadline.daemon.ports import InputQueue, stop_callback

_n = itertools.count()


class Follow:
    """The daemon's input path under JACK: leadline's own client stamps each message with its JACK frame
    (leadline.daemon.jacknative), a reader thread queues it; with `rtmidi=True`, python-rtmidi's callback stamps
    wall-clock time instead (the path without leadline's own client)."""

    def __init__(self, jack, name="follow", rtmidi=False):
        self.q = InputQueue(100_000)
        self.min = self.jm = None
        if rtmidi:
            from leadline.daemon.ports import rtmidi as rt

            self.min = rt.MidiIn(rt.API_UNIX_JACK, name=name)
            self.min.ignore_types(sysex=True, timing=False, active_sense=True)
            self.min.set_callback(self.q.callback)
            self.min.open_virtual_port("in")
            self.port = f"{name}:in"
        else:
            self.jm = JackMidi(name, "in", "out")
            self.jm.start_reader(self.q.put)
            self.port = self.jm.in_name
        jack.wait_port(self.port)
        self.follower = ClockFollower()
        self.bpms: list[tuple[int, float]] = []  # (song tick, bpm estimate) after each tick

    def pump(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            item = self.q.get(0.01)
            if item is not None:
                t, msg = item
                if self.follower.feed(t, msg[0], msg[1:]) == 1 and self.follower.running:
                    self.bpms.append((self.follower.tick, self.follower.bpm))

    def close(self):
        if self.jm is not None:
            self.jm.close()
            return
        stop_callback(self.min)  # a callback in flight must not outlive its tuple (segfaulted here without)
        self.min.close_port()
        self.min.delete()


@contextlib.contextmanager
def measuring(jack, bpm: float, rtmidi: bool = False):
    """jack_midi_clock at `bpm`, rolling into a Follow (leadline's input path) and a `truth` listener
    (jack_midi_dump: its ticks' frames, independent of leadline, the Beat's heartbeat); fresh client names
    (a previous client may still be closing) and the GIL switch interval the daemon sets
    (engine.switch_interval_ms). Yields (follow, truth, clock, beat)."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)
    k = next(_n)
    follow = Follow(jack, name=f"follow{k}", rtmidi=rtmidi)
    truth = clock = None
    try:
        truth = Listener(jack, f"follow-truth{k}")
        clock = Clock(jack, bpm)
        jack.connect(Clock.PORT, follow.port)
        truth.listen_to(Clock.PORT)
        beat = Beat(truth)
        clock.start()
        yield follow, truth, clock, beat
    finally:
        for part in (clock, truth, follow):
            if part is not None:
                part.close()
        sys.setswitchinterval(old)


def fitted(frames) -> float:
    """Tempo of the least-squares line through tick frames (a tick lost on the way keeps its index)."""
    f = np.asarray(frames, float)
    k = np.round((f - f[0]) / np.median(np.diff(f)))
    slope = np.polyfit(k, f, 1)[0]
    return 60 * RATE / (24 * slope)


def clock_ran(beat, truth_bpm: float, nominal: float) -> None:
    """jack_midi_clock itself at its nominal tempo (the rig's own signal): else the rig stalled."""
    if abs(truth_bpm - nominal) >= 0.02 * nominal:
        raise RigStalled(f"the clock source ran at {truth_bpm:.2f} BPM, set to {nominal:.0f} "
                         f"({beat.stalled(exact=True) or 'ticks regular'})")


def steady(jack, bpm: float, rtmidi: bool = False) -> None:
    with measuring(jack, bpm, rtmidi) as (follow, truth, _, beat):
        follow.pump(2.5)
        ticks = truth.ticks()
        real = fitted(ticks)
        clock_ran(beat, real, bpm)
        beat.check(follow.follower.tick > 48, f"leadline counted {follow.follower.tick + 1} of {len(ticks)} ticks")
        err = np.array([abs(b - real) for t, b in follow.bpms if t >= 24])
        beat.check(np.median(err) <= 0.5, f"median {np.median(err):.2f}, p90 {np.percentile(err, 90):.2f} BPM "
                   f"off the clock's {real:.2f}")


def change(jack) -> None:
    with measuring(jack, 120.0) as (follow, truth, clock, beat):
        follow.pump(1.5)
        clock.tempo(160.0)
        follow.pump(2.0)
        # the real change, at the listener: the first tick interval clearly shorter than 120 BPM's 1000 frames
        ticks = truth.ticks()
        at = next((k + 1 for k, d in enumerate(np.diff(ticks)) if d < 900), None)
        if at is None:
            raise RigStalled(f"no tempo change reached the listener ({beat.stalled() or 'ticks regular'})")
        real = fitted(ticks[at + 1:])
        clock_ran(beat, real, 160.0)
        err = np.array([abs(b - real) for t, b in follow.bpms if t >= at + 24])
        beat.check(len(err) > 24, f"leadline estimated {len(err)} ticks a beat after the change at tick {at}")
        beat.check(err[0] <= 0.5, f"one beat after the change at tick {at}: {err[0]:.2f} BPM off")
        beat.check(np.median(err) <= 0.5, f"a beat after the change at tick {at}: median {np.median(err):.2f}, "
                   f"p90 {np.percentile(err, 90):.2f} BPM off")


@pytest.mark.parametrize("bpm", [90.0, 120.0, 160.0])
def test_follows_steady_tempo(jack, bpm):
    again_if_stalled(lambda: steady(jack, bpm))


def test_follows_a_tempo_change_within_a_beat(jack):
    again_if_stalled(lambda: change(jack))


def test_follows_steady_tempo_through_python_rtmidi(jack):
    """The fallback input path (no C compiler): python-rtmidi's callback, wall-clock stamps."""
    again_if_stalled(lambda: steady(jack, 120.0, rtmidi=True))
