"""Storms through the live loop, in-process: transport, clock dropouts, tempo jumps, mode/panic CCs, notes, junk.

`leadline.daemon.live.Live` runs in the in-process rig (bench/liverig.py: synthetic times, everything else the
daemon's code) with a real CpuEngine on the tiny model; a fixed list of seeds drives random event orders.

Checked after every stop path (Stop, panic CC, All Notes Off/All Sound Off CC, enable off, clock dropout,
mode change, Song Position, and `all_off` at the end): no note-on on the output lacks its own note-off; the
last pitch bend on leadline's channel is the centre and modulation 0 (the tiny model bends, issue 13);
every message sent is well-formed MIDI; no All Notes Off repeats one with no note-on in between (a storm
of stop messages must not become a storm on the output); leadline still answers a clean Start + phrase
afterwards; memory stays bounded.
"""
from __future__ import annotations

import random
import types

import pytest

import leadline.daemon.live as live_mod
from leadline.bench.liverig import CLOCK, CONTINUE, SPP, START, STOP, Rig
from leadline.daemon.clock import NS_PER_MINUTE
from leadline.daemon.codec import TICKS_PER_BEAT
from leadline.daemon.engine import CpuEngine, load_model

SEEDS = list(range(20))
EVENTS = 2000
MODE_CC, PANIC_CC, ENABLE_CC, TEMP_CC = 22, 24, 23, 21


@pytest.fixture(scope="module")
def engine(tiny_model):
    eng = CpuEngine(load_model(tiny_model.path))
    eng.warm_up()
    return eng


def storm(rig: Rig, rng: random.Random, n: int) -> dict:
    """`n` random events; asserts silence after each stop path. Returns counts per kind."""
    live, counts = rig.live, {}
    kinds = ["ticks"] * 30 + ["note"] * 25 + ["start", "stop", "continue", "spp", "dropout", "tempo", "mode",
                                              "panic", "enable", "temp", "allnotesoff", "junk", "idle"] * 2
    timeout_ns = rig.cfg.clock.timeout_ms * 1e6
    for _ in range(n):
        kind = rng.choice(kinds)
        counts[kind] = counts.get(kind, 0) + 1
        if kind == "ticks":
            rig.ticks(rng.randint(1, 48), jitter=rng.choice([0.0, 0.02, 0.3]), rng=rng)
        elif kind == "note":
            ch, pitch = rng.randrange(16), rng.randrange(128)
            rig.feed([0x90 | ch, pitch, rng.randint(1, 127)] if rng.random() < 0.55 else [0x80 | ch, pitch, 0])
        elif kind in ("start", "stop", "continue"):
            was_external = live.external
            rig.feed([{"start": START, "stop": STOP, "continue": CONTINUE}[kind]])
            if kind == "stop" and was_external:
                rig.silent("Stop")
        elif kind == "spp":
            was_external = live.external
            rig.feed([SPP, rng.randrange(128), rng.randrange(128)])
            if was_external:
                rig.silent("Song Position")
        elif kind == "dropout":
            following = live.external and live.follower.running and live.follower.last_tick_ns
            end = rig.fake.t + timeout_ns + rng.uniform(1e6, 3e8)
            while rig.fake.t < end:
                rig.pass_(5e6)
            if following:
                assert not live.follower.running, "a clock dropout was not noticed"
                rig.silent("clock dropout")
        elif kind == "tempo":
            rig.period = NS_PER_MINUTE / (rng.choice([30, 300, rng.uniform(30, 300)]) * TICKS_PER_BEAT)
        elif kind == "mode":
            before = live.conductor.mode
            rig.feed([0xB0 | rng.randrange(16), MODE_CC, rng.randrange(128)])
            if live.conductor.mode != before:
                rig.silent("mode change")
        elif kind in ("panic", "allnotesoff"):
            cc = PANIC_CC if kind == "panic" else rng.choice([120, 123])
            rig.feed([0xB0 | rng.randrange(16), cc, rng.randint(1, 127)])
            rig.silent(f"CC {cc}")
        elif kind == "enable":
            rig.feed([0xB0, ENABLE_CC, rng.randrange(128)])
            if not live.enabled:
                rig.silent("enable off")
        elif kind == "temp":
            rig.feed([0xB0, TEMP_CC, rng.randrange(128)])
        elif kind == "junk":  # what a JACK port can carry: any bytes, any length (rtmidi drops SysEx)
            msg = [rng.randrange(256) for _ in range(rng.randint(1, 4))]
            if msg[0] != 0xF0:
                rig.feed(msg)
        else:
            rig.pass_(rng.uniform(0, 2e7))
        rig.pass_(rng.uniform(0, 3e6))
    return counts


