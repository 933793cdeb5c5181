"""`leadline respond` on a real song: player, answer and band tracks, the answer after the silence on a beat, PNG, WAV."""
from __future__ import annotations

import shutil
from pathlib import Path

import mido
import numpy as np
import pytest

from leadline.daemon import offline
from leadline.daemon.audio import SOUNDFONTS
from leadline.daemon.cli import main
from leadline.daemon.config import DataConfig
from leadline.daemon.recording import FILE_PPQ
from tests.conftest import SHARED_DATA_DIR

SONG = SHARED_DATA_DIR / "rock-o-net" / "a" / "acdc" / "Hells_Bells.mid"  # "Lead" track, 215 notes, 96 BPM
AFTER_BEATS, BARS = 2.5, 1  # not the defaults, so the settings are seen to be used
BEAT, BAR = FILE_PPQ, 4 * FILE_PPQ


@pytest.fixture(scope="module")
def song() -> Path:
    if not SONG.is_file():
        pytest.skip(f"needs {SONG}")
    return SONG


@pytest.fixture(scope="module")
def answered(song, tiny_model, tmp_path_factory) -> tuple[Path, Path]:
    """OUT.mid and its PNG from `leadline respond` with the tiny model."""
    d = tmp_path_factory.mktemp("respond")
    out, png = d / "out.mid", d / "out.png"
    rc = main(["respond", str(song), "-o", str(out), "--model", str(tiny_model.path), "--bars", str(BARS),
               "--set", f"respond.after_beats={AFTER_BEATS}", "--seed", "1", "--png", str(png)])
    assert rc == 0
    return out, png


def _notes(track: mido.MidiTrack) -> list[tuple[int, int, int]]:
    """(onset, end, pitch) in file ticks, sorted."""
    now, on, out = 0, {}, []
    for msg in track:
        now += msg.time
        if msg.type == "note_on" and msg.velocity > 0:
            on[msg.note] = now
        elif msg.type in ("note_on", "note_off") and msg.note in on:
            out.append((on.pop(msg.note), now, msg.note))
    return sorted(out)


def test_three_tracks_player_leadline_and_the_band_at_the_songs_tempo(answered, song):
    mid = mido.MidiFile(answered[0])
    assert mid.ticks_per_beat == FILE_PPQ
    assert [t.name for t in mid.tracks if t.name] == ["player", "leadline", "backing"]  # the song's band
    tempo = next(m.tempo for m in mido.MidiFile(song).tracks[0] if m.type == "set_tempo")
    assert [m.tempo for m in mid.tracks[0] if m.type == "set_tempo"] == [tempo]
    phrase = offline.player_phrase(song, DataConfig())
    assert len(_notes(mid.tracks[1])) == len(phrase) == 215


def test_answer_starts_on_a_beat_after_the_silence_and_fits_the_bars(answered):
    mid = mido.MidiFile(answered[0])
    player, lead = _notes(mid.tracks[1]), _notes(mid.tracks[2])
    assert lead, "leadline answered with at least one note"
    last_end = max(end for _, end, _ in player)
    first = lead[0][0]
    assert first > last_end, "the answer starts after the phrase ends"
    assert first - last_end >= AFTER_BEATS * BEAT, "after respond.after_beats of silence"
    assert first % BEAT == 0, "on a beat boundary"
    start = -(-(last_end + int(AFTER_BEATS * BEAT)) // BEAT) * BEAT
    assert first == start, "on the first beat after the silence"
    assert max(end for _, end, _ in lead) <= start + BARS * BAR, "inside respond.bars bars"


def test_same_seed_same_answer(answered, song, tiny_model, tmp_path):
    again = tmp_path / "again.mid"
    assert main(["respond", str(song), "-o", str(again), "--model", str(tiny_model.path), "--bars", str(BARS),
                 "--set", f"respond.after_beats={AFTER_BEATS}", "--seed", "1"]) == 0
    assert again.read_bytes() == answered[0].read_bytes()


def test_png_is_written(answered):
    png = answered[1]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 10_000


def test_wav_is_rendered(song, tiny_model, tmp_path):
    if shutil.which("fluidsynth") is None:
        pytest.skip("fluidsynth is not installed (apt-get install fluidsynth fluid-soundfont-gm): no --wav")
    if not any(Path(p).is_file() for p in SOUNDFONTS):
        pytest.skip("no General MIDI soundfont (apt-get install fluid-soundfont-gm): no --wav")
    wav = tmp_path / "out.wav"
    assert main(["respond", str(song), "-o", str(tmp_path / "out.mid"), "--model", str(tiny_model.path),
                 "--wav", str(wav)]) == 0
    head = wav.read_bytes()[:12]
    assert head[:4] == b"RIFF" and head[8:12] == b"WAVE"


def clip(path: Path, tracks: dict[str, tuple[int, list[int]]], program: int | None = None) -> Path:
    """A MIDI file as a DAW exports a clip: {track name: (channel, pitches)}, one eighth note each from
    bar 2 on, 100 BPM, and no program change unless `program` is given."""
    mid = mido.MidiFile(type=1, ticks_per_beat=96)
    for name, (channel, pitches) in tracks.items():
        track = mido.MidiTrack([mido.MetaMessage("track_name", name=name),
                                mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(100)),
                                mido.MetaMessage("time_signature", numerator=4, denominator=4)])
        if program is not None:
            track.append(mido.Message("program_change", channel=channel, program=program))
        for i, pitch in enumerate(pitches):
            track.append(mido.Message("note_on", channel=channel, note=pitch, velocity=90, time=384 if i == 0 else 0))
            track.append(mido.Message("note_off", channel=channel, note=pitch, velocity=0, time=48))
        mid.tracks.append(track)
    mid.save(path)
    return path


