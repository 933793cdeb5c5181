"""Expression and harmony measures of answers: chord tones over a known backing, the tritone move, bend shares."""
import numpy as np

from leadline.daemon import codec, harmony
from leadline.daemon.codec import Note
from leadline.training import exprharm

Q = codec.TICKS_PER_BEAT
E_MINOR, C_MAJOR = harmony.code([4, 7, 11], 4), harmony.code([0, 4, 7], 0)


def _lookup():
    """E minor heard from tick 1 to 4 beats, C major after (a SHIFT every beat)."""
    tokens = np.array([codec.BOS] + [codec.token("SHIFT", Q)] * 8)
    codes = np.array([harmony.NONE] + [E_MINOR] * 4 + [C_MAJOR] * 4)
    return exprharm.Lookup.of(tokens, codes)


def test_lookup_gives_the_code_in_force_and_moves_it():
    lk = _lookup()
    assert lk.at([0, Q, 4 * Q - 1, 5 * Q, 100 * Q]).tolist() == [harmony.NONE, E_MINOR, E_MINOR, C_MAJOR, C_MAJOR]
    assert lk.moved(6).at(Q)[0] == harmony.transpose(np.array([E_MINOR], np.uint16), 6)[0]


def test_chord_tones_count_notes_on_beats_over_a_sounding_backing():
    lk = _lookup()
    notes = [Note(Q, 6, 64, 80), Note(2 * Q, 6, 65, 80), Note(2 * Q + 6, 6, 67, 80),  # E (tone), F (not), off-beat G
             Note(5 * Q, 6, 60, 80), Note(0, 6, 60, 80)]  # C over C major (tone); tick 0: no backing yet
    assert exprharm.chord_tones(notes, lk) == (2, 3)
    moved = exprharm.chord_tone_share([notes], [lk.moved(exprharm.TRITONE)])
    assert moved["notes"] == 3 and moved["share"] == 1 / 3  # over Bb minor and F# major only F is a chord tone


def test_expression_stats_pool_the_windows():
    w = [[Note(0, 12, 64, 80, bend=4, bend_at=0), Note(12, 12, 64, 80)], [Note(0, 24, 60, 80, vibrato=1)], []]
    s = exprharm.expression_stats(w)
    assert s["notes"] == 3 and abs(s["bent_share"] - 1 / 3) < 1e-9 and abs(s["vibrato_share"] - 1 / 3) < 1e-9
    assert s["depth_histogram"]["4"] == 1 and s["prebend_share"] == 1.0
    assert s["bent_share_per_window"]["median"] == 0.25