def clean_phrase_is_answered(rig: Rig) -> None:
    """Enable, respond mode, Start, a beat of clock, a four-note phrase, two beats: leadline plays."""
    rig.period = NS_PER_MINUTE / (120 * TICKS_PER_BEAT)
    rig.feed([0xB0, ENABLE_CC, 127])
    rig.feed([0xB0, MODE_CC, 0])
    rig.feed([START])
    rig.ticks(TICKS_PER_BEAT)
    before = rig.answers()
    for pitch in (64, 67, 69, 71):
        rig.feed([0x91, pitch, 100])
        rig.ticks(6)
        rig.feed([0x81, pitch, 0])
    rig.ticks(4 * TICKS_PER_BEAT)
    assert rig.answers() > before, "leadline did not answer a clean phrase after the storm"
    rig.feed([STOP])
    rig.silent("the final Stop")


@pytest.mark.parametrize("seed", SEEDS)
def test_storm_leaves_no_note_sounding_and_leadline_answers_again(engine, monkeypatch, seed):
    rig = Rig(engine, monkeypatch, seed)
    counts = storm(rig, random.Random(seed), EVENTS)
    assert rig.stop_checks > 20, f"too few stop paths exercised: {counts}"
    assert rig.bent > 0, "no pitch bend in the storm (the checks after each stop path include the centre)"
    clean_phrase_is_answered(rig)
    rig.live.all_off()
    rig.silent("all_off")
    assert len(rig.live.player.done) <= 64 and len(rig.live.player.sounding) <= 128, "player notes piled up"


def test_the_check_catches_a_note_left_sounding(engine, monkeypatch):
    """The silence check itself: a note-on without its note-off is reported."""
    rig = Rig(engine, monkeypatch, 0)
    rig.record((0x90, 60, 100))
    rig.record((0x90, 61, 100))
    with pytest.raises(AssertionError, match="still sounding"):
        rig.silent("a deliberately hanging note")


def test_duet_storm_plays_and_every_stop_silences(engine, monkeypatch):
    """Duet mode plays all the time, so every stop path has notes to silence."""
    rig = Rig(engine, monkeypatch, 99, "mode=duet")
    rig.feed([START])
    rig.ticks(2 * TICKS_PER_BEAT)
    assert rig.answers() > 0, "duet never played"
    rng = random.Random(99)
    for cut in ("Stop", "panic", "dropout", "mode"):
        rig.feed([0xB0, MODE_CC, 127])  # duet
        rig.feed([START])
        for _ in range(16 * TICKS_PER_BEAT):  # until a note sounds (the model may rest a while)
            rig.ticks(1, jitter=0.1, rng=rng)
            if rig.sounding():
                break
        assert rig.sounding(), f"nothing sounding before {cut}"
        if cut == "Stop":
            rig.feed([STOP])
        elif cut == "panic":
            rig.feed([0xB0, PANIC_CC, 127])
        elif cut == "dropout":
            for _ in range(int(rig.cfg.clock.timeout_ms / 5) + 2):
                rig.pass_(5e6)
        else:
            rig.feed([0xB0, MODE_CC, 0])
        rig.silent(cut)


def phrase(rig: Rig, pitches=(64, 67, 69, 71)) -> None:
    for pitch in pitches:
        rig.feed([0x91, pitch, 100])
        rig.ticks(6)
        rig.feed([0x81, pitch, 0])


