"""leadline's own JACK MIDI client (daemon/jackmidi.c): notes written at the JACK frame they are due.

With python-rtmidi under JACK, a note leaves in whichever cycle follows the moment Python sent it, at
offset 0, and the input callback takes the GIL on JACK's process thread. Here the timebase is JACK's
frame count: input is stamped with its frame, the clock follower runs on those stamps (jack_midi_clock's
ticks come with no jitter at all), and a note is queued a few milliseconds ahead with the frame of its
tick, which the process callback writes at that exact offset. Times cross this module as nanoseconds of
the frame count (frame * 1e9 / rate), so the rest of the daemon is unchanged.

The C part is compiled once with the system's gcc against libjack (Debian: gcc, libjack-jackd2-dev;
`make setup` installs them) into a cache folder; without them `NativeUnavailable` says why and the
daemon uses python-rtmidi.
"""
from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import select
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

from leadline.daemon.errors import UserError
from leadline.daemon.ports import MidiBackendError, find_port, match_port, say_back, say_gone

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("jackmidi.c")
RECHECK_NS = 500_000_000  # how often `check` looks for a vanished or returning peer port
_LIB: ctypes.CDLL | None = None


class NativeUnavailable(RuntimeError):
    """The native client cannot be built or loaded here (the reason is the message)."""


def cache_dir() -> Path:
    base = os.environ.get("LEADLINE_CACHE") or os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "leadline"


def build() -> Path:
    """The compiled library for this source, built first if needed (atomically: a concurrent build or a
    killed one never leaves a half-written library under the final name). In the cache folder, or in
    the temporary folder when that cannot be written."""
    src = SOURCE.read_bytes()
    name = f"jackmidi-{hashlib.sha256(src).hexdigest()[:16]}.so"
    folders = [cache_dir(), Path(tempfile.gettempdir()) / f"leadline-{os.getuid()}"]
    for folder in folders:
        if (folder / name).is_file():
            return folder / name
    cc = shutil.which(os.environ.get("CC", "gcc")) or shutil.which("cc")
    if cc is None:
        raise NativeUnavailable("no C compiler (apt-get install gcc libjack-jackd2-dev)")
    for folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=folder)
        except OSError:
            continue
        return _compile(cc, fd, tmp, folder / name)
    raise NativeUnavailable(f"no writable folder to build it in ({', '.join(map(str, folders))})")


def _compile(cc: str, fd: int, tmp: str, out: Path) -> Path:
    os.close(fd)
    try:
        r = subprocess.run([cc, "-O2", "-shared", "-fPIC", "-Wall", "-o", tmp, str(SOURCE), "-ljack"],
                           capture_output=True, text=True)
        if r.returncode != 0:
            first = (r.stderr.strip().splitlines() or ["?"])[0]
            raise NativeUnavailable(f"cannot build {SOURCE.name} ({first}); apt-get install libjack-jackd2-dev")
        os.replace(tmp, out)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return out


def lib() -> ctypes.CDLL:
    global _LIB
    if _LIB is None:
        try:
            so = ctypes.CDLL(str(build()))
        except OSError as e:
            raise NativeUnavailable(f"cannot load the native JACK client: {e}") from None
        P, U64, I, U32, S = ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int, ctypes.c_uint32, ctypes.c_char_p
        sigs = {"ll_open": (P, [S, S, S, S, ctypes.POINTER(I)]), "ll_close": (None, [P]), "ll_rate": (U32, [P]),
                "ll_fd": (I, [P]), "ll_alive": (I, [P]), "ll_in_name": (S, [P]), "ll_out_name": (S, [P]),
                "ll_backing_name": (S, [P]), "ll_frame_now": (U64, [P]),
                "ll_read": (I, [P, ctypes.POINTER(U64), ctypes.POINTER(U32), ctypes.c_char_p, I]),
                "ll_tap": (I, [P, ctypes.POINTER(U64), ctypes.c_char_p, I]), "ll_dropped_tap": (U32, [P]), "ll_tap_on": (None, [P, I]),
                "ll_send": (I, [P, U64, ctypes.c_char_p, I]), "ll_flush": (None, [P]),
                "ll_connect": (I, [P, S, S]), "ll_port_exists": (I, [P, S]),
                "ll_ports": (I, [P, S, ctypes.c_ulong, ctypes.c_char_p, I]),
                "ll_pending": (I, [P]), "ll_dropped_in": (U32, [P]), "ll_late_out": (U32, [P]),
                "ll_dropped_out": (U32, [P])}
        for name, (res, args) in sigs.items():
            f = getattr(so, name)
            f.restype, f.argtypes = res, args
        _LIB = so
    return _LIB


