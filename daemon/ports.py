"""MIDI ports: choosing the backend, opening virtual or named ports, and the input callback's queue.

python-rtmidi is used directly (not through mido's backend) so that the input callback can stamp every
message with `time.perf_counter_ns()` first thing and put it on a bounded queue; it does nothing else.
"""
from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import os
import queue
import sys
import time
from typing import Callable

import rtmidi

from leadline.daemon.errors import UserError

log = logging.getLogger(__name__)

RECHECK_NS = 500_000_000  # how often MidiIO.check lists the ports when one was opened by name
_HELD: list = []  # input callbacks kept alive for good once cancelled (see `stop_callback`)

APIS = {"alsa": rtmidi.API_LINUX_ALSA, "jack": rtmidi.API_UNIX_JACK,
        "coremidi": rtmidi.API_MACOSX_CORE, "windows": rtmidi.API_WINDOWS_MM}


class MidiBackendError(UserError):
    """No usable MIDI backend or port."""


def _auto_order() -> list[str]:
    if sys.platform == "darwin":
        return ["coremidi", "jack"]
    if sys.platform.startswith("win"):
        return ["windows"]
    return ["alsa", "jack"]


def _jack_server_answers() -> bool | None:
    """Whether a JACK server answers a client that is opened and closed again, never activated (so it
    never joins the server's graph, as a python-rtmidi probe would); None without a system libjack."""
    try:
        jack = ctypes.CDLL("libjack.so.0")
    except OSError:
        return None
    jack.jack_client_open.restype = ctypes.c_void_p
    jack.jack_client_open.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
    jack.jack_client_close.argtypes = [ctypes.c_void_p]
    status = ctypes.c_int(0)
    client = jack.jack_client_open(b"leadline-probe", 0x01, ctypes.byref(status))  # JackNoStartServer
    if not client:
        return False
    jack.jack_client_close(client)
    return True


