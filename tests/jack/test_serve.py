"""`leadline serve` through real JACK ports: clock following, respond, interrupt, trade, stop paths.

A private JACK server (dummy driver, 48 kHz, 64 frames), `jack_midi_clock` as the clock source, a test
player client, and `jack_midi_dump` as the independent listener that timestamps everything in frames.
Timing assertions allow one JACK period of slack; the timing targets are measured by `leadline bench`.
"""
from __future__ import annotations

import bisect
import itertools
import time
from pathlib import Path

import numpy as np
import pytest

from daemon.jackrig import PERIOD, RATE, Clock, Daemon, Listener, Player, stuck_notes, wait_for

SLACK = PERIOD + 10  # frames: one period, plus the listener's own sub-period rounding
# A note sent ahead lands at the start of its tick's JACK cycle: up to PERIOD - 1 frames before the tick.
EARLY, LATE = 2 * PERIOD, PERIOD  # ... with one period of slack either way


MODEL = Path(__file__).resolve().parents[2] / "models" / "default"
_n = itertools.count()


@pytest.fixture
def rig(jack, tmp_path):
    """Clock, listener and player on the private server; the daemon (the shipped model) starts in each test.

    Clients get fresh names in every test: a client of the previous test may still be closing."""
    k = next(_n)
    parts = {"clock": None, "listener": None, "player": None, "daemon": None}
    try:
        parts["listener"] = Listener(jack, f"listener{k}")
        parts["player"] = Player(jack, f"player{k}")
    except BaseException:  # (a listener left running holds its 512 MB buffer for good)
        if parts["listener"] is not None:
            parts["listener"].close()
        raise

    def start(bpm=120.0, *settings, clock=True):
        if clock:
            parts["clock"] = Clock(jack, bpm)
            parts["listener"].listen_to(Clock.PORT)
        parts["daemon"] = Daemon(jack, MODEL, "sampling.seed=1", *settings,
                                 log=tmp_path / "daemon.log")
        if clock:
            jack.connect(Clock.PORT, Daemon.IN)
        jack.connect(parts["player"].port, Daemon.IN)
        parts["listener"].listen_to(Daemon.OUT)
        return parts

    try:
        yield start
    finally:
        for key in ("daemon", "clock", "player", "listener"):
            if parts[key] is not None:
                parts[key].close()


def note_ons(listener, channel: int = 0) -> list[tuple[int, int]]:
    """(frame, pitch) of the note-ons on `channel` (0: leadline's output channel 1; the player uses 2)."""
    return [(f, m[1]) for f, m in listener.notes() if m[0] == 0x90 | channel and m[2] > 0]


def play_phrase(player, pitches=(64, 67, 69, 71), gap_s=0.12):
    for p in pitches:
        player.note(p, 100, channel=1)
        time.sleep(gap_s)
        player.off(p, channel=1)


def test_respond_answers_after_the_gap_on_the_clock_grid(rig, jack):
    parts = rig(120.0, "respond.after_beats=1", "respond.bars=1")
    clock, lis, player = parts["clock"], parts["listener"], parts["player"]
    lis.listen_to(player.port)
    before = jack.late_clients()
    clock.start()
    wait_for(lambda: len(lis.ticks()) > 24, 10, "clock ticks at the listener")
    play_phrase(player)
    answer = wait_for(lambda: note_ons(lis), 30, "leadline's answer")
    last_off = max(f for f, m in lis.notes() if m[0] == 0x81)
    beat = RATE * 60 // 120
    gap = answer[0][0] - last_off
    # the note-off is put on the nearest tick (up to half a tick early), then a beat of silence, then a beat
    if not beat - beat / 48 - SLACK <= gap <= 2 * beat + SLACK:  # (missed cycles move the ticks by periods)
        jack.steady_since(before, limit=0)
    assert beat - beat / 48 - SLACK <= gap <= 2 * beat + SLACK, f"answer {gap / beat:.2f} beats after the player stopped"
    wait_for(lambda: len(note_ons(lis)) >= 3, 30, "more of the answer")
    time.sleep(0.1)  # the ticks after the last note
    ticks = lis.ticks()
    for frame, _ in note_ons(lis):
        i = bisect.bisect_left(ticks, frame)
        err = min((frame - ticks[j] for j in (i - 1, i) if 0 <= j < len(ticks)), key=abs)
        if not -EARLY <= err <= LATE:  # missed cycles move jack_midi_clock's ticks by whole periods
            jack.steady_since(before, limit=0)
        assert -EARLY <= err <= LATE, f"note at frame {frame} is {err} frames from the nearest tick"


