"""The song clock: where the music is (tick, tempo, phase), from incoming MIDI clock or an internal metronome.

Both clocks count grid ticks (`codec.TICKS_PER_BEAT` = 24 a quarter note = one MIDI clock tick) and map
ticks to absolute `time.perf_counter_ns()` times with `predict(tick)`, so the scheduler can put a note on
a future tick. Both are pure: the caller passes every time in; nothing here reads a clock or sleeps.

`ClockFollower` follows an external MIDI clock. Song position (MIDI 1.0 spec): after Start (0xFA) the
next clock tick is the first tick of the song, tick 0; Song Position Pointer (0xF2, in 16ths = 6 ticks)
sets where the next tick lands, and Continue (0xFB) resumes from there; ticks received while stopped
keep the tempo estimate fresh but do not move the song position.

Tempo and phase come from a delay-locked loop (F. Adriaensen, "Using a DLL to filter time", 2005):
    e = t - t1;  t1 += b*e + period;  period += c*e   with  w = 2*pi*B*period, b = sqrt(2)*w, c = w*w,
B the bandwidth. After a (re)seed the loop is gear-shifted: its gains start at the expanding-memory
least-squares gains (c_n = 6/(n(n+1)), b_n = c_n + 2(2n-1)/(n(n+1)), exactly the least-squares line
through the n ticks since the seed) and stay there until they fall to (b, c); a narrow B then smooths
jitter without slowing the lock. A change detector watches the loop's prediction errors (innovations,
normalised and clipped to CLIP sigmas of the measured jitter): a plain or ramp-weighted sum over the
last 3, 6, 12 or 24 beyond `z` sigmas means the tempo changed; two-segment line fits over the last 32
ticks, averaged by their evidence, say where and to what, and the loop restarts its gear from there.
(The detector is what follows big changes: the clipped loop alone slews slowly.) A tick off the beat
(interval outside 0.4..1.6 periods) is held until the next one tells whether it was late (a stall:
ignored), a tick was lost (counted) or the tempo jumped (re-seed); after a silence longer than the
slowest tempo the phase restarts and the tempo stays.
"""
from __future__ import annotations

import math
from enum import IntEnum

import numpy as np

from leadline.daemon.codec import TICKS_PER_BEAT

MIN_BPM, MAX_BPM = 20.0, 400.0
NS_PER_MINUTE = 60_000_000_000
MIN_PERIOD_NS = NS_PER_MINUTE / (MAX_BPM * TICKS_PER_BEAT)  # 6.25 ms
MAX_PERIOD_NS = NS_PER_MINUTE / (MIN_BPM * TICKS_PER_BEAT)  # 125 ms
TICKS_PER_16TH = TICKS_PER_BEAT // 4

CLOCK, START, CONTINUE, STOP, SONG_POSITION = 0xF8, 0xFA, 0xFB, 0xFC, 0xF2

RING = 32  # recent tick times and innovations kept for the change detector
WINDOWS = (3, 6, 12, 24)  # moving-sum lengths tested by the change detector
RAMP_NORM = {m: m * (m + 1) * (2 * m + 1) / 6 for m in WINDOWS}  # variance of a ramp-weighted sum
JITTER_INIT_NS = 1_000_000.0  # assumed tick jitter (stdev) until measured
VAR_FLOOR = 20_000.0 ** 2  # jitter below 20 us counts as 20 us
CLIP = 3.0  # innovations beyond this many sigmas are clipped (loop input, detector)
GAP_NS = 1.05 * MAX_PERIOD_NS  # a longer silence is a gap, not a tempo
GEAR_KEPT = 24  # after a phase re-anchor the old tempo counts as if learnt from this many ticks


class ClockEvent(IntEnum):
    """What a message did to the clock."""

    NONE = 0
    TICK = 1
    START = 2
    CONTINUE = 3
    STOP = 4
    POSITION = 5


def clamp_period(period_ns: float) -> float:
    """A tick period limited to MIN_BPM..MAX_BPM (NaN -> the slowest)."""
    return min(max(period_ns, MIN_PERIOD_NS), MAX_PERIOD_NS) if period_ns == period_ns else MAX_PERIOD_NS


def bpm_to_period(bpm: float) -> float:
    """Nanoseconds per grid tick at `bpm` (clamped to MIN_BPM..MAX_BPM)."""
    return clamp_period(NS_PER_MINUTE / (bpm * TICKS_PER_BEAT)) if bpm > 0 else MAX_PERIOD_NS


