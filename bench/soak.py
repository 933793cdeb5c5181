"""Soak: `leadline serve` under fuzzed MIDI input through real JACK ports, for as long as asked.

    python -m leadline.bench.soak --seconds 600 [--model models/default] [--seed 0]

A private JACK server (dummy driver), jack_midi_clock at 120 BPM, a player client that fuzzes the
daemon's input (random bytes, truncated messages, huge and unterminated SysEx, real-time bytes in
between, note floods, clock at absurd rates, out-of-range values) and jack_midi_dump listening to its
output. Every cycle ends with a clean check: Start, a phrase in respond mode, leadline answers, Stop,
no note left sounding. Prints messages sent, refused by the sender (python-rtmidi), dropped by the
daemon (its input queue, from its status line), peak RSS, stuck notes and the daemon's exit status;
exits 1 when a check failed. `Fuzzer` and the checks are what tests/jack/test_fuzz.py runs for ~20 s.
"""
from __future__ import annotations

import argparse
import random
import re
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

from leadline.bench.jackrig import (_LINE, Beat, Clock, Daemon, JackServer, Listener, Player,
                            RigStalled, rig_wait, stuck_notes, through_rig, wait_for)

PLAYER_CH = 1  # the player plays on MIDI channel 2; leadline answers on channel 1
ENABLE_CC, MODE_CC, PANIC_CC = 23, 22, 24
ALL_NOTES_OFF = bytes((0xB0, 123, 0))  # leadline's, on its channel 1


class Fuzzer:
    """Sends fuzzed MIDI through a Player's port with a fixed seed; counts what the sending side refuses."""

    PHASES = ("junk", "truncated", "sysex", "realtime", "flood", "range", "clock_fast", "clock_slow")

    def __init__(self, player: Player, seed: int = 0) -> None:
        self.out, self.rng = player.out, random.Random(seed)
        self.sent = self.refused = 0
        self.rates: dict[str, float] = {}  # messages/s reached per phase (the last run of it)

    def send(self, msg: list[int]) -> None:
        try:
            self.out.send_message(msg)
            self.sent += 1
        except (ValueError, RuntimeError, OSError):  # rtmidi.RtMidiError is an OSError
            self.refused += 1

    def paced(self, name: str, make, rate: float, seconds: float) -> None:
        """Send `make()` results at `rate` a second for `seconds` (bursts catch up after a late wake-up)."""
        t0, n = time.perf_counter(), 0
        while (t := time.perf_counter() - t0) < seconds:
            while n < rate * t:
                self.send(make())
                n += 1
            time.sleep(0.0005)
        self.rates[name] = n / (time.perf_counter() - t0)

    def phase(self, name: str, seconds: float) -> None:
        r = self.rng
        if name == "junk":  # any bytes, 1..6 long (python-rtmidi refuses > 3 bytes unless SysEx)
            self.paced(name, lambda: [r.randrange(256) for _ in range(r.randint(1, 6))], 3000, seconds)
        elif name == "truncated":
            self.paced(name, lambda: [r.choice([r.randrange(0x80, 0xF0), 0xF1, 0xF2, 0xF3])] +
                       [r.randrange(128)] * r.randint(0, 1), 3000, seconds)
        elif name == "sysex":
            self.paced(name, self._sysex, 40, seconds)
        elif name == "realtime":
            self.paced(name, lambda: [r.choice([0xF8, 0xFA, 0xFB, 0xFC, 0xFE, 0xFF])] if r.random() < 0.5
                       else self._note(), 4000, seconds)
        elif name == "flood":
            self.paced(name, self._note, 12000, seconds)
        elif name == "range":
            self.paced(name, self._out_of_range, 3000, seconds)
        elif name == "clock_fast":  # ticks 0.1 ms apart
            self.paced(name, lambda: [0xF8], 10000, seconds)
        elif name == "clock_slow":  # ticks 1 s apart
            self.paced(name, lambda: [0xF8], 1, seconds)
        else:
            raise ValueError(f"unknown fuzz phase {name!r}")

    def _note(self) -> list[int]:
        r = self.rng
        return [r.choice([0x80, 0x90]) | r.randrange(16), r.randrange(128), r.randrange(128)]

    def _sysex(self) -> list[int]:
        r = self.rng
        body = [r.randrange(128) for _ in range(r.choice([1, 10, 300, 4000, 20000, 70000]))]
        kind = r.randrange(4)
        if kind == 0:
            return [0xF0, *body, 0xF7]  # well-formed (huge ones do not fit a JACK period)
        if kind == 1:
            return [0xF0, *body]  # unterminated
        if kind == 2:
            return [0xF0, 0x90, 60, 100, *body[:8], 0xF7]  # a status byte inside
        return [0xF7]  # a lone end of SysEx

    def _out_of_range(self) -> list[int]:
        r = self.rng
        k = r.randrange(6)
        if k == 0:  # data bytes >= 0x80 in a note
            return [0x90 | r.randrange(16), r.randrange(256), r.randrange(128, 256)]
        if k == 1:
            return [0x80 | r.randrange(16), r.randrange(128, 256), r.randrange(256)]
        if k == 2:  # any controller, any value: mode, enable, panic, temperature, channel mode messages
            return [0xB0 | r.randrange(16), r.choice([21, 22, 23, 24, 120, 121, 122, 123, 124, 127,
                                                      r.randrange(256)]), r.randrange(256)]
        if k == 3:  # song position beyond the song, with bad data bytes too
            return [0xF2, r.randrange(256), r.randrange(256)]
        if k == 4:
            return [r.choice([0xA0, 0xD0, 0xE0, 0xC0]) | r.randrange(16), r.randrange(256), r.randrange(256)]
        return [r.randrange(0xF4, 0xF8)]  # undefined system common / tune request

    def run(self, seconds: float, order: list[tuple[str, float]] | None = None) -> None:
        """The phases in `order` ((name, seconds) pairs), else random ones until `seconds` have passed."""
        if order:
            for name, s in order:
                self.phase(name, s)
            return
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self.phase(self.rng.choice(self.PHASES), min(left, self.rng.uniform(0.5, 3.0)))