@pytest.mark.parametrize("pitches", [[64, 67, 69, 71, 72, 71, 69, 67], [64, 67, 69]], ids=["8 notes", "3 notes"])
def test_a_daw_clip_of_one_unnamed_track_is_answered(pitches, tiny_model, tmp_path, capsys):
    src = clip(tmp_path / "clip.mid", {"1-MIDI": (0, pitches)})
    out = tmp_path / "out.mid"
    assert main(["respond", str(src), "-o", str(out), "--model", str(tiny_model.path), "--seed", "1"]) == 0
    assert f"the player's {len(pitches)} notes" in capsys.readouterr().out
    mid = mido.MidiFile(out)
    player, lead = _notes(mid.tracks[1]), _notes(mid.tracks[2])
    assert [p for _, _, p in player] == pitches
    assert player[0][0] == 0 and player[0][1] == BEAT // 2, "from its first bar: the rest before it is cut"
    assert lead and lead[0][0] > player[-1][1], "leadline answered after the phrase"


def test_the_busiest_pitched_track_when_there_is_no_lead(tmp_path):
    src = clip(tmp_path / "backing.mid", {"Pad": (1, [60, 64]), "Bass": (2, [40, 43, 45, 40, 38]),
                                          "Drums": (9, [36, 38] * 8), "1-Drum Rack": (3, [36, 42] * 8)})
    assert [n.pitch for n in offline.player_phrase(src, DataConfig())] == [40, 43, 45, 40, 38]


def test_lead_material_wins_whatever_its_length(tmp_path):
    src = clip(tmp_path / "song.mid", {"Piano": (0, list(range(60, 80))), "Lead": (1, [76, 79, 81])}, program=29)
    assert [n.pitch for n in offline.player_phrase(src, DataConfig())] == [76, 79, 81]


def test_only_drums_is_one_line_and_exit_1(tiny_model, tmp_path, capsys):
    src = clip(tmp_path / "drums.mid", {"Drums": (9, [36, 38] * 4), "1-Drum Rack": (0, [36, 42] * 4)})
    out = tmp_path / "out.mid"
    assert main(["respond", str(src), "-o", str(out), "--model", str(tiny_model.path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no notes to answer" in err[0] and str(src) in err[0], err
    assert not out.exists()


def test_plot_of_an_answer(answered, tmp_path, capsys):
    png = tmp_path / "roll.png"
    assert main(["plot", str(answered[0]), "-o", str(png)]) == 0
    assert capsys.readouterr().out.strip() == str(png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_answer_spans_group_notes_split_by_silence():
    from leadline.daemon import midifile
    from leadline.daemon.plot import answer_spans

    track = midifile.Track("leadline", 30, False, *(np.asarray(c, np.int32) for c in (
        [0, 10, 200, 230], [12, 50, 6, 10], [60, 62, 64, 65], [90, 90, 90, 90])))
    assert answer_spans(track, gap=96) == [(0, 60), (200, 240)]
    assert answer_spans(track, gap=200) == [(0, 240)]


@pytest.mark.parametrize("mode", ["full", "off"])
def test_the_answers_bends_are_in_the_file_recentred_after(song, bendy_model, tmp_path, mode):
    """With a model that bends (`bendy_model`), the answer's track holds RPN 0 and pitchwheel messages on its
    channel, the last one the centre; with expression.mode off, neither."""
    out = tmp_path / "bent.mid"
    assert main(["respond", str(song), "-o", str(out), "--model", str(bendy_model.path), "--bars", "2",
                 "--seed", "1", "--set", f"expression.mode={mode}"]) == 0
    lead = mido.MidiFile(out).tracks[2]
    channel = next(m.channel for m in lead if m.type == "note_on")
    wheel = [m for m in lead if m.type == "pitchwheel"]
    rpn = [(m.control, m.value) for m in lead if m.type == "control_change"]
    if mode == "off":
        assert not wheel and not rpn
        return
    assert rpn[:3] == [(101, 0), (100, 0), (6, 2)]
    assert any(m.pitch for m in wheel) and {m.channel for m in wheel} == {channel}
    assert wheel[-1].pitch == 0, "the bend is not recentred at the end"
