"""Meter, swing, count-in and safe tempo as pure parts: bars and beats in ticks, the conductor in other meters,
the swing estimate from onsets, the clicks, the safe tempo (issue 17)."""
import logging

import pytest

from leadline.daemon import config
from leadline.daemon.config import RespondConfig, TradeConfig
from leadline.daemon.countin import CountIn
from leadline.daemon.headroom import TempoGuard, describe, safe_bpm
from leadline.daemon.meter import parse_meter
from leadline.daemon.modes import Conductor
from leadline.daemon.scheduler import KIND_CLICK, Scheduler
from leadline.daemon.swing import MIN_COUNT, Swing

Q = 24


@pytest.mark.parametrize("text, bar, pulse, beats", [
    ("4/4", 96, 24, (0, 24, 48, 72)),
    ("3/4", 72, 24, (0, 24, 48)),
    ("5/4", 120, 24, (0, 24, 48, 72, 96)),
    ("6/8", 72, 36, (0, 36)),
    ("12/8", 144, 36, (0, 36, 72, 108)),  # the eighths in threes: four dotted-quarter beats
    ("9/8", 108, 36, (0, 36, 72)),
    ("7/8", 84, 28, (0, 24, 48)),  # 2+2+3
    ("3+2+2/8", 84, 28, (0, 36, 60)),
    ("2/2", 96, 48, (0, 48)),
])
def test_meters_as_ticks(text, bar, pulse, beats):
    m = parse_meter(text)
    assert (m.bar, m.pulse, m.beats) == (bar, pulse, beats)
    assert str(m) == text


def test_next_beat_follows_the_groups_across_bar_lines():
    m = parse_meter("12/8")
    assert [m.next_beat(t) for t in (0, 1, 36, 37, 109, 144, 145)] == [0, 36, 36, 72, 144, 144, 180]


def conductor(mode, meter, after_beats=1.0, bars=2, trade_bars=1):
    return Conductor(mode, RespondConfig(after_beats=after_beats, bars=bars), TradeConfig(bars=trade_bars),
                     meter=parse_meter(meter))


def test_respond_in_3_4_answers_two_bars_of_six_beats_from_a_beat():
    c = conductor("respond", "3/4")
    c.player_on(0, 1)
    c.player_off(40, 0)  # trigger: one beat later, tick 64; the next beat after it is the downbeat of bar 1
    assert c.phrase(63) is None
    p = c.phrase(64)
    assert (p.start, p.end) == (72, 72 + 6 * Q)


def test_respond_in_6_8_waits_a_dotted_quarter_and_starts_on_one():
    c = conductor("respond", "6/8", bars=1)
    c.player_on(0, 1)
    c.player_off(10, 0)
    assert c.phrase(45) is None  # one beat of 6/8 is 36 ticks
    p = c.phrase(46)
    assert (p.start, p.end) == (72, 144)  # the next dotted-quarter beat after 46 is 72


def test_trade_turns_change_on_the_meters_bar_lines():
    c = conductor("trade", "3/4")
    assert [c.owner(t) for t in (0, 71, 72, 143, 144)] == ["player", "player", "leadline", "leadline", "player"]
    p = c.phrase(72 - Q)
    assert (p.start, p.end) == (72, 144)
    c = conductor("trade", "12/8", trade_bars=2)
    assert c.phrase(288 - Q).start == 288 and c.phrase(288 - Q).end == 576


def test_nothing_plays_before_the_count_in_ends_and_trade_counts_from_there():
    c = conductor("duet", "3/4")
    c.origin = 72
    assert c.phrase(0) is None
    assert c.phrase(72 - Q).start == 72
    c = conductor("trade", "3/4")
    c.origin = 72
    assert c.owner(100) == "player" and c.owner(144) == "leadline"
    assert c.phrase(144 - Q).start == 144


def test_swing_estimate_from_off_beat_onsets_needs_a_minimum_then_follows_the_median():
    s = Swing("auto", parse_meter("4/4"))
    onsets = [b * Q + off for b in range(MIN_COUNT) for off in (0.0, 0.64 * Q)]
    for t in onsets[:-1]:
        s.hear(t)
    assert s.ratio == 0.5, "moved off straight before MIN_COUNT off-beats"
    s.hear(onsets[-1])
    assert s.ratio == pytest.approx(0.64) and s.span == Q
    s.hear(100 * Q + 0.30 * Q)  # an onset far from an off-beat does not count
    s.hear(101 * Q + 0.99 * Q)
    assert s.ratio == pytest.approx(0.64)
    assert s.place(12) == pytest.approx(12 + 0.14 * Q) and s.place(24) == 24 and s.place(18) == 18


