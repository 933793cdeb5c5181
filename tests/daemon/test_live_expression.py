"""Leadline's notes carry their pitch bend live (issue 13): on the tick grid, one note bending the channel at a
time, RPN 0 at start, the centre on every stop path; nothing at all with expression.mode off.

The in-process rig (bench/liverig.py) with a real CpuEngine on the tests' tiny random model, which bends
about a third of its notes (each test that needs bends asserts some were sent); a few tests schedule
hand-made notes to check the messages exactly.
"""
from __future__ import annotations

import random

import pytest

from leadline.bench.jackrig import bends, stuck_bend
from leadline.bench.liverig import CLOCK, SPP, START, STOP, Rig
from leadline.daemon import codec
from leadline.daemon.codec import TICKS_PER_BEAT, Note
from leadline.daemon.engine import CpuEngine, load_model
from leadline.daemon.meter import parse_meter
from leadline.daemon.scheduler import pitch_bend

MODE_CC, ENABLE_CC, PANIC_CC, EXPRESSION_CC = 22, 23, 24, 27
CENTRE = (0xE0, 0, 64)
SEQUENCES = 1000


@pytest.fixture(scope="module")
def engine(tiny_model):
    eng = CpuEngine(load_model(tiny_model.path))
    eng.warm_up()
    return eng


def quiet_rig(engine, monkeypatch, *settings: str) -> Rig:
    """A rig rolling at 120 BPM whose model plays nothing by itself (leadline off): notes come from the test."""
    rig = Rig(engine, monkeypatch, 0, "mode=respond", *settings)
    rig.feed([START])
    rig.ticks(2)
    rig.live.enabled = False
    return rig


def sent_at(rig: Rig, n: int) -> list[tuple[int, tuple]]:
    """Play `n` ticks and return (song tick, message) of what leadline sent meanwhile."""
    out = []
    for _ in range(n):
        before = len(rig.sent)
        rig.ticks(1)
        out += [(rig.live.clock.tick, m) for m in rig.sent[before:]]
    return out


def expected(note: Note, rng: int = 2, depth: float = 1.0) -> list[tuple[int, int]]:
    """(tick after the onset, value) the bend curve should leave as, deduplicated."""
    out, last = [], None
    for t, semis in codec.bend_curve(note):
        v = min(max(round(semis / rng * 8192 * depth), -8192), 8191)
        if v != last:
            out.append((t, v))
            last = v
    return out


def value(m) -> int:
    return (m[2] << 7 | m[1]) - 8192


def test_rpn_0_goes_out_at_start_with_the_bend_range(engine, monkeypatch):
    rig = Rig(engine, monkeypatch, 0, "expression.bend_range=12")
    assert rig.sent[:6] == [(0xB0, 101, 0), (0xB0, 100, 0), (0xB0, 6, 12), (0xB0, 38, 0), (0xB0, 101, 127),
                            (0xB0, 100, 127)]
    rig.live.output_back()  # (a reconnect: the same again)
    assert rig.sent[-6:] == rig.sent[:6]


def test_a_bent_note_leaves_its_curve_on_the_tick_grid_pre_bend_first_centre_after(engine, monkeypatch):
    rig = quiet_rig(engine, monkeypatch)
    now = rig.live.clock.tick
    note = Note(now + 4, 24, 64, 88, bend=4, bend_at=6, release=2)  # whole step up over a 16th, back at 3/4
    held = Note(now + 30, 8, 65, 88, bend=-2, bend_at=3)  # a semitone down, held to the end
    pre = Note(now + 40, 12, 67, 88, bend=2, bend_at=0)  # a pre-bend: bent before it is struck
    for n in (note, held, pre):
        rig.live.schedule(n)
    out = sent_at(rig, 60)
    got = [(t - note.onset, value(m)) for t, m in out if m[0] == 0xE0 and t < held.onset]
    assert got == expected(note)[1:], "the bend points are not the curve's, on its ticks"  # (0 at 0: centred)
    assert got[-1] == (18, 0) and expected(note)[0] == (0, 0)
    msgs = [m for _, m in out]
    off = msgs.index((0x80, 65, 0))
    assert msgs[off + 1] == CENTRE, "no centre right after the note-off of a note held bent"
    assert [(t - held.onset, value(m)) for t, m in out if m[0] == 0xE0 and held.onset <= t < pre.onset] == \
        expected(held)[1:] + [(held.duration, 0)]
    on = msgs.index((0x90, 67, 88))
    assert msgs[on - 1] == pitch_bend(0, 4096), "the pre-bend does not go before its note-on"
    assert [value(m) for t, m in out if m[0] == 0xE0 and t >= pre.onset] == [4096, 0]


