"""The band (issue 14, live and offline): the backing sets the harmony every model step hears, and is never
the player: never answered, echoed or counted; its clock is followed; Stop, dropout, a lost input and panic
silence it; an automatic key weighs it in; `leadline respond --backing` hears it at each step's tick.

The in-process rig (bench/liverig.py) runs `leadline.daemon.live.Live` at synthetic times on the tests' tiny
random model (tests/conftest.py `tiny_model`: its harmony projection is non-zero, so the input is heard;
the interim shipped model's is zero), tick 0 being the first clock tick after Start, at 120 BPM.
"""
from __future__ import annotations

import mido
import numpy as np
import pytest

from leadline.bench.liverig import BAR, CLOCK, PLAYER_CH, START, STOP, Rig, player_notes
from leadline.daemon import codec, config, harmony, offline, ports
from leadline.daemon.cli import main
from leadline.daemon.codec import TICKS_PER_BEAT, Note
from leadline.daemon.engine import CpuEngine, load_model
from leadline.daemon.errors import UserError
from leadline.daemon.improviser import Improviser
from leadline.daemon.sampler import Sampler, estimate_key, key_histogram
from tests.conftest import SHARED_DATA_DIR

C_MAJOR, A_MINOR = (48, 52, 55), (45, 48, 52)  # C3 E3 G3 / A2 C3 E3
C_CODE, AM_CODE = harmony.code((0, 4, 7), 0), harmony.code((9, 0, 4), 9)
BAND_CH = 2  # the band's channel (0-based) where it shares the player's input (midi.backing_channels=[3])


@pytest.fixture(scope="module")
def tiny_engine(tiny_model):
    eng = CpuEngine(load_model(tiny_model.path))
    eng.warm_up()
    return eng


def chord(band: dict, on: int, off: int, pitches, ch: int = 0) -> dict:
    """The band's chord from tick `on` to `off` (note-offs before note-ons at a tick)."""
    for p in pitches:
        band.setdefault(off, []).insert(0, [0x80 | ch, p, 0])
        band.setdefault(on, []).append([0x90 | ch, p, 90])
    return band


def phrase(start: int, pitches=(64, 67, 69, 71)) -> list[tuple[int, int, int]]:
    return [(start + 12 * i, start + 12 * i + 10, p) for i, p in enumerate(pitches)]


def token_ticks(tokens) -> np.ndarray:
    """The song tick after each token of a window that began at tick 0."""
    return np.cumsum([int(codec.TOKEN_VALUE[t]) if codec.TOKEN_KIND[t] == codec.K_SHIFT else 0 for t in tokens])


# --- live: the harmony each step hears ---------------------------------------------------------------------

def test_every_step_hears_the_bands_chord_and_the_change_reaches_the_next_answer(tiny_engine, monkeypatch):
    """C major for two bars, then A minor; the player plays a phrase in each part and leadline answers.
    Every token the model stepped on heard the chord sounding at its tick (a released chord is held HOLD
    ticks: the change's first HOLD ticks are not asked), and the second answer was generated over A minor."""
    rig = Rig(tiny_engine, monkeypatch, 1, "mode=respond", "respond.bars=1", "seed.window=4096")
    band = chord(chord({}, 0, 2 * BAR, C_MAJOR), 2 * BAR, 5 * BAR, A_MINOR)
    events = player_notes({}, phrase(6) + phrase(2 * BAR + 24))
    rig.feed([START])
    rig.song(5 * BAR - 1, events, band)
    imp = rig.live.improviser
    ticks, codes = token_ticks(imp.window), np.array(imp.codes)
    assert len(codes) == len(ticks) and ticks[-1] == imp.cursor
    before = codes[(ticks >= 1) & (ticks < 2 * BAR)]
    after = codes[ticks >= 2 * BAR + harmony.HOLD]
    assert set(before) == {C_CODE}, [harmony.describe(c) for c in set(before)]
    assert set(after) == {AM_CODE}, [harmony.describe(c) for c in set(after)]
    second = [t for t in rig.onsets if t >= 3 * BAR]
    assert second and len(after) >= 20, f"no answer over A minor: onsets {rig.onsets}"
    assert rig.live.backing.last_code == AM_CODE and tiny_engine.harmony_code == AM_CODE


