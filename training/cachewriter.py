"""The cache written as ingestion goes: per-file results in file order -> tokens, index and manifest on disk.

Memory stays flat in the number of files: tokens, index rows and each file's manifest entry go to files in a
scratch folder as they come, and what is looked up per file (names, where each entry is, the digests of the
lines kept, the song groups' ids) sits in a SQLite database there, whose page cache is bounded. `finish`
turns the scratch files into tokens.npy, index.npy and a manifest.json with the same bytes `cache.write`
gives the same cache held in memory (sorted keys, indent 1).
Duplicates, song ids and the manifest's counts are decided here, in file order, so a corpus ingested in shards
and merged (training/shards.py) is the corpus ingested at once.
"""
from __future__ import annotations

import json
import shutil
import sqlite3
from collections import Counter
from pathlib import Path

import numpy as np

from leadline.daemon import codec
from leadline.training.cache import INDEX_DTYPE, SPLITS


class CacheWriter:
    """Add every file's result in file order (`add`), then `finish` into a folder."""

    def __init__(self, scratch: Path, settings: dict, sources: list[str]) -> None:
        """`settings`: the data settings as the manifest records them (`config.as_dict(data_cfg)`)."""
        self.dir, self.settings, self.sources = Path(scratch), settings, [str(s) for s in sources]
        self.dir.mkdir(parents=True, exist_ok=True)
        self.tokens = open(self.dir / "tokens.raw", "wb")
        self.harmony = open(self.dir / "harmony.raw", "wb")
        self.index = open(self.dir / "index.raw", "wb")
        self.entries = open(self.dir / "entries.json", "wb")
        self.db = sqlite3.connect(self.dir / "lookup.db")
        self.db.executescript(
            "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;"
            "CREATE TABLE files (i INTEGER PRIMARY KEY, name BLOB, at INT, size INT);"  # the entries' text
            "CREATE TABLE lines (digest BLOB PRIMARY KEY, file INT) WITHOUT ROWID;"  # a line as played -> 1st file
            "CREATE TABLE songs (song_group BLOB PRIMARY KEY, id INT) WITHOUT ROWID;")
        self.n = self.at = self.n_songs = 0
        self.skipped: Counter = Counter()
        self.n_tokens = self.n_rows = self.used = self.duplicates = 0
        self.split_files, self.split_songs = [0, 0, 0], [0, 0, 0]
        self.split_seqs, self.split_events, self.split_plain = [0, 0, 0], [0, 0, 0], [0, 0, 0]

    def add(self, name: str, group: str, split: int, r) -> None:
        """One file's `ingest.FileResult`: skipped, a duplicate of an earlier file, or used."""
        entry: dict = {"tracks": r.tracks} if r.tracks else {}
        if r.reason:
            self.skipped[r.reason] += 1
            entry.update(status="skipped", reason=r.reason, detail=r.detail)
        elif (first := self._one("SELECT file FROM lines WHERE digest = ?", bytes.fromhex(r.digest))) is not None:
            self.duplicates += 1
            entry.update(status="duplicate", of=_text(self._one("SELECT name FROM files WHERE i = ?", first)))
        else:
            self.db.execute("INSERT INTO lines VALUES (?, ?)", (bytes.fromhex(r.digest), self.n))
            entry.update(status="used", split=SPLITS[split], song=self._song(group, split))
            self._used(split, entry["song"], r.sequences)
        # the entry as it sits in the manifest: two levels down (manifest -> per_file -> name)
        text = f"  {json.dumps(name)}: " + json.dumps(entry, indent=1, sort_keys=True).replace("\n", "\n  ")
        size = self.entries.write(text.encode())
        self.db.execute("INSERT INTO files VALUES (?, ?, ?, ?)", (self.n, _blob(name), self.at, size))
        self.n, self.at = self.n + 1, self.at + size

    def _one(self, sql: str, arg):
        row = self.db.execute(sql, (arg,)).fetchone()
        return None if row is None else row[0]

    def _song(self, group: str, split: int) -> int:
        """The id of song group `group`: the next one when it is new (its split is a hash of its key, so a
        song is counted in one split)."""
        if (song := self._one("SELECT id FROM songs WHERE song_group = ?", _blob(group))) is None:
            song, self.n_songs = self.n_songs, self.n_songs + 1
            self.db.execute("INSERT INTO songs VALUES (?, ?)", (_blob(group), song))
            self.split_songs[split] += 1
        return song

    def _used(self, split: int, song: int, sequences: list[tuple[int, np.ndarray]]) -> None:
        self.used += 1
        self.split_files[split] += 1
        for shift, seq in sequences:
            seq = np.asarray(seq, np.uint32)  # token | harmony << 16 (ingest.packed)
            tokens = (seq & 0xFFFF).astype("<u2")
            self.tokens.write(tokens.tobytes())
            self.harmony.write((seq >> 16).astype("<u2").tobytes())
            row = np.array([(self.n_tokens, self.n_tokens + len(tokens), split, song, shift)], INDEX_DTYPE)
            self.index.write(row.tobytes())
            self.n_tokens += len(tokens)
            self.n_rows += 1
            self.split_seqs[split] += 1
            self.split_events[split] += len(tokens)
            self.split_plain[split] += len(tokens) if shift == 0 else 0

    def manifest(self) -> dict:
        """The manifest without its per-file entries (those are spliced in by `finish`)."""
        splits = {name: {"files": self.split_files[i], "songs": self.split_songs[i],
                         "sequences": self.split_seqs[i], "events": self.split_events[i],
                         "events_untransposed": self.split_plain[i]} for i, name in enumerate(SPLITS)}
        return {
            "sources": self.sources, "settings": self.settings,
            "files": {"seen": self.n, "used": self.used, "duplicates": self.duplicates,
                      "skipped": sum(self.skipped.values())},
            "skipped": dict(sorted(self.skipped.items())), "songs": self.n_songs,
            "versions": self.used - self.n_songs, "splits": splits, "per_file": {},
            "codec_version": codec.CODEC_VERSION, "vocab_size": codec.VOCAB_SIZE,
        }

    def finish(self, out: Path) -> dict:
        """Write tokens.npy, harmony.npy, index.npy and manifest.json into folder `out`; returns the manifest's
        counts."""
        for f in (self.tokens, self.harmony, self.index, self.entries):
            f.close()
        out = Path(out)
        _npy_from_raw(self.dir / "tokens.raw", out / "tokens.npy", np.dtype("<u2"), self.n_tokens)
        _npy_from_raw(self.dir / "harmony.raw", out / "harmony.npy", np.dtype("<u2"), self.n_tokens)
        _npy_from_raw(self.dir / "index.raw", out / "index.npy", INDEX_DTYPE, self.n_rows)
        head = self.manifest()
        text = json.dumps(head, indent=1, sort_keys=True)
        before, after = text.split('"per_file": {}', 1)  # every other value is a number or an escaped string
        with open(out / "manifest.json", "wb") as f, open(self.dir / "entries.json", "rb") as entries:
            f.write(f'{before}"per_file": '.encode())
            self._write_entries(f, entries)
            f.write(f"{after}\n".encode())
        self.db.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        return head

    def _write_entries(self, f, entries) -> None:
        """The per-file entries in name order, as `json.dumps(..., indent=1, sort_keys=True)` lays them out
        (SQLite orders the names' UTF-8 bytes, which is the order of their code points, as Python sorts)."""
        if not self.n:
            f.write(b"{}")
            return
        f.write(b"{\n")
        for k, (at, size) in enumerate(self.db.execute("SELECT at, size FROM files ORDER BY name")):
            entries.seek(at)
            f.write((b",\n" if k else b"") + entries.read(size))
        f.write(b"\n }")


def _blob(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _text(blob: bytes) -> str:
    return bytes(blob).decode("utf-8", "surrogateescape")


def _npy_from_raw(raw: Path, out: Path, dtype: np.dtype, n: int) -> None:
    """`np.save`'s bytes for an (n,) array of `dtype` whose data is the raw file `raw`."""
    with open(out, "wb") as f, open(raw, "rb") as src:
        header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (n,)}
        np.lib.format.write_array_header_1_0(f, header)
        shutil.copyfileobj(src, f, 1 << 20)