# --- checks ----------------------------------------------------------------------------------------------

def _expected_len(status: int) -> int:
    if status < 0xF0:
        return 2 if status & 0xE0 == 0xC0 else 3
    return {0xF1: 2, 0xF2: 3, 0xF3: 2}.get(status, 1)


def bad_messages(raw_lines: list[str]) -> list[str]:
    """Lines of jack_midi_dump output whose message is not well-formed MIDI (SysEx counts as bad:
    leadline never sends it)."""
    bad = []
    for line in raw_lines:
        m = _LINE.match(line)
        if not m:
            continue
        b = bytes.fromhex(m.group(2))
        if (b[0] < 0x80 or b[0] in (0xF0, 0xF7) or len(b) != _expected_len(b[0])
                or any(x >= 0x80 for x in b[1:])):
            bad.append(line.rstrip())
    return bad


def rss_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, in kB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def dropped(log_text: str) -> int | None:
    """The daemon's input-queue drop count from its last status line."""
    counts = re.findall(r"dropped (\d+)", log_text)
    return int(counts[-1]) if counts else None


def leadline_note_ons(events, since: int = 0) -> list[tuple[int, int]]:
    return [(f, m[1]) for f, m in events[since:] if len(m) == 3 and m[0] == 0x90 and m[2] > 0]


def clean_check(lis: Listener, player: Player, server: JackServer, timeout: float = 15) -> int:
    """Enable + respond mode by CC, Start, a phrase: leadline answers; Stop: nothing left sounding.

    Start and Stop come from the player's port while jack_midi_clock keeps ticking (restarting JACK
    transport is not reliable: after stop, locate 0, play, jack_midi_clock sent Song Position but no
    Start or Continue here).

    Returns the number of leadline note-ons in the answer. A step leadline fails raises AssertionError;
    RigStalled only when the clock's ticks at the listener, or a marker from the player through the rig
    alone, show the rig stalled. It starts with an End of SysEx: RtMidi's JACK input (python-rtmidi
    1.5.8) takes every event after an unterminated SysEx as its continuation and swallows it until one
    ends in 0xF7 (see tests/jack/test_fuzz.py::test_unterminated_sysex_leaves_the_jack_input_deaf)."""
    beat = Beat(lis, probe=lambda: through_rig(server, lis, player))
    player.send([0xF7])
    for cc, value in ((ENABLE_CC, 127), (MODE_CC, 0)):
        player.send([0xB0 | PLAYER_CH, cc, value])
    player.send([0xFA])  # Start from the player's port: jack_midi_clock keeps its ticks coming
    n = len(lis.ticks())
    rig_wait(lambda: len(lis.ticks()) > n + 24, timeout, "a beat of clock after Start")
    since = len(lis.events)
    for p in (64, 67, 69, 71):
        player.note(p, 100, channel=PLAYER_CH)
        time.sleep(0.12)
        player.off(p, channel=PLAYER_CH)
    answer = beat.wait(lambda: leadline_note_ons(lis.events, since), timeout, "an answer after the fuzz")
    player.send([0xFC])
    beat.wait(lambda: not stuck_notes(lis.events), 3, "every note-on's note-off after Stop")
    return len(answer)


