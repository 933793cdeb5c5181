"""Real-port rig for tests and `leadline bench`: a private JACK server (dummy driver), jack_midi_clock, an
independent listener.

Everything here is a real JACK client:
`jackd -d dummy` runs the graph at 48 kHz / 64 frames, `jack_midi_clock` sends MIDI beat clock driven by
JACK transport (tempo set through `jack_transport` as timebase master), and `jack_midi_dump -a` timestamps
every message it receives in JACK frames, independently of leadline.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

RATE, PERIOD = 48000, 64
REPO = Path(__file__).resolve().parents[1]


class RigError(RuntimeError):
    """The rig cannot be set up (a tool missing, jackd not starting, a port that cannot be connected)."""


class RigStalled(Exception):
    """The rig itself stopped or missed cycles while something was measured, shown by its own heartbeat
    (jack_midi_clock's ticks at an independent listener, a test client's messages at that listener):
    the one outcome tests/jack report as a skip. leadline's own clients never count as the rig."""


def again_if_stalled(measure, tries: int = 2):
    """`measure()`, a whole measurement with its own clients and its own Beat, run again when the rig
    stalled during it (RigStalled), up to `tries` times: seconds of VM noise must not cost the check, and
    leadline wrong on a steady rig fails on the first steady try. The last RigStalled stands (a rig skip)."""
    for k in range(tries):
        try:
            return measure()
        except RigStalled:
            if k == tries - 1:
                raise


def rig_wait(pred, timeout: float, what: str, poll: float = 0.01):
    """`wait_for` on the rig's own signals (clock ticks, a marker through the rig alone): when they do not
    come, the rig stalled."""
    try:
        return wait_for(pred, timeout, what, poll)
    except TimeoutError as e:
        raise RigStalled(str(e)) from None


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise RigError(f"{tool} is not installed: `make test` installs jackd2 and jack-midi-clock "
                       "(apt-get install jackd2 jack-midi-clock)")
    return path


def wait_for(pred, timeout: float, what: str, poll: float = 0.01):
    """Poll `pred` until it returns something truthy, or raise after `timeout` seconds."""
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > end:
            raise TimeoutError(f"timed out after {timeout:.1f} s waiting for {what}")
        time.sleep(poll)