JACK_PORT_IS_INPUT, JACK_PORT_IS_OUTPUT = 0x1, 0x2


class JackMidi:
    """One JACK client with a MIDI input (two with `backing_port`: the band's) and a MIDI output, timed in
    frames (shown as nanoseconds)."""

    def __init__(self, client: str, in_port: str, out_port: str, backing_port: str | None = None) -> None:
        self.L = lib()
        os.environ.setdefault("JACK_NO_START_SERVER", "1")
        status = ctypes.c_int(0)
        self.h = self.L.ll_open(client.encode(), in_port.encode(), (backing_port or "").encode(), out_port.encode(),
                                ctypes.byref(status))
        if not self.h:
            raise UserError(f"cannot open JACK client {client!r} (status {status.value:#x}): is a JACK server "
                            "running? (`leadline ports`, or start one: `jackd -d dummy &`)")
        self.rate = self.L.ll_rate(self.h)
        self.in_name = self.L.ll_in_name(self.h).decode()
        self.out_name = self.L.ll_out_name(self.h).decode()
        self.backing_name = self.L.ll_backing_name(self.h).decode()  # "" when there is none
        self._buf = ctypes.create_string_buffer(256)
        self._frame = ctypes.c_uint64(0)
        self._port = ctypes.c_uint32(0)
        self._tap_buf = ctypes.create_string_buffer(256)
        self._tap_frame = ctypes.c_uint64(0)
        self._tapping = False
        self._reader: threading.Thread | None = None
        self._stop = False
        self._stats = {"dropped_in": 0, "late_out": 0, "dropped_out": 0}

    # --- time ------------------------------------------------------------------------------------------
    def to_ns(self, frame: int) -> int:
        return frame * 1_000_000_000 // self.rate

    def to_frame(self, t_ns: int) -> int:
        return (t_ns * self.rate + 500_000_000) // 1_000_000_000

    def now_ns(self) -> int:
        return self.to_ns(self.L.ll_frame_now(self.h))

    # --- input ----------------------------------------------------------------------------------------
    def read(self) -> tuple[int, list[int], bool] | None:
        """One input event (t_ns, bytes, whether it came on the backing port) or None. (The buffer holds
        MAX_EVENT bytes: the process callback queues nothing longer, so ll_read never has to skip one.)"""
        n = self.L.ll_read(self.h, ctypes.byref(self._frame), ctypes.byref(self._port), self._buf, len(self._buf))
        if n <= 0:
            return None
        return self.to_ns(self._frame.value), list(self._buf.raw[:n]), self._port.value == 1

    def drain_sent(self, on_sent: Callable[[int, list[int]], object]) -> None:
        """Hand every message the output wrote since the last call to `on_sent(t_ns, message)`, with the
        time of the frame it was written at (what actually left: flushed note-ons are not there). The first
        call turns the tap on."""
        if not self.h:
            return
        if not self._tapping:
            self.L.ll_tap_on(self.h, 1)
            self._tapping = True
        buf, frame = self._tap_buf, self._tap_frame
        while (n := self.L.ll_tap(self.h, ctypes.byref(frame), buf, len(buf))) > 0:
            on_sent(self.to_ns(frame.value), list(buf.raw[:n]))

    def pending(self) -> bool:
        """Whether messages handed over are still waiting to be written."""
        return bool(self.h) and bool(self.L.ll_pending(self.h))

    def start_reader(self, on_message: Callable[..., object]) -> None:
        """A thread that waits (GIL released) for the process callback's wake-up byte and hands every
        event to `on_message(t_ns, message)`, or `on_message(t_ns, message, True)` when it came on the
        backing port (as InputQueue.put takes them)."""
        fd = self.L.ll_fd(self.h)

        def run() -> None:
            while not self._stop:
                if not select.select([fd], [], [], 0.1)[0]:
                    continue
                try:
                    os.read(fd, 4096)
                except BlockingIOError:
                    pass
                while (ev := self.read()) is not None:
                    if ev[2]:
                        on_message(*ev)
                    else:
                        on_message(ev[0], ev[1])

        self._reader = threading.Thread(target=run, name="leadline-jack-in", daemon=True)
        self._reader.start()

    # --- output ---------------------------------------------------------------------------------------
    def send(self, msg) -> bool:
        """As soon as possible (the next cycle)."""
        data = bytes(msg)
        return bool(self.h) and self.L.ll_send(self.h, 0, data, len(data)) == 0  # (closed: nothing)

    def send_at(self, t_ns: int, msg) -> bool:
        """At the frame of `t_ns` (queue in due order; a time already past goes at the next cycle's start)."""
        data = bytes(msg)
        return bool(self.h) and self.L.ll_send(self.h, max(self.to_frame(t_ns), 1), data, len(data)) == 0

    def flush(self) -> None:
        """Drop the timed note-ons and pitch bends queued and not yet written; other timed messages go at once."""
        if self.h:
            self.L.ll_flush(self.h)

    # --- graph ----------------------------------------------------------------------------------------
    def connect(self, src: str, dst: str) -> bool:
        return self.L.ll_connect(self.h, src.encode(), dst.encode()) == 0

    def exists(self, port: str) -> bool:
        return bool(self.L.ll_port_exists(self.h, port.encode()))

    def ports(self, flags: int) -> list[str]:
        buf = ctypes.create_string_buffer(1 << 16)
        n = self.L.ll_ports(self.h, None, flags, buf, len(buf))
        return [p.decode() for p in buf.raw.split(b"\0")[:max(n, 0)]]

    @property
    def alive(self) -> bool:
        return bool(self.h) and bool(self.L.ll_alive(self.h))

    def stats(self) -> dict:
        """Input lost to a full buffer, notes written after their frame, output JACK could not hold (the
        last figures once closed)."""
        if self.h:
            self._stats = {"dropped_in": self.L.ll_dropped_in(self.h), "late_out": self.L.ll_late_out(self.h),
                           "dropped_out": self.L.ll_dropped_out(self.h), "dropped_tap": self.L.ll_dropped_tap(self.h)}
        return self._stats

    def close(self) -> None:
        """Stop reading, let JACK write what is queued (the last note-offs; 0.2 s at most), close."""
        self._stop = True
        if self._reader is not None:
            self._reader.join(1.0)
        end = time.monotonic() + 0.2
        while self.h and self.L.ll_pending(self.h) and self.L.ll_alive(self.h) and time.monotonic() < end:
            time.sleep(0.002)
        if self.h:
            self.L.ll_close(self.h)
            self.h = None