def test_a_plain_note_on_a_bent_channel_is_recentred_and_the_older_bend_stops(engine, monkeypatch):
    rig = quiet_rig(engine, monkeypatch)
    now = rig.live.clock.tick
    rig.live.schedule(Note(now + 4, 48, 60, 88, bend=4, bend_at=3, vibrato=2))  # bent for two beats, shaking
    rig.live.schedule(Note(now + 16, 6, 67, 88))  # a plain note struck while it is bent
    out = sent_at(rig, 60)
    msgs = [m for _, m in out]
    on = msgs.index((0x90, 67, 88))
    assert msgs[on - 1] == CENTRE, "a plain note on a bent channel did not get the centre first"
    assert not [m for m in msgs[on:] if m[0] == 0xE0], "the older note kept bending the channel"


def test_a_cut_note_drops_its_later_bend_points(engine, monkeypatch):
    rig = quiet_rig(engine, monkeypatch, "midi.max_note_beats=0.5")
    now = rig.live.clock.tick
    note = Note(now + 4, 48, 60, 88, bend=4, bend_at=24, vibrato=2)  # reaches its bend after a beat
    rig.live.schedule(note)
    out = sent_at(rig, 60)
    ticks = [t - note.onset for t, m in out if m[0] == 0xE0]
    assert ticks and max(ticks) == 12, f"bend points after the cut (or no centre at it): {ticks}"
    assert out[-1][1] == CENTRE


def test_interrupt_drops_the_bend_and_recentres(engine, monkeypatch):
    rig = quiet_rig(engine, monkeypatch)
    now = rig.live.clock.tick
    rig.live.schedule(Note(now + 2, 48, 60, 88, bend=4, bend_at=12))
    rig.ticks(8)
    assert rig.live.bender.value, "the note is not bent yet"
    rig.feed([0x91, 50, 100])  # the player plays: leadline stops
    rig.live.interrupt()
    rig.silent("interrupt")
    before = len(rig.sent)
    rig.ticks(60)
    assert not [m for m in rig.sent[before:] if m[0] == 0xE0], "bend points after the interrupt"


