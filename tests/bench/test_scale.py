"""The scale benchmark's synthetic corpus: byte-patched variants of real files read back as what they claim to be."""
from __future__ import annotations

import mido
import numpy as np

from leadline.bench import scale
from leadline.daemon import midifile
from tests.conftest import SHARED_DATA_DIR

ROCK = SHARED_DATA_DIR / "rock-o-net"


def _notes(data: bytes) -> list[tuple[int, int, int]]:
    """(channel, note, velocity) of every note message (a note-off's velocity negated), and every tempo, as mido
    reads the file."""
    import io

    mid = mido.MidiFile(file=io.BytesIO(data))
    return [(m.channel, m.note, m.velocity if m.type == "note_on" else -m.velocity) for t in mid.tracks for m in t
            if m.type in ("note_on", "note_off")], \
        [m.tempo for t in mid.tracks for m in t if m.type == "set_tempo"]


def test_variants_shift_non_drum_notes_and_scale_tempo_and_velocity():
    data = (ROCK / "b/black_sabbath/Paranoid.mid").read_bytes()
    where = scale.positions(data)
    assert scale.variant(data, where, 0) == data  # shift 0, scale 1: the file itself
    k = len(scale.SHIFTS) + 1  # shift 3, tempo x1.25, velocity x0.8
    (notes, tempos), (got, got_tempos) = _notes(data), _notes(scale.variant(data, where, k))
    assert len(notes) == len(got) > 1000 and any(c == 9 for c, _, _ in notes)
    for (c, n, v), (c2, n2, v2) in zip(notes, got):
        assert c2 == c and n2 == (n if c == 9 else min(n + 3, 127))
        # note-offs (<= 0 here) and drums as they were
        assert v2 == (v if v <= 0 or c == 9 else max(1, min(127, round(v * 0.8))))
    assert got_tempos == [min(0xFFFFFF, int(t * 1.25)) for t in tempos] and tempos


def test_a_variant_is_a_readable_file_with_the_lead_moved(tmp_path):
    data = (ROCK / "b/black_sabbath/Iron_Man.mid").read_bytes()
    before = midifile.read(data)
    after = midifile.read(scale.variant(data, scale.positions(data), 2))  # shift -4
    lead = [t for t in before.tracks if not t.is_drum][0]
    moved = [t for t in after.tracks if not t.is_drum][0]
    assert np.array_equal(np.maximum(lead.pitch - 4, 0), moved.pitch) and np.array_equal(lead.onset, moved.onset)