class NativeIO:
    """The daemon's ports on leadline's own JACK client: MidiIO's interface, plus `now_ns`, `send_at` and
    `flush` in JACK's frame time. `on_message(t_ns, message)` runs on the reader thread (with a third
    argument, True, for what came on the band's port: midi.backing_port)."""

    frame_accurate = True

    def __init__(self, midi_cfg, on_message: Callable[..., object]) -> None:
        lib()  # build or load it now: NativeUnavailable here lets the caller use python-rtmidi instead
        self.cfg, self.on_message = midi_cfg, on_message
        self.on_output_lost: Callable[[], object] | None = None
        self.on_input_lost: Callable[[], object] | None = None
        self.on_output_back: Callable[[], object] | None = None
        self.jm: JackMidi | None = None
        self.in_name = self.out_name = self.backing_name = ""
        self.in_lost = self.out_lost = False
        self._next_check = 0

    def __enter__(self) -> "NativeIO":
        c = self.cfg
        self.jm = jm = JackMidi(c.client_name, c.in_port, c.out_port, c.backing_port)
        self.backing_name = jm.backing_name
        try:
            self.in_name, self.out_name = jm.in_name, jm.out_name
            if c.connect_in:
                self.in_name = self._peer(c.connect_in, JACK_PORT_IS_OUTPUT, "input")
                jm.connect(self.in_name, jm.in_name)
            if c.connect_out:
                self.out_name = self._peer(c.connect_out, JACK_PORT_IS_INPUT, "output")
                jm.connect(jm.out_name, self.out_name)
            jm.start_reader(self.on_message)
        except BaseException:
            self.close()
            raise
        log.info("MIDI (jack, leadline's own client): listening on %r, playing to %r%s", self.in_name, self.out_name,
                 f", the band on {self.backing_name!r}" if self.backing_name else "")
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _peers(self, flags: int) -> list[str]:
        """MIDI ports of other clients with these flags."""
        return [p for p in self.jm.ports(flags) if p not in (self.jm.in_name, self.jm.out_name, self.jm.backing_name)]

    def _peer(self, want: str, flags: int, what: str) -> str:
        peers = self._peers(flags)
        return peers[find_port(peers, want, what)]

    def now_ns(self) -> int:
        return self.jm.now_ns()

    def send(self, msg) -> None:
        self.jm.send(msg)

    def send_at(self, t_ns: int, msg) -> None:
        self.jm.send_at(t_ns, msg)

    def flush(self) -> None:
        self.jm.flush()

    def drain_sent(self, on_sent) -> None:
        if self.jm is not None:
            self.jm.drain_sent(on_sent)

    def pending(self) -> bool:
        return self.jm is not None and self.jm.pending()

    def check(self, now_ns: int) -> None:
        """As MidiIO.check: a peer port named by midi.connect_in/connect_out that vanished (said once;
        `on_output_lost` first, `on_input_lost` after) or came back (connected again). A JACK server that
        shut down ends the daemon with an error (its frame time stops: wall time paces these checks)."""
        c = self.cfg
        t = time.monotonic_ns()
        if t < self._next_check:
            return
        self._next_check = t + RECHECK_NS
        if not self.jm.alive:
            raise MidiBackendError("the JACK server shut leadline's client down (server stopped or restarted); "
                                   "start leadline again once JACK runs")
        if not (c.connect_in or c.connect_out):
            return
        if c.connect_in:
            self.in_lost = self._watch("input", self.in_lost)
        if c.connect_out:
            self.out_lost = self._watch("output", self.out_lost)

    def _watch(self, what: str, lost: bool) -> bool:
        inp = what == "input"
        name, want = (self.in_name, self.cfg.connect_in) if inp else (self.out_name, self.cfg.connect_out)
        if not lost:
            if self.jm.exists(name):
                return False
            say_gone(what, name, want)
            callback = self.on_input_lost if inp else self.on_output_lost
            if callback is not None:
                callback()
            return True
        peers = self._peers(JACK_PORT_IS_OUTPUT if inp else JACK_PORT_IS_INPUT)
        i = match_port(peers, want)
        if i is None:
            return True
        peer = peers[i]
        if not self.jm.connect(*((peer, self.jm.in_name) if inp else (self.jm.out_name, peer))):
            return True
        if inp:
            self.in_name = peer
        else:
            self.out_name = peer
        say_back(what, peer)
        if not inp and self.on_output_back is not None:
            self.on_output_back()
        return False

    def close(self) -> None:
        if self.jm is not None:
            self.jm.close()
            self.jm = None
