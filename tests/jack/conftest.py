"""Fixtures for the real-port tests: one private JACK server (dummy driver) for the whole session.

A rig skip means what it says: only `RigStalled` becomes a skip, and `leadline.bench.jackrig` raises it only with
evidence from the rig's own heartbeat (jack_midi_clock's ticks at an independent listener, a test
client's messages at that listener, a marker through the rig alone) that the rig stopped or missed cycles
during the measurement. leadline's own silence, lateness or wrong output fails, whatever else happened:
a plain timeout, a wrong value, a port leadline never opened. More than MAX_RIG_SKIPS rig skips in one
run fail the run: a rig that stalls that often measures nothing.
"""
import itertools
from pathlib import Path

import pytest

from leadline.bench.jackrig import Beat, Clock, Daemon, JackServer, Listener, Player, RigStalled

MAX_RIG_SKIPS = 2
RIG_SKIPS: list[str] = []


@pytest.fixture(scope="session")
def jack(tmp_path_factory):
    # a missing jackd fails here: `make test` installs it; its log counts late clients (xruns)
    server = JackServer(log=tmp_path_factory.mktemp("jackd") / "jackd.log").start()
    yield server
    server.stop()


MODEL = Path(__file__).resolve().parents[2] / "models" / "default"
_n = itertools.count()


class Parts:
    """One test's rig: clock, listener (hearing the clock, the player and leadline), player, daemon."""

    clock = daemon = None

    def __init__(self, lis: Listener, player: Player) -> None:
        self.lis, self.player = lis, player
        self.heart = lis  # the listener whose clock ticks are the heartbeat

    def beat(self) -> Beat:
        """The rig's heartbeat from now on (the player's messages must reach the listener too)."""
        return Beat(self.heart, self.player)


@pytest.fixture
def rig(jack, tmp_path):
    """`rig(bpm, *settings, clock=True, args=())` starts jack_midi_clock (tempo `bpm`, transport stopped) and
    `leadline serve` (the shipped model, sampling.seed=1, more command-line `args`) wired to a player and an
    independent listener.

    The listener hears the clock, the player and leadline's output: the clock's ticks and the player's
    messages there are the rig's heartbeat (`parts.beat()`). With clock=False leadline runs on its internal
    clock and a second listener (`parts.heart`) hears jack_midi_clock, rolling for it alone, and the player.
    Clients get fresh names in each test: a client of the previous test may still be closing."""
    k = next(_n)
    made = []

    def keep(part):
        made.append(part)
        return part

    try:  # (a listener left running holds its 512 MB buffer for good: everything made is closed)
        lis = keep(Listener(jack, f"listener{k}"))
        parts = Parts(lis, keep(Player(jack, f"player{k}")))
        lis.listen_to(parts.player.port)

        def start(bpm=120.0, *settings, clock=True, args=()):
            parts.clock = keep(Clock(jack, bpm))
            if not clock:
                parts.heart = keep(Listener(jack, f"heart{k}"))
                parts.heart.listen_to(parts.player.port)
            parts.heart.listen_to(Clock.PORT)
            parts.daemon = keep(Daemon(jack, MODEL, "sampling.seed=1", *settings, log=tmp_path / "daemon.log",
                                       args=args))
            d = parts.daemon  # (its ports: python-rtmidi's clients with midi.jack_native=false)
            if clock:
                jack.connect(Clock.PORT, d.IN)
            else:
                parts.clock.start()
            jack.connect(parts.player.port, d.IN)
            lis.listen_to(d.OUT)
            return parts

        yield start
    finally:
        for part in reversed(made):
            part.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    outcome = yield
    exc = outcome.excinfo
    if exc is not None and issubclass(exc[0], RigStalled):
        RIG_SKIPS.append(f"{item.nodeid}: {exc[1]}")
        outcome.force_exception(pytest.skip.Exception(f"JACK rig stalled: {str(exc[1]).splitlines()[0]}",
                                                      _use_item_location=True))


def pytest_sessionfinish(session, exitstatus):
    if len(RIG_SKIPS) > MAX_RIG_SKIPS and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter):
    if RIG_SKIPS:
        tr = terminalreporter
        verdict = "FAILED: more than" if len(RIG_SKIPS) > MAX_RIG_SKIPS else "within the limit of"
        tr.write_sep("=", f"{len(RIG_SKIPS)} JACK rig skips ({verdict} {MAX_RIG_SKIPS})")
        for line in RIG_SKIPS:
            tr.write_line(line)
