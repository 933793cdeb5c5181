"""Clock follower and internal clock, fed synthetic jittered tick times (no MIDI ports)."""
from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest

from leadline.daemon.clock import (CLOCK, CONTINUE, MAX_BPM, MIN_BPM, SONG_POSITION, START, STOP, ClockEvent,
                          ClockFollower, InternalClock)
from leadline.daemon.codec import TICKS_PER_BEAT
from leadline.daemon.config import ClockConfig

T0 = 1_000_000_000_000  # a perf_counter_ns-like origin
NARROW = 0.25  # Hz: the bandwidth that meets the steady targets below (see test_default_bandwidth_*)


def period(bpm: float) -> float:
    return 60e9 / (bpm * TICKS_PER_BEAT)


def tick_times(segments, sigma_ns: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(true, observed) tick times for [(bpm, ticks), ...], observed with gaussian jitter."""
    periods = np.concatenate([np.full(n, period(bpm)) for bpm, n in segments])
    true = T0 + np.concatenate([[0.0], np.cumsum(periods)[:-1]])
    rng = np.random.default_rng(seed)
    return true, np.round(true + rng.normal(0.0, sigma_ns, len(true))).astype(np.int64)


def follow(observed, bandwidth_hz: float = NARROW, clock: ClockFollower | None = None):
    """Feed Start and the ticks; return (follower, bpm after each tick, predicted time of the next tick)."""
    f = clock or ClockFollower(bandwidth_hz=bandwidth_hz)
    f.feed(int(observed[0]) - 1_000_000, START)
    bpm, nxt = np.empty(len(observed)), np.empty(len(observed))
    for i, t in enumerate(observed.tolist()):
        assert f.feed(t, CLOCK) is ClockEvent.TICK
        bpm[i], nxt[i] = f.bpm, f.predict(f.tick + 1)
    return f, bpm, nxt


def settle_ticks(bpm: np.ndarray, target: float, change: int, tol: float = 0.5) -> int:
    """Ticks after `change` until the estimate stays within `tol` BPM of `target`."""
    bad = np.nonzero(np.abs(bpm[change:] - target) > tol)[0]
    return int(bad[-1]) + 1 if len(bad) else 0


# --- tempo and phase --------------------------------------------------------------------------------

@pytest.mark.parametrize("sigma_ms", [0.5, 1.0])
@pytest.mark.parametrize("bpm", [90, 120, 160])
def test_steady_tempo_and_phase(bpm, sigma_ms):
    true, obs = tick_times([(bpm, 1500)], sigma_ms * 1e6, seed=bpm)
    f, est, nxt = follow(obs)
    assert f.tick == len(obs) - 1 and f.locked
    err = np.abs(est[TICKS_PER_BEAT * 4:] - bpm)  # from the second bar on
    assert err.max() < 0.1, err.max()
    phase = np.abs(nxt[:-1] - true[1:])[TICKS_PER_BEAT * 4:]
    assert np.percentile(phase, 99) < 0.6 * sigma_ms * 1e6  # better than one raw tick
    assert f.changes == 0 and f.jumps == 0 and f.dropped == 0
    assert f.jitter_ns == pytest.approx(sigma_ms * 1e6, rel=0.25)


def test_default_bandwidth_trades_smoothness_for_ramps():
    """1 Hz (the config default) is within 0.5 BPM at 0.5 ms jitter; 0.25 Hz is ~10x smoother."""
    _, obs = tick_times([(120, 1500)], 0.5e6, seed=3)
    wide = np.abs(follow(obs, 1.0)[1][96:] - 120).max()
    narrow = np.abs(follow(obs, NARROW)[1][96:] - 120).max()
    assert wide < 0.5 and narrow < wide / 4


@pytest.mark.parametrize("before,after", [(120, 160), (160, 90), (120, 121), (90, 100), (120, 60)])
@pytest.mark.parametrize("seed", range(5))
def test_tempo_change_settles_within_a_beat(before, after, seed):
    true, obs = tick_times([(before, 400), (after, 300)], 0.5e6, seed)
    f, est, _ = follow(obs)
    assert abs(est[400 + 24] - after) <= 0.5
    assert settle_ticks(est, after, 400) <= 24
    assert f.tick == len(obs) - 1 and f.dropped == 0


@pytest.mark.parametrize("before,after,share", [(120, 160, 0.9), (160, 90, 0.9), (120, 121, 0.7)])
def test_tempo_change_with_1ms_jitter(before, after, share):
    """At 1 ms jitter even a fit on exactly the 25 ticks after the change has a 0.17 (120) to 0.28 (160)
    BPM stdev, and a 1 BPM change takes ~20 ticks to tell from jitter, so some runs miss 0.5 BPM at
    tick 24 (measured over these 30: 0, 0 and 6); all must be there by two beats."""
    at24, settled = [], []
    for seed in range(30):
        _, obs = tick_times([(before, 400), (after, 300)], 1e6, seed)
        est = follow(obs)[1]
        at24.append(abs(est[400 + 24] - after))
        settled.append(settle_ticks(est, after, 400))
    assert np.mean(np.array(at24) <= 0.5) >= share, at24
    assert max(at24) < 1.0 and max(settled) <= 48, settled


def test_tempo_ramp():
    """A DAW tempo ramp 120 -> 140 over 4 bars: followed piecewise (the model is a constant tempo), so
    it lags; measured p99 1.3 ms phase and 1.1 BPM during the ramp (1 Hz: 1.0 ms, 0.9 BPM)."""
    bpm = np.concatenate([np.full(200, 120.0), np.linspace(120, 140, 384), np.full(200, 140.0)])
    true = T0 + np.concatenate([[0.0], np.cumsum(period(bpm))[:-1]])
    obs = np.round(true + np.random.default_rng(4).normal(0, 0.5e6, len(true))).astype(np.int64)
    f, est, nxt = follow(obs)
    phase = np.abs(nxt[:-1] - true[1:])[150:]
    assert np.percentile(phase, 99) < 2e6 and np.percentile(np.abs(est - bpm)[150:], 99) < 1.5
    assert np.abs(est[-100:] - 140).max() < 0.1 and f.tick == len(obs) - 1


def test_per_tick_memory_stays_flat():
    """Nothing grows per tick: the rings are fixed, no list or log collects anything."""
    _, obs = tick_times([(120, 6000)], 0.5e6, seed=1)
    f = ClockFollower()
    f.feed(T0, START)
    ticks = obs.tolist()
    for t in ticks[:1000]:
        f.feed(t, CLOCK)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for t in ticks[1000:]:
        f.feed(t, CLOCK)
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert grown < 2048, grown


def pure_dll(observed, bandwidth_hz: float) -> np.ndarray:
    """BPM after each tick from Adriaensen's DLL as published (no gear shift, no change detector)."""
    t = observed.astype(float)
    e2 = t[1] - t[0]
    t1 = t[1] + e2
    w = 2 * math.pi * bandwidth_hz * e2 * 1e-9
    b, c = math.sqrt(2) * w, w * w
    out = np.full(len(t), 60e9 / (24 * e2))
    for i in range(2, len(t)):
        e = t[i] - t1
        t1 += b * e + e2
        e2 += c * e
        out[i] = 60e9 / (24 * e2)
    return out


@pytest.mark.parametrize("bandwidth_hz", [NARROW, 1.0])
def test_a_pure_dll_is_too_slow_for_a_beat(bandwidth_hz):
    """Why the gear shift and the change detector: the plain DLL takes several beats for 120 -> 160."""
    _, obs = tick_times([(120, 400), (160, 300)], 0.5e6, seed=1)
    slow = settle_ticks(pure_dll(obs, bandwidth_hz), 160, 400)
    fast = settle_ticks(follow(obs, bandwidth_hz)[1], 160, 400)
    assert slow > 2 * TICKS_PER_BEAT and fast <= TICKS_PER_BEAT, (slow, fast)


# --- song position ------------------------------------------------------------------------------------

def test_start_stop_continue_and_position():
    p, t = int(period(120)), T0
    f = ClockFollower()
    for _ in range(10):  # clock running while stopped: tempo, no song position
        t += p
        f.feed(t, CLOCK)
    assert not f.running and f.tick == -1 and f.locked
    assert f.feed(t + 1000, START) is ClockEvent.START and f.tick == -1
    for k in range(50):
        t += p
        f.feed(t, CLOCK)
        assert f.tick == k
    assert f.last_tick_ns == t
    assert f.feed(t + 1000, STOP) is ClockEvent.STOP and not f.running
    for _ in range(5):
        t += p
        f.feed(t, CLOCK)
    assert f.tick == 49  # stopped: the position holds
    assert f.feed(t + 1000, CONTINUE) is ClockEvent.CONTINUE and f.running
    t += p
    f.feed(t, CLOCK)
    assert f.tick == 50  # continue: the next tick follows on
    assert f.feed(t + 1000, START) is ClockEvent.START
    t += p
    f.feed(t, CLOCK)
    assert f.tick == 0  # start: back to the top
    assert abs(f.bpm - 120) < 0.01 and f.changes == 0 and f.jumps == 0


@pytest.mark.parametrize("data,sixteenths", [((0x01, 0x00), 1), ((0x00, 0x01), 128), ((0x10, 0x01), 144),
                                             ((0x7F, 0x7F), 16383), (bytes([0xF2, 0x05, 0x00]), 5)])
def test_song_position_pointer(data, sixteenths):
    p, t = int(period(100)), T0
    f = ClockFollower()
    assert f.feed(t, SONG_POSITION, data) is ClockEvent.POSITION
    assert f.tick == sixteenths * 6 - 1
    assert f.feed(t + 10, CONTINUE) is ClockEvent.CONTINUE
    f.feed(t + p, CLOCK)
    assert f.tick == sixteenths * 6
    assert f.bar_position() == divmod(sixteenths // 4, 4) + (sixteenths % 4 * 6,)


def test_other_messages_and_bad_position():
    f = ClockFollower()
    assert f.feed(T0, 0xFE) is ClockEvent.NONE  # active sensing
    assert f.feed(T0, 0x90, (60, 100)) is ClockEvent.NONE
    assert f.feed(T0, SONG_POSITION, (0x05,)) is ClockEvent.NONE and f.tick == -1
    assert f.feed_message(T0, [START]) is ClockEvent.START
    assert f.feed_message(T0, []) is ClockEvent.NONE


def test_start_where_the_source_restarts_its_phase():
    """A source that restarts its clock on Start: the phase follows at once, the tempo stays."""
    p, t = period(120), float(T0)
    f = ClockFollower(bandwidth_hz=NARROW)
    for _ in range(200):
        t += p
        f.feed(int(t), CLOCK)
    f.feed(int(t + 0.3 * p), START)
    t += 0.45 * p  # the first tick after Start is early by more than half a period
    for k in range(24):
        f.feed(int(t), CLOCK)
        assert f.tick == k and abs(f.bpm - 120) < 0.05
        assert abs(f.predict(k + 1) - (t + p)) < 50_000
        t += p


def test_start_after_silence_keeps_the_tempo():
    p, t = period(140), float(T0)
    f = ClockFollower(bandwidth_hz=NARROW)
    for _ in range(100):
        t += p
        f.feed(int(t), CLOCK)
    t += 3e9  # 3 s without clock (e.g. a DAW that sends clock only while playing)
    assert f.timed_out(int(t), 500)
    f.feed(int(t), START)
    for k in range(10):
        f.feed(int(t), CLOCK)
        assert f.tick == k and f.locked and abs(f.bpm - 140) < 0.05
        t += p
    assert not f.timed_out(int(t), 500)


def test_ticks_resuming_after_silence_keep_the_tempo():
    """Ticks stop without Stop (a cable pulled) and come back: the phase restarts, the tempo stays."""
    true, obs = tick_times([(100, 130)], 0.5e6, seed=2)
    obs[100:] += 800_000_000
    f, est, nxt = follow(obs)
    assert f.tick == 129 and f.jumps == 0 and f.changes == 0
    assert np.abs(est[100:] - 100).max() < 0.3  # one jittered interval would be off by ~3 BPM
    assert np.abs(nxt[105:-1] - (true[106:] + 800_000_000)).max() < 0.5e6


def test_grid_helpers():
    f = InternalClock(bpm=120)
    f.start(T0)
    for _ in range(4 * 96 + 30):
        f.poll(f.next_tick_ns())
    assert f.tick == 413
    assert f.bar_position() == (4, 1, 5) and f.beat == pytest.approx(413 / 24)
    assert f.next_boundary(96) == 480 and f.next_boundary(24, after=480) == 504
    assert f.tick_at(f.predict(500)) == pytest.approx(500)
    assert f.tick_at(f.predict(500) + int(period(120) / 2)) == pytest.approx(500.5)


# --- irregular input ------------------------------------------------------------------------------------

@pytest.mark.parametrize("drop", [300, 301, 302])
def test_a_dropped_tick(drop):
    true, obs = tick_times([(120, 600)], 1e6, seed=drop)
    f, est, _ = follow(np.delete(obs, drop))
    assert f.dropped == 1 and f.tick == 598  # timing bridges it; the position counts the ticks that came
    assert np.abs(est[96:] - 120).max() < 0.1


@pytest.mark.parametrize("late", [0.2, 0.5, 0.7])
def test_a_stalled_tick_is_not_a_dropped_one(late):
    true, obs = tick_times([(120, 600)], 0.5e6, seed=7)
    obs[300] += int(late * period(120))
    f, est, _ = follow(obs)
    assert f.dropped == 0 and f.tick == 599 and f.changes == 0
    assert np.abs(est[96:] - 120).max() < 0.1


def test_late_outliers_do_not_look_like_tempo_changes():
    true, obs = tick_times([(120, 5000)], 0.5e6, seed=11)
    rng = np.random.default_rng(5)
    late = rng.random(len(obs)) < 0.01
    obs[late] += rng.uniform(3e6, 8e6, late.sum()).astype(np.int64)  # 1% of ticks 3-8 ms late
    f, est, _ = follow(obs)
    assert f.changes == 0 and f.tick == len(obs) - 1
    assert np.abs(est[96:] - 120).max() < 0.1


def test_dropout():
    f = ClockFollower()
    assert not f.timed_out(T0, 500)  # no clock yet: nothing dropped out
    f.feed(T0, START)
    f.feed(T0, CLOCK)
    assert not f.timed_out(T0 + 499_000_000, 500)
    assert f.timed_out(T0 + 501_000_000, 500)
    assert not InternalClock().timed_out(T0, 500)


@pytest.mark.parametrize("interval_ns", [0, 1_000, 3_000_000, 300_000_000, 10_000_000_000, -5_000_000])
def test_absurd_rates_stay_sane(interval_ns):
    f = ClockFollower()
    f.feed(T0, START)
    t = T0
    for k in range(300):
        f.feed(t, CLOCK)
        assert MIN_BPM <= f.bpm <= MAX_BPM and math.isfinite(f.period_ns)
        assert isinstance(f.predict(f.tick + 1), int) and f.tick == k
        t += interval_ns
    # and a normal clock afterwards locks again
    for k in range(48):
        t += int(period(120)) if interval_ns >= 0 else -int(period(120))
        f.feed(t, CLOCK)
    if interval_ns >= 0:
        assert abs(f.bpm - 120) < 0.5


def test_from_config():
    f = ClockFollower.from_config(ClockConfig(bpm=90.0, bandwidth_hz=0.5))
    assert f.bpm == pytest.approx(90.0) and not f.locked


# --- internal clock -------------------------------------------------------------------------------------

def test_internal_clock_has_absolute_deadlines():
    c = InternalClock(bpm=133)
    assert c.poll(T0) is ClockEvent.NONE  # not started
    c.start(T0)
    p = period(133)
    times = []
    now = T0
    while c.tick < 9999:
        now = c.next_tick_ns() + 37_000  # every wake-up late by 37 us: must not accumulate
        assert c.poll(now) is ClockEvent.TICK
        times.append(c.last_tick_ns)
    assert c.poll(now) is ClockEvent.NONE
    assert times[-1] == T0 + round(9999 * p)
    assert np.abs(np.array(times) - (T0 + np.arange(10000) * p)).max() <= 1


def test_internal_clock_catches_up_and_stops():
    c = InternalClock(bpm=120)
    c.start(T0, tick=96)
    late = T0 + int(5.5 * period(120))
    events = []
    while (e := c.poll(late)) is ClockEvent.TICK:
        events.append(c.tick)
    assert events == [96, 97, 98, 99, 100, 101]
    c.stop()
    assert c.poll(late + 10**9) is ClockEvent.NONE and c.tick == 101


def test_internal_clock_set_bpm_keeps_the_phase():
    c = InternalClock(bpm=120)
    c.start(T0)
    for _ in range(10):
        c.poll(c.next_tick_ns())
    nxt = c.next_tick_ns()
    c.set_bpm(90)
    assert c.next_tick_ns() == nxt  # the tick already on its way keeps its time
    assert c.predict(c.tick + 5) - nxt == round(4 * period(90))
    assert c.bpm == pytest.approx(90)
    c.set_bpm(1e6)
    assert c.bpm == MAX_BPM


@pytest.mark.parametrize("bpm", [90.0, 120.0, 160.0])
def test_a_phase_step_is_not_taken_for_a_tempo_change(bpm):
    """A JACK xrun shifts every later tick by a few ms: the tempo must stay (without the step model: 5-16 BPM off)."""
    rng = np.random.default_rng(int(bpm))
    frames = 1000.0 + 48000 * 60 / (bpm * 24) * np.arange(300)
    t = (np.ceil(frames / 64) * 64 / 48000 * 1e9 + rng.exponential(150_000, 300)).astype(np.int64) + 10**12
    t[100:] += 4_000_000
    f = ClockFollower(bandwidth_hz=0.25)
    f.feed(int(t[0]) - 1000, 0xFA)
    err = []
    for tt in t:
        f.feed(int(tt), 0xF8)
        err.append(abs(f.bpm - bpm))
    assert max(err[24:]) <= 1.5 and np.percentile(err[24:], 95) <= 0.5
