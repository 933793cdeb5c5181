"""`leadline serve`: set everything up, open the ports, run the live loop, and always leave silence behind.

Order: settings, model (loaded and warmed up with one inference), sampler, MIDI backend; then `gc.freeze()`
and the ports open in a `with` block. SIGTERM and Ctrl-C end the loop cleanly (exit 0); every way out,
an exception included, sends note-offs for sounding notes and All Notes Off before the ports close.
"""
from __future__ import annotations

import gc
import logging
import signal
import sys
from pathlib import Path

from leadline.daemon import config
from leadline.daemon.engine import load_model, make_engine
from leadline.daemon.headroom import describe, measure_p99_ms
from leadline.daemon.live import Live
from leadline.daemon.ports import InputQueue, MidiIO, choose_api
from leadline.daemon.recording import Recorder
from leadline.daemon.sampler import Sampler

log = logging.getLogger(__name__)


def settings(args) -> config.Config:
    overrides = list(args.overrides)
    for key, value in (("engine.model", args.model), ("midi.api", args.api), ("mode", args.mode),
                       ("record.dir", args.record)):
        if value is not None:
            overrides.append(f"{key}={value}")
    return config.load(args.config, overrides)


class Status:
    """The one-line live status: rewritten in place on a terminal, a log line every 10 s otherwise."""

    def __init__(self, live: Live, inq: InputQueue, engine_name: str) -> None:
        self.live, self.inq, self.engine_name = live, inq, engine_name
        self.port_stats = None  # leadline's own JACK client: its counters (JackMidi.stats)
        self.tty = sys.stderr.isatty()
        self.every_ns = 500_000_000 if self.tty else 10_000_000_000
        self.next_ns = 0

    def line(self) -> str:
        lv, s = self.live, self.live.stats
        src = "ext" if lv.external else "int"
        state = "playing" if lv.running else "stopped"
        return (f"{lv.clock.bpm:6.1f} BPM {src} {state:7s} | {lv.conductor.mode:7s} {lv.meter} {lv.swing.describe()} | "
                f"in {s.notes_in} out {s.notes_out} | step p99 {lv.step_p99_ms():.2f} ms ({self.engine_name}) "
                f"{describe(lv.safe_bpm(), 'safe')} | late {lv.queue.late} dropped {self.inq.dropped}"
                + self._port_line())

    def _port_line(self) -> str:
        """JACK's side: notes written after their frame, messages lost in a full buffer."""
        if self.port_stats is None:
            return ""
        p = self.port_stats()
        return f" | jack late {p['late_out']} lost {p['dropped_in'] + p['dropped_out']}"

    def maybe(self, now_ns: int) -> None:
        if now_ns < self.next_ns:
            return
        self.next_ns = now_ns + self.every_ns
        if self.tty:
            sys.stderr.write("\r" + self.line()[:160] + "\x1b[K")
            sys.stderr.flush()
        else:
            log.warning("status: %s", self.line())


class _Signals:
    """SIGTERM/SIGINT set a flag the loop checks; the previous handlers come back afterwards."""

    def __init__(self) -> None:
        self.stop = False
        self.old = {}

    def __enter__(self) -> "_Signals":
        for sig in (signal.SIGTERM, signal.SIGINT):
            self.old[sig] = signal.signal(sig, self._set)
        return self

    def _set(self, signum, _frame) -> None:
        self.stop = True

    def __exit__(self, *exc) -> None:
        for sig, h in self.old.items():
            signal.signal(sig, h)


def open_io(midi_cfg, api: int, api_name: str, inq: InputQueue):
    """The daemon's ports: leadline's own JACK client under JACK (midi.jack_native), else python-rtmidi's."""
    if api_name == "jack" and midi_cfg.jack_native:
        from leadline.daemon.jacknative import NativeIO, NativeUnavailable

        try:
            return NativeIO(midi_cfg, inq.put)
        except NativeUnavailable as e:
            log.warning("leadline's own JACK client is not available (%s): python-rtmidi's is used, "
                        "notes leave at the start of a JACK cycle", e)
    return MidiIO(midi_cfg, api, api_name, inq.callback)


def loop(live: Live, io, inq: InputQueue, status: Status, sig: _Signals, duration_s: float) -> None:
    clock = live.now_ns  # wall time, or JACK's frame time with leadline's own JACK client
    end = clock() + int(duration_s * 1e9) if duration_s > 0 else 1 << 62
    live.start(clock())
    while not sig.stop:
        now = clock()
        if now >= end:
            break
        item = inq.get(0)
        while item is not None:
            live.handle(*item)
            item = inq.get(0)
        live.tick(now)
        status.maybe(now)
        io.check(now)
        wait = live.next_wake(clock()) - clock() - 1_000_000
        if wait > 0:
            item = inq.get(min(wait, 5_000_000) / 1e9)
            if item is not None:
                live.handle(*item)


def run(args) -> int:
    cfg = settings(args)
    sys.setswitchinterval(cfg.engine.switch_interval_ms / 1000.0)
    model = load_model(Path(cfg.engine.model))
    engine = make_engine(cfg.engine, model)
    sampler = Sampler(cfg.sampling)
    engine.warm_up()
    api, api_name = choose_api(cfg.midi.api)
    inq = InputQueue(cfg.midi.queue_size)
    p99_ms = measure_p99_ms(engine, Sampler(cfg.sampling, seed=0))  # (before Live primes the state)
    live = Live(cfg, engine, sampler, send=lambda m: None)
    live.start_p99_ms = p99_ms
    log.warning("model step p99 %.2f ms (%s): %s", p99_ms, engine.describe(), describe(live.safe_bpm()))
    if cfg.record.dir:
        live.recorder = Recorder(cfg.record.dir)
    status = Status(live, inq, engine.describe())
    with _Signals() as sig, open_io(cfg.midi, api, api_name, inq) as io:
        live.send = io.send
        if getattr(io, "frame_accurate", False):  # leadline's own JACK client: JACK's frame time
            live.use_frame_output(io)
            status.port_stats = io.jm.stats
            api_name = "jack, notes at their frame"
        io.on_output_lost = lambda: live.all_off(everything=True)  # (midi.connect_out) notes off first
        io.on_input_lost = live.input_lost  # (midi.connect_in) the player's held notes end there
        gc.collect()
        gc.freeze()
        log.warning("leadline: %s mode, listening on %r, playing to %r (%s); Ctrl-C stops",
                    cfg.mode, io.in_name, io.out_name, api_name)
        try:
            loop(live, io, inq, status, sig, getattr(args, "duration", 0.0))
        except BaseException:
            log.error("the live loop failed: all notes were sent off; the error follows")
            raise
        finally:
            live.all_off(everything=True)
            if cfg.clock.send_clock and not live.external:
                io.send([0xFC])
            if live.recorder:
                live.recorder.flush()
            if status.tty:
                sys.stderr.write("\n")
    log.warning("leadline stopped: %s", status.line())
    return 0