class JackServer:
    """A private jackd with the dummy driver; clients find it through the environment it sets."""

    def __init__(self, name: str | None = None, log: str | os.PathLike | None = None) -> None:
        self.name = name or f"leadline-test-{os.getpid()}"
        self.proc: subprocess.Popen | None = None
        self.log = log

    @property
    def env(self) -> dict:
        return dict(os.environ, JACK_DEFAULT_SERVER=self.name, JACK_NO_START_SERVER="1")

    def start(self) -> "JackServer":
        need("jackd")
        self._env_before = os.environ.get("JACK_DEFAULT_SERVER")  # put back by `stop` (a bench in a test)
        os.environ["JACK_DEFAULT_SERVER"] = self.name
        os.environ["JACK_NO_START_SERVER"] = "1"
        out = open(self.log, "w") if self.log else subprocess.DEVNULL
        # -R: real-time scheduling (as root; jackd goes on without it where it is refused). Without it, on
        # a 2-core VM, clients miss ~1 cycle in 50 and the dummy driver re-anchors after each miss, so its
        # clock ran 1-8% slow in wall time (jack_midi_clock at 160 BPM arrived at 146-159 BPM); with it,
        # 160.00 BPM and a few misses a run.
        self.proc = subprocess.Popen(["jackd", "-n", self.name, os.environ.get("LEADLINE_JACKD_RT", "-R"),
                                      "-d", "dummy", "-r", str(RATE),
                                      "-p", str(PERIOD)], stdout=out, stderr=subprocess.STDOUT, env=self.env)
        try:
            wait_for(lambda: self.proc.poll() is not None or self.lsp() is not None, 10, "jackd to start")
            if self.proc.poll() is not None:
                raise RigError(f"jackd exited with {self.proc.returncode} (JACK keeps at most 8 servers "
                               "registered; a killed jackd keeps its entry: stop them with SIGTERM)")
        except BaseException:
            self.stop()  # (and JACK_DEFAULT_SERVER back to what it was)
            raise
        return self

    def late_clients(self) -> dict[str, int]:
        """From jackd's log (when it has one): client name -> cycles it did not finish in time (xruns;
        on the dummy driver each one also loses wall-clock time, and a late client's MIDI can be lost)."""
        if not self.log or not os.path.exists(self.log):
            return {}
        late: dict[str, int] = {}
        with open(self.log, "rb") as f:
            for m in re.finditer(rb"client = (\S+) was not finished", f.read()):
                name = m.group(1).decode(errors="replace")
                late[name] = late.get(name, 0) + 1
        return late

    def lsp(self) -> list[str] | None:
        r = subprocess.run(["jack_lsp"], capture_output=True, text=True, env=self.env)
        return r.stdout.splitlines() if r.returncode == 0 and "system:" in r.stdout else None

    def connect(self, src: str, dst: str) -> None:
        r = subprocess.run(["jack_connect", src, dst], capture_output=True, text=True, env=self.env)
        if r.returncode != 0 and not self.connected(src, dst):  # ("already connected?": it is, then)
            raise RigError(f"jack_connect {src} {dst}: {r.stderr.strip()}")

    def connected(self, src: str, dst: str) -> bool:
        r = subprocess.run(["jack_lsp", "-c", src], capture_output=True, text=True, env=self.env)
        return any(line.strip() == dst for line in r.stdout.splitlines()[1:])

    def disconnect(self, src: str, dst: str) -> None:
        r = subprocess.run(["jack_disconnect", src, dst], capture_output=True, text=True, env=self.env)
        if r.returncode != 0:
            raise RigError(f"jack_disconnect {src} {dst}: {r.stderr.strip()}")

    def wait_port(self, port: str, timeout: float = 10) -> None:
        wait_for(lambda: port in (self.lsp() or []), timeout, f"JACK port {port!r}")

    def stop(self) -> None:
        if os.environ.get("JACK_DEFAULT_SERVER") == self.name:
            if getattr(self, "_env_before", None) is None:
                os.environ.pop("JACK_DEFAULT_SERVER", None)
            else:
                os.environ["JACK_DEFAULT_SERVER"] = self._env_before
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:  # jackd closes its clients first; a killed one keeps its slot (8 servers at most)
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Clock:
    """jack_midi_clock following JACK transport, with jack_transport as timebase master for the tempo."""

    PORT = "jack_midi_clock:mclk_out"

    def __init__(self, server: JackServer, bpm: float = 120.0, jitter: int = 0) -> None:
        need("jack_midi_clock")
        need("jack_transport")
        self.server = server
        self.transport = subprocess.Popen(["jack_transport"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL, text=True, env=server.env)
        self._cmd("stop")
        self._cmd("locate 0")
        self._cmd("master")
        self.tempo(bpm)
        args = ["jack_midi_clock"] + (["-J", str(jitter)] if jitter else [])
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=server.env)
        server.wait_port(self.PORT)

    def _cmd(self, text: str) -> None:
        self.transport.stdin.write(text + "\n")
        self.transport.stdin.flush()

    def tempo(self, bpm: float) -> None:
        self._cmd(f"tempo {bpm}")

    def start(self) -> None:
        self._cmd("locate 0")
        self._cmd("play")

    def stop(self) -> None:
        self._cmd("stop")

    def close(self) -> None:
        for p in (self.proc, self.transport):
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(3)
                except subprocess.TimeoutExpired:
                    p.kill()


_LINE = re.compile(r"^\s*(\d+):\s*([0-9a-f]{2}(?: [0-9a-f]{2})*)")