def test_player_interrupts_and_stop_leaves_no_note_sounding(rig):
    parts = rig(120.0, "respond.after_beats=0.5", "respond.bars=4")
    clock, lis, player = parts["clock"], parts["listener"], parts["player"]
    clock.start()
    wait_for(lambda: len(lis.ticks()) > 12, 10, "clock ticks")
    play_phrase(player, (60, 62))
    wait_for(lambda: len(note_ons(lis)) >= 2, 10, "leadline's answer")
    player.note(65, 90, channel=1)  # the player comes back in
    n_at_interrupt = len(note_ons(lis))
    wait_for(lambda: not stuck_notes(lis.events), 2, "leadline to release its notes after the interrupt")
    time.sleep(0.3)
    assert len(note_ons(lis)) <= n_at_interrupt + 1  # at most one note already in flight
    player.off(65, channel=1)
    wait_for(lambda: len(note_ons(lis)) > n_at_interrupt + 1, 10, "a new answer")
    clock.stop()
    wait_for(lambda: any(m == b"\xfc" for _, m in lis.events), 5, "Stop at the listener")
    wait_for(lambda: not stuck_notes(lis.events), 2, "every note-on to have its note-off after Stop")
    assert parts["daemon"].terminate() == 0


def test_sigterm_mid_phrase_exits_0_with_every_note_released(rig):
    parts = rig(120.0, "mode=duet")
    clock, lis = parts["clock"], parts["listener"]
    clock.start()
    wait_for(lambda: len(note_ons(lis)) >= 3, 30, "duet notes")
    assert parts["daemon"].terminate() == 0
    wait_for(lambda: not stuck_notes(lis.events), 2, "note-offs after SIGTERM")
    assert any(m[:2] == b"\xb0\x7b" for _, m in lis.events)  # All Notes Off on channel 1


def test_trade_plays_only_in_leadlines_turns(rig, jack):
    parts = rig(160.0, "mode=trade", "trade.bars=1")
    clock, lis = parts["clock"], parts["listener"]
    before = jack.late_clients()
    clock.start()
    bar = 4 * 24
    wait_for(lambda: len(lis.ticks()) > 4 * bar + 10, 40, "four bars of clock")
    clock.stop()
    ticks = lis.ticks()
    ons = note_ons(lis)
    assert ons, "leadline never played in its turns"
    per_tick = RATE * 60 / (160 * 24)  # 750 frames: song ticks from frames, robust to a missed message
    wrong = [i for i in (round((frame - ticks[0]) / per_tick) for frame, _ in ons) if (i // bar) % 2 == 0]
    if wrong:  # a note sent at its wall-clock time while the dummy graph stalled lands early in frames
        jack.steady_since(before, limit=0)
    assert not wrong, f"notes at ticks {wrong} fall in the player's bars"


def test_internal_clock_when_no_clock_comes(rig):
    """No clock on the input: leadline answers on its internal clock, which it also sends out (send_clock)."""
    parts = rig(100.0, "respond.after_beats=0.5", "respond.bars=1", "clock.bpm=100", "clock.send_clock=true",
                clock=False)
    lis, player = parts["listener"], parts["player"]
    time.sleep(0.3)
    play_phrase(player, (64, 66))
    wait_for(lambda: len(note_ons(lis)) >= 3, 30, "an answer on the internal clock")
    time.sleep(0.1)
    ticks = lis.ticks()  # leadline's own MIDI clock
    per_tick = RATE * 60 / (100 * 24)
    assert len(ticks) > 24 and abs(np.median(np.diff(ticks)) - per_tick) < PERIOD, "clock out at the wrong tempo"
    for frame, _ in note_ons(lis):
        i = bisect.bisect_left(ticks, frame)
        err = min((frame - ticks[j] for j in (i - 1, i) if 0 <= j < len(ticks)), key=abs)
        assert -EARLY <= err <= LATE, f"note at frame {frame} is {err} frames from leadline's own tick"
