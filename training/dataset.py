"""Truncated-BPTT batches: a split's songs laid end to end into parallel streams, cut into chunks.

Each of `batch` streams is a concatenation of whole songs (every song starts with `codec.BOS`). An epoch
shuffles the song order with a generator seeded by (seed, epoch), so the data order of any epoch is a pure
function of the seed and can be replayed exactly on resume. Songs are dealt to the currently shortest
stream, which keeps the streams within one song of each other; the tail is padded.

A chunk is `(x, y)`: inputs (batch, chunk) and targets shifted by one, with `IGNORE` where there is nothing
to predict (padding, and the BOS that starts the next song: the codec has no end-of-song token and the
sampler never plays BOS). The recurrent state is carried from chunk to chunk of a stream, detached, and
reset to zeros wherever a song starts: `segments(x)` splits a chunk at every column where some stream
reads a BOS, so a song is always scored from a fresh state, exactly as the daemon and `eval` run it.

Under several training processes (`leadline.training.distributed`) every process lays out the same global
epoch and keeps its own `rows` of the streams; `n_targets` still counts the targets of the whole batch.
"""
from __future__ import annotations

import numpy as np

from leadline.daemon import codec

IGNORE = -100  # target that the loss skips (torch's cross_entropy default ignore_index)
PAD_INPUT = codec.OFFSETS["SHIFT"]  # input after a stream's last song; its targets are all IGNORE


class Streams:
    """The songs of one split as `batch` parallel token streams, cut into chunks of `chunk` steps."""

    def __init__(self, seqs: list[np.ndarray], batch: int, chunk: int, seed: int = 0, shuffle: bool = True,
                 rows: slice | None = None):
        # 4 bytes an event: a token id (< 2^15) | its harmony code << 16 (uint16 token arrays: no harmony)
        self.seqs = [np.asarray(s, np.uint32) for s in seqs if len(s) > 1]
        self.batch, self.chunk, self.seed, self.shuffle = batch, chunk, seed, shuffle
        self.rows = rows or slice(0, batch)  # the streams this process keeps (all of them in one process)
        self.n_rows = len(range(batch)[self.rows])
        self.n_events = int(sum(len(s) - 1 for s in self.seqs))  # predicted tokens per epoch, all rows
        self._cache: tuple[int, np.ndarray, np.ndarray, np.ndarray] | None = None

    def layout(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(inputs, targets), each (rows, length), of one epoch; the same for the same (seed, epoch)."""
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1], self._cache[2]
        order = np.arange(len(self.seqs))
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch]).permutation(len(self.seqs))
        streams: list[list[np.ndarray]] = [[] for _ in range(self.batch)]
        lengths = np.zeros(self.batch, np.int64)
        for i in order:
            b = int(np.argmin(lengths))
            streams[b].append(self.seqs[i])
            lengths[b] += len(self.seqs[i])
        width = int(lengths.max()) if len(lengths) else 0
        both = np.full((self.batch, width + 1), PAD_INPUT, np.uint32)
        for b, parts in enumerate(streams):
            if parts:
                both[b, :lengths[b]] = np.concatenate(parts)
        # x: token | harmony << 16 (int64 when read); padding is PAD_INPUT, not BOS: it must not look like a song
        # start to `segments`
        x = both[:, :-1].copy()
        y = (both[:, 1:] & 0xFFFF).astype(np.int16)
        y[np.arange(width)[None, :] >= lengths[:, None] - 1] = IGNORE  # past a stream's end
        y[y == codec.BOS] = IGNORE
        per_column = (y != IGNORE).sum(axis=0)
        counts = np.add.reduceat(per_column, np.arange(0, width, self.chunk)) if width else per_column
        self._cache = (epoch, x[self.rows].copy(), y[self.rows].copy(), counts)
        return self._cache[1], self._cache[2]

    def n_chunks(self, epoch: int) -> int:
        x, _ = self.layout(epoch)
        return -(-x.shape[1] // self.chunk)

    def n_targets(self, epoch: int, i: int) -> int:
        """Targets to predict in chunk `i` of `epoch` over every row (every process's streams)."""
        self.layout(epoch)
        return int(self._cache[3][i])

    def get(self, epoch: int, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Chunk `i` of `epoch`: inputs and targets, each (rows, <= chunk), int64 (what torch indexes with)."""
        x, y = self.layout(epoch)
        s = slice(i * self.chunk, (i + 1) * self.chunk)
        return x[:, s].astype(np.int64), y[:, s].astype(np.int64)


def segments(x: np.ndarray) -> list[tuple[int, int, np.ndarray]]:
    """Split a chunk's columns at song starts: [(start, end, reset)] where `reset` (batch,) marks the
    streams whose state must be zeroed before column `start` (they read a BOS there)."""
    starts = (x & 0xFFFF) == codec.BOS
    cuts = [0] + [int(t) for t in np.flatnonzero(starts[:, 1:].any(axis=0)) + 1] + [x.shape[1]]
    return [(a, b, starts[:, a]) for a, b in zip(cuts[:-1], cuts[1:])]


def summary(seqs: list[np.ndarray]) -> dict:
    """Songs and predicted events of a list of sequences (for logs, checkpoints and the model card)."""
    return {"sequences": len(seqs), "events": int(sum(max(len(s) - 1, 0) for s in seqs))}