def _msg_len(status: int) -> int:
    if status < 0xF0:
        return 2 if status & 0xE0 == 0xC0 else 3
    return {0xF2: 3, 0xF1: 2, 0xF3: 2}.get(status, 1)


class Listener:
    """jack_midi_dump as an independent listener: every message with its absolute JACK frame time."""

    def __init__(self, server: JackServer, name: str = "listener") -> None:
        need("jack_midi_dump")
        self.name, self.server = name, server
        self.events: list[tuple[int, bytes]] = []
        self.raw: list[str] = []
        self.proc = subprocess.Popen(["stdbuf", "-oL", "jack_midi_dump", "-a", name], stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True, env=server.env)
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        server.wait_port(f"{name}:input")

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.raw.append(line)
            m = _LINE.match(line)
            if m:  # "frame: 90 40 64 note on ..." -> the message's own bytes
                msg = bytes.fromhex(m.group(2))
                self.events.append((int(m.group(1)), msg[:_msg_len(msg[0])]))

    def listen_to(self, port: str) -> None:
        self.server.connect(port, f"{self.name}:input")

    def notes(self) -> list[tuple[int, bytes]]:
        return [(f, m) for f, m in list(self.events) if m and 0x80 <= m[0] < 0xB0]

    def ticks(self) -> list[int]:
        return [f for f, m in list(self.events) if m == b"\xf8"]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(3)


TICK_TOLERANCE = 8  # frames: jack_midi_clock's ticks on a steady dummy graph are exact (90 BPM: 1333/1334)
MARK = (0xB1, 119, 1)  # a controller leadline ignores, sent by a test player to mark a moment or probe the rig


class Beat:
    """The rig's heartbeat over one measurement, independent of leadline: jack_midi_clock's ticks at a
    listener and, when a test player is given, that everything it sent reached the listener too.

    Taken when the measurement starts; `stalled` says afterwards whether the rig ran: the ticks' frames
    cover the wall time that passed (a stalled graph delivers none, and its frames stand still), and, with
    `exact`, at regular frame intervals (on the dummy driver a missed cycle moves jack_midi_clock's ticks
    by whole periods: 686, 622, 1372 frames where 750 were due). With `clock=False` (the transport was
    stopped on purpose) the heartbeat is a marker sent by the player through the rig alone; `probe` is
    such a marker check for a test client the listener does not hear (`through_rig`). Every failure in
    tests/jack goes through `verdict`: RigStalled (a skip) only on that evidence, else the failure."""

    def __init__(self, lis: "Listener", player: "Player | None" = None, clock: bool = True,
                 probe=None) -> None:
        self.lis, self.player, self.clock = lis, player, clock
        self.probe = probe or (None if clock or player is None else self._marker)
        self.t0, self.n0, self.e0 = time.monotonic(), len(lis.ticks()), len(lis.events)
        self.sent0 = len(player.sent) if player is not None else 0

    def stalled(self, exact: bool = False) -> str | None:
        """Why the rig cannot be trusted over the measurement so far; None when it ran."""
        if self.clock and (why := self._ticks(exact)):
            return why
        if not self.clock and self.probe is None:
            return "no heartbeat: no clock and no test client to send a marker through the rig"
        if self.player is not None:
            heard = {m for _, m in self.lis.events[self.e0:]}
            lost = [m for m in self.player.sent[self.sent0:] if bytes(m) not in heard]
            if lost:
                return (f"{len(lost)} of the test player's {len(self.player.sent) - self.sent0} messages never "
                        f"reached the listener (first {list(lost[0])}): the python-rtmidi test client stalled")
        if self.probe is not None and not self.probe():
            return "a marker through the rig alone did not reach the listener in 3 s"
        return None

    def _ticks(self, exact: bool) -> str | None:
        wall = time.monotonic() - self.t0
        new = self.lis.ticks()[max(self.n0 - 1, 0):]
        span = (new[-1] - new[0]) / RATE if len(new) > 1 else 0.0
        if span < 0.5 * wall - 0.25:
            return (f"{len(new)} clock ticks spanning {span:.2f} s of JACK frames reached the listener in "
                    f"{wall:.2f} s: the graph stalled")
        d = np.diff(new)
        if exact and len(d):
            local = np.array([np.median(d[max(0, i - 4):i + 5]) for i in range(len(d))])
            odd = np.abs(d - local) > TICK_TOLERANCE
            if odd.any():
                return (f"the clock's ticks came {int(odd.sum())} times off their {np.median(d):.0f}-frame "
                        f"spacing ({sorted(set(d[odd].tolist()))[:6]} frames): the dummy graph missed cycles")
        return None

    def _marker(self) -> bool:
        return marker_heard(self.lis, self.player)

    def verdict(self, failure: str, exact: bool = False) -> Exception:
        """RigStalled when the heartbeat shows the rig stalled, else AssertionError(failure): raise it."""
        why = self.stalled(exact)
        if why is not None:
            return RigStalled(f"{why}; meanwhile: {failure}")
        return AssertionError(failure)

    def check(self, ok: bool, failure: str, exact: bool = True) -> None:
        """A timing or value check on leadline: its failure is a failure unless the rig stalled."""
        if not ok:
            raise self.verdict(failure, exact)

    def wait(self, pred, timeout: float, what: str, poll: float = 0.01):
        """Wait for leadline to do `what`: its silence is a failure unless the rig stalled meanwhile (with
        the marker heartbeat, `pred` is asked once more after the marker came through)."""
        try:
            return wait_for(pred, timeout, what, poll)
        except TimeoutError as e:
            err = self.verdict(f"leadline: {e}")
            if isinstance(err, AssertionError) and (v := pred()):
                return v
            raise err from None