def test_the_harmony_changes_what_the_model_says(tiny_engine):
    """The same tokens over C major and over A minor give other logits (the step hears the code it is set)."""
    toks = [codec.BOS, *codec.shift_tokens(24)]
    got = []
    for c in (C_CODE, AM_CODE):
        imp = Improviser(tiny_engine, Sampler(config.SamplingConfig(), seed=0))
        imp.harmony = lambda tick, c=c: c
        imp.window.extend(toks)
        imp.reprime(cursor=0)
        imp.rest_until(48)
        got.append(imp.logits.copy())
    assert not np.allclose(*got)


@pytest.mark.parametrize("how", ["port", "channel"])
def test_the_band_is_never_answered_echoed_or_counted_as_the_player(tiny_engine, monkeypatch, how):
    """Chord stabs (a beat each, three beats of silence: respond would answer each if they were the player's)
    on the band's port, or on a backing channel of the player's input, with passthrough on. Nothing is
    answered or echoed; the harmony is heard; then the player's phrase is answered as ever."""
    rig = Rig(tiny_engine, monkeypatch, 1, "mode=respond", "respond.bars=1", "midi.passthrough=true",
              "midi.backing_channels=[3]")
    band: dict = {}
    for b in range(4):
        chord(band, b * BAR, b * BAR + TICKS_PER_BEAT, C_MAJOR if b % 2 else A_MINOR, BAND_CH)
    rig.feed([START])
    heard = []
    for k in range(4 * BAR + TICKS_PER_BEAT):
        rig.song(1, {0: band.get(k, [])} if how == "channel" else {}, {0: band.get(k, [])} if how == "port" else None)
        heard.append(rig.live.backing.code(rig.live.now_tick()))
    assert not [m for m in rig.sent if m[0] & 0xF0 == 0x90], f"leadline sent notes over the band: {rig.sent[:8]}"
    assert rig.live.stats.notes_in == 0 and not rig.live.player.sounding and rig.live.stats.interrupts == 0
    assert C_CODE in heard and AM_CODE in heard
    rig.song(3 * BAR, player_notes({}, [(t - rig.live.now_tick() - 1, e - rig.live.now_tick() - 1, p)
                                        for t, e, p in phrase(5 * BAR)], PLAYER_CH))
    assert rig.answers() > 0, "the player's phrase after the band was not answered"


def test_clock_is_followed_from_the_bands_port_and_once_when_both_ports_send_it(tiny_engine, monkeypatch):
    rig = Rig(tiny_engine, monkeypatch, 1)
    rig.feed([START], backing=True)
    for _ in range(48):
        rig.fake.advance(rig.period)
        rig.feed([CLOCK], backing=True)
        rig.pass_()
    assert rig.live.external and rig.live.running and rig.live.clock.tick == 47
    for _ in range(48):  # the DAW sends clock to both of leadline's inputs
        rig.fake.advance(rig.period)
        rig.feed([CLOCK])
        rig.feed([CLOCK], backing=True)
        rig.pass_()
    assert rig.live.clock.tick == 95 and abs(rig.live.clock.bpm - 120) < 1
    for _ in range(48):  # only the player's port goes on: followed before a dropout
        rig.fake.advance(rig.period)
        rig.feed([CLOCK])
        rig.pass_()
    assert rig.live.running and rig.live.stats.stops == 0 and 95 + 48 - 12 <= rig.live.clock.tick <= 95 + 48


def _stop(rig):
    rig.feed([STOP])


def _dropout(rig):
    rig.pass_(2 * rig.cfg.clock.timeout_ms * 1e6)


def _lost(rig):
    rig.live.input_lost()


def _all_notes_off(rig):
    rig.feed([0xB0 | PLAYER_CH, 123, 0])


def _panic(rig):
    rig.feed([0xB0, rig.cfg.control.panic_cc, 127])