def test_expression_cc_scales_the_depth(engine, monkeypatch):
    rig = quiet_rig(engine, monkeypatch)
    rig.feed([0xB0, EXPRESSION_CC, 127 // 2 + 1])  # 64/127: about half
    now = rig.live.clock.tick
    note = Note(now + 4, 24, 64, 88, bend=4, bend_at=0)
    rig.live.schedule(note)
    out = sent_at(rig, 30)
    got = [value(m) for _, m in out if m[0] == 0xE0]
    assert got == [v for _, v in expected(note, depth=64 / 127)] + [0]
    rig.feed([0xB0, EXPRESSION_CC, 0])
    rig.live.schedule(Note(rig.live.clock.tick + 4, 24, 64, 88, bend=4, bend_at=0))
    assert not [m for _, m in sent_at(rig, 30) if m[0] == 0xE0], "depth 0 still bends"


def test_mode_off_sends_no_pitch_bend_or_rpn_at_all(engine, monkeypatch):
    rig = Rig(engine, monkeypatch, 3, "mode=duet", "expression.mode=off")
    rig.live.sampler.expression = "full"  # (the model's expression tokens are not even masked: still no bend)
    rig.feed([START])
    rig.ticks(16 * TICKS_PER_BEAT)
    rig.live.schedule(Note(rig.live.clock.tick + 4, 24, 64, 88, bend=4, bend_at=0))
    rig.ticks(TICKS_PER_BEAT)
    rig.feed([0xB0, PANIC_CC, 127])
    rig.feed([STOP])
    assert rig.answers() > 0, "duet played nothing"
    assert not [m for m in rig.sent if m[0] == 0xE0 or (m[0] == 0xB0 and m[1] in (1, 6, 38, 100, 101))]


def test_bends_mode_plays_no_vibrato(engine, monkeypatch):
    rig = quiet_rig(engine, monkeypatch, "expression.mode=bends")
    note = Note(rig.live.clock.tick + 4, 48, 64, 88, vibrato=2)
    rig.live.schedule(note)
    assert not [m for _, m in sent_at(rig, 60) if m[0] == 0xE0]


def stop_path(rig: Rig, rng: random.Random) -> str:
    """One stop path, at random, as the daemon meets it."""
    live = rig.live
    kind = rng.choice(["Stop", "panic", "CC 120", "CC 123", "enable off", "dropout", "mode change",
                       "Song Position", "lost input", "meter change", "exit"])
    if kind == "Stop":
        rig.feed([STOP])
    elif kind == "panic":
        rig.feed([0xB0, PANIC_CC, 127])
    elif kind in ("CC 120", "CC 123"):
        rig.feed([0xB0 | rng.randrange(16), int(kind[3:]), 0])
    elif kind == "enable off":
        rig.feed([0xB0, ENABLE_CC, 0])
    elif kind == "dropout":
        for _ in range(int(rig.cfg.clock.timeout_ms / 5) + 2):
            rig.pass_(5e6)
    elif kind == "mode change":
        rig.feed([0xB0, MODE_CC, 0 if live.conductor.mode != "respond" else 127])
    elif kind == "Song Position":
        rig.feed([SPP, rng.randrange(128), 0])
    elif kind == "lost input":
        live.input_lost()
    elif kind == "meter change":
        live.set_meter(parse_meter("7/8" if live.meter.bar != 84 else "4/4"))
    else:  # SIGTERM, Ctrl-C, a crash in the engine thread: serve's way out
        live.end_take()
        live.all_off(everything=True)
    return kind


def test_1000_random_stop_sequences_leave_the_pitch_bend_centred(engine, monkeypatch):
    """Start (or Continue), a random stretch of duet with the player's notes, depth and tempo moves, then one
    stop path at a random moment: after every one, the last pitch bend on leadline's channel is the centre
    and modulation is 0 (`Rig.silent`), with no note left sounding. Bends must have been cut in flight."""
    rig = Rig(engine, monkeypatch, 11, "mode=duet")
    rng = random.Random(11)
    cut_bent, kinds = 0, {}
    for _ in range(SEQUENCES):
        rig.feed([0xB0, ENABLE_CC, 127])
        rig.feed([0xB0, MODE_CC, 127])
        rig.feed([rng.choice([START, START, 0xFB])])
        if rng.random() < 0.3:
            rig.feed([0xB0, EXPRESSION_CC, rng.randrange(128)])
        for _ in range(rng.randint(2, 8)):
            rig.ticks(rng.randint(1, 24), jitter=rng.choice([0.0, 0.05]), rng=rng)
            if rng.random() < 0.2:
                rig.feed([0x92, rng.randrange(40, 90), 100] if rng.random() < 0.6 else [0x82, rng.randrange(40, 90), 0])
        bent = rig.live.bender.value != 0
        kind = stop_path(rig, rng)
        kinds[kind] = kinds.get(kind, 0) + 1
        cut_bent += bent
        rig.silent(kind)
        if kind == "dropout":  # (the clock comes back)
            rig.feed([CLOCK])
    print(f"\n{SEQUENCES} stop sequences: {cut_bent} cut a bend in flight, {rig.bent} bends sent; {kinds}")
    assert rig.bent > 500 and cut_bent >= 40, f"too few bends exercised: {rig.bent} sent, {cut_bent} cut"
    assert stuck_bend(list(enumerate(rig.sent))) == (0, 0)
    assert len(bends(list(enumerate(rig.sent)))) > 0


def test_the_check_catches_a_bend_left_bent(engine, monkeypatch):
    """The centre check itself: a stop path that forgot the centre is reported."""
    rig = Rig(engine, monkeypatch, 0)
    rig.record(pitch_bend(0, 4096))
    with pytest.raises(AssertionError, match="pitch bend left at 4096"):
        rig.silent("a deliberately bent channel")