def marker_heard(lis: "Listener", player: "Player", timeout: float = 3.0) -> bool:
    """Whether MARK sent by `player` reaches `lis` (which hears it) within `timeout` seconds."""
    n = len(lis.events)
    player.send(MARK)
    try:
        wait_for(lambda: any(m == bytes(MARK) for _, m in lis.events[n:]), timeout, "the marker")
        return True
    except TimeoutError:
        return False


def through_rig(server: JackServer, lis: "Listener", player: "Player") -> bool:
    """Whether a marker from `player` reaches `lis` through the rig alone (connected for the probe only)."""
    dst = f"{lis.name}:input"
    server.connect(player.port, dst)
    try:
        return marker_heard(lis, player)
    finally:
        server.disconnect(player.port, dst)


class Player:
    """A test client that plays notes into leadline through its own JACK MIDI port."""

    def __init__(self, server: JackServer, name: str = "player") -> None:
        import rtmidi

        self.out = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, name=name)
        self.out.open_virtual_port("out")
        self.port = f"{name}:out"
        self.sent: list[tuple[int, ...]] = []  # what `send` sent, for Beat: did the rig deliver it?
        server.wait_port(self.port)

    def send(self, msg) -> None:
        self.out.send_message(list(msg))
        self.sent.append(tuple(msg))

    def note(self, pitch: int, velocity: int = 100, channel: int = 0) -> None:
        self.send([0x90 | channel, pitch, velocity])

    def off(self, pitch: int, channel: int = 0) -> None:
        self.send([0x80 | channel, pitch, 0])

    def close(self) -> None:
        self.out.close_port()
        self.out.delete()