def _bands_all_notes_off(rig):
    rig.feed([0xB0, 123, 0], backing=True)


@pytest.mark.parametrize("silence", [_stop, _dropout, _lost, _all_notes_off, _panic, _bands_all_notes_off])
def test_stop_dropout_lost_input_and_panic_silence_the_band(tiny_engine, monkeypatch, silence):
    rig = Rig(tiny_engine, monkeypatch, 1)
    rig.feed([START])
    rig.song(24, {}, chord({}, 2, 99, C_MAJOR))
    assert rig.live.backing.code(rig.live.now_tick()) == C_CODE
    silence(rig)
    assert rig.live.backing.code(rig.live.now_tick()) == harmony.NONE


def test_the_sustain_pedal_holds_the_bands_notes():
    b = harmony.Backing()
    b.sustain(True, 0)
    for p in C_MAJOR:
        b.note_on(p)
        b.note_off(p, 10)
    assert b.code(100) == C_CODE  # held by the pedal long after HOLD
    b.sustain(False, 100)
    assert b.code(100 + harmony.HOLD - 1) == C_CODE and b.code(100 + harmony.HOLD) == harmony.NONE


def test_an_automatic_key_weighs_the_band_in(tiny_engine, monkeypatch):
    """The player plays A and D only; the band holds Bb major. The key leadline plays in holds the band's
    chord (the player's notes alone make a key without Bb)."""
    rig = Rig(tiny_engine, monkeypatch, 1, "mode=respond", "respond.bars=1", "sampling.key=auto")
    band = chord({}, 0, 3 * BAR, (46, 50, 53))  # Bb2 D3 F3
    rig.feed([START])
    rig.song(3 * BAR, player_notes({}, phrase(6, (57, 62, 57, 62, 57)), PLAYER_CH), band)
    assert rig.answers() > 0
    tonic, intervals = rig.live.sampler.key
    scale = {(tonic + i) % 12 for i in intervals}
    assert {10, 2, 5} <= scale, f"key {rig.live.sampler.key} leaves out the band's Bb major"
    alone = estimate_key(key_histogram(rig.live.player.pc_hist))
    assert 10 not in {(alone[0] + i) % 12 for i in config.SCALES[alone[1]]}


def test_key_histogram_weighs_the_band_twice_the_player():
    player, band = np.eye(12)[0] * 5, np.eye(12)[7] * 40
    assert np.allclose(key_histogram(player, band), np.eye(12)[0] + 2 * np.eye(12)[7])
    assert np.allclose(key_histogram(player), np.eye(12)[0]) and np.allclose(key_histogram(player, np.zeros(12)),
                                                                              np.eye(12)[0])


# --- ports and settings ---------------------------------------------------------------------------------

def test_the_input_queue_marks_the_bands_messages():
    q = ports.InputQueue(16)
    q.put(1, [0x90, 60, 100])
    q.backing_callback(([0x90, 48, 90], 0.0))
    q.put(3, [0xF8], True)
    got = list(iter(lambda: q.get(0), None))
    assert got[0] == (1, [0x90, 60, 100]) and got[1][1:] == ([0x90, 48, 90], True) and got[2] == (3, [0xF8], True)


def test_backing_settings():
    c = config.load(None, [])
    assert c.midi.backing_port == "leadline backing" and c.midi.backing_channels == ()
    c = config.load(None, ["midi.backing_channels=[2, 16]", "midi.backing_port=null"])
    assert c.midi.backing_channels == (2, 16) and c.midi.backing_port is None
    for bad, message in (("midi.backing_channels=[0]", "midi.backing_channels: 0"),
                         ("midi.backing_channels=3", "midi.backing_channels: 3 (expected a list)"),
                         ("midi.backing_port=leadline in", "midi.backing_port: 'leadline in'")):
        with pytest.raises(config.ConfigError) as e:
            config.load(None, [bad])
        assert str(e.value).startswith(message) and "\n" not in str(e.value)
    with pytest.raises(config.ConfigError, match=r"^midi.backing_channels: \[3\] \(holds midi.in_channel 3"):
        config.load(None, ["midi.backing_channels=[3]", "midi.in_channel=3"])


