"""`leadline bench` section "jack": timing through real MIDI ports, measured in JACK frames.

A private JACK server (dummy driver, 48 kHz, 64 frames) with `jack_midi_clock` at 120 BPM; `leadline serve`
runs as its own process. `jack_midi_dump` hears the clock, leadline's notes and a reference client's notes,
and stamps each with its JACK frame, independently of all of them. Reported:
- onset error of leadline's notes (duet mode) against the clock tick they belong to;
  (leadline's own JACK client writes each note at its tick's predicted frame; with python-rtmidi it
  leaves at the start of the cycle after Python sent it);
- the same for a plain reference client (python-rtmidi) that follows the clock with the same follower
  and sleeps (`time.sleep`, no spin, no lookahead) to the same predicted tick times;
- reaction time in respond mode, from the player's last note-off to leadline's first note;
- the follower's tempo error one beat after a 120 -> 160 BPM change (same input path as the daemon).
"""
from __future__ import annotations

import bisect
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from leadline.bench.jackrig import PERIOD, RATE, Clock, Daemon, JackServer, Listener, Player, wait_for
from leadline.bench.run import Bench, section
from leadline.daemon.clock import ClockEvent, ClockFollower
from leadline.daemon.ports import InputQueue

MS_PER_FRAME = 1000.0 / RATE


def onset_errors(events: list[tuple[int, bytes]], status: int) -> np.ndarray:
    """(note frame, nearest clock tick frame) of each note-on with `status`, shape (n, 2)."""
    ticks = [f for f, m in events if m == b"\xf8"]
    out = []
    for f, m in events:
        if len(m) == 3 and m[0] == status and m[2] > 0 and ticks:
            i = bisect.bisect_left(ticks, f)
            near = min((ticks[j] for j in (i - 1, i) if 0 <= j < len(ticks)), key=lambda t: abs(f - t))
            out.append((f, near))
    return np.asarray(out, float).reshape(-1, 2)


def frame_stats(pairs: np.ndarray) -> dict:
    """Onset error in ms (note minus tick; negative: early) and the share landing in the tick's cycle."""
    if not len(pairs):
        return {"n": 0}
    ms = (pairs[:, 0] - pairs[:, 1]) * MS_PER_FRAME
    a = np.abs(ms)
    same = np.mean(pairs[:, 0] // PERIOD == pairs[:, 1] // PERIOD)
    return {"n": int(len(ms)), "mean_ms": round(float(ms.mean()), 3),
            "abs_p50_ms": round(float(np.percentile(a, 50)), 3), "abs_p99_ms": round(float(np.percentile(a, 99)), 3),
            "abs_max_ms": round(float(a.max()), 3), "same_jack_cycle": round(float(same), 3)}


class Reference:
    """A plain client: follows the clock and plays a note every 16th, sleeping to the predicted tick."""

    def __init__(self, server: JackServer, name: str = "reference") -> None:
        import rtmidi

        self.q = InputQueue(100_000)
        self.min = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, name=name)
        self.min.ignore_types(sysex=True, timing=False, active_sense=True)
        self.min.set_callback(self.q.callback)
        self.min.open_virtual_port("in")
        self.out = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, name=f"{name}-out")
        self.out.open_virtual_port("out")
        self.in_port, self.out_port = f"{name}:in", f"{name}-out:out"
        server.wait_port(self.out_port)
        self.follower = ClockFollower(bandwidth_hz=0.25)
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        f = self.follower
        while not self.stop:
            item = self.q.get(0.05)
            if item is None:
                continue
            t, msg = item
            if f.feed(t, msg[0], msg[1:]) == ClockEvent.TICK and f.running and f.tick % 6 == 5 and f.tick > 48:
                delay = (f.predict(f.tick + 1) - time.perf_counter_ns()) / 1e9
                if delay > 0:
                    time.sleep(delay)
                self.out.send_message([0x92, 60, 90])
                self.out.send_message([0x82, 60, 0])

    def close(self) -> None:
        self.stop = True
        self.thread.join(2)
        for p in (self.min, self.out):
            p.close_port()
            p.delete()


def _onsets(b: Bench, server: JackServer, lis: Listener, notes: int, limit_s: float, tries: int = 3,
            settings: tuple[str, ...] = ()) -> dict:
    """Onset errors over `notes` notes; a start during which the dummy JACK graph stalls (no note from
    leadline within 20 s) is torn down and tried again, up to `tries` times (see bench/soak.py)."""
    for attempt in range(1, tries + 1):
        del lis.events[:], lis.raw[:]
        clock = Clock(server, 120.0)
        ref = Reference(server)
        daemon = Daemon(server, b.args.model, "mode=duet", "sampling.seed=1", *settings)
        try:
            for port in (Clock.PORT, daemon.OUT, ref.out_port):
                lis.listen_to(port)
            server.connect(Clock.PORT, daemon.IN)
            server.connect(Clock.PORT, ref.in_port)
            ref.thread.start()
            clock.start()
            try:
                wait_for(lambda: len(onset_errors(lis.events, 0x90)) >= 1, 20, "leadline's first note")
                wait_for(lambda: len(onset_errors(lis.events, 0x90)) >= notes, limit_s, f"{notes} notes")
            except TimeoutError:
                pass
            clock.stop()
            exit_code = daemon.terminate()
        finally:
            ref.close()
            daemon.close()
            clock.close()
        if len(onset_errors(lis.events, 0x90)):
            break
    return {"leadline": frame_stats(onset_errors(lis.events, 0x90)),
            "reference_sleeping_client": frame_stats(onset_errors(lis.events, 0x92)),
            "period_ms": round(PERIOD * MS_PER_FRAME, 3), "daemon_exit": exit_code, "attempts": attempt}