class SongClock:
    """What both clocks offer: song position in ticks, tempo, and tick <-> time mapping.

    Subclasses keep `running`, `tick` (position of the last tick; -1 before the first after Start),
    `period_ns` (float ns per tick), `last_tick_ns` (0 before any) and implement `predict`.
    """

    beats_per_bar: int = 4
    locked: bool = True  # the tempo is measured (the follower: after two ticks) or set

    def predict(self, tick: int) -> int:  # pragma: no cover - interface
        """Absolute perf_counter_ns time of grid tick `tick`."""
        raise NotImplementedError

    def timed_out(self, now_ns: int, timeout_ms: float) -> bool:
        """True when the clock's source went silent (never, for a metronome)."""
        return False

    @property
    def bpm(self) -> float:
        return NS_PER_MINUTE / (TICKS_PER_BEAT * self.period_ns)

    def tick_at(self, t_ns: int) -> float:
        """Fractional song tick at `t_ns` (inverse of `predict`), e.g. to put a played note on the grid."""
        nxt = self.tick + 1
        return nxt + (t_ns - self.predict(nxt)) / self.period_ns

    @property
    def beat(self) -> float:
        """Song position of the last tick in beats (quarter notes)."""
        return self.tick / TICKS_PER_BEAT

    def bar_position(self, tick: int | None = None) -> tuple[int, int, int]:
        """(bar, beat in bar, tick in beat) of `tick` (default: the last tick), all from 0."""
        t = self.tick if tick is None else tick
        beat, tick_in_beat = divmod(t, TICKS_PER_BEAT)
        bar, beat_in_bar = divmod(beat, self.beats_per_bar)
        return bar, beat_in_bar, tick_in_beat

    def next_boundary(self, every_ticks: int, after: int | None = None) -> int:
        """First tick after `after` (default: the last tick) on a multiple of `every_ticks` (e.g. a bar)."""
        t = self.tick if after is None else after
        return (t // every_ticks + 1) * every_ticks


class ClockFollower(SongClock):
    """Follows an external MIDI clock; feed it every realtime/system message with its arrival time."""

    def __init__(self, bpm: float = 120.0, bandwidth_hz: float = 1.0, beats_per_bar: int = 4,
                 z: float = 5.0) -> None:
        self.beats_per_bar = beats_per_bar
        self.running = False
        self.tick = -1
        self.last_tick_ns = 0
        self.period_ns = bpm_to_period(bpm)
        self._w_per_ns = 2.0 * math.pi * bandwidth_hz * 1e-9  # w = this * period_ns
        self._z = z
        self._origin = 0  # int ns; loop times are floats relative to it
        self._t1 = 0.0  # predicted time of the next tick, relative to _origin
        self._n = 0  # ticks in the current segment (gear); 0 = no phase yet
        self._var = JITTER_INIT_NS ** 2  # measured jitter variance (of the normalised innovations)
        self._ring_t = [0.0] * RING  # recent tick times (relative), oldest overwritten
        self._ring_u = [0.0] * RING  # their normalised innovations
        self._ri = 0  # next write index
        self._rn = 0  # consecutive valid ticks in the ring
        self._nu = 0  # innovations since the segment started
        self._odd = False  # the last tick was off the beat: held until the next one explains it
        self._held = 0.0  # its time (relative)
        self._reanchor = False  # check the phase on the next tick (after Start/Continue)
        self.dropped = 0  # counters, for the status line
        self.jumps = 0
        self.changes = 0

    @classmethod
    def from_config(cls, cfg, beats_per_bar: int = 4) -> "ClockFollower":
        """A follower set up from `leadline.daemon.config.ClockConfig`."""
        return cls(bpm=cfg.bpm, bandwidth_hz=cfg.bandwidth_hz, beats_per_bar=beats_per_bar)

    # --- queries -----------------------------------------------------------------------------------

    @property
    def locked(self) -> bool:
        """True once the tempo comes from two consecutive ticks (before: the last or the nominal one)."""
        return self._n >= 2

    @property
    def jitter_ns(self) -> float:
        """Measured standard deviation of tick times around the loop's line."""
        return math.sqrt(self._var)

    def predict(self, tick: int) -> int:
        """Absolute time of song tick `tick` (a past one too: on the current line); valid after a tick."""
        return self._origin + int(self._t1 + (tick - self.tick - 1) * self.period_ns)

    def timed_out(self, now_ns: int, timeout_ms: float) -> bool:
        """True when ticks were coming and none arrived for `timeout_ms` (clock dropout without Stop)."""
        return self._n > 0 and now_ns - self.last_tick_ns > timeout_ms * 1e6

    # --- input -------------------------------------------------------------------------------------

    def feed(self, t_ns: int, status: int, data: bytes | tuple | list = ()) -> ClockEvent:
        """Take one message (`status` byte, its data bytes) that arrived at `t_ns`; say what it did."""
        if status == CLOCK:
            self._on_tick(t_ns)
            return ClockEvent.TICK
        if status == START:
            self.running, self.tick, self._reanchor = True, -1, True
            return ClockEvent.START
        if status == CONTINUE:
            self.running, self._reanchor = True, True
            return ClockEvent.CONTINUE
        if status == STOP:
            self.running = False
            return ClockEvent.STOP
        if status == SONG_POSITION:
            return self._on_position(data)
        return ClockEvent.NONE

    def feed_message(self, t_ns: int, message) -> ClockEvent:
        """`feed` for a raw message as python-rtmidi delivers it (a list of ints, status first)."""
        return self.feed(t_ns, message[0], message[1:]) if message else ClockEvent.NONE

    def _on_position(self, data) -> ClockEvent:
        if len(data) >= 1 and data[0] & 0x80:  # the whole message was passed
            data = data[1:]
        if len(data) < 2:
            return ClockEvent.NONE
        sixteenths = (data[0] & 0x7F) | (data[1] & 0x7F) << 7
        self.tick = sixteenths * TICKS_PER_16TH - 1  # the next tick lands on the position
        return ClockEvent.POSITION

    def _on_tick(self, t_ns: int) -> None:
        if self.running:
            self.tick += 1
        prev, self.last_tick_ns = self.last_tick_ns, t_ns
        if self._n == 0:
            self._seed(t_ns, self.period_ns)
            return
        t, interval = t_ns - self._origin, t_ns - prev
        if self._reanchor:
            self._reanchor = False
            if (t - self._t1) ** 2 > 16.0 * self._var:  # the source restarted its phase on Start
                self._reanchor_phase(t_ns)
                return
        if interval > GAP_NS:
            self._reanchor_phase(t_ns)
        elif self._odd:
            self._resolve(t_ns, t)
        elif self._n == 1 or 0.4 * self.period_ns <= interval <= 1.6 * self.period_ns:
            self._track(t)  # (the first interval of a segment sets the tempo, whatever it is)
        else:
            self._hold(t)

    # --- the loop ----------------------------------------------------------------------------------

    def _track(self, t: float) -> None:
        """One loop step for a tick at relative time `t` (the hot path)."""
        u = self._step(t - self._t1)
        if u == u:  # not NaN: the segment has a prediction to compare with
            self._nu += 1
            r = self._worst_window()
            if r > self._z * self._z:
                self._reseed_after_change()
            elif r < 9.0:  # no change under way: the innovation measures jitter
                self._var = max(self._var + (min(u * u, 9.0 * self._var) - self._var) * 0.03, VAR_FLOOR)

    def _step(self, e: float) -> float:
        """Advance the loop by a tick with prediction error `e`; return e normalised (NaN: no prediction).

        The loop and the detector see `e` clipped to CLIP sigmas, so one late tick moves neither much.
        """
        n = self._n = self._n + 1
        p, t = self.period_ns, self._t1 + e
        b, c, f = self._gains(n, p)
        u = math.nan
        if f > 0.0:
            u, lim = e / math.sqrt(f), CLIP * math.sqrt(self._var)
            e = max(-lim, min(lim, u)) * math.sqrt(f)
        self._push(t, e / math.sqrt(f) if f > 0.0 else 0.0)
        self._t1 += b * e + p
        self.period_ns = clamp_period(p + c * e)
        return u

    def _gains(self, n: int, p: float) -> tuple[float, float, float]:
        """Loop gains (b, c) for the n-th tick of a segment, and its prediction variance / jitter variance.

        Up to the steady gains the loop is a least-squares line through the segment's n >= 2 ticks;
        variance 0: no prediction yet (the second tick only sets the period).
        """
        if n == 2:
            return 2.0, 1.0, 0.0
        w = min(self._w_per_ns * p, 0.5)  # (w <= 0.5 keeps the loop stable at any tempo and bandwidth)
        b, c = 1.4142135623730951 * w, w * w
        h = 6.0 / (n * (n + 1))
        if h > c:
            f = 1.0 + 1.0 / (n - 1) + 3.0 * n / ((n - 1) * (n - 2))
            return h + 2.0 * (2 * n - 1) / (n * (n + 1)), h, f
        return b, c, 1.0 / (1.0 - b + c)

    def _push(self, t: float, u: float) -> None:
        """Remember tick time `t` and its (clipped) normalised innovation `u` in the rings."""
        i = self._ri
        self._ring_t[i], self._ring_u[i] = t, u
        self._ri = (i + 1) % RING
        self._rn += 1

    def _worst_window(self) -> float:
        """Largest squared z-score of the recent innovations over the windows that fit.

        Per window of m ticks: their sum (a phase or tempo step) and their ramp-weighted sum
        (1, 2, .., m towards the newest: the drift a small tempo change leaves in a narrow loop).
        """
        ring, i, s, sk, k, worst = self._ring_u, self._ri, 0.0, 0.0, 0, 0.0
        limit = min(self._nu, WINDOWS[-1])
        for m in WINDOWS:
            if m > limit:
                break
            while k < m:
                k += 1
                u = ring[(i - k) % RING]
                s += u
                sk += k * u
            ramp = (m + 1) * s - sk
            worst = max(worst, s * s / m, ramp * ramp / RAMP_NORM[m])
        return worst / self._var

    # --- irregular ticks and (re)seeding -------------------------------------------------------------

    def _seed(self, t_ns: int, period: float, gear: int = 1) -> None:
        """Start a segment at a tick at `t_ns` with a period worth `gear` ticks; forget the recent ticks."""
        self._origin = t_ns
        self._t1 = period
        self.period_ns = clamp_period(period)
        self._n, self._rn, self._nu, self._odd = gear, 0, 0, False
        self._push(0.0, 0.0)

    def _reanchor_phase(self, t_ns: int) -> None:
        """Keep the tempo (as if learnt from up to a beat of ticks) but take this tick as the phase."""
        self._seed(t_ns, self.period_ns, min(self._n, GEAR_KEPT) if self._n >= 2 else 1)

    def _hold(self, t: float) -> None:
        """A tick off the beat: count it as on time for now, and let the next tick tell what it was."""
        self._odd, self._held = True, t
        self._push(self._t1, 0.0)
        self._t1 += self.period_ns

    def _resolve(self, t_ns: int, t: float) -> None:
        """The tick after an odd one: it was late (a stall), a tick was lost, or the tempo jumped."""
        self._odd = False
        p, t1 = self.period_ns, self._t1
        if abs(t - t1) < 0.4 * p:  # on time: the odd tick was just late or early
            self._track(t)
        elif abs(self._held - t1) < 0.4 * p and abs(t - t1 - p) < 0.4 * p:  # one tick was lost
            self.dropped += 1  # for the timing only: the song position counts the ticks that came
            self._track(self._held)  # (a lost tick is rare over MIDI; a late burst, as a JACK xrun gives, is not)
            self._track(t)
        else:
            self._jump(t_ns, self._origin + int(self._held))

    def _jump(self, t_ns: int, held_ns: int) -> None:
        """Two odd intervals in a row: the tempo jumped. Re-seed from the odd tick and this one."""
        self.jumps += 1
        if MIN_PERIOD_NS <= t_ns - held_ns <= MAX_PERIOD_NS:
            self._seed(held_ns, t_ns - held_ns)
            self._track(t_ns - held_ns)
        else:  # a burst or a stall, no tempo: keep ours
            self._reanchor_phase(t_ns)

    def _reseed_after_change(self) -> None:
        """Find where the tempo changed in the recent ticks and restart the loop's gear from there."""
        self.changes += 1
        count = min(self._rn, RING)
        ring, i = self._ring_t, self._ri
        times = [ring[(i - count + k) % RING] for k in range(count)]
        self._nu = 0
        if count < 6:  # too few to place the change: the line through the last two ticks
            self._t1, self.period_ns = 2 * times[-1] - times[-2], clamp_period(times[-1] - times[-2])
            self._n, self._rn = 2, 2
        else:
            after, gear, period, last = _change_point(times, math.sqrt(self._var))
            self._t1, self.period_ns = last + period, clamp_period(period)
            self._n, self._rn = gear, after


def _change_point(times: list[float], sigma: float) -> tuple[int, int, float, float]:
    """Where consecutive tick `times` change, and the line after it, averaged over the possible changes.

    Two kinds of change are weighed at each tick c, by their evidence (jitter `sigma`, flat priors): a
    bend (a continuous two-segment line: the tempo changed) and a step (one slope, the phase jumped:
    the source or the transport stalled, as a JACK xrun does). Returns (ticks from the likeliest change on,
    gear, period after it, fitted time of the last tick); gear is the number of ticks a plain line fit
    needs for a period as precise as this one. Costs ~1-2 ms; it runs only when the detector fires.
    """
    n, s2 = len(times), (sigma * 1e-6) ** 2
    x = np.arange(n, dtype=float)
    y = (np.array(times) - times[0]) * 1e-6  # ms, for conditioning
    # a bend needs three ticks after it to show a slope; a step shows with two
    models = [(c, np.maximum(x - c, 0.0), (0.0, 1.0, 1.0)) for c in range(1, n - 3)]
    models += [(c, (x >= c).astype(float), (0.0, 1.0, 0.0)) for c in range(1, n - 1)]
    logw, slope, last, var, at = (np.empty(len(models)) for _ in range(5))
    for j, (c, third, uses) in enumerate(models):
        a = np.column_stack((np.ones(n), x, third))
        ata = a.T @ a
        coef = np.linalg.solve(ata, a.T @ y)
        sse = float(((a @ coef - y) ** 2).sum())
        logw[j] = -0.5 * sse / s2 - 0.5 * np.linalg.slogdet(ata)[1]
        slope[j], last[j], at[j] = coef[1] + uses[2] * coef[2], a[-1] @ coef, c
        u = np.asarray(uses)
        var[j] = float(u @ np.linalg.solve(ata, u)) * s2
    w = np.exp(logw - logw.max())
    w /= w.sum()
    mean = float(w @ slope)
    v = float(w @ (var + (slope - mean) ** 2)) / s2  # period variance / jitter variance
    gear = max(3, int((12.0 / v) ** (1.0 / 3.0)))
    return n - int(at[int(np.argmax(w))]), gear, mean * 1e6, times[0] + float(w @ last) * 1e6


class InternalClock(SongClock):
    """A metronome at `bpm`: tick k falls at `anchor_ns + (k - anchor_tick) * period`, never accumulated."""

    def __init__(self, bpm: float = 120.0, beats_per_bar: int = 4) -> None:
        self.beats_per_bar = beats_per_bar
        self.running = False
        self.tick = -1
        self.last_tick_ns = 0
        self.period_ns = bpm_to_period(bpm)
        self._anchor_tick = 0
        self._anchor_ns = 0

    def start(self, t_ns: int, tick: int = 0) -> None:
        """Run from song tick `tick` (default the top), its first tick at `t_ns`."""
        self.running = True
        self.tick = tick - 1
        self._anchor_tick, self._anchor_ns = tick, t_ns

    def stop(self) -> None:
        self.running = False  # the position holds; start(t, tick) goes on from any tick

    def predict(self, tick: int) -> int:
        return self._anchor_ns + round((tick - self._anchor_tick) * self.period_ns)

    def next_tick_ns(self) -> int:
        """Deadline of the next tick: sleep until it, then call `poll`."""
        return self.predict(self.tick + 1)

    def poll(self, now_ns: int) -> ClockEvent:
        """Advance by one tick if its time has come (call again to catch up after a late wake-up)."""
        if not self.running:
            return ClockEvent.NONE
        due = self.predict(self.tick + 1)
        if now_ns < due:
            return ClockEvent.NONE
        self.tick += 1
        self.last_tick_ns = due
        return ClockEvent.TICK

    def set_bpm(self, bpm: float) -> None:
        """Change tempo from the next tick on; the next tick keeps its time, so the phase is continuous."""
        nxt = self.tick + 1
        self._anchor_ns, self._anchor_tick = self.predict(nxt), nxt
        self.period_ns = bpm_to_period(bpm)
