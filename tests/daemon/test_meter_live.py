"""Meter, swing, count-in and safe tempo in the live loop, in-process (bench/liverig.py: the daemon's Live with
the shipped model at synthetic times, 120 BPM unless said) (issue 17)."""
from __future__ import annotations

import logging

from leadline.bench.liverig import CLOCK, CONTINUE, PLAYER_CH, SPP, START, STOP, Rig
from leadline.daemon.codec import TICKS_PER_BEAT as Q

BAR34 = 3 * Q


def timed(rig: Rig) -> list[tuple[float, tuple]]:
    """Record (song tick, message) of everything leadline sends from now on."""
    out = []

    def send(m):
        out.append((rig.live.clock.tick_at(rig.fake.t + rig.live.lookahead_ns) if rig.live.running else -1, tuple(m)))
        rig.record(m)

    rig.live.send = send
    return out


def wait_until(rig: Rig, t_ns: int) -> None:
    """Passes of the loop when it asks to be woken (a swung note falls between the clock's ticks), up to t_ns."""
    while (wake := rig.live.next_wake(rig.fake.t)) < t_ns:
        rig.pass_(max(wake - rig.fake.t, 0))
    rig.fake.t = max(rig.fake.t, t_ns)


def note_ons(sent, ch: int = 0) -> list[float]:
    return [t for t, m in sent if m[0] == 0x90 | ch and m[2] > 0]


def test_song_position_and_continue_land_on_the_3_4_bar(engine, monkeypatch):
    """Stopped at bar 1; Song Position to 16th 48 = tick 288 = bar 4 of 3/4 (bar 3 of 4/4) and Continue: trade
    with 1-bar turns gives bar 4 to the player, bar 5 (ticks 360..432) to leadline."""
    rig = Rig(engine, monkeypatch, 1, "mode=trade", "trade.bars=1", "song.meter=3/4")
    rig.feed([START])
    rig.ticks(BAR34 // 2)
    rig.feed([STOP])
    rig.feed([SPP, 48, 0])
    rig.feed([CONTINUE])
    sent = timed(rig)
    rig.ticks(3 * BAR34)  # to tick 288 + 216
    ons = [round(t) for t in note_ons(sent)]
    assert ons, "leadline did not play after Continue"
    assert all(360 <= t < 432 for t in ons), f"leadline's onsets {ons}: not in bar 5 of 3/4 (ticks 360..431)"


def test_meter_cc_changes_the_bars(engine, monkeypatch):
    rig = Rig(engine, monkeypatch, 1, "mode=trade", "trade.bars=1")
    rig.feed([0xB0, 25, 20])  # 16-31: 3/4
    assert str(rig.live.meter) == "3/4" and rig.live.conductor.meter.bar == BAR34
    rig.feed([START])
    rig.song(4 * BAR34, {})
    wrong = [t for t in rig.onsets if (t // BAR34) % 2 == 0]
    assert rig.onsets and not wrong, f"onsets {rig.onsets} in the player's 3/4 bars"


def test_count_in_clicks_then_leadline_plays_and_stop_ends_every_click(engine, monkeypatch):
    rig = Rig(engine, monkeypatch, 1, "mode=duet", "song.meter=3/4", "song.count_in.bars=1")
    sent = timed(rig)
    rig.feed([START])
    rig.fake.advance(rig.period)
    rig.feed([CLOCK])
    rig.pass_(8e6)  # the loop comes to tick 0 8 ms after it (Start re-primed the model): the first click still sounds
    rig.ticks(2 * BAR34 - 1)
    clicks = [(round(t), m[2]) for t, m in sent if m[0] == 0x99 and m[2] > 0]
    assert clicks == [(0, 100), (24, 75), (48, 75)]
    offs = [round(t) for t, m in sent if m[0] == 0x89]
    assert offs == [6, 30, 54], "each click is released a 16th after it"
    ons = note_ons(sent)
    assert ons and min(ons) >= BAR34 - 0.5, f"leadline played during the count-in: {ons[:4]}"
    rig.feed([START])  # from the top again; Stop in the middle of the second click
    rig.ticks(26)
    rig.feed([STOP])
    rig.silent("Stop during the count-in")
    n = len(sent)
    rig.pass_(1e9)
    assert not [m for _, m in sent[n:] if m[0] == 0x99], "a click after Stop"


def test_swing_auto_moves_leadlines_off_beats_to_the_players(engine, monkeypatch):
    """The player swings eighths at 0.6 (off-beats 14.4 ticks into the beat, between the clock's ticks) in the
    player's turns of trade; leadline's off-beat eighths (on tick 12 with swing off, same seed) sound at 14.4."""
    runs = {}
    for swing in ("off", "auto"):
        rig = Rig(engine, monkeypatch, 2, "mode=trade", "trade.bars=2", f"song.swing={swing}")
        sent = timed(rig)
        rig.feed([START])
        t0 = rig.fake.t
        notes = [(bar * 96 + b * Q + off, 64 + b) for bar in (0, 1, 4, 5) for b in range(4) for off in (0, 14.4)]
        events = sorted([(on, [0x90 | PLAYER_CH, p, 100]) for on, p in notes] +
                        [(on + 5, [0x80 | PLAYER_CH, p, 0]) for on, p in notes])
        for k in range(8 * 96):
            wait_until(rig, t0 + round(k * rig.period))
            rig.feed([CLOCK])
            rig.pass_()
            while events and events[0][0] < k + 1:
                at, msg = events.pop(0)
                wait_until(rig, t0 + round(at * rig.period))
                rig.feed(msg)
                rig.pass_()
        runs[swing] = [t for t in note_ons(sent) if t >= 2 * 96]
        assert rig.live.queue.late == 0
    assert rig.live.swing.describe() == "swing 0.60 8ths"
    off, auto = runs["off"], runs["auto"]
    straight = [t for t in off if round(t) % Q == 12]
    assert straight, "no off-beat eighth to move in this seed's turns"
    moved = [t for t in auto if abs(t % Q - 14.4) < 0.05]
    assert len(moved) == len(straight) and not [t for t in auto if abs(t % Q - 12) < 0.05]
    assert len(auto) == len(off)


def test_tempo_above_the_safe_tempo_warns_once_per_crossing(engine, monkeypatch, caplog):
    rig = Rig(engine, monkeypatch, 1, "mode=duet")
    rig.live.start_p99_ms = 5.0  # as a slow machine measures: safe to 333 BPM
    rig.live.stats.step_i = 0
    rig.feed([START])
    with caplog.at_level(logging.WARNING, logger="leadline.daemon.headroom"):
        for bpm in (120, 360, 300, 360):
            rig.period = 60e9 / (bpm * Q)
            rig.live.stats.step_i = 0  # (the fake clock times every live step at 0 ms: keep the start-up one)
            rig.ticks(4 * Q)
    warned = [r.getMessage() for r in caplog.records if "above the safe tempo 333 BPM" in r.getMessage()]
    assert len(warned) == 2, warned