def _reaction(b: Bench, server: JackServer, lis: Listener, phrases: int) -> dict:
    clock, player = Clock(server, 120.0), Player(server, "bench-player")
    daemon = Daemon(server, b.args.model, "mode=respond", "respond.after_beats=1", "respond.bars=1",
                    "sampling.seed=2")
    out = []
    try:
        for port in (Clock.PORT, daemon.OUT, player.port):
            lis.listen_to(port)
        server.connect(Clock.PORT, daemon.IN)
        server.connect(player.port, daemon.IN)
        clock.start()
        for k in range(phrases):
            mark = len(lis.events)
            for p in (64, 67, 69):
                player.note(p, 100, channel=1)
                time.sleep(0.1)
                player.off(p, channel=1)
            first = wait_for(lambda: [f for f, m in lis.events[mark:] if m[:1] == b"\x90" and m[2] > 0], 10,
                             "an answer")[0]
            last_off = max(f for f, m in lis.events[mark:] if m[:1] == b"\x81")
            out.append((first - last_off) * MS_PER_FRAME)
            time.sleep(2.2)  # let the one-bar answer finish
        clock.stop()
    finally:
        daemon.close()
        clock.close()
        player.close()
    return {"n": len(out), "ms": [round(x, 1) for x in out], "beat_ms": 500.0,
            "note": "by design: respond.after_beats (1 beat) of silence, then the next beat"}


@section("jack")
def bench_jack(b: Bench) -> dict:
    log = Path(tempfile.mkdtemp(prefix="leadline-bench-")) / "jackd.log"
    server = JackServer(f"leadline-bench-{time.monotonic_ns() % 100000}", log=log).start()
    try:
        lis = Listener(server, "bench-listener")
        try:
            onsets = _onsets(b, server, lis, 10 if b.quick else 500, 20 if b.quick else 240)
            rt = _onsets(b, server, lis, 10 if b.quick else 200, 20 if b.quick else 120,
                         settings=("midi.jack_native=false",))
            onsets["leadline_python_rtmidi"] = rt["leadline"]  # the fallback without leadline's own client
        finally:
            lis.close()
        lis = Listener(server, "bench-listener2")
        try:
            reaction = _reaction(b, server, lis, 1 if b.quick else 5)
        finally:
            lis.close()
        tempo = _tempo(server, b.quick)
        return {"onset_error": onsets, "respond_reaction": reaction, "tempo_change": tempo,
                "late_jack_cycles": server.late_clients()}  # (jackd's log: cycles each client missed)
    finally:
        server.stop()


def _tempo(server: JackServer, quick: bool) -> dict:
    """The daemon's input path under JACK: leadline's own client (frame stamps), else python-rtmidi's."""
    from leadline.daemon.jacknative import JackMidi, NativeUnavailable

    q, f = InputQueue(100_000), ClockFollower(bandwidth_hz=0.25)
    try:
        m, path = JackMidi("bench-follow", "in", "out"), "leadline's own JACK client (frame stamps)"
        m.start_reader(q.put)
    except NativeUnavailable:
        import rtmidi

        m, path = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, name="bench-follow"), "python-rtmidi (wall-clock stamps)"
        m.ignore_types(sysex=True, timing=False, active_sense=True)
        m.set_callback(q.callback)
        m.open_virtual_port("in")
    clock = Clock(server, 120.0)
    seen: list[tuple[int, int, float]] = []
    try:
        server.connect(Clock.PORT, "bench-follow:in")
        clock.start()
        t_change = time.monotonic() + 2.0
        changed = False
        while time.monotonic() < t_change + 2.0:
            if not changed and time.monotonic() >= t_change:
                clock.tempo(160.0)
                changed = True
            item = q.get(0.01)
            if item and f.feed(item[0], item[1][0], item[1][1:]) == ClockEvent.TICK and f.running:
                seen.append((f.tick, item[0], f.bpm))
    finally:
        clock.close()
        if isinstance(m, JackMidi):
            m.close()
        else:
            m.close_port()
            m.delete()
    k = next((i for i in range(1, len(seen)) if seen[i][1] - seen[i - 1][1] < 18_200_000), None)
    if k is None or k + 24 >= len(seen):
        return {"error": "no tempo change seen"}
    after = np.array([s[1] for s in seen[k:]], float)
    truth = 60e9 / (24 * np.polyfit(np.arange(len(after)), after, 1)[0])
    errs = [abs(s[2] - truth) for s in seen[k + 24:]]
    return {"input": path, "from_bpm": 120, "to_bpm": 160, "measured_bpm": round(float(truth), 2),
            "error_one_beat_after_bpm": round(float(errs[0]), 3), "max_error_after_bpm": round(float(max(errs)), 3)}
