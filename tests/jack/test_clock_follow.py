"""The clock follower on a real JACK port: jack_midi_clock at 90, 120, 160 BPM and across a change.

The same input path as the daemon under JACK: leadline's own JACK client stamps each message with its
JACK frame (daemon.jacknative), a ClockFollower is fed from the queue (one test takes python-rtmidi's
wall-clock stamps, the path without that client). The reference tempo is the least-squares line through
the arrival times of the ticks of each steady stretch; it must itself be within 2% of the nominal tempo.
jackd runs with real-time scheduling (daemon.jackrig.JackServer): without it the dummy driver lost a cycle
every few hundred and its clock wandered 1-8% slow in wall time. A measurement during which JACK clients
missed cycles (jackd's log) is a rig skip when it fails: on the dummy driver each miss moves
jack_midi_clock's ticks by whole periods. The target: within 0.5 BPM from one beat after a change on
(the first estimate a beat after it, and the median after); also checked with synthetic jitter in
tests/daemon/test_clock.py and measured by `leadline bench` (section jack).
"""
from __future__ import annotations

import sys
import time

import numpy as np
import pytest
from daemon.clock import ClockFollower
from daemon.jacknative import JackMidi
from daemon.jackrig import Clock
from daemon.ports import InputQueue, stop_callback


class Follow:
    """The daemon's input path under JACK: leadline's own client stamps each message with its JACK frame
    (daemon.jacknative), a reader thread queues it; with `rtmidi=True`, python-rtmidi's callback stamps
    wall-clock time instead (the path without leadline's own client)."""

    def __init__(self, jack, name="follow", rtmidi=False):
        self.q = InputQueue(100_000)
        self.min = self.jm = None
        if rtmidi:
            from daemon.ports import rtmidi as rt

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
        self.times: list[tuple[int, int]] = []  # (song tick, arrival ns)

    def pump(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            item = self.q.get(0.01)
            if item is not None:
                t, msg = item
                if self.follower.feed(t, msg[0], msg[1:]) == 1 and self.follower.running:
                    self.bpms.append((self.follower.tick, self.follower.bpm))
                    self.times.append((self.follower.tick, t))

    def fitted_bpm(self, first: int, last: int) -> float:
        """Tempo of the least-squares line through the arrival times of ticks first..last."""
        pts = np.array([(k, t) for k, t in self.times if first <= k <= last], float)
        slope = np.polyfit(pts[:, 0], pts[:, 1], 1)[0]
        return 60e9 / (24 * slope)

    def close(self):
        if self.jm is not None:
            self.jm.close()
            return
        stop_callback(self.min)  # a callback in flight must not outlive its tuple (segfaulted here without)
        self.min.close_port()
        self.min.delete()


@pytest.fixture
def follow(jack):
    old = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)  # as the daemon does (engine.switch_interval_ms): the callback needs the GIL
    f = Follow(jack)
    yield f
    f.close()
    sys.setswitchinterval(old)


@pytest.mark.parametrize("bpm", [90.0, 120.0, 160.0])
def test_follows_steady_tempo(jack, follow, bpm):
    before = jack.late_clients()
    clock = Clock(jack, bpm)
    try:
        jack.connect(Clock.PORT, follow.port)
        clock.start()
        follow.pump(2.5)
    finally:
        clock.close()
    assert follow.follower.tick > 48
    truth = follow.fitted_bpm(0, follow.follower.tick)
    assert abs(truth - bpm) < 0.02 * bpm, f"the clock itself ran at {truth:.2f} BPM"
    err = np.array([abs(b - truth) for t, b in follow.bpms if t >= 24])
    if np.median(err) > 0.5:
        jack.steady_since(before)
    assert np.median(err) <= 0.5, f"median {np.median(err):.2f}, p90 {np.percentile(err, 90):.2f} BPM off"


def test_follows_a_tempo_change_within_a_beat(jack, follow):
    before = jack.late_clients()
    clock = Clock(jack, 120.0)
    try:
        jack.connect(Clock.PORT, follow.port)
        clock.start()
        follow.pump(1.5)
        clock.tempo(160.0)
        follow.pump(2.0)
    finally:
        clock.close()
    # the real change: the first tick interval that is clearly shorter than 120 BPM's 20.8 ms
    times = follow.times
    change = next(t1 for (t0, a), (t1, b) in zip(times, times[1:]) if b - a < 18_200_000)
    truth = follow.fitted_bpm(change + 1, follow.follower.tick)
    assert abs(truth - 160.0) < 0.02 * 160.0, f"the clock itself ran at {truth:.2f} BPM"
    err = np.array([abs(b - truth) for t, b in follow.bpms if t >= change + 24])
    assert len(err) > 24, "too few ticks after the change"
    if np.median(err) > 0.5 or err[0] > 0.5:
        jack.steady_since(before)
    assert err[0] <= 0.5, f"one beat after the change at tick {change}: {err[0]:.2f} BPM off"
    assert np.median(err) <= 0.5, (
        f"a beat after the change at tick {change}: median {np.median(err):.2f}, p90 {np.percentile(err, 90):.2f} BPM off")


def test_follows_steady_tempo_through_python_rtmidi(jack):
    """The fallback input path (no C compiler): python-rtmidi's callback, wall-clock stamps."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)
    follow = Follow(jack, name="follow-rt", rtmidi=True)
    try:
        test_follows_steady_tempo(jack, follow, 120.0)
    finally:
        follow.close()
        sys.setswitchinterval(old)
