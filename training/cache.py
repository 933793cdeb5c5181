"""The ingested corpus on disk: token arrays, a sequence index and a manifest (written atomically).

A cache directory holds
    tokens.npy     uint16, every sequence's tokens back to back (each starts with codec.BOS); memory-mapped
    harmony.npy    uint16, beside each token the backing's harmony code after it (daemon/harmony.py)
    index.npy      one row per sequence: start, end (into tokens), split, song, transpose
    manifest.json  codec version and vocabulary size, files seen/used/skipped by reason, tracks chosen,
                   songs and events per split
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from leadline.daemon import codec
from leadline.daemon.errors import UserError

SPLITS = ("train", "val", "test")
INDEX_DTYPE = np.dtype([("start", "<i8"), ("end", "<i8"), ("split", "i1"), ("song", "<i4"), ("transpose", "i1")])


class CacheError(UserError, ValueError):
    """A cache directory that is missing, incomplete or from another codec version."""


@dataclass
class Cache:
    tokens: np.ndarray
    index: np.ndarray
    manifest: dict
    harmony: np.ndarray | None = None  # beside tokens; None: silence everywhere

    def sequences(self, split: str, transposed: bool = True) -> list[np.ndarray]:
        """Token arrays of one split ('train', 'val', 'test'), in index order."""
        return [self.tokens[r["start"]:r["end"]] for r in self._rows(split, transposed)]

    def harmonies(self, split: str, transposed: bool = True) -> list[np.ndarray]:
        """Harmony-code arrays beside `sequences(split, transposed)`."""
        rows = self._rows(split, transposed)
        if self.harmony is None:
            return [np.zeros(r["end"] - r["start"], np.uint16) for r in rows]
        return [self.harmony[r["start"]:r["end"]] for r in rows]

    def packed(self, split: str, transposed: bool = True) -> list[np.ndarray]:
        """uint32 token | harmony << 16 arrays (what training streams carry)."""
        return [np.asarray(t, np.uint32) | (np.asarray(h, np.uint32) << 16)
                for t, h in zip(self.sequences(split, transposed), self.harmonies(split, transposed))]

    def _rows(self, split: str, transposed: bool) -> np.ndarray:
        rows = self.index[self.index["split"] == SPLITS.index(split)]
        return rows if transposed else rows[rows["transpose"] == 0]

    def n_events(self, split: str) -> int:
        return int(sum(len(s) for s in self.sequences(split)))


def from_sequences(seqs: list[tuple[np.ndarray, int, int, int]], manifest: dict) -> Cache:
    """A cache in memory from (tokens, split index, song id, transpose) tuples (tokens: uint16, or uint32
    token | harmony << 16 as ingestion packs them)."""
    index = np.zeros(len(seqs), INDEX_DTYPE)
    pos = 0
    for i, (toks, split, song, transpose) in enumerate(seqs):
        index[i] = (pos, pos + len(toks), split, song, transpose)
        pos += len(toks)
    both = np.concatenate([np.asarray(s[0], np.uint32) for s in seqs]) if seqs else np.zeros(0, np.uint32)
    manifest = dict(manifest, codec_version=codec.CODEC_VERSION, vocab_size=codec.VOCAB_SIZE)
    return Cache((both & 0xFFFF).astype(np.uint16), index, manifest, (both >> 16).astype(np.uint16))


def write(cache: Cache, out: str | Path) -> Path:
    """Write `cache` to directory `out` atomically (a temporary sibling renamed into place)."""
    with atomic_dir(out) as tmp:
        np.save(tmp / "tokens.npy", cache.tokens)
        np.save(tmp / "harmony.npy", cache.harmony if cache.harmony is not None
                else np.zeros(len(cache.tokens), np.uint16))
        np.save(tmp / "index.npy", cache.index)
        (tmp / "manifest.json").write_text(json.dumps(cache.manifest, indent=1, sort_keys=True) + "\n")
    return Path(out)


@contextmanager
def atomic_dir(out: str | Path) -> Iterator[Path]:
    """A temporary sibling of folder `out` to fill; renamed into place (replacing `out`) when the block ends
    without an exception, removed when it raises: a kill or an error never leaves a half-written folder."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    os.chmod(tmp, 0o755 & ~current_umask())
    try:
        yield tmp
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def load(path: str | Path, in_memory: bool = False) -> Cache:
    """Open a cache directory (tokens memory-mapped unless `in_memory`); raises CacheError with what is wrong."""
    path = Path(path)
    try:
        manifest = json.loads((path / "manifest.json").read_text())
        tokens = np.load(path / "tokens.npy", mmap_mode=None if in_memory else "r")
        harm = np.load(path / "harmony.npy", mmap_mode=None if in_memory else "r")
        index = np.load(path / "index.npy")
    except (OSError, ValueError) as e:
        raise CacheError(f"{path}: not a leadline data cache ({e}); build one with `leadline data build`") from None
    if manifest.get("codec_version") != codec.CODEC_VERSION or manifest.get("vocab_size") != codec.VOCAB_SIZE:
        raise CacheError(f"{path}: built with codec {manifest.get('codec_version')} "
                         f"(vocabulary {manifest.get('vocab_size')}), this leadline uses codec "
                         f"{codec.CODEC_VERSION} ({codec.VOCAB_SIZE}); rebuild it with `leadline data build`")
    return Cache(tokens, index, manifest, harm)


def is_cache(path: str | Path) -> bool:
    return (Path(path) / "manifest.json").is_file() and (Path(path) / "tokens.npy").is_file()