def heartbeat(lis: Listener, timeout: float = 4.0) -> bool:
    """Whether the JACK graph runs: a new jack_midi_clock tick reaches the listener within `timeout` s."""
    n = len(lis.ticks())
    try:
        wait_for(lambda: len(lis.ticks()) > n, timeout, "a clock tick at the listener")
        return True
    except TimeoutError:
        return False


def plays(lis: Listener, player: Player, timeout: float = 6.0) -> bool:
    """Whether the path player -> daemon -> listener runs, in duet mode: after a Start leadline plays."""
    n = len(lis.events)
    player.send([0xFA])
    try:
        wait_for(lambda: leadline_note_ons(lis.events, n), timeout, "a duet note")
        return True
    except TimeoutError:
        return False


def answers_panic(lis: Listener, player: Player, timeout: float = 4.0) -> bool:
    """Whether the path player -> daemon -> listener runs: a panic CC makes leadline send All Notes Off
    (a fresh daemon on its internal clock: its first stop path sends one)."""
    n = len(lis.events)
    player.send([0xB0 | PLAYER_CH, PANIC_CC, 127])
    try:
        wait_for(lambda: any(m == ALL_NOTES_OFF for _, m in lis.events[n:]), timeout, "All Notes Off")
        return True
    except TimeoutError:
        return False


def start_flowing(make, close, lis: Listener, probe=None, through=None, tries: int = 3):
    """`make()` python-rtmidi clients until they and the graph run; what make returned.

    Here a python-rtmidi client's start stops the whole JACK graph in about a third of the starts (all
    clients wait to be triggered), or that client alone never runs; C clients alone never did (see the
    report of tests/jack/test_storms.py). Closing the new clients and starting them again recovers it.
    jack_midi_clock's ticks at the listener tell the graph runs, `through(made)` that the new test client
    delivers (a marker through the rig alone), `probe(made)` that leadline responds. leadline failing
    its probe while the graph and the new client both run is leadline's failure (AssertionError), not
    the rig's; `tries` stalls of the rig in a row raise RigStalled."""
    for _ in range(tries):
        made = make()
        if heartbeat(lis) and (through is None or through(made)):
            if probe is None or probe(made):
                return made
            if heartbeat(lis) and (through is None or through(made)):
                close(made)
                raise AssertionError("leadline did not respond to its start-up probe while the JACK graph "
                                     "and the test client ran")
        close(made)  # (a killed daemon leaves its notes unreleased at the listener: forget what it heard)
        rig_wait(lambda: heartbeat(lis, 1.0), 10, "the JACK graph to run again")
        del lis.events[:], lis.raw[:]
    raise RigStalled(f"the JACK graph or a new python-rtmidi client stopped, {tries} times in a row")


def close_all(parts) -> None:
    for part in reversed([p for p in parts if p is not None]):
        try:
            part.close()
        except Exception as e:  # keep closing the rest
            print(f"closing {type(part).__name__}: {e}", file=sys.stderr)


