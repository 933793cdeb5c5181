"""`leadline serve`: set everything up, open the ports, run the live loop, and always leave silence behind.

Order: settings, model (loaded and warmed up with one inference), sampler, MIDI backend; then `gc.freeze()`
and the ports open in a `with` block. SIGTERM and Ctrl-C end the loop cleanly (exit 0); every way out,
an exception included, sends note-offs for sounding notes and All Notes Off before the ports close.
"""
from __future__ import annotations

import gc
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from leadline.daemon import config, configfile, harmony
from leadline.daemon.engine import load_model, make_engine
from leadline.daemon.headroom import describe, measure_p99_ms
from leadline.daemon.learn import CC_KEYS, Learn
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
        echo = f" echo {lv.echo.echoes}" if lv.echo.echoes else ""
        heard = lv.backing.code(lv.now_tick())  # (the engine thread: the loop calls this)
        band = f" | band {harmony.describe(heard)}" if heard else ""
        return (f"{lv.clock.bpm:6.1f} BPM {src} {state:7s} | {lv.conductor.mode:7s} {lv.meter} {lv.swing.describe()}"
                f"{band} | in"  # (the band early: a terminal's line is cut at 160 characters)
                f" {s.notes_in} out {s.notes_out} | step p99 {lv.step_p99_ms():.2f} ms ({self.engine_name}) "
                f"{describe(lv.safe_bpm(), 'safe')} | late {lv.queue.late} dropped {self.inq.dropped}{echo}"
                + self._port_line())

    def counters(self) -> dict:
        """The status line's counters, for a take's session log."""
        lv = self.live
        out = {"in": lv.stats.notes_in, "out": lv.stats.notes_out, "late": lv.queue.late,
               "dropped": self.inq.dropped, "echo": lv.echo.echoes, "step_p99_ms": round(lv.stats.step_p99_ms(), 3)}
        if self.port_stats is not None:
            out.update({f"jack_{k}": v for k, v in self.port_stats().items()})
        return out

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
    return MidiIO(midi_cfg, api, api_name, inq.callback, inq.backing_callback)


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


def keep_learned(path: str | None):
    """on_learned(control) for Live: each learned CC saved to the config file on a thread of its own."""
    if path is None:
        log.warning("MIDI learn: no config file (--config FILE): learned controls last until leadline stops")
        return None

    latest = [None]  # the newest mapping: whichever save runs last writes it

    def save() -> None:
        with lock:
            values = {k: getattr(latest[0], k) for k in CC_KEYS}
            try:
                configfile.set_values(path, "control", values)
                log.warning("MIDI learn: saved to %s", path)
            except (config.ConfigError, OSError) as e:
                log.error("MIDI learn: not saved (%s)", e)

    def learned(control) -> None:
        latest[0] = control
        threading.Thread(target=save, name="leadline-learn").start()

    lock = threading.Lock()
    return learned


def make_live(args, cfg: config.Config, engine) -> Live:
    """The live loop's state, with its seed (sampling.seed, else a fresh one: a take's log keeps it)."""
    seed = cfg.sampling.seed if cfg.sampling.seed is not None else int.from_bytes(os.urandom(4), "little")
    live = Live(cfg, engine, Sampler(cfg.sampling, seed=seed, expression=cfg.expression.mode), send=lambda m: None)
    if getattr(args, "learn", False) or cfg.control.learn_cc is not None:
        live.on_learned = keep_learned(args.config)
    if cfg.record.dir:
        header = {"seed": seed, "config": config.as_dict(cfg), "model_card": _card(cfg.engine.model)}
        live.recorder = Recorder(cfg.record.dir, header, live.out_ch, cfg.expression.bend_range)
    return live


def _extras(live: Live, io, status: Status, args) -> None:
    """Once the ports are open: a take's log knows its timebase and the status counters; --learn begins."""
    if live.recorder:
        live.recorder.header["timebase"] = (f"jack frames at {io.jm.rate} Hz" if live.drain_out is not None
                                            else "perf_counter")
        live.recorder.counters = status.counters
    if getattr(args, "learn", False):
        live.learn = Learn(live.cfg.control.learn_timeout_s, live.now_ns())


def _band(midi_cfg, io) -> str:
    """Where the band (the backing) is heard, for the start-up line."""
    where = [f"port {io.backing_name!r}"] if getattr(io, "backing_name", "") else []
    if midi_cfg.backing_channels:
        where.append("channel" + "s" * (len(midi_cfg.backing_channels) > 1) + " "
                     + ", ".join(map(str, midi_cfg.backing_channels)))
    return f", the band on {' and '.join(where)}" if where else ""


def _card(model: str) -> dict:
    try:
        card = json.loads((Path(model) / "card.json").read_text())
    except (OSError, ValueError):
        return {}
    return {k: card[k] for k in ("name", "created", "codec_version") if k in card}


def writable_record_dir(folder: str | None) -> None:
    """record.dir is made now if need be: a folder leadline cannot write in is said before a port opens."""
    if folder:
        try:
            Path(folder).mkdir(parents=True, exist_ok=True)
            if not os.access(folder, os.W_OK | os.X_OK):
                raise PermissionError(13, "Permission denied")
        except OSError as e:
            raise config.ConfigError(f"record.dir: {folder!r} (cannot write there: {e.strerror})") from None


def run(args) -> int:
    cfg = settings(args)
    writable_record_dir(cfg.record.dir)
    sys.setswitchinterval(cfg.engine.switch_interval_ms / 1000.0)
    model = load_model(Path(cfg.engine.model))
    engine = make_engine(cfg.engine, model)
    engine.warm_up()
    api, api_name = choose_api(cfg.midi.api)
    inq = InputQueue(cfg.midi.queue_size)
    p99_ms = measure_p99_ms(engine, Sampler(cfg.sampling, seed=0))  # (before Live primes the state)
    live = make_live(args, cfg, engine)
    live.start_p99_ms = p99_ms
    log.warning("model step p99 %.2f ms (%s): %s", p99_ms, engine.describe(), describe(live.safe_bpm()))
    status = Status(live, inq, engine.describe())
    with _Signals() as sig, open_io(cfg.midi, api, api_name, inq) as io:
        live.send = io.send
        if getattr(io, "frame_accurate", False):  # leadline's own JACK client: JACK's frame time
            live.use_frame_output(io)
            status.port_stats = io.jm.stats
            api_name = "jack, notes at their frame"
        io.on_output_lost = lambda: live.all_off(everything=True)  # (midi.connect_out) notes off first
        io.on_input_lost = live.input_lost  # (midi.connect_in) the player's held notes end there
        io.on_output_back = live.output_back  # (midi.connect_out) the bend range again (RPN 0)
        _extras(live, io, status, args)
        gc.collect()
        gc.freeze()
        log.warning("leadline: %s mode, listening on %r, playing to %r (%s)%s; Ctrl-C stops",
                    cfg.mode, io.in_name, io.out_name, api_name, _band(cfg.midi, io))
        try:
            loop(live, io, inq, status, sig, getattr(args, "duration", 0.0))
        except BaseException:
            log.error("the live loop failed: all notes were sent off; the error follows")
            raise
        finally:
            live.end_take()
            live.all_off(everything=True)
            if cfg.clock.send_clock and not live.external:
                io.send([0xFC])
            if live.recorder:
                live.settle(wait=True)
                live.recorder.close()
            if status.tty:
                sys.stderr.write("\n")
    log.warning("leadline stopped: %s", status.line())
    return 0
