"""Reading MIDI files: real corpus files (RIFF-wrapped, truncated, bad data bytes), hand-made edge cases."""
import io
import struct

import mido
import pytest

from leadline.daemon import midifile
from leadline.daemon.codec import Note
from leadline.daemon.config import DataConfig
from tests.conftest import SHARED_DATA_DIR

ROCK = SHARED_DATA_DIR / "rock-o-net"
CFG = DataConfig()


def smf(*tracks: list, ppq: int = 96) -> bytes:
    """A type-1 MIDI file (bytes, written by mido with running status) of tracks of mido messages."""
    mf = mido.MidiFile(type=1, ticks_per_beat=ppq)
    for messages in tracks:
        mf.tracks.append(mido.MidiTrack(messages))
    buf = io.BytesIO()
    mf.save(file=buf)
    return buf.getvalue()


def on(note, time=0, vel=100, ch=0):
    return mido.Message("note_on", note=note, velocity=vel, time=time, channel=ch)


def off(note, time=0, ch=0):
    return mido.Message("note_off", note=note, velocity=64, time=time, channel=ch)


def named(name, program=29, ch=0):
    return [mido.MetaMessage("track_name", name=name), mido.Message("program_change", program=program, channel=ch)]


def notes(data: bytes, i: int = 0) -> list[tuple]:
    return [(n.onset, n.duration, n.pitch, n.velocity) for n in midifile.read(data).tracks[i].notes()]


# --- events ---------------------------------------------------------------------------------------------

def test_running_status_and_velocity_zero_note_off():
    data = smf(named("Lead") + [on(60), on(60, 48, vel=0), on(62), on(62, 24, vel=0), on(64, 24, vel=90),
                                on(64, 96, vel=0)])
    assert data.count(b"\x90") == 1, "mido should write the note-ons under running status"
    assert notes(data) == [(0, 12, 60, 100), (12, 6, 62, 100), (24, 24, 64, 90)]


def test_ppq_is_honoured():
    quarter_notes = [on(60), off(60, 1), on(62), off(62, 1)]
    for ppq in (96, 192, 480, 960):
        msgs = [m.copy(time=m.time * ppq) for m in quarter_notes]
        assert notes(smf(msgs, ppq=ppq)) == [(0, 24, 60, 100), (24, 24, 62, 100)], ppq


def test_overlapping_same_pitch_cuts_the_earlier_note():
    data = smf([on(60), on(60, 48), off(60, 48), off(60, 96)])  # second strike while the first still sounds
    assert notes(data) == [(0, 12, 60, 100), (12, 36, 60, 100)]


def test_same_pitch_struck_twice_at_once_is_one_note():
    assert notes(smf([on(60), on(60), off(60, 96), off(60, 96)])) == [(0, 48, 60, 100)]


def test_zero_length_and_sub_grid_notes_last_one_tick():
    data = smf([on(60), off(60, 0), on(62, 96), off(62, 1)])  # 0 ticks, then 1/96 of a beat
    assert notes(data) == [(0, 1, 60, 100), (24, 1, 62, 100)]


def test_note_left_open_is_closed_at_track_end():
    data = smf([on(60), off(60, 96), on(64, 96), mido.MetaMessage("end_of_track", time=192)])
    assert notes(data) == [(0, 24, 60, 100), (48, 48, 64, 100)]


def test_time_signatures_are_recorded_on_the_grid():
    ts = [mido.MetaMessage("time_signature", numerator=3, denominator=4),
          mido.MetaMessage("time_signature", numerator=7, denominator=8, time=96 * 3 * 2)]
    data = midifile.read(smf(ts + [on(60), off(60, 96)]))
    assert data.time_signatures == ((0, 3, 4), (144, 7, 8))
    assert data.bar_ticks(0) == 72 and data.bar_ticks(143) == 72 and data.bar_ticks(144) == 84
    assert data.bar_start(100) == 72 and data.bar_start(144 + 90) == 144 + 84


def test_default_time_signature_is_four_four():
    data = midifile.read(smf([on(60), off(60, 96)]))
    assert data.time_signatures == ((0, 4, 4),) and data.bar_ticks() == 96


# --- damaged files --------------------------------------------------------------------------------------

