"""The codec: exhaustive round trip over every token id, plus hand-checked musical cases."""
import pytest

from leadline.daemon import codec
from leadline.daemon.codec import Note, TICKS_PER_BEAT as Q


def test_every_token_id_round_trips_through_its_kind_and_value():
    for tok in range(codec.VOCAB_SIZE):
        kind, value = codec.describe(tok)
        assert codec.token(kind, value) == tok


def test_vocabulary_ranges_are_contiguous_and_sized():
    assert codec.OFFSETS["BOS"] == 0
    assert codec.VOCAB_SIZE == 1 + codec.MAX_SHIFT + codec.VEL_BINS + (codec.PITCH_HI - codec.PITCH_LO + 1) \
        + len(codec.DURATIONS) + len(codec.BEND_STEPS) + len(codec.BEND_AT) + len(codec.RELEASE_AT) \
        + len(codec.VIB_DEPTH) - 1
    assert codec.OFFSETS["BEND"] == 245  # codec 2 appended its tokens: codec 1's keep their ids
    assert list(codec.DURATIONS) == sorted(set(codec.DURATIONS))


@pytest.mark.parametrize("tok", range(codec.VOCAB_SIZE))
def test_every_token_decodes_and_reencodes(tok):
    """Each token placed in a well-formed context decodes to notes that encode back to the same tokens."""
    kind, value = codec.describe(tok)
    vel, note, dur = codec.token("VEL", 12), codec.token("NOTE", 64), codec.token("DUR", 5)
    bend, bat = codec.token("BEND", 5), codec.token("BAT", 2)
    seq = {
        "BOS": [codec.BOS, vel, note, dur],
        "SHIFT": [codec.BOS, vel, note, dur, tok, note, dur],
        "VEL": [codec.BOS, tok, note, dur],
        "NOTE": [codec.BOS, vel, tok, dur],
        "DUR": [codec.BOS, vel, note, tok],
        "BEND": [codec.BOS, vel, tok, bat, note, dur],
        "BAT": [codec.BOS, vel, bend, tok, note, dur],
        "REL": [codec.BOS, vel, bend, bat, tok, note, dur],
        "VIB": [codec.BOS, vel, bend, bat, tok, note, dur],
    }[kind]
    notes = codec.decode(seq)
    assert all(codec.representable(n) for n in notes)
    assert codec.encode(notes) == seq