class Daemon:
    """`leadline serve` as a child process on the private server."""

    IN, OUT = "leadline:leadline in", "leadline:leadline out"  # leadline's own JACK client (jacknative)
    BACKING = "leadline:leadline backing"  # the band's input (midi.backing_port)

    def __init__(self, server: JackServer, model: str | Path, *settings: str, log: Path | None = None,
                 args: tuple[str, ...] = ()) -> None:
        if "midi.jack_native=false" in settings:  # python-rtmidi's clients
            self.OUT = "leadline-out:leadline out"
            self.BACKING = "leadline-backing:leadline backing"
        args = [sys.executable, "-m", "leadline.daemon.cli", "-v", "serve", "--api", "jack", "--model", str(model),
                *args]
        for s in settings:
            args += ["--set", s]
        self.log_path = log
        self.log = open(log, "w") if log else subprocess.DEVNULL
        self.proc = subprocess.Popen(args, cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT,
                                     env=server.env)
        try:  # leadline not opening its ports is leadline's failure (jack_lsp answers when the graph stalls)
            for port, timeout in ((self.OUT, 60), (self.IN, 10)):
                wait_for(lambda: self.proc.poll() is not None or port in (server.lsp() or []), timeout,
                         f"leadline serve to open {port!r}")
                if self.proc.poll() is not None:
                    raise AssertionError(f"leadline serve exited with {self.proc.returncode} before opening "
                                         f"its ports:\n{self.log_tail()}")
        except BaseException:
            self.close()
            raise

    def log_tail(self, lines: int = 12) -> str:
        if self.log_path is None:
            return "(no log)"
        self.log.flush()
        return "\n".join(Path(self.log_path).read_text(errors="replace").splitlines()[-lines:])

    def terminate(self, timeout: float = 10) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def leadline_notes(events, channel: int = 0) -> list[tuple[int, bytes]]:
    """The note messages on leadline's output channel (0-based; the tests' players use another)."""
    return [(f, m) for f, m in events if len(m) == 3 and m[0] & 0xF0 in (0x80, 0x90) and m[0] & 0x0F == channel]


def stuck_notes(events: list[tuple[int, bytes]]) -> dict:
    """(channel, pitch) -> count of note-ons without their own note-off (All Notes Off does not count)."""
    sounding: dict = {}
    for _, m in events:
        if len(m) < 3:
            continue
        kind, ch = m[0] & 0xF0, m[0] & 0x0F
        if kind == 0x90 and m[2] > 0:
            sounding[(ch, m[1])] = sounding.get((ch, m[1]), 0) + 1
        elif kind == 0x80 or (kind == 0x90 and m[2] == 0):
            if sounding.get((ch, m[1]), 0) > 0:
                sounding[(ch, m[1])] -= 1
    return {k: v for k, v in sounding.items() if v}


def bends(events, channel: int = 0) -> list[tuple[int, int]]:
    """(frame or index, value -8192..8191) of every pitch bend on `channel` (0-based)."""
    return [(f, (m[2] << 7 | m[1]) - 8192) for f, m in events if len(m) == 3 and m[0] == 0xE0 | channel]


def stuck_bend(events, channel: int = 0) -> tuple[int, int]:
    """(the last pitch bend's value, the last modulation's value) on `channel`: (0, 0) when the channel is
    left centred (or nothing was sent)."""
    bend = next(((m[2] << 7 | m[1]) - 8192 for _, m in reversed(events) if len(m) == 3 and m[0] == 0xE0 | channel), 0)
    mod = next((m[2] for _, m in reversed(events) if len(m) == 3 and m[0] == 0xB0 | channel and m[1] == 1), 0)
    return bend, mod


def centred_after(events, i: int, channel: int = 0) -> None:
    """A stop path's All Notes Off at `events[i]`: the first pitch bend and modulation on `channel` after it
    (the stop path's own: the bends of the notes it cut were dropped) are the centre and 0."""
    after = events[i + 1:]
    first = next(((f, m) for f, m in after if len(m) == 3 and m[0] == 0xE0 | channel), None)
    assert first is not None, f"no pitch bend centre after the All Notes Off at {events[i][0]}"
    assert first[1] == bytes((0xE0 | channel, 0, 64)), f"pitch bend {first[1].hex(' ')} after the All Notes Off"
    mod = next((m for _, m in after if len(m) == 3 and m[0] == 0xB0 | channel and m[1] == 1), None)
    assert mod is not None and mod[2] == 0, f"modulation {mod!r} after the All Notes Off at {events[i][0]}"