# --- offline: leadline respond --backing -------------------------------------------------------------------

SONG = SHARED_DATA_DIR / "rock-o-net" / "a" / "acdc" / "Hells_Bells.mid"  # a "Lead" track and a band


def _write(path, parts: dict[str, list[tuple[int, int, int]]], drums: bool = False) -> str:
    """A file with one track per part of (onset, end, pitch) in grid ticks (channel 10 for `drums`)."""
    mid = mido.MidiFile(type=1, ticks_per_beat=TICKS_PER_BEAT)
    for i, (name, notes) in enumerate(parts.items()):
        ch = 9 if drums else i
        ev = sorted([(on, 1, mido.Message("note_on", channel=ch, note=p, velocity=90)) for on, _, p in notes]
                    + [(off, 0, mido.Message("note_off", channel=ch, note=p)) for _, off, p in notes],
                    key=lambda e: e[:2])
        track, now = mido.MidiTrack([mido.MetaMessage("track_name", name=name)]), 0
        for t, _, m in ev:
            track.append(m.copy(time=t - now))
            now = t
        mid.tracks.append(track)
    mid.save(path)
    return str(path)


def test_respond_hears_the_backing_file_exactly_at_each_step(tiny_engine, tmp_path):
    """Every step, the phrase's and the answer's, hears the code of the backing at the tick after its token."""
    src = _write(tmp_path / "phrase.mid", {"lead": phrase(0, (64, 67, 69, 71, 72, 71, 69))})
    changes = [(b * BAR, (b + 1) * BAR, p) for b, ch in enumerate((C_MAJOR, A_MINOR) * 2) for p in ch]
    band_file = _write(tmp_path / "band.mid", {"keys": changes})
    ph, band = offline.read_input(src, config.DataConfig(), band_file)
    assert len(band) == len(changes)
    imp = Improviser(tiny_engine, Sampler(config.SamplingConfig(), seed=3), window=4096)
    imp.reprime(cursor=0)
    answer = offline.answer(imp, ph, 1.0, 2, band=band)
    assert answer
    ticks = token_ticks(imp.window)
    want = harmony.codes_at(ticks, *(np.array([getattr(n, k) for n in band]) for k in ("onset", "end", "pitch")))
    assert np.array_equal(np.array(imp.codes), want) and {C_CODE, AM_CODE} <= set(want)


def test_respond_writes_the_backing_and_finds_it_in_the_input(tiny_model, tmp_path):
    if not SONG.is_file():
        pytest.skip(f"needs {SONG}")
    ph, band = offline.read_input(SONG, config.DataConfig())
    lead = {(n.onset, n.pitch) for n in ph}
    assert len(band) > 100 and len({(n.onset, n.pitch) for n in band} & lead) < len(band) // 10
    out = tmp_path / "out.mid"
    assert main(["respond", str(SONG), "-o", str(out), "--model", str(tiny_model.path), "--bars", "1"]) == 0
    names = [t.name for t in mido.MidiFile(out).tracks if t.name]
    assert names == ["player", "leadline", "backing"]
    solo = _write(tmp_path / "solo.mid", {"lead": phrase(0)})
    assert offline.read_input(solo, config.DataConfig())[1] == []
    assert main(["respond", solo, "-o", str(tmp_path / "solo_out.mid"), "--model", str(tiny_model.path)]) == 0
    assert [t.name for t in mido.MidiFile(tmp_path / "solo_out.mid").tracks if t.name] == ["player", "leadline"]


def test_a_backing_file_without_a_band_is_a_one_line_error(tmp_path, capsys):
    src = _write(tmp_path / "phrase.mid", {"lead": phrase(0)})
    drums = _write(tmp_path / "drums.mid", {"kit": [(0, 6, 36), (24, 30, 38)]}, drums=True)
    with pytest.raises(UserError, match="drums.mid: no backing to hear"):
        offline.read_input(src, config.DataConfig(), drums)
    assert main(["respond", src, "--backing", drums, "-o", str(tmp_path / "o.mid")]) == 1
    err = capsys.readouterr().err.strip()
    assert "no backing to hear" in err and len(err.splitlines()) == 1