class Rig:
    """Server (or the caller's), clock, listener, fuzzing player and a daemon in duet mode, wired.

    jack_midi_clock rolls first and is the listener's heartbeat; the player and the daemon start until
    the graph runs and leadline plays after the player's Start (`start_flowing`, `plays`)."""

    def __init__(self, model, log: Path, server: JackServer | None = None, *settings: str,
                 prefix: str = "soak") -> None:
        self.own_server = server is None
        self.server = server or JackServer(name=f"leadline-soak-{int(time.time())}").start()
        self.clock = self.lis = self.player = self.daemon = None
        try:
            self.clock = Clock(self.server, 120.0)
            self.lis = Listener(self.server, name=f"{prefix}-listener")
            self.lis.listen_to(Clock.PORT)
            self.clock.start()
            rig_wait(lambda: heartbeat(self.lis, 1.0), 10, "jack_midi_clock's ticks at the listener")
            self.log = log
            self.player, self.daemon = start_flowing(
                lambda: self._clients(model, prefix, settings), close_all, self.lis,
                probe=lambda pd: plays(self.lis, pd[0]), through=lambda pd: through_rig(self.server, self.lis, pd[0]))
        except BaseException:
            self.close()
            raise
        self.rss0 = rss_kb(self.daemon.proc.pid)["VmRSS"]

    def _clients(self, model, prefix: str, settings) -> tuple[Player, Daemon]:
        player = Player(self.server, name=f"{prefix}-player")
        daemon = Daemon(self.server, model, "sampling.seed=1", "respond.after_beats=0.5", "respond.bars=1",
                        *settings, log=self.log)
        self.server.connect(Clock.PORT, daemon.IN)
        self.server.connect(player.port, daemon.IN)
        self.lis.listen_to(daemon.OUT)  # (python-rtmidi's output has a client of its own: midi.jack_native=false)
        return player, daemon

    def close(self) -> None:
        close_all([self.clock, self.lis, self.player, self.daemon])
        if self.own_server:
            self.server.stop()


def soak(seconds: float, model: Path, seed: int = 0, cycle_s: float = 30.0) -> dict:
    """Fuzz for `seconds` in cycles of `cycle_s`, each ending in `clean_check`; the figures."""
    log = Path(tempfile.mkdtemp(prefix="leadline-soak-")) / "daemon.log"  # kept: printed at the end
    rig = Rig(model, log, None, "mode=duet")
    fz = Fuzzer(rig.player, seed)
    res = {"cycles": 0, "failed_checks": [], "peak_rss_mb": 0.0, "log": str(log)}
    try:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            rig.player.send([0xB0 | PLAYER_CH, MODE_CC, 127])  # duet: leadline plays through the fuzz
            rig.player.send([0xFA])
            fz.run(min(left, cycle_s))
            res["cycles"] += 1
            t = time.strftime("%H:%M:%S")
            try:
                clean_check(rig.lis, rig.player, rig.server)
            except (AssertionError, RigStalled) as e:
                res["failed_checks"].append(f"cycle {res['cycles']} (clean check from {t}): {e}")
            if rig.daemon.proc.poll() is not None:
                res["failed_checks"].append(f"the daemon exited with {rig.daemon.proc.returncode}")
                break
            res["peak_rss_mb"] = rss_kb(rig.daemon.proc.pid)["VmHWM"] / 1024
            print(f"cycle {res['cycles']}: sent {fz.sent} refused {fz.refused} "
                  f"peak RSS {res['peak_rss_mb']:.1f} MB", flush=True)
        alive = rig.daemon.proc.poll() is None
        if alive:
            res["peak_rss_mb"] = rss_kb(rig.daemon.proc.pid)["VmHWM"] / 1024
        res["exit_status"] = rig.daemon.terminate() if alive else rig.daemon.proc.returncode
        res.update(sent=fz.sent, refused=fz.refused, rates={k: round(v) for k, v in fz.rates.items()},
                   dropped=dropped(log.read_text()), stuck=stuck_notes(rig.lis.events),
                   bad_output=bad_messages(rig.lis.raw)[:5], listener_alive=rig.lis.proc.poll() is None,
                   start_rss_mb=rig.rss0 / 1024)
    finally:
        rig.close()
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--model", type=Path, default=REPO / "models" / "default")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cycle", type=float, default=30.0, help="seconds of fuzz between clean checks")
    args = ap.parse_args(argv)
    r = soak(args.seconds, args.model, args.seed, args.cycle)
    print(f"messages sent: {r['sent']}  refused by the sender: {r['refused']}  "
          f"dropped by the daemon: {r['dropped']}")
    print(f"rates per phase (msg/s): {r['rates']}")
    print(f"RSS: {r['start_rss_mb']:.1f} MB at start, peak {r['peak_rss_mb']:.1f} MB")
    print(f"stuck notes: {r['stuck'] or 'none'}  malformed output: {r['bad_output'] or 'none'}  "
          f"listener alive: {r['listener_alive']}")
    print(f"clean checks: {r['cycles'] - len(r['failed_checks'])}/{r['cycles']} passed "
          f"{r['failed_checks'] or ''}")
    print(f"daemon exit status: {r['exit_status']}  (its log: {r['log']})")
    ok = (not r["failed_checks"] and not r["stuck"] and not r["bad_output"] and r["listener_alive"]
          and r["exit_status"] == 0)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