def test_swing_is_clamped_and_robust_to_outliers():
    s = Swing("auto", parse_meter("4/4"))
    for b in range(20):
        s.hear(b * Q)
        s.hear(b * Q + (0.79 if b % 4 else 0.45) * Q)  # a dotted feel with a few rushed ones
    assert s.ratio == 0.75


def test_straight_sixteenths_are_not_taken_for_swung_eighths():
    s = Swing("auto", parse_meter("4/4"))
    for k in range(64):
        s.hear(k * 6.0)
    assert s.ratio == pytest.approx(0.5) and s.span == 12
    s = Swing("auto", parse_meter("4/4"))
    for k in range(32):  # swung 16ths (2:1 inside each 8th)
        s.hear(k * 12.0)
        s.hear(k * 12.0 + 8.0)
    assert s.span == 12 and s.ratio == pytest.approx(2 / 3)
    assert s.place(6) == pytest.approx(8.0) and s.place(12) == 12


def test_fixed_swing_and_off():
    s = Swing(0.6, parse_meter("4/4"))
    s.hear(16.0)
    assert s.ratio == 0.6 and s.note(12, 13) == (pytest.approx(14.4), pytest.approx(15.4))
    assert s.note(0, 12) == (0, pytest.approx(14.4))  # a legato note ends where the next begins
    assert Swing("off", parse_meter("4/4")).place(12) == 12
    assert config.load(None, ["song.swing=off"]).song.swing == "off"  # (YAML reads a bare off as false)


def test_count_in_clicks_on_the_meters_beats_first_louder():
    cfg = config.load(None, ["song.count_in.bars=2", "song.count_in.note=76", "song.count_in.channel=10"])
    ci = CountIn(cfg.song.count_in, parse_meter("12/8"))
    ci.start()
    assert ci.ticks == 288

    class Fixed:
        def predict(self, tick):
            return int(tick * 1000)

    q = Scheduler()
    ci.schedule(q, Fixed(), 100, 0)
    ci.schedule(q, Fixed(), 1000, 0)
    ons = [(i.tick, i.msg) for i in q.cancel_all() if i.kind == KIND_CLICK]
    assert [t for t, _ in ons] == [0, 36, 72, 108, 144, 180, 216, 252]
    assert all(m[0] == 0x99 and m[1] == 76 for _, m in ons)
    assert [m[2] for _, m in ons[:5]] == [100, 75, 75, 75, 100]


def test_safe_tempo_and_one_warning_per_crossing(caplog):
    assert safe_bpm(0.25) > 400 and describe(safe_bpm(0.25)) == "safe to 400+ BPM"
    assert safe_bpm(5.0) == pytest.approx(60_000 / (24 * 0.75 * 2 * 5.0))  # 333 BPM
    g = TempoGuard()
    with caplog.at_level(logging.WARNING, logger="leadline.daemon.headroom"):
        for bpm in (120, 340, 345, 340, 330, 320, 340, 350):  # over, (stays over), back under, over again
            g.check(bpm, safe_bpm(5.0), 5.0)
    assert g.warnings == 2 and len([r for r in caplog.records if "above the safe tempo" in r.getMessage()]) == 2


@pytest.mark.parametrize("ratio", [0.5, 0.58, 0.667, 0.72])
def test_swing_estimate_under_human_timing(ratio):
    """Eighths with 1 tick (10 ms at 100 BPM) of timing noise, a few ghost notes and a chord now and then: the
    estimate lands within 0.03 of the ratio played."""
    import numpy as np

    rng = np.random.default_rng(int(ratio * 1000))
    s = Swing("auto", parse_meter("4/4"))
    for b in range(40):
        for off in (0.0, ratio * Q):
            t = b * Q + off + rng.normal(0, 1.0)
            s.hear(t)
            if rng.random() < 0.1:
                s.hear(t + 0.4)  # a chord's second note
        if rng.random() < 0.15:
            s.hear(b * Q + rng.uniform(0, Q))  # a ghost note anywhere
    assert s.ratio == pytest.approx(ratio, abs=0.03) and s.span == Q


def test_swing_is_measured_from_the_players_own_beat():
    """Every onset 1.2 ticks late (a player lying back, a slow MIDI path): the ratio is the same."""
    s = Swing("auto", parse_meter("4/4"))
    for b in range(12):
        s.hear(b * Q + 1.2)
        s.hear(b * Q + 16 + 1.2)
    assert s.ratio == pytest.approx(2 / 3)
