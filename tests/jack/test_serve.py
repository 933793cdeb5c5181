"""`leadline serve` through real JACK ports: clock following, respond, interrupt, trade, stop paths.

A private JACK server (dummy driver, 48 kHz, 64 frames), `jack_midi_clock` as the clock source, a test
player client, and `jack_midi_dump` as the independent listener that timestamps everything in frames.
Timing assertions allow one JACK period of slack; the timing targets are measured by `leadline bench`.
The `rig` fixture is in conftest.py; every check on leadline goes through the rig's heartbeat (Beat): a
skip only when the rig itself stalled, a failure otherwise.
"""
from __future__ import annotations

import bisect
import time

import numpy as np

from leadline.bench.jackrig import PERIOD, RATE, Beat, leadline_notes, rig_wait, stuck_notes

SLACK = PERIOD + 10  # frames: one period, plus the listener's own sub-period rounding
# A note sent ahead lands at the start of its tick's JACK cycle: up to PERIOD - 1 frames before the tick.
EARLY, LATE = 2 * PERIOD, PERIOD  # ... with one period of slack either way


def note_ons(listener, channel: int = 0) -> list[tuple[int, int]]:
    """(frame, pitch) of the note-ons on `channel` (0: leadline's output channel 1; the player uses 2)."""
    return [(f, m[1]) for f, m in listener.notes() if m[0] == 0x90 | channel and m[2] > 0]


def play_phrase(player, pitches=(64, 67, 69, 71), gap_s=0.12):
    for p in pitches:
        player.note(p, 100, channel=1)
        time.sleep(gap_s)
        player.off(p, channel=1)


def on_ticks(beat, lis, ons, early=EARLY, late=LATE) -> None:
    """Every note-on in `ons` is within (-early, late) frames of its nearest clock tick at the listener."""
    ticks = lis.ticks()
    for frame, _ in ons:
        i = bisect.bisect_left(ticks, frame)
        err = min((frame - ticks[j] for j in (i - 1, i) if 0 <= j < len(ticks)), key=abs)
        beat.check(-early <= err <= late, f"note at frame {frame} is {err} frames from the nearest tick")


def test_respond_answers_after_the_gap_on_the_clock_grid(rig):
    parts = rig(120.0, "respond.after_beats=1", "respond.bars=1")
    clock, lis, player = parts.clock, parts.lis, parts.player
    clock.start()
    rig_wait(lambda: len(lis.ticks()) > 24, 10, "clock ticks at the listener")
    beat = parts.beat()
    play_phrase(player)
    answer = beat.wait(lambda: note_ons(lis), 30, "an answer")
    last_off = max(f for f, m in lis.notes() if m[0] == 0x81)
    beat_frames = RATE * 60 // 120
    gap = answer[0][0] - last_off
    # the note-off is put on the nearest tick (up to half a tick early), then a beat of silence, then a beat
    beat.check(beat_frames - beat_frames / 48 - SLACK <= gap <= 2 * beat_frames + SLACK,
               f"answer {gap / beat_frames:.2f} beats after the player stopped")
    beat.wait(lambda: len(note_ons(lis)) >= 3, 30, "more of the answer")
    time.sleep(0.1)  # the ticks after the last note
    on_ticks(beat, lis, note_ons(lis))


def test_player_interrupts_and_stop_leaves_no_note_sounding(rig):
    parts = rig(120.0, "respond.after_beats=0.5", "respond.bars=4")
    clock, lis, player = parts.clock, parts.lis, parts.player
    clock.start()
    rig_wait(lambda: len(lis.ticks()) > 12, 10, "clock ticks")
    beat = parts.beat()
    play_phrase(player, (60, 62))
    beat.wait(lambda: len(note_ons(lis)) >= 2, 10, "an answer")
    player.note(65, 90, channel=1)  # the player comes back in
    n_at_interrupt = len(note_ons(lis))
    beat.wait(lambda: not stuck_notes(leadline_notes(lis.events)), 2, "its notes released after the interrupt")
    time.sleep(0.3)
    beat.check(len(note_ons(lis)) <= n_at_interrupt + 1, "leadline played on after the interrupt",
               exact=False)  # at most one note already in flight
    player.off(65, channel=1)
    beat.wait(lambda: len(note_ons(lis)) > n_at_interrupt + 1, 10, "a new answer")
    clock.stop()
    rig_wait(lambda: any(m == b"\xfc" for _, m in lis.events), 5, "Stop at the listener")
    Beat(lis, player, clock=False).wait(lambda: not stuck_notes(leadline_notes(lis.events)), 2,
                                        "every note-on's note-off after Stop")
    assert parts.daemon.terminate() == 0


def test_sigterm_mid_phrase_exits_0_with_every_note_released(rig):
    parts = rig(120.0, "mode=duet")
    lis = parts.lis
    parts.clock.start()
    beat = parts.beat()
    beat.wait(lambda: len(note_ons(lis)) >= 3, 30, "duet notes")
    assert parts.daemon.terminate() == 0
    beat.wait(lambda: not stuck_notes(leadline_notes(lis.events)), 2, "note-offs after SIGTERM")
    assert any(m[:2] == b"\xb0\x7b" for _, m in lis.events)  # All Notes Off on channel 1


def test_trade_plays_only_in_leadlines_turns(rig):
    parts = rig(160.0, "mode=trade", "trade.bars=1")
    clock, lis = parts.clock, parts.lis
    beat = parts.beat()
    clock.start()
    bar = 4 * 24
    rig_wait(lambda: len(lis.ticks()) > 4 * bar + 10, 40, "four bars of clock")
    clock.stop()
    ticks = lis.ticks()
    ons = note_ons(lis)
    beat.check(bool(ons), "leadline never played in its turns", exact=False)
    per_tick = RATE * 60 / (160 * 24)  # 750 frames: song ticks from frames, robust to a missed message
    wrong = [i for i in (round((frame - ticks[0]) / per_tick) for frame, _ in ons) if (i // bar) % 2 == 0]
    beat.check(not wrong, f"notes at ticks {wrong} fall in the player's bars")


def test_internal_clock_when_no_clock_comes(rig):
    """No clock on the input: leadline answers on its internal clock, which it also sends out (send_clock)."""
    parts = rig(100.0, "respond.after_beats=0.5", "respond.bars=1", "clock.bpm=100", "clock.send_clock=true",
                clock=False)
    lis, player = parts.lis, parts.player
    rig_wait(lambda: len(parts.heart.ticks()) > 12, 10, "clock ticks at the heartbeat listener")
    beat = parts.beat()
    play_phrase(player, (64, 66))
    beat.wait(lambda: len(note_ons(lis)) >= 3, 30, "an answer on the internal clock")
    time.sleep(0.1)
    ticks = lis.ticks()  # leadline's own MIDI clock (this listener does not hear jack_midi_clock)
    per_tick = RATE * 60 / (100 * 24)
    beat.check(len(ticks) > 24 and abs(np.median(np.diff(ticks)) - per_tick) < PERIOD,
               f"leadline's clock out at the wrong tempo: median {np.median(np.diff(ticks)):.0f} frames a tick")
    on_ticks(beat, lis, note_ons(lis))