@contextlib.contextmanager
def quiet_stderr():
    """Silence what C libraries (ALSA, JACK) print on file descriptor 2 while probing them."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _usable(api: int) -> bool:
    """Whether the backend `api` works now; quiet (its C library's complaints are not shown)."""
    if api == rtmidi.API_LINUX_ALSA and not os.path.exists("/dev/snd/seq"):
        return False  # no ALSA sequencer: don't let alsa-lib say so on stderr
    with quiet_stderr():
        if api == rtmidi.API_UNIX_JACK and (answers := _jack_server_answers()) is not None:
            return answers
        try:
            rtmidi.MidiIn(api, name="leadline-probe").delete()
            return True
        except (rtmidi.SystemError, rtmidi.InvalidUseError, RuntimeError):
            return False


def why_unusable(name: str) -> str:
    """What to do to make the backend `name` usable."""
    if name == "alsa":
        if not os.path.exists("/dev/snd/seq"):
            return ("no ALSA sequencer (/dev/snd/seq missing): `sudo modprobe snd-seq`; in a container, "
                    "pass --device /dev/snd")
        return "/dev/snd/seq cannot be opened: join the audio group (`sudo usermod -aG audio $USER`)"
    if name == "jack":
        server = os.environ.get("JACK_DEFAULT_SERVER", "default")
        return (f"no JACK server {server!r} running: start one (`jackd -d alsa` with an audio interface, "
                "`jackd -d dummy` without)")
    return "not usable here"


def choose_api(name: str = "auto") -> tuple[int, str]:
    """The rtmidi API id and name for `name` ('auto' tries the platform's backends in order; one log line
    says why it passed over one)."""
    os.environ.setdefault("JACK_NO_START_SERVER", "1")  # never start a JACK server behind the user's back
    compiled = set(rtmidi.get_compiled_api())
    names = _auto_order() if name == "auto" else [name]
    passed = []
    for n in names:
        if n not in APIS:
            raise MidiBackendError(f"midi.api: {n!r} (expected auto, alsa, jack, coremidi or windows)")
        if APIS[n] in compiled and _usable(APIS[n]):
            for p in passed:
                log.info("MIDI: %s is not usable, using %s: %s", p, n, why_unusable(p))
            return APIS[n], n
        passed.append(n)
    if name == "auto":
        raise MidiBackendError("no MIDI backend works here (no ALSA sequencer, no JACK server running); "
                               "start one, e.g. `jackd -d dummy &`, or load snd-seq")
    raise MidiBackendError(f"MIDI backend {name!r} is not usable here (is its server running?); "
                           "try --api auto or `leadline ports`")


def list_ports(api: int) -> tuple[list[str], list[str]]:
    mi, mo = rtmidi.MidiIn(api, name="leadline-list"), rtmidi.MidiOut(api, name="leadline-list")
    try:
        return mi.get_ports(), mo.get_ports()
    finally:
        mi.delete()
        mo.delete()


def _must_keep(msg) -> bool:
    """System messages (transport, clock, song position) and note-offs (0x8n, or 0x9n velocity 0)."""
    if not msg:
        return False
    s = msg[0]
    return s >= 0xF0 or s & 0xF0 == 0x80 or (s & 0xF0 == 0x90 and len(msg) > 2 and msg[2] == 0)


def match_port(ports: list[str], substring: str) -> int | None:
    """Index of the first port whose name contains `substring` (any case), or None."""
    return next((i for i, p in enumerate(ports) if substring.lower() in p.lower()), None)


def find_port(ports: list[str], substring: str, what: str) -> int:
    i = match_port(ports, substring)
    if i is None:
        raise MidiBackendError(f"no MIDI {what} port matches {substring!r}; `leadline ports` lists them")
    return i


def say_gone(what: str, name: str, want: str) -> None:
    """The one log line for a peer port (midi.connect_in/connect_out) that went away."""
    log.warning("MIDI %s %r is gone: leadline keeps running and reconnects to the first port matching %r",
                what, name, want)


def say_back(what: str, name: str) -> None:
    log.warning("MIDI %s is back: %s %r", what, "listening on" if what == "input" else "playing to", name)


def run_list(args) -> int:
    api, name = choose_api(args.api)
    ins, outs = list_ports(api)
    print(f"backend: {name}")
    print("inputs (leadline can listen to):")
    for p in ins:
        print(f"  {p}")
    print("outputs (leadline can play to):")
    for p in outs:
        print(f"  {p}")
    return 0


class InputQueue:
    """Bounded queue of (t_ns, message bytes) filled by the MIDI input thread.

    The rtmidi callback stamps each message with `time.perf_counter_ns()` first thing (leadline's own JACK
    client stamps with the JACK frame and uses `put`), counts it, and queues it or counts it as dropped;
    nothing else. When `maxsize` messages wait (a flood faster than the live loop), note-ons, controllers
    and the like are dropped, but transport and clock (0xF0-0xFF) and note-offs still queue, up to four
    times `maxsize`: a Start or Stop right after a flood is not lost behind it, and neither is the end of
    a note the player held (its echo would hang).

    Items are (t_ns, message) for the player's input and (t_ns, message, True) for the band's (the backing
    port): `Live.handle(*item)` takes either.
    """

    __slots__ = ("q", "maxsize", "dropped", "received")

    def __init__(self, maxsize: int) -> None:
        # queue.Queue, not SimpleQueue: on Python 3.11 a SimpleQueue.get(timeout=...) that a signal
        # interrupts after its deadline waits forever (Ctrl-C would hang the daemon).
        self.q: queue.Queue = queue.Queue()
        self.maxsize = maxsize
        self.dropped = 0
        self.received = 0

    def callback(self, event, _data=None) -> None:
        self.put(time.perf_counter_ns(), event[0])

    def backing_callback(self, event, _data=None) -> None:
        """python-rtmidi's callback of the backing port."""
        self.put(time.perf_counter_ns(), event[0], True)

    def put(self, t_ns: int, msg, backing: bool = False) -> None:
        """Queue a stamped message (see the class docstring for what a full queue still takes)."""
        self.received += 1
        n = self.q.qsize()
        if n >= self.maxsize and (n >= 4 * self.maxsize or not _must_keep(msg)):
            self.dropped += 1
            return
        self.q.put((t_ns, msg, True) if backing else (t_ns, msg))

    def get(self, timeout: float | None):
        """One (t_ns, message) or None after `timeout` seconds (0: don't wait)."""
        try:
            if timeout is None or timeout > 0:
                return self.q.get(timeout=timeout)
            return self.q.get_nowait()
        except queue.Empty:
            return None


class MidiIO:
    """The daemon's input and output ports, and the band's input (midi.backing_port) when there is one; a
    context manager that always closes them. `on_backing` is python-rtmidi's callback for the band's input."""

    def __init__(self, midi_cfg, api: int, api_name: str, on_message: Callable,
                 on_backing: Callable | None = None) -> None:
        self.cfg, self.api, self.api_name = midi_cfg, api, api_name
        self.on_message, self.on_backing = on_message, on_backing
        self.mbk = None  # the band's input
        self.backing_name = ""
        self.on_output_lost: Callable[[], object] | None = None  # e.g. Live.all_off, run before the output closes
        self.on_input_lost: Callable[[], object] | None = None  # e.g. Live.input_lost, after the input closed
        self.on_output_back: Callable[[], object] | None = None  # e.g. Live.output_back, once it is open again
        self.min = self.mout = None
        self.in_name = self.out_name = ""
        self.in_lost = self.out_lost = False  # a port opened by name whose peer went away (see `check`)
        self._next_check = 0

    def __enter__(self) -> "MidiIO":
        try:
            self._open()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _open(self) -> None:
        c = self.cfg
        try:
            self.min = rtmidi.MidiIn(self.api, name=c.client_name, queue_size_limit=c.queue_size)
            self.mout = rtmidi.MidiOut(self.api, name=f"{c.client_name}-out")
        except rtmidi.SystemError as e:
            raise MidiBackendError(f"cannot open the {self.api_name} MIDI backend: {e}") from None
        self.min.ignore_types(sysex=True, timing=False, active_sense=True)
        self.min.set_callback(self.on_message)
        self.in_name = self._open_one(self.min, c.connect_in, c.in_port, "input")
        self.out_name = self._open_one(self.mout, c.connect_out, c.out_port, "output")
        if c.backing_port and self.on_backing is not None:
            self._open_backing(c)
        log.info("MIDI (%s): listening on %r, playing to %r%s", self.api_name, self.in_name, self.out_name,
                 f", the band on {self.backing_name!r}" if self.backing_name else "")

    def _open_backing(self, c) -> None:
        """The band's virtual input (a client of its own); a backend without virtual ports says so once and
        leadline goes on without it (midi.backing_channels still work)."""
        try:
            self.mbk = rtmidi.MidiIn(self.api, name=f"{c.client_name}-backing", queue_size_limit=c.queue_size)
        except rtmidi.SystemError as e:
            raise MidiBackendError(f"cannot open the {self.api_name} MIDI backend: {e}") from None
        self.mbk.ignore_types(sysex=True, timing=False, active_sense=True)
        self.mbk.set_callback(self.on_backing)
        try:
            self.mbk.open_virtual_port(c.backing_port)
        except (rtmidi.NoDevicesError, rtmidi.UnsupportedOperationError, NotImplementedError):
            log.warning("the %s backend has no virtual ports: no %r port for the band (set midi.backing_port: "
                        "null, and send the band on midi.backing_channels)", self.api_name, c.backing_port)
            stop_callback(self.mbk)
            self.mbk.delete()
            self.mbk = None
            return
        self.backing_name = c.backing_port

    def _open_one(self, port, connect: str | None, virtual: str, what: str) -> str:
        if connect:
            ports = port.get_ports()
            i = find_port(ports, connect, what)
            port.open_port(i, virtual)
            return ports[i]
        try:
            port.open_virtual_port(virtual)
        except (rtmidi.NoDevicesError, rtmidi.UnsupportedOperationError, NotImplementedError):
            raise MidiBackendError(f"the {self.api_name} backend has no virtual ports; set "
                                   f"midi.connect_{'in' if what == 'input' else 'out'} to a port name "
                                   "(e.g. a loopMIDI port)") from None
        return virtual

    def send(self, msg) -> None:
        if not self.out_lost:
            self.mout.send_message(msg)

    def check(self, now_ns: int) -> None:
        """Periodic upkeep from the live loop: a port opened by name that vanished or came back.

        One comparison between checks; every RECHECK_NS it lists the ports (a server round trip). A lost
        peer is said once in the log and its port closed (an output after `on_output_lost`, so leadline's
        notes are off first); the first port matching `midi.connect_in`/`connect_out` reopens it.
        """
        if now_ns < self._next_check or not (self.cfg.connect_in or self.cfg.connect_out):
            return
        self._next_check = now_ns + RECHECK_NS
        if self.cfg.connect_in and self.min is not None:
            self.in_lost = self._watch(self.min, "input", self.in_lost)
        if self.cfg.connect_out and self.mout is not None:
            self.out_lost = self._watch(self.mout, "output", self.out_lost)

    def _watch(self, port, what: str, lost: bool) -> bool:
        """One check of one side; returns whether it is lost now."""
        ports = port.get_ports()
        name = self.in_name if what == "input" else self.out_name
        want = self.cfg.connect_in if what == "input" else self.cfg.connect_out
        if not lost:
            if name in ports:
                return False
            say_gone(what, name, want)
            if what == "output" and self.on_output_lost is not None:
                self.on_output_lost()
            self._close_side(port, what)
            if what == "input" and self.on_input_lost is not None:
                self.on_input_lost()
            return True
        i = match_port(ports, want)
        if i is None:
            return True
        try:
            port.open_port(i, self.cfg.in_port if what == "input" else self.cfg.out_port)
        except rtmidi.RtMidiError as e:  # it went again between the listing and the opening: next check
            log.debug("reopening the MIDI %s failed: %s", what, e)
            self._close_side(port, what)
            return True
        if what == "input":
            self.in_name = ports[i]
        else:
            self.out_name = ports[i]
        say_back(what, ports[i])
        if what == "output" and self.on_output_back is not None:
            self.out_lost = False  # (so that what it sends is sent)
            self.on_output_back()
        return False

    def _close_side(self, port, what: str) -> None:
        """Close one port; the input's callback is stopped around it (see `close`) and set again."""
        if what == "input":
            stop_callback(port)
        try:
            port.close_port()
        finally:
            if what == "input":
                port.set_callback(self.on_message)

    def connected(self) -> bool:
        """For ports opened by name: whether the peer port still exists."""
        for port, want in ((self.min, self.cfg.connect_in), (self.mout, self.cfg.connect_out)):
            if want and port is not None and not any(want.lower() in p.lower() for p in port.get_ports()):
                return False
        return True

    def close(self) -> None:
        for port in (self.min, self.mbk):
            if port is not None:
                stop_callback(port)
        for port in (self.min, self.mbk, self.mout):
            if port is not None:
                try:
                    port.close_port()
                    port.delete()
                except Exception:  # closing must never mask the real way out
                    log.debug("closing a MIDI port failed", exc_info=True)
        self.min = self.mout = self.mbk = None


def stop_callback(port) -> None:
    """Stop a MidiIn's callbacks safely, before its port closes.

    JACK calls the callback on its process thread, which needs the GIL: a call can be in flight, waiting
    for the GIL with python-rtmidi's (func, data) tuple in hand, while `cancel_callback` drops the only
    reference to that tuple (use after free: under a note flood the daemon crashed at exit, SIGSEGV in
    the garbage collector). So the tuple is kept for good, and the sleep (which releases the GIL) lets
    the call in flight finish before the client goes.
    """
    _HELD.extend(r for r in gc.get_referents(port) if type(r) is tuple and len(r) == 2 and callable(r[0]))
    port.cancel_callback()
    time.sleep(0.01)
