"""Ingestion at scale: the streamed cache files, the sorted folder walk, and sharded ingestion + merge == one build."""
import json
import os
from dataclasses import dataclass

import numpy as np
import pytest

from leadline.daemon import codec
from leadline.daemon.cli import main
from leadline.daemon.config import DataConfig
from leadline.training import cache, ingest, shards
from tests.training.test_ingest import corpus  # noqa: F401  (the fixture: 13 real files, versions, a duplicate)

CACHE_FILES = ("tokens.npy", "index.npy", "manifest.json")


def _build(out, *args) -> None:
    assert main(["data", "build", "--out", str(out), *args]) == 0


def test_streamed_files_are_what_writing_the_cache_from_memory_gives(corpus, tmp_path):  # noqa: F811
    _build(tmp_path / "c", "--jobs", "2", str(corpus))  # 13 files on 2 workers: the pool and its window
    loaded = cache.load(tmp_path / "c", in_memory=True)
    cache.write(loaded, tmp_path / "again")
    for name in CACHE_FILES:
        assert (tmp_path / "c" / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name
    assert len(loaded.manifest["per_file"]) == 13 and not (tmp_path / "c" / ".scratch").exists()


def test_sharded_ingestion_and_merge_is_one_build_byte_for_byte(corpus, tmp_path, capsys):  # noqa: F811
    _build(tmp_path / "whole", "--jobs", "2", str(corpus))
    # 13 files in 5 slices: Paranoid in shard 3, its version Paranoid_2 and its duplicate Paranoid_3 in shard 4,
    # Stardust-1 and -2 in shards 0 and 1
    parts = [tmp_path / f"part{k}" for k in range(5)]
    for k, part in enumerate(parts):
        _build(part, "--jobs", "1", "--shard", f"{k}/5", str(corpus))
    assert "shard 4/5, files 10..12 of 13" in capsys.readouterr().out
    assert main(["data", "merge", "--out", str(tmp_path / "merged"), *map(str, reversed(parts))]) == 0
    for name in CACHE_FILES:
        assert (tmp_path / "whole" / name).read_bytes() == (tmp_path / "merged" / name).read_bytes(), name
    per = cache.load(tmp_path / "merged").manifest["per_file"]
    assert per["corpus/sabbath/Paranoid_3.mid"] == {**per["corpus/sabbath/Paranoid_3.mid"], "status": "duplicate",
                                                     "of": "corpus/sabbath/Paranoid.mid"}
    versions = [per[f"corpus/sabbath/Paranoid{v}.mid"] for v in ("", "_2")]
    assert versions[0]["song"] == versions[1]["song"] and versions[0]["split"] == versions[1]["split"]


def test_merge_refuses_shards_that_are_not_one_corpus(corpus, tmp_path, capsys):  # noqa: F811
    for k in range(2):
        _build(tmp_path / f"p{k}", "--jobs", "1", "--shard", f"{k}/2", str(corpus))
    _build(tmp_path / "other", "--jobs", "1", "--shard", "1/2", "--set", "data.min_notes=16", str(corpus))
    capsys.readouterr()
    assert main(["data", "merge", "--out", str(tmp_path / "m"), str(tmp_path / "p0")]) == 1
    assert "need each of 0/2 .. 1/2 once" in capsys.readouterr().err
    assert main(["data", "merge", "--out", str(tmp_path / "m"), str(tmp_path / "p0"), str(tmp_path / "other")]) == 1
    assert "settings" in capsys.readouterr().err and not (tmp_path / "m").exists()
    assert main(["data", "build", "--out", str(tmp_path / "x"), "--shard", "2/2", str(corpus)]) == 1
    assert "--shard 2/2: give K/N with 0 <= K < N" in capsys.readouterr().err
    assert main(["data", "merge", "--out", str(tmp_path / "m"), str(corpus)]) == 1
    assert "not a shard" in capsys.readouterr().err


def test_the_walk_lists_files_in_sorted_path_order(tmp_path):
    root = tmp_path / "src"
    for rel in ("a/b.mid", "a-c/x.mid", "ab.mid", "a.b/y.MID", "z.mid", "a/deep/q.midi", ".hidden.mid", "n.txt",
                "a/.mid"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"")
    os.symlink(root / "a", root / "linked")  # a symlinked folder is not followed (as Path.rglob does not)
    expected = sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                      if p.suffix.lower() in ingest.SUFFIXES and p.is_file())
    assert list(ingest._walk(root)) == expected == [".hidden.mid", "a-c/x.mid", "a.b/y.MID", "a/b.mid",
                                                    "a/deep/q.midi", "ab.mid", "z.mid"]


def test_a_shard_records_each_file_as_processed(corpus, tmp_path):  # noqa: F811
    _build(tmp_path / "p", "--jobs", "1", "--shard", "0/1", str(corpus))
    header = json.loads((tmp_path / "p" / "shard.json").read_text())
    assert header["shard"] == [0, 1] and header["files"] == [0, 13] and header["total_files"] == 13
    rows = list(shards.file_results(tmp_path / "p"))
    assert [r["name"] for r, _ in rows] == [f.name for f in ingest.find_files([str(corpus)], DataConfig())]
    used = [fr for _, fr in rows if not fr.reason]
    # each sequence packs token | harmony << 16 (ingest.packed)
    assert len(used) == 9 and all(t[0] & 0xFFFF == codec.BOS and t.dtype == np.uint32
                                  for fr in used for _, t in fr.sequences)


@pytest.mark.parametrize("value", ["1", "a/b", "3/2", "-1/2"])
def test_shard_values_must_be_k_of_n(value):
    with pytest.raises(shards.ShardError, match=f"--shard {value}"):
        shards.parse(value)


def test_the_array_encoder_and_transposition_give_codec_encode_tokens():
    """Random lines (unsorted onsets, chords, long gaps, repeated velocities, bends, releases, vibrato):
    ingest's `_encode` and `transposed` give exactly what `codec.encode` gives note by note."""
    rng = np.random.default_rng(0)
    for trial in range(500):
        n = int(rng.integers(0, 40))
        bend = np.where(rng.random(n) < 0.3, rng.choice(codec.BEND_STEPS, n), 0)
        expr = np.c_[bend, np.where(bend != 0, rng.choice(codec.BEND_AT, n), 0),
                     np.where(bend != 0, rng.integers(0, 3, n), 0), rng.choice([0, 0, 0, 1, 2], n)]
        line = Line(rng.integers(0, 600, n), rng.integers(1, 300, n), None, rng.choice([1, 7, 8, 64, 127], n),
                    expr.astype(np.int8))
        pitch, start = rng.integers(30, 100, n), 0
        for k in (0, -2, 3):
            notes = [codec.Note(*map(int, x[:4]), *map(int, x[4])) for x in
                     zip(line.onset, line.duration, pitch + k, line.velocity, line.expression)]
            expected = np.array(codec.encode(notes, start=start), np.uint16)
            assert np.array_equal(ingest.transposed(ingest._encode(line, pitch, start), k), expected), (trial, k)
    with pytest.raises(codec.CodecError, match="before the cursor"):
        ingest._encode(Line(np.array([3]), np.array([5]), None, np.array([80]), np.zeros((1, 4), np.int8)),
                       np.array([60]), 4)


@dataclass
class Line:
    onset: np.ndarray
    duration: np.ndarray
    pitch: object
    velocity: np.ndarray
    expression: np.ndarray

    def expression_or_zeros(self) -> np.ndarray:
        return self.expression
