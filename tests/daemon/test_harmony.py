"""The backing's harmony as the model hears it: codes, features, transposition, from file notes and live."""
import numpy as np

from leadline.daemon import harmony


def test_a_code_holds_pitch_classes_and_bass_and_silence_is_zero():
    c = harmony.code([4, 7, 11], 4)  # E minor over E
    assert harmony.pitch_classes(c) == [4, 7, 11] and harmony.bass_of(c) == 4
    assert harmony.code([], None) == harmony.NONE == 0
    f = harmony.features([c])[0]
    assert f[:12].nonzero()[0].tolist() == [4, 7, 11] and f[12:].nonzero()[0].tolist() == [4]


def test_transposing_rotates_pitch_classes_and_bass():
    c = np.array([harmony.code([4, 7, 11], 4), harmony.NONE], np.uint16)
    up = harmony.transpose(c, 3)  # G minor over G
    assert harmony.pitch_classes(int(up[0])) == [2, 7, 10] and harmony.bass_of(int(up[0])) == 7
    assert up[1] == harmony.NONE
    assert np.array_equal(harmony.transpose(harmony.transpose(c, 5), -5), c)


def test_codes_at_hear_only_notes_struck_before_and_hold_a_released_chord_an_eighth():
    # C major (C3 E3 G3) from tick 0 to 24, then A minor (A2 C3 E3) from 24 to 48
    onset = np.array([0, 0, 0, 24, 24, 24])
    end = np.array([24, 24, 24, 48, 48, 48])
    pitch = np.array([48, 52, 55, 45, 48, 52])
    codes = harmony.codes_at(np.array([0, 1, 24, 25, 48 + harmony.HOLD - 1, 48 + harmony.HOLD]), onset, end, pitch)
    assert codes[0] == harmony.NONE  # the chord struck at tick 0 is not heard at tick 0
    assert codes[1] == harmony.code([0, 4, 7], 0)
    assert codes[2] == harmony.code([0, 4, 7], 0)  # A minor is struck at 24: heard from 25; C major still held
    assert codes[3] == harmony.code([0, 4, 7, 9], 9)  # A minor, and C major released 1 tick ago (held an eighth)
    assert codes[4] == harmony.code([9, 0, 4], 9) and codes[5] == harmony.NONE


def test_live_backing_follows_note_ons_and_offs_and_clears():
    b = harmony.Backing()
    for p in (40, 55, 59, 64):  # E2 G3 B3 E4
        b.note_on(p)
    assert b.code(0) == harmony.code([4, 7, 11], 4)
    b.note_off(40, 10)
    assert b.code(10 + harmony.HOLD - 1) == harmony.code([4, 7, 11], 4)  # released, still heard
    assert harmony.bass_of(b.code(10 + harmony.HOLD)) == 7  # forgotten: G is the bass now
    b.clear()
    assert b.code(100) == harmony.NONE