def test_riff_wrapped_real_file_is_repaired():
    path = ROCK / "b" / "black_sabbath" / "Tarzan.mid"
    raw = path.read_bytes()
    assert raw[:4] == b"RIFF" and raw[8:12] == b"RMID"
    assert midifile.repair(raw)[:4] == b"MThd"
    lead = midifile.pick_lead(midifile.read(path).tracks, CFG)
    assert [(t.name, t.program, len(t)) for t in lead.tracks] == [("Clean Gtr", 27, 480)]  # checked with mido


@pytest.mark.parametrize("rel, reason", [
    ("i/iron_maiden/Powerslave.mid", "truncated"),
    ("b/beatles/Lucy_In_The_Sky_With_Diamonds.mid", "truncated"),  # inside the last track's events
    ("b/beatles/Lady_Madonna.mid", "corrupt"),  # a wrong track length: the next header is misaligned
    ("n/nine_inch_nails/Terrible_Lie_1.MID", "corrupt"),
])
def test_real_damaged_files_raise_with_a_short_reason(rel, reason):
    with pytest.raises(midifile.MidiFileError) as e:
        midifile.read(ROCK / rel)
    assert e.value.reason == reason and rel.split("/")[-1] in str(e.value) and "\n" not in str(e.value)


def test_real_file_cut_anywhere_is_truncated(tmp_path):
    raw = (ROCK / "b" / "black_sabbath" / "Paranoid.mid").read_bytes()
    for cut in (10, 200, len(raw) // 2, len(raw) - 1):
        (tmp_path / "cut.mid").write_bytes(raw[:cut])
        with pytest.raises(midifile.MidiFileError) as e:
            midifile.read(tmp_path / "cut.mid")
        assert e.value.reason == "truncated", cut


def test_track_cut_inside_an_event_is_reported_not_guessed():
    data = smf([on(60), off(60, 96), on(62), off(62, 96)])
    body = data[22:-3]  # the only track's events without end-of-track ...
    body = body[:-2]  # ... and cut inside the last note-off
    damaged = data[:18] + struct.pack(">I", len(body)) + body
    with pytest.raises(midifile.MidiFileError) as e:
        midifile.read(damaged)
    assert e.value.reason in ("truncated", "corrupt")


def test_junk_is_not_a_midi_file(tmp_path):
    with pytest.raises(midifile.MidiFileError, match="not a MIDI file"):
        midifile.read(b"<html>not midi</html>")
    with pytest.raises(midifile.MidiFileError, match="unreadable"):
        midifile.read(tmp_path / "missing.mid")


def test_data_bytes_above_127_are_clamped():
    path = ROCK / "b" / "blink182" / "Feeling_This.mid"  # CC 91/93 = 255, program 255 on the drums
    with pytest.raises(OSError):
        mido.MidiFile(path)
    assert sum(len(t) for t in midifile.read(path).tracks) > 1000


# --- choosing the lead ----------------------------------------------------------------------------------

def test_real_guitar_song_picks_the_solo_guitar():
    """Paranoid, checked by hand with mido: two 'gUITARRA' (program 30, ~1.9 notes/onset: rhythm), 'vOZ'
    (voice), bass, drums, and two single-note solo guitars of 106 notes (program 29): the first one."""
    tracks = midifile.read(ROCK / "b" / "black_sabbath" / "Paranoid.mid").tracks
    lead = midifile.pick_lead(tracks, CFG)
    assert [(t.name, t.program, len(t)) for t in lead.tracks] == [("sOLO (eSQ)", 29, 106)]
    assert len(lead.notes) == 106 and all(isinstance(n, Note) for n in lead.notes)


@pytest.mark.parametrize("path, name", [
    (SHARED_DATA_DIR / "wjd-jazz-solos" / "ArtPepper_Anthropology_FINAL.mid", "Melody"),
    (SHARED_DATA_DIR / "pop909" / "001.mid", "MELODY"),
])
def test_corpora_without_guitars_pick_the_melody(path, name):
    lead = midifile.pick_lead(midifile.read(path).tracks, CFG)
    assert [t.name for t in lead.tracks] == [name] and len(lead.notes) > 200


def test_lead_name_beats_rhythm_and_drums_never_lead():
    line = [on(60), off(60, 48), on(62), off(62, 48)] * 20
    data = smf(named("Rhythm Gtr") + line * 2, named("Lead Gtr", ch=1) + [m.copy(channel=1) for m in line],
               named("Drums", 29, ch=9) + [m.copy(channel=9) for m in line * 3])
    assert [t.name for t in midifile.pick_lead(midifile.read(data).tracks, CFG).tracks] == ["Lead Gtr"]
    drums_only = smf(named("Lead", 29, ch=9) + [m.copy(channel=9) for m in line])
    assert midifile.pick_lead(midifile.read(drums_only).tracks, CFG) is None


def test_chordal_guitar_is_not_a_lead_and_fallback_programs_apply():
    chords = [on(40), on(47), on(52), off(40, 48), off(47), off(52)] * 20
    melody = [on(60, ch=1), off(60, 48, ch=1)] * 40
    data = midifile.read(smf(named("Guitar") + chords, named("Flute", 73, ch=1) + melody))
    assert midifile.pick_lead(data.tracks, CFG) is None  # a chordal guitar, an unnamed flute
    lead = midifile.pick_lead(data.tracks, DataConfig(fallback_programs=(73,)))
    assert [t.name for t in lead.tracks] == ["Flute"]


def absolute(events: list[tuple[int, mido.Message]]) -> list[mido.Message]:
    """Messages with delta times from (absolute time, message) pairs."""
    out, now = [], 0
    for t, msg in sorted(events, key=lambda e: e[0]):
        out.append(msg.copy(time=t - now))
        now = t
    return out


def test_one_part_over_several_channels_is_merged_unless_doubled():
    def string(ch, pitch, start, lag=0):  # one note every other beat on channel `ch`
        return [(t + lag, m) for b in range(start, 80, 2)
                for t, m in ((b * 96, on(pitch, ch=ch)), (b * 96 + 90, off(pitch, ch=ch)))]

    programs = named("Gtr") + [mido.Message("program_change", program=29, channel=1)]
    lead = midifile.pick_lead(midifile.read(smf(programs + absolute(string(0, 40, 0) + string(1, 64, 1)))).tracks,
                              CFG)
    assert len(lead.tracks) == 2 and len(lead.notes) == 80  # one string per channel: one part
    doubled = smf(programs + absolute(string(0, 40, 0) + string(1, 40, 0, lag=4)))
    assert len(midifile.pick_lead(midifile.read(doubled).tracks, CFG).tracks) == 1


# --- expression: pitch bend read as each note's bend (codec 2) ----------------------------------------------

def bend(value, time=0, ch=0):
    return mido.Message("pitchwheel", pitch=value, time=time, channel=ch)


def cc(number, value, time=0, ch=0):
    return mido.Message("control_change", control=number, value=value, time=time, channel=ch)


def test_a_whole_step_bend_reached_after_a_sixteenth_and_released():
    """ppq 96: 4 file ticks a grid tick. A quarter note bent up 2 semitones (8191 at the default range of 2)
    over 6 grid ticks, held, back at 0 three quarters in; the next note plain."""
    ramp = [bend(8191 * k // 6, time=4 if k else 0) for k in range(7)]  # grid ticks 0..6
    track = named("Lead Guitar") + [on(64)] + ramp + [bend(0, time=4 * 12), off(64, time=4 * 6), on(62), off(62, 96)]
    got = midifile.read(smf(track)).tracks[0].notes()
    assert [(n.pitch, n.bend, n.bend_at, n.release) for n in got] == [(64, 4, 6, 2), (62, 0, 0, 0)]


def test_rpn_bend_range_scales_the_bend():
    """RPN 0 sets 12 semitones: 8192 / 12 is a half step (here bent before the note is struck); at the default
    range of 2 the same value would be a sixth of a semitone, under the 0.2 that counts as a bend."""
    rpn = [cc(101, 0), cc(100, 0), cc(6, 12), cc(38, 0), cc(101, 127), cc(100, 127)]
    track = named("Lead Guitar") + rpn + [bend(8192 // 12), on(64, time=1), off(64, 96), bend(0)]
    (n,) = midifile.read(smf(track)).tracks[0].notes()
    (plain,) = midifile.read(smf(named("Lead Guitar") + track[2 + len(rpn):])).tracks[0].notes()
    assert not plain.expressive
    assert n.bend == 2 and n.bend_at == 0  # 2 quarter tones = 1 semitone, bent before the onset


def test_a_part_without_pitch_bend_has_no_expression():
    track = named("Lead Guitar") + [on(64), off(64, 96)]
    t = midifile.read(smf(track)).tracks[0]
    assert t.expression is None and not t.notes()[0].expressive
