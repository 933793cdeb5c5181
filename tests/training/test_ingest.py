"""Ingestion on a small folder of real corpus files: skip reasons, duplicates, song splits, determinism, CLI."""
import io
import shutil

import mido
import numpy as np
import pytest

from leadline.daemon import codec, midifile
from leadline.daemon.cli import main
from leadline.daemon.config import DataConfig
from tests.conftest import SHARED_DATA_DIR
from leadline.training import cache, ingest

ROCK = SHARED_DATA_DIR / "rock-o-net"
FILES = {  # name in the test folder -> real file
    "sabbath/Paranoid.mid": ROCK / "b/black_sabbath/Paranoid.mid",
    "sabbath/Paranoid_2.mid": ROCK / "b/black_sabbath/Paranoid_2.mid",  # another version of the song
    "sabbath/Paranoid_3.mid": ROCK / "b/black_sabbath/Paranoid_3.mid",  # the same solo as Paranoid.mid
    "sabbath/Iron_Man.mid": ROCK / "b/black_sabbath/Iron_Man.mid",
    "sabbath/Iron_Man_2.mid": ROCK / "b/black_sabbath/Iron_Man_2.mid",
    "sabbath/Tarzan.mid": ROCK / "b/black_sabbath/Tarzan.mid",  # RIFF-wrapped
    "sabbath/Changes.mid": ROCK / "b/black_sabbath/Changes.mid",  # no melodic guitar
    "maiden/Powerslave.mid": ROCK / "i/iron_maiden/Powerslave.mid",  # truncated
    "nin/Terrible_Lie_1.MID": ROCK / "n/nine_inch_nails/Terrible_Lie_1.MID",  # corrupt, upper-case suffix
    "jazz/ArtPepper_Stardust-1_FINAL.mid": SHARED_DATA_DIR / "wjd-jazz-solos/ArtPepper_Stardust-1_FINAL.mid",
    "jazz/ArtPepper_Stardust-2_FINAL.mid": SHARED_DATA_DIR / "wjd-jazz-solos/ArtPepper_Stardust-2_FINAL.mid",
    "pop/001.mid": SHARED_DATA_DIR / "pop909/001.mid",
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A folder 'corpus' of real files (see FILES), plus a real file cut in half and a text file."""
    root = tmp_path_factory.mktemp("ingest") / "corpus"
    for name, src in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, root / name)
    raw = FILES["sabbath/Iron_Man.mid"].read_bytes()
    (root / "cut" / "Half.midi").parent.mkdir()
    (root / "cut" / "Half.midi").write_bytes(raw[:len(raw) // 2])
    (root / "README.txt").write_text("not MIDI")
    return root


AS_PLAYED = DataConfig(transpose=(), snap_below=0.0)  # no training-only copies or snapping


@pytest.fixture(scope="module")
def built(corpus):
    return ingest.build([str(corpus)], AS_PLAYED, jobs=1, progress=False)


def test_files_are_used_or_skipped_with_their_reason(built):
    m = built.manifest
    per = m["per_file"]
    assert m["files"] == {"seen": 13, "used": 8, "duplicates": 1, "skipped": 4}
    assert m["skipped"] == {"corrupt": 1, "no lead track": 1, "truncated": 2}
    assert per["corpus/maiden/Powerslave.mid"]["reason"] == "truncated"
    assert per["corpus/cut/Half.midi"]["reason"] == "truncated"
    assert per["corpus/nin/Terrible_Lie_1.MID"]["reason"] == "corrupt"
    assert per["corpus/sabbath/Changes.mid"]["reason"] == "no lead track"
    assert per["corpus/sabbath/Paranoid.mid"]["tracks"] == [{"name": "sOLO (eSQ)", "program": 29, "notes": 106}]
    assert per["corpus/sabbath/Tarzan.mid"]["status"] == "used"  # RIFF-wrapped, repaired
    assert per["corpus/sabbath/Paranoid_3.mid"] == {"status": "duplicate", "of": "corpus/sabbath/Paranoid.mid",
                                                    "tracks": [{"name": "sOLO (eSQ)", "program": 29,
                                                                "notes": 106}]}


def test_sequences_start_with_bos_and_decode_to_the_lead(built):
    seqs = [s for split in cache.SPLITS for s in built.sequences(split)]
    assert len(seqs) == 8 and all(s[0] == codec.BOS for s in seqs)
    assert sum(len(s) for s in seqs) == len(built.tokens)
    assert sum(v["events"] for v in built.manifest["splits"].values()) == len(built.tokens)
    song = built.manifest["per_file"]["corpus/sabbath/Paranoid.mid"]["song"]
    (row,) = built.index[built.index["song"] == song][:1]
    lead = midifile.pick_lead(midifile.read(FILES["sabbath/Paranoid.mid"]).tracks, DataConfig())
    decoded = codec.decode(built.tokens[row["start"]:row["end"]])
    first = lead.notes[0].onset - decoded[0].onset  # the sequence starts at the first note's bar
    assert first % 96 == 0 and [(n.onset - first, n.pitch) for n in lead.notes] == [(n.onset, n.pitch)
                                                                                   for n in decoded]


def test_a_single_file_source(tmp_path):
    c = ingest.build([str(FILES["pop/001.mid"])], AS_PLAYED, jobs=1, progress=False)
    assert list(c.manifest["per_file"]) == ["pop909/001.mid"] and len(c.index) == 1


def test_versions_of_a_song_share_a_song_id_and_split(built):
    per = built.manifest["per_file"]
    for a, b in [("sabbath/Paranoid.mid", "sabbath/Paranoid_2.mid"), ("sabbath/Iron_Man.mid", "sabbath/Iron_Man_2.mid"),
                 ("jazz/ArtPepper_Stardust-1_FINAL.mid", "jazz/ArtPepper_Stardust-2_FINAL.mid")]:
        ea, eb = per[f"corpus/{a}"], per[f"corpus/{b}"]
        assert (ea["song"], ea["split"]) == (eb["song"], eb["split"]), (a, b)
    for song in np.unique(built.index["song"]):
        assert len(set(built.index["split"][built.index["song"] == song])) == 1
    assert built.manifest["songs"] == 5 and built.manifest["versions"] == 3


@pytest.mark.parametrize("name, key", [
    ("a/x/Song.mid", "x/song"), ("a/x/Song_2.mid", "x/song"), ("a/x/Song-1_FINAL.mid", "x/song"),
    ("a/x/Song (3).MID", "x/song"), ("a/x/Song_Live.mid", "x/song"), ("a/y/Song_2.mid", "y/song"),
    ("a/x/Unforgiven2.mid", "x/unforgiven2"), ("p/001.mid", "p/001"), ("p/1979.mid", "p/1979"),
    ("data/rock-o-net/a/x/Song.mid", "x/song"),  # the same song whichever folder above was the source
])
def test_song_key_drops_version_marks(name, key):
    assert ingest.song_key(name) == key


def test_split_is_by_song_hash_and_stable_when_files_are_added(corpus, tmp_path):
    cfg = DataConfig(split=(0.5, 0.25, 0.25), seed=7)
    splits = [ingest.split_of(f"corpus/song{i}", cfg) for i in range(400)]
    assert 150 < splits.count(0) < 250 and splits.count(1) > 60 and splits.count(2) > 60
    small = tmp_path / "corpus"
    shutil.copytree(corpus / "sabbath", small / "sabbath")
    before = ingest.build([str(small)], cfg, jobs=1, progress=False).manifest["per_file"]
    shutil.copytree(corpus / "jazz", small / "jazz")
    after = ingest.build([str(small)], cfg, jobs=1, progress=False).manifest["per_file"]
    assert all(after[k].get("split") == v.get("split") for k, v in before.items())


def test_two_builds_are_byte_identical(corpus, tmp_path):
    a = cache.write(ingest.build([str(corpus)], DataConfig(), jobs=1, progress=False), tmp_path / "a")
    b = cache.write(ingest.build([str(corpus)], DataConfig(), jobs=2, progress=False), tmp_path / "b")
    for name in ("tokens.npy", "index.npy", "manifest.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_transposed_copies_are_training_only_and_stay_in_range(corpus):
    cfg = DataConfig(transpose=(-12, 5, 0, 12), split=(0.5, 0.25, 0.25))
    c = ingest.build([str(corpus)], cfg, jobs=1, progress=False)
    moved = c.index[c.index["transpose"] != 0]
    assert len(moved) and set(moved["split"]) == {0}
    assert set(moved["transpose"]) <= {-12, 5, 12}
    for row in moved:
        pitches = [codec.describe(int(t))[1] for t in c.tokens[row["start"]:row["end"]]
                   if codec.describe(int(t))[0] == "NOTE"]
        assert codec.PITCH_LO <= min(pitches) and max(pitches) <= codec.PITCH_HI
    assert c.manifest["splits"]["train"]["events"] > c.manifest["splits"]["train"]["events_untransposed"]


def test_unique_factor_drops_a_line_that_repeats_two_pitches(tmp_path):
    mf = mido.MidiFile(ticks_per_beat=96)
    riff = [mido.MetaMessage("track_name", name="Lead Guitar"), mido.Message("program_change", program=30)]
    for pitch in [40, 40, 40, 52] * 16:
        riff += [mido.Message("note_on", note=pitch, velocity=100), mido.Message("note_off", note=pitch, time=48)]
    mf.tracks.append(mido.MidiTrack(riff))
    buf = io.BytesIO()
    mf.save(file=buf)
    (tmp_path / "chug.mid").write_bytes(buf.getvalue())
    assert ingest.build([str(tmp_path)], DataConfig(), jobs=1, progress=False).manifest["files"]["used"] == 1
    c = ingest.build([str(tmp_path)], DataConfig(unique_factor=0.2), jobs=1, progress=False)
    assert c.manifest["skipped"] == {"repetitive": 1}
    assert ingest.unique_ratio(np.array([40, 40, 40, 52] * 16)) == pytest.approx(2 / 32)


def test_cli_builds_a_cache_and_prints_a_summary(corpus, tmp_path, capsys):
    out = tmp_path / "cache"
    assert main(["data", "build", "--out", str(out), "--jobs", "1", "--set", "data.min_notes=16", str(corpus)]) == 0
    summary = capsys.readouterr().out
    assert "13 files seen, 8 used, 1 duplicates, 4 skipped" in summary and "files/s" in summary
    loaded = cache.load(out)
    assert loaded.manifest["settings"]["min_notes"] == 16 and len(loaded.tokens) > 1000


def test_cli_names_a_missing_source_and_refuses_to_replace_other_folders(corpus, tmp_path, capsys):
    assert main(["data", "build", "--out", str(tmp_path / "c"), str(tmp_path / "nowhere")]) == 1
    assert "nowhere: no such file or folder" in capsys.readouterr().err
    (tmp_path / "music").mkdir()
    (tmp_path / "music" / "song.wav").write_bytes(b"RIFF")
    assert main(["data", "build", "--out", str(tmp_path / "music"), str(corpus)]) == 1
    assert "not a leadline cache" in capsys.readouterr().err and (tmp_path / "music" / "song.wav").exists()


def test_grid_share_and_snapping_on_hand_made_onsets():
    t = codec.TICKS_PER_BEAT
    straight = np.array([0, t // 2, t, t + t // 4, 2 * t + 2 * t // 3])  # eighths, a 16th, a triplet
    assert ingest.grid_share(straight) == 1.0 and ingest.grid_share(straight + 1) == 0.0
    np.testing.assert_array_equal(ingest.snapped(np.array([1, 11, 17, 23, 25])), [0, 12, 16, 24, 24])
    # a whole line 5 ticks late comes back by the one offset; a performance's own timing is snapped
    np.testing.assert_array_equal(ingest.on_grid(straight + 5, 0.6), straight)
    played = np.array([0, 13, 22, 37, 50, 59])
    moved = ingest.on_grid(played, 0.6)
    assert ingest.grid_share(moved) == 1.0 and np.abs(moved - played).max() <= t // 8 + 1
    assert (np.diff(moved) >= 0).all()


def test_snapping_moves_training_lines_only_and_keeps_duplicates_found(corpus):
    """The jazz solos are performances (off the grid): snapped where they train, as played elsewhere."""
    def onsets(c, split):
        return [[n.onset for n in codec.decode(s)] for s in c.sequences(split, transposed=False)]

    cfg = dict(transpose=(), split=(0.5, 0.25, 0.25))
    plain = ingest.build([str(corpus)], DataConfig(snap_below=0.0, **cfg), jobs=1, progress=False)
    snap = ingest.build([str(corpus)], DataConfig(snap_below=0.6, **cfg), jobs=1, progress=False)
    assert snap.manifest["files"] == plain.manifest["files"]  # the duplicate is still found
    assert onsets(snap, "val") == onsets(plain, "val") and onsets(snap, "test") == onsets(plain, "test")
    before, after = onsets(plain, "train"), onsets(snap, "train")
    assert before != after
    assert min(ingest.grid_share(np.array(a)) for a in after) >= 0.6


def test_harmony_beside_each_token_is_the_other_tracks_and_turns_with_a_transposition(corpus, tmp_path):
    """Paranoid (a full band file): the backing (rhythm guitar, bass, ...) sounds under most of its lead's steps; a
    training copy moved by k semitones carries its harmony moved by k; the codes are what harmony.codes_at gives
    from the file's own non-lead tracks."""
    from leadline.daemon import harmony

    cfg = DataConfig(transpose=(5,), split=(1.0, 0.0, 0.0), snap_below=0.0)
    src = corpus / "sabbath" / "Paranoid.mid"
    c = ingest.build([str(src)], cfg, jobs=1, progress=False)
    plain, moved = (c.index[c.index["transpose"] == k][0] for k in (0, 5))
    h0, h5 = (np.asarray(c.harmony[r["start"]:r["end"]]) for r in (plain, moved))
    assert (h0 != harmony.NONE).mean() > 0.5
    assert np.array_equal(harmony.transpose(h0, 5), h5)
    data = midifile.read(src)
    lead = midifile.pick_lead(data.tracks, cfg)
    tokens = np.asarray(c.tokens[plain["start"]:plain["end"]])
    start = data.bar_start(int(lead.line.onset[0]))
    want = harmony.codes_at(ingest.token_ticks(tokens, start),
                            *harmony.backing_notes(harmony.backing_tracks(data.tracks, lead.tracks)))
    assert np.array_equal(h0, want)