def test_triplet_eighths_on_the_grid():
    notes = [Note(i * Q // 3, Q // 3, 64 + i, 100) for i in range(3)]
    toks = codec.encode(notes)
    assert [codec.describe(t) for t in toks if codec.describe(t)[0] == "SHIFT"] == [("SHIFT", 8)] * 2
    assert codec.decode(toks) == [Note(n.onset, n.duration, n.pitch, codec.bin_velocity(codec.velocity_bin(100)))
                                  for n in notes]


def test_note_tied_across_a_bar_keeps_its_length():
    tied = Note(3 * Q + Q // 2, Q, 67, 96)  # starts on the and of 4, rings into the next bar
    nxt = Note(5 * Q, Q // 2, 69, 96)
    out = codec.decode(codec.encode([tied, nxt]))
    assert (out[0].onset, out[0].duration) == (3 * Q + Q // 2, Q)
    assert out[1].onset == 5 * Q


def test_double_stop_shares_one_onset_and_no_shift():
    a, b = Note(Q, Q, 64, 100), Note(Q, Q, 71, 100)
    toks = codec.encode([b, a])
    kinds = [codec.describe(t)[0] for t in toks]
    assert kinds == ["BOS", "SHIFT", "VEL", "NOTE", "DUR", "NOTE", "DUR"]
    assert codec.decode(toks) == [a, b]


def test_long_rest_uses_several_shifts_and_long_notes_are_cut():
    toks = codec.encode([Note(0, 1000, 60, 64), Note(250, 6, 62, 64)])
    assert codec.decode(toks)[0].duration == codec.MAX_DURATION
    assert codec.decode(toks)[1].onset == 250


def test_out_of_range_pitch_is_folded_by_octaves():
    assert codec.decode(codec.encode([Note(0, 6, 12, 64)]))[0].pitch == 24
    assert codec.decode(codec.encode([Note(0, 6, 120, 64)]))[0].pitch == 96


def test_quantize_duration_picks_the_nearest_step():
    assert codec.quantize_duration(25) == 24
    assert codec.quantize_duration(26) == 27
    assert codec.quantize_duration(10_000) == codec.MAX_DURATION


def test_time_conversions():
    assert codec.ticks_to_seconds(Q, 120) == pytest.approx(0.5)
    assert codec.seconds_to_ticks(0.5, 120) == pytest.approx(Q)
    assert codec.file_ticks_to_grid(480, 480) == Q
    assert codec.file_ticks_to_grid(160, 480) == Q // 3  # a triplet eighth at PPQ 480


def test_ill_formed_streams_are_counted_not_raised():
    d = codec.Decoder()
    assert d.feed(codec.token("DUR", 3)) is None  # DUR without NOTE
    assert d.feed(codec.token("NOTE", 60)) is None
    assert d.feed(codec.token("SHIFT", 4)) is None  # NOTE without DUR
    assert d.errors == 2 and d.cursor == 4


def test_bad_notes_are_rejected_on_construction():
    with pytest.raises(codec.CodecError):
        Note(0, 0, 60, 64)
    with pytest.raises(codec.CodecError):
        Note(0, 6, 60, 0)
    with pytest.raises(codec.CodecError, match="before the cursor"):
        codec.encode([Note(0, 6, 60, 64)], start=10)


def test_a_bent_note_round_trips_with_its_expression_before_it():
    notes = [Note(0, 12, 64, 76, bend=4, bend_at=6, release=2), Note(12, 6, 62, 76),
             Note(18, 24, 64, 76, vibrato=2), Note(42, 12, 60, 76, bend=-2, bend_at=0, release=1, vibrato=1)]
    toks = codec.encode(notes)
    kinds = [codec.describe(t)[0] for t in toks]
    assert kinds[:7] == ["BOS", "VEL", "BEND", "BAT", "REL", "NOTE", "DUR"]
    assert codec.decode(toks) == notes


def test_expression_out_of_order_is_dropped_and_counted_never_raised():
    tok = codec.token
    d = codec.Decoder()
    seq = [tok("BAT", 1), tok("NOTE", 60), tok("DUR", 5),  # a BAT with no BEND: the note is plain
           tok("BEND", 7), tok("NOTE", 62), tok("DUR", 5),  # a BEND with no BAT: plain
           tok("VIB", 1), tok("SHIFT", 3), tok("NOTE", 64), tok("DUR", 5)]  # expression cut by a SHIFT
    notes = [n for n in map(d.feed, seq) if n is not None]
    assert [n.expressive for n in notes] == [False, False, False]
    assert d.errors == 3


def test_mid_note_from_the_first_expression_token_to_the_dur():
    d = codec.Decoder()
    flags = []
    for t in [codec.token("BEND", 7), codec.token("BAT", 1), codec.token("NOTE", 60), codec.token("DUR", 3)]:
        d.feed(t)
        flags.append(d.mid_note)
    assert flags == [True, True, True, False]


def test_bend_curve_reaches_the_target_at_its_tick_and_releases():
    up = codec.bend_curve(Note(0, 24, 64, 76, bend=4, bend_at=6, release=2))
    assert up[0] == (0, 0.0) and dict(up)[6] == 2.0
    assert up[-1] == (18, 0.0)  # back at 3/4 of the note
    pre = codec.bend_curve(Note(0, 12, 64, 76, bend=2, bend_at=0))
    assert pre == [(0, 1.0)]  # bent before it is struck, held (the caller recentres after the note)
    vib = codec.bend_curve(Note(0, 48, 64, 76, vibrato=2))
    assert max(b for _, b in vib) == 0.5 and min(b for _, b in vib) == -0.5
    assert codec.bend_curve(Note(0, 12, 64, 76)) == []


@pytest.mark.parametrize("note", [Note(0, 24, 64, 76, bend=4, bend_at=6, release=2),
                                  Note(0, 24, 64, 76, bend=-3, bend_at=12),
                                  Note(0, 12, 64, 76, bend=2, bend_at=0, release=1),
                                  Note(0, 48, 64, 76, vibrato=1), Note(0, 48, 64, 76, vibrato=2)])
def test_pitch_bend_read_back_from_a_rendered_curve_is_the_same_expression(note):
    """What the daemon sends (bend_curve) read back as ingestion reads a file's pitch bend."""
    import numpy as np
    curve = codec.bend_curve(note)
    tick = np.array([t for t, _ in curve], float)
    semis = np.array([b for _, b in curve])
    if note.bend_at == 0 and note.bend:  # a pre-bend is set before the onset
        tick[0] = -1
    tick, semis = np.r_[tick, note.duration], np.r_[semis, 0.0]  # recentred after the note
    got = codec.expression_from_bends(np.array([0]), np.array([note.duration]), tick, semis)[0]
    assert tuple(got) == (note.bend, note.bend_at, note.release, note.vibrato)