def test_loop_back_with_song_position_then_continue_answers_again(engine, monkeypatch):
    """A DAW loop: 40 bars in, Stop, Song Position 0, Continue; the next phrase is answered."""
    rig = Rig(engine, monkeypatch, 1, "respond.bars=1")
    rig.feed([START])
    rig.ticks(40 * 96)
    phrase(rig)
    rig.ticks(8 * TICKS_PER_BEAT)
    assert rig.answers(), "no answer before the loop"
    rig.feed([STOP])
    rig.feed([SPP, 0, 0])
    rig.feed([CONTINUE])
    rig.ticks(TICKS_PER_BEAT)
    before = rig.answers()
    phrase(rig)
    rig.ticks(8 * TICKS_PER_BEAT)
    assert rig.answers() > before, "no answer after the song jumped back (the improviser stayed at bar 40)"


def test_song_position_while_running_leaves_nothing_for_the_old_position(engine, monkeypatch):
    """Song Position while the song rolls (duet playing): nothing scheduled for the old position is kept."""
    rig = Rig(engine, monkeypatch, 2, "mode=duet")
    rig.feed([START])
    rig.ticks(40 * 96)
    for _ in range(96):  # until something is scheduled (the line may be between notes)
        if len(rig.live.queue):
            break
        rig.ticks(1)
    assert len(rig.live.queue), "duet had nothing scheduled for a bar"
    rig.feed([SPP, 0, 0])
    rig.silent("Song Position while running")
    rig.ticks(2 * TICKS_PER_BEAT)
    horizon = rig.fake.t + 10 * 1_000_000_000
    assert all(item.deadline_ns < horizon for item in rig.live.queue._heap), "a message was left for later"


def test_a_note_held_across_start_does_not_silence_leadline(engine, monkeypatch):
    """The player holds a note while the DAW restarts from the top; the next phrase is still answered."""
    rig = Rig(engine, monkeypatch, 3, "respond.bars=1")
    rig.feed([START])
    rig.ticks(40 * 96)
    rig.feed([0x91, 50, 100])
    rig.ticks(2)
    rig.feed([START])
    rig.ticks(TICKS_PER_BEAT)
    rig.feed([0x81, 50, 0])
    before = rig.answers()
    phrase(rig)
    rig.ticks(8 * TICKS_PER_BEAT)
    assert rig.answers() > before, "no answer after a note held across Start"


def test_a_held_note_does_not_pile_up_the_notes_after_it(engine, monkeypatch):
    """One note held while thousands come and go: what waits behind it stays bounded."""
    rig = Rig(engine, monkeypatch, 4)
    rig.feed([START])
    rig.ticks(4)
    rig.feed([0x91, 40, 100])
    for i in range(5000):
        rig.feed([0x91, 60 + i % 12, 90])
        rig.feed([0x81, 60 + i % 12, 0])
        if i % 4 == 0:
            rig.ticks(1)
    assert len(rig.live.player.done) <= 64


def test_echoed_notes_hold_through_stop_and_end_on_panic_and_exit(engine, monkeypatch):
    """midi.passthrough echoes the player's notes: a Stop leaves them to the player's own note-offs (it
    still holds them), a panic or the daemon's exit lets every one go, on every channel."""
    rig = Rig(engine, monkeypatch, 5, "midi.passthrough=true", "mode=duet")
    rig.feed([START])
    rig.ticks(2 * TICKS_PER_BEAT)
    rig.feed([0x92, 50, 100])  # the player holds two notes, on channels 3 and 4
    rig.feed([0x93, 55, 100])
    rig.ticks(2 * TICKS_PER_BEAT)
    assert rig.answers() > 0, "duet did not play"
    rig.feed([STOP])
    assert set(rig.sounding()) == {(2, 50), (3, 55)}, "a Stop cut notes the player still holds"
    rig.feed([0xB0, PANIC_CC, 127])
    assert not rig.sounding(), f"after panic: {rig.sounding()}"
    assert (0xB2, 123, 0) in rig.sent and (0xB3, 123, 0) in rig.sent
    rig.feed([START])
    rig.feed([0x94, 60, 90])
    rig.ticks(TICKS_PER_BEAT)
    rig.live.all_off(everything=True)  # what serve does on the way out
    assert not rig.sounding(), f"at exit: {rig.sounding()}"