def test_the_band_is_on_the_phrases_timeline_from_its_first_bar(tmp_path):
    """The phrase starts in bar 3 of its file: the backing file's notes move with it; what ended before is
    gone, what still sounds there starts at 0."""
    src = _write(tmp_path / "phrase.mid", {"lead": phrase(2 * BAR + 6)})
    band_file = _write(tmp_path / "band.mid", {"keys": [(0, BAR, 40), (BAR, 2 * BAR + 24, 43), (2 * BAR, 3 * BAR, 47)]})
    ph, band = offline.read_input(src, config.DataConfig(), band_file)
    assert ph[0].onset == 6
    assert [(n.onset, n.end, n.pitch) for n in band] == [(0, 24, 43), (0, BAR, 47)]


def test_a_take_over_the_band_logs_it_and_replays_exactly(tiny_engine, tiny_model, monkeypatch, tmp_path):
    """The band's messages go to the session log ("b") with the harmony of each step ("s"); `leadline replay`
    feeds them back on the band's port, and the answers come out the same."""
    from leadline.daemon import replay, session
    from leadline.daemon.recording import Recorder

    rig = Rig(tiny_engine, monkeypatch, 4, "mode=respond", "respond.bars=1", f"engine.model={tiny_model.path}")
    live = rig.live
    live.recorder = Recorder(tmp_path, {"seed": 4, "config": config.as_dict(rig.cfg)}, live.out_ch)
    rig.feed([START])
    band = chord(chord({}, 0, 2 * BAR, C_MAJOR), 2 * BAR, 4 * BAR, A_MINOR)
    rig.song(4 * BAR + 1, player_notes({}, phrase(6) + phrase(2 * BAR + 6), PLAYER_CH), band)
    rig.feed([STOP])
    rig.pass_(10_000_000)
    live.recorder.close()
    log = sorted(tmp_path.glob("*.log"))[0]
    _, events = session.read(log)
    assert sum(e[0] == "b" for e in events) == 2 * (len(C_MAJOR) + len(A_MINOR))
    assert {e[3] for e in events if e[0] == "s"} >= {C_CODE, AM_CODE}
    r = replay.replay(log)
    assert r["logged"] > 0 and r["same"] == r["logged"] == r["replayed"], r
    header, _ = session.read(log)
    again, out, _ = replay.rebuild(header, None)  # (the tiny model hears the band softly: the notes may agree
    inputs = replay.logged_inputs(events)  # without it, so the harmony each step heard is compared too)
    replay.run_loop(again, out, inputs, max(e[1] for e in events))
    assert list(again.improviser.codes) == list(live.improviser.codes)


def test_the_status_line_shows_the_chord_the_band_sounds(tiny_engine, monkeypatch):
    from leadline.daemon.serve import Status

    rig = Rig(tiny_engine, monkeypatch, 1)
    status = Status(rig.live, ports.InputQueue(16), "cpu")
    rig.feed([START])
    rig.song(12, {}, chord({}, 2, 99, C_MAJOR))
    assert " | band C E G/C | " in status.line()
    rig.feed([STOP])
    assert " band " not in status.line()


def test_the_band_striking_leadlines_own_note_is_not_taken_for_an_echo(tiny_engine, monkeypatch):
    """On the beat, leadline plays E3 on channel 1 and the band's chord holds E3 on channel 1 too: the band's
    port is not loopback-guarded, the chord is whole."""
    rig = Rig(tiny_engine, monkeypatch, 1)
    rig.live.echo.sent(rig.fake.t, [0x90, 52, 100])
    for p in C_MAJOR:
        rig.feed([0x90, p, 100], backing=True)
    assert rig.live.backing.code(1) == C_CODE and rig.live.echo.echoes == 0
