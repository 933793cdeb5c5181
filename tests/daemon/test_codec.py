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
        + len(codec.DURATIONS)
    assert list(codec.DURATIONS) == sorted(set(codec.DURATIONS))


@pytest.mark.parametrize("tok", range(codec.VOCAB_SIZE))
def test_every_token_decodes_and_reencodes(tok):
    """Each token placed in a well-formed context decodes to notes that encode back to the same tokens."""
    kind, value = codec.describe(tok)
    vel, note, dur = codec.token("VEL", 12), codec.token("NOTE", 64), codec.token("DUR", 5)
    seq = {
        "BOS": [codec.BOS, vel, note, dur],
        "SHIFT": [codec.BOS, vel, note, dur, tok, note, dur],
        "VEL": [codec.BOS, tok, note, dur],
        "NOTE": [codec.BOS, vel, tok, dur],
        "DUR": [codec.BOS, vel, note, tok],
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
