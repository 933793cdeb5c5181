"""The jam modes with the shipped model, in-process: duet and trade keep playing while the player plays,
and respond answers again after a lost note-off (issue 19).

The in-process rig (bench/liverig.py) drives `leadline.daemon.live.Live` at synthetic times with a real
CpuEngine on models/default; the song runs at 120 BPM from Start, tick 0 being the first clock tick.
"""
from __future__ import annotations

import pytest

from leadline.bench import jam
from leadline.bench.liverig import BAR, PLAYER_CH, START, Rig, per_bar, player_notes
from leadline.daemon.codec import TICKS_PER_BEAT


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_duet_plays_in_every_bar_while_the_player_plays_on_and_off(engine, monkeypatch, seed):
    rig = jam.duet(engine, monkeypatch, seed)  # the player plays bars 2, 4 and 6
    counts = per_bar(rig.onsets, 8)
    assert all(counts), f"duet fell silent: leadline's note-ons per bar {counts}"
    assert rig.live.queue.late == 0


@pytest.mark.parametrize("last_end", jam.TRADE_ENDS)
def test_trade_fills_each_turn_when_the_players_last_note_ends_late(engine, monkeypatch, last_end):
    """The player's last note ends in the final beat of its turn, or a few ticks into leadline's."""
    rig = jam.trade(engine, monkeypatch, 1, last_end)
    cut = jam.cut_turns(rig)
    assert not cut, f"leadline's turns cut short (turn: its onsets, ticks into the bar): {cut}"
    wrong = [t for t in rig.onsets if (t // BAR) % 2 == 0]
    assert not wrong, f"notes at ticks {wrong} fall in the player's bars"
    assert rig.live.queue.late == 0


@pytest.mark.parametrize("cc", [123, 120])
def test_respond_answers_after_a_note_off_lost_to_all_notes_off(engine, monkeypatch, cc):
    """The player holds a note; All Notes Off (or All Sound Off) comes instead of its note-off. The next
    phrases are answered."""
    rig = jam.respond_after_lost_note_off(engine, monkeypatch, 1, cc)
    assert jam.answered(rig) == 2, f"respond did not answer: note-ons per bar {per_bar(rig.onsets, 8)}"


def test_a_note_held_past_max_held_beats_stops_blocking_the_answer(engine, monkeypatch, caplog):
    """A lost note-off with nothing else to tell it: the note counts as released after midi.max_held_beats,
    once, and the phrase after it is answered."""
    rig = Rig(engine, monkeypatch, 1, "mode=respond", "respond.bars=1", "midi.max_held_beats=8")
    events = player_notes({2: [[0x90 | PLAYER_CH, 52, 100]]}, [(3 * BAR + 12 * i, 3 * BAR + 12 * i + 10, p)
                                                   for i, p in enumerate((64, 67, 69, 71))])
    rig.feed([START])
    with caplog.at_level("INFO", logger="leadline.daemon.live"):
        rig.song(8 * TICKS_PER_BEAT, events)  # (the note was struck at tick 2)
        assert not rig.onsets, "leadline answered while the note was held"
        rig.song(5 * BAR, {k - 8 * TICKS_PER_BEAT: m for k, m in events.items() if k >= 8 * TICKS_PER_BEAT})
    held = [r for r in caplog.records if "held over" in r.getMessage()]
    assert len(held) == 1, [r.getMessage() for r in caplog.records]
    assert rig.onsets, "no answer after a note held past midi.max_held_beats"
    assert not rig.live.player.sounding


def test_hearing_the_player_mid_note_waits_for_its_dur_and_the_phrase_goes_on(engine):
    """Player notes heard while leadline's note has its NOTE but not yet its DUR wait for the DUR: the
    token stream stays well formed (every NOTE followed by its DUR), and the phrase is not ended."""
    from leadline.daemon import codec, config
    from leadline.daemon.codec import Note
    from leadline.daemon.improviser import Improviser
    from leadline.daemon.sampler import Sampler

    imp = Improviser(engine, Sampler(config.load(None, []).sampling, seed=0), window=512)
    imp.begin(0, 1 << 40)
    while imp.decoder.pending < 0:
        imp.next_note(max_steps=1)
    imp.hear([Note(0, 12, 60, 90), Note(12, 12, 62, 90)])
    assert imp.playing and len(imp.waiting) == 2
    while imp.next_note(max_steps=1) is None:
        pass
    assert imp.playing and not imp.waiting
    kinds = [codec.TOKEN_KIND[t] for t in imp.window]
    assert all(b == codec.K_DUR for a, b in zip(kinds, kinds[1:]) if a == codec.K_NOTE), "a NOTE without its DUR"
    pitches = [int(codec.TOKEN_VALUE[t]) for t in imp.window if codec.TOKEN_KIND[t] == codec.K_NOTE]
    assert pitches[-2:] == [60, 62], "the player's notes were not heard after leadline's"
    assert imp.decoder.cursor == imp.cursor


def test_a_rest_does_not_end_a_phrase_before_its_last_beat():
    """A model that wants to rest a whole bar (SHIFT 96 far above anything else) still plays on in a 1-bar
    phrase to be filled (a trade turn): the rest that ends it starts in its last beat; in an open-ended one
    (duet), no silence of a bar comes between its notes. A respond answer may end by resting."""
    import numpy as np

    from leadline.daemon import codec, config
    from leadline.daemon.improviser import Improviser
    from leadline.daemon.sampler import Sampler

    class RestingModel:  # logits only: the rule is the improviser's, whatever the model
        logits = np.full(codec.VOCAB_SIZE, -5.0, np.float32)
        logits[codec.OFFSETS["SHIFT"] + codec.MAX_SHIFT - 1] = 20.0
        logits[codec.OFFSETS["NOTE"] + 64 - codec.PITCH_LO] = 0.0
        logits[codec.OFFSETS["DUR"]:codec.OFFSETS["DUR"] + 3] = 0.0

        harmony_code = 0

        def prime(self, toks, harmony_codes=None):
            return self.logits

        def step(self, tok):
            return self.logits

        def set_harmony(self, code):
            self.harmony_code = code

    imp = Improviser(RestingModel(), Sampler(config.load(None, []).sampling, seed=0), window=4096)
    for start in (0, 960):
        imp.begin(start, start + 96, fill=True)
        before = len(imp.window)
        while imp.playing:
            imp.next_note()
        shifts = [int(codec.TOKEN_VALUE[t]) for t in list(imp.window)[before:] if codec.TOKEN_KIND[t] == codec.K_SHIFT]
        assert shifts and sum(shifts[:-1]) >= 96 - TICKS_PER_BEAT, f"a rest ended the phrase early: {shifts}"
    imp.begin(3000, 3096)  # a respond answer is not filled: it may end by a rest after one note
    while imp.playing:
        imp.next_note()
    assert imp.cursor >= 3096 and imp.last_onset == 3000
    imp.begin(4000, 1 << 40, fill=True)  # open-ended (duet): it rests, but never a bar since its last note
    onsets = []
    for _ in range(500):  # (bounded: a model resting for ever must fail here, not hang)
        if (n := imp.next_note()) is not None:
            onsets.append(n.onset)
    assert len(onsets) >= 20, f"{len(onsets)} notes in 500 calls: it rested {imp.cursor - 4000} ticks"
    gaps = np.diff(onsets)
    assert gaps.max() < 96 and gaps.max() > 48, f"gaps between leadline's onsets {sorted(set(gaps))}"


@pytest.mark.parametrize("cut", ["enable", "panic", "tempo", "continue"])
def test_duet_plays_on_after_events_that_are_not_an_interrupt_of_the_mode(engine, monkeypatch, cut):
    """The enable CC off then on, a panic, a tempo change, a Continue while rolling: duet plays again."""
    from leadline.bench.liverig import CONTINUE

    rig = Rig(engine, monkeypatch, 4, "mode=duet")
    events = {"enable": {BAR: [[0xB0, 23, 0]], 2 * BAR: [[0xB0, 23, 127]]},
              "panic": {BAR: [[0xB0, 24, 127]]},
              "continue": {BAR: [[CONTINUE]]}}.get(cut, {})
    rig.feed([START])
    if cut == "tempo":
        rig.song(BAR, {})
        rig.period *= 120 / 160
    rig.song(5 * BAR, events)
    counts = per_bar(rig.onsets, 5)
    assert all(counts[2:]), f"duet did not play on after {cut}: note-ons per bar {counts}"
