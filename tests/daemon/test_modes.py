"""Jam modes decided from musical time: respond after silence, interrupt, trade turns, duet."""
from leadline.daemon.config import RespondConfig, TradeConfig
from leadline.daemon.modes import BAR, Conductor

Q = 24


def conductor(mode, after_beats=1.0, bars=2, trade_bars=4):
    return Conductor(mode, RespondConfig(after_beats=after_beats, bars=bars), TradeConfig(bars=trade_bars))


def test_respond_waits_for_silence_then_answers_on_the_next_beat():
    c = conductor("respond", after_beats=1.0, bars=2)
    assert c.phrase(0) is None  # nothing played yet: nothing to answer
    c.player_on(10, 1)
    c.player_off(40, 0)
    assert c.phrase(50) is None  # still within the one-beat gap
    p = c.phrase(40 + Q)
    assert p is not None and p.start % Q == 0 and p.start > 40 + Q - 1
    assert p.start - (40 + Q) <= Q and p.end - p.start == 2 * BAR


def test_respond_never_answers_while_a_note_is_held():
    c = conductor("respond")
    c.player_on(0, 1)
    assert c.phrase(10 * Q) is None


def test_player_playing_again_interrupts_the_answer():
    c = conductor("respond")
    c.player_on(0, 1)
    c.player_off(6, 0)
    assert c.phrase(2 * Q) is not None
    assert c.player_on(3 * Q, 1) is True
    assert c.phrase(3 * Q + 1) is None


def test_answer_once_per_phrase_of_the_player():
    c = conductor("respond", bars=1)
    c.player_on(0, 1)
    c.player_off(6, 0)
    p = c.phrase(2 * Q)
    assert c.phrase(p.end) is None  # answered; the player has not played since
    c.player_on(p.end + 2, 1)
    c.player_off(p.end + 8, 0)
    assert c.phrase(p.end + 8 + Q) is not None


def test_trade_alternates_on_bar_boundaries():
    c = conductor("trade", trade_bars=4)
    turn = 4 * BAR
    assert c.phrase(0) is None and c.owner(0) == "player"
    p = c.phrase(turn - Q)  # generation starts a beat before leadline's turn
    assert (p.start, p.end) == (turn, 2 * turn)
    assert c.owner(turn) == "leadline" and c.owner(2 * turn) == "player"
    assert c.phrase(2 * turn) is None
    assert c.phrase(3 * turn - Q).start == 3 * turn


def test_duet_plays_continuously_from_the_next_eighth():
    c = conductor("duet")
    p = c.phrase(5)
    assert p.start == 12 and p.end > 10 ** 9
    assert conductor("duet").phrase(0).start == 12  # at Start: an eighth ahead, time to generate its first note
    c.player_on(20, 1)
    assert c.phrase(21) is p  # the player does not interrupt a duet


def test_mode_change_resets():
    c = conductor("respond")
    c.player_on(0, 1)
    c.player_off(6, 0)
    c.set_mode("trade")
    assert c.mode == "trade" and c.phrase(2 * Q) is None