def test_a_lost_input_ends_the_held_notes_and_respond_answers(engine, monkeypatch):
    """The player's port vanishes while it holds a note: respond answers instead of waiting for a
    note-off that cannot come, and the note's echo is let go."""
    rig = Rig(engine, monkeypatch, 6, "mode=respond", "respond.bars=1", "midi.passthrough=true")
    rig.feed([START])
    rig.ticks(TICKS_PER_BEAT)
    for pitch in (64, 67):
        rig.feed([0x91, pitch, 100])
        rig.ticks(6)
        rig.feed([0x81, pitch, 0])
    rig.feed([0x91, 69, 100])  # held when the port goes
    rig.ticks(6)
    before = rig.answers()
    rig.ticks(4 * TICKS_PER_BEAT)
    assert rig.answers() == before, "leadline answered over a held note"
    rig.live.input_lost()
    assert not rig.sounding(), f"echo still sounding: {rig.sounding()}"
    rig.ticks(4 * TICKS_PER_BEAT)
    assert rig.answers() > before, "no answer after the input was lost"


def test_a_frame_accurate_output_gets_each_message_with_its_tick_time_and_a_flush_on_stop(engine, monkeypatch):
    """With `send_at` (leadline's own JACK client), messages are handed over up to HANDOFF_NS ahead with
    the predicted time of their tick (no lookahead); every stop path flushes first, then sends its
    note-offs untimed (then the pitch bend's centre and modulation 0)."""
    rig = Rig(engine, monkeypatch, 7, "mode=duet")
    live = rig.live
    handed: list[tuple[int, int, tuple]] = []  # (time handed over, due time, message)
    flushes = []
    def send_at(at, m):
        handed.append((rig.fake.t, at, tuple(m)))
        rig.played |= m[0] & 0xF0 == 0x90 and m[2] > 0  # (for the check on All Notes Off in `record`)

    live.use_frame_output(types.SimpleNamespace(now_ns=rig.fake.perf_counter_ns, send_at=send_at,
                                                flush=lambda: flushes.append(len(handed))))
    rig.feed([START])
    t0 = rig.fake.t + rig.period  # the first tick's time
    rig.ticks(8 * TICKS_PER_BEAT)
    notes = [h for h in handed if h[2][0] & 0xF0 in (0x80, 0x90)]
    assert len(notes) >= 4, "duet played nothing"
    for when, at, msg in notes:
        k = (at - t0) / rig.period
        assert abs(k - round(k)) * rig.period < 1_000, f"{msg} due {at} is not on a tick ({k:.4f})"
        assert 0 <= at - when <= live_mod.HANDOFF_NS, f"{msg} handed over {(at - when) / 1e6:.1f} ms ahead"
    sent_before = len(rig.sent)
    rig.feed([0xB0, PANIC_CC, 127])
    assert flushes and flushes[-1] == len(handed), "panic did not flush what was handed over"
    offs = rig.sent[sent_before:]
    assert offs[-3:] == [(0xB0, 123, 0), (0xE0, 0, 64), (0xB0, 1, 0)], \
        f"untimed note-offs, All Notes Off, pitch bend centre and modulation 0 expected, got {offs}"


@pytest.mark.parametrize("seed", SEEDS[:5])
def test_storm_with_a_count_in_a_compound_meter_and_swing(engine, monkeypatch, seed):
    """The storm with clicks (a 2-bar count-in after every Start, channel 10), 6/8 and swung off-beats: every stop
    path leaves no click or note sounding (issue 17)."""
    rig = Rig(engine, monkeypatch, seed, "song.count_in.bars=2", "song.meter=6/8", "song.swing=0.6")
    clicks = []

    def send(m):
        if m[0] == 0x99 and m[2]:
            clicks.append(m)
        rig.record(m)

    rig.live.send = send
    counts = storm(rig, random.Random(1000 + seed), EVENTS // 2)
    assert rig.stop_checks > 10, f"too few stop paths exercised: {counts}"
    assert clicks, "no count-in click in the storm"
    rig.live.all_off(everything=True)
    rig.silent("all_off")
