"""Baseline token models for `eval`: an add-one unigram and a variable-order Markov model (interpolated KN).

Both are trained on the same training split and tokens as the LSTM and score a sequence the same way: every
token after its BOS, the context starting fresh at the BOS (contexts reaching before it see a PAD symbol).

`Markov` is a variable-order Markov model in the spirit of the Continuator (Pachet 2003): every context
length up to `order` is counted and the predictions are blended from the longest context down to a uniform
distribution. The blending is interpolated Kneser-Ney (Chen & Goodman 1999; one absolute discount per order),
the strongest of the classic n-gram smoothers; `method="ppmc"` gives PPM's escape method C used for blending
(Witten-Bell), kept for comparison:

    kn:    P_k(x|h) = (max(c(h,x) - D_k, 0) + D_k u(h) P'_{k-1}(x|h')) / n(h)     (P'_: continuation counts)
    ppmc:  P_k(x|h) = (c(h,x) + u(h) P_{k-1}(x|h')) / (n(h) + u(h))

with c the count of x after the order-k context h, n the total and u the number of distinct symbols seen
after it, h' the context without its oldest token, and P_k = P_{k-1} where h was never seen. Kneser-Ney's
lower orders count, instead of occurrences, the distinct tokens seen before (h', x). Counts are kept as sorted
arrays of 64-bit rolling hashes of the contexts, so fitting 2.6M tokens to order 16 takes ~15 s on one core;
scoring computes every maximum order in one pass, and `select_order` picks the best on a validation split
(on the real corpora Kneser-Ney keeps improving up to ~16 tokens, PPM-C peaks at 3).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from leadline.daemon import codec

log = logging.getLogger(__name__)

PAD = codec.VOCAB_SIZE  # context symbol before a sequence's BOS
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_P = np.uint64(0x9E3779B97F4A7C15)


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser (uint64 arithmetic wraps)."""
    h = (h ^ (h >> np.uint64(30))) * _M1
    h = (h ^ (h >> np.uint64(27))) * _M2
    return h ^ (h >> np.uint64(31))


def targets(seqs: list[np.ndarray], pad: int) -> tuple[np.ndarray, np.ndarray]:
    """All sequences, each after `pad` PAD symbols, back to back (int64), and the positions of their
    targets (every token after the BOS)."""
    lens = np.array([len(s) for s in seqs], np.int64)
    if not len(seqs) or lens.sum() == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    flat = np.full(int((lens + pad).sum()), PAD, np.int64)
    starts = np.cumsum(lens + pad) - lens
    pos = []
    for s, a in zip(seqs, starts):
        flat[a:a + len(s)] = s
        pos.append(np.arange(a + 1, a + len(s)))
    return flat, np.concatenate(pos)


def _contexts(flat: np.ndarray, pos: np.ndarray, order: int):
    """Yield (k, context hash, pair hash) for k = 0..order at target positions `pos`."""
    ctx = np.zeros(len(pos), np.uint64)
    sym = flat[pos].astype(np.uint64) + np.uint64(1)
    with np.errstate(over="ignore"):
        for k in range(order + 1):
            if k:
                ctx = _mix(ctx * _P + flat[pos - k].astype(np.uint64) + np.uint64(1))
            yield k, ctx, _mix(ctx ^ (sym * _P))


def _find(keys: np.ndarray, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index into sorted `keys`, found) for each query; queries are searched in sorted order (faster)."""
    if not len(keys):
        return np.zeros(len(query), np.int64), np.zeros(len(query), bool)
    order = np.argsort(query, kind="stable")
    i = np.empty(len(query), np.int64)
    i[order] = np.minimum(np.searchsorted(keys, query[order]), len(keys) - 1)
    return i, keys[i] == query


class Unigram:
    """Add-one smoothed token frequencies."""

    def __init__(self) -> None:
        self.logp = np.full(codec.VOCAB_SIZE, -math.log2(codec.VOCAB_SIZE))

    def fit(self, seqs: list[np.ndarray]) -> "Unigram":
        flat, pos = targets(seqs, 0)
        counts = np.bincount(flat[pos], minlength=codec.VOCAB_SIZE)[:codec.VOCAB_SIZE] + 1.0
        self.logp = np.log2(counts / counts.sum())
        return self

    def nll_bits(self, seqs: list[np.ndarray]) -> float:
        flat, pos = targets(seqs, 0)
        return float(-self.logp[flat[pos]].mean()) if len(pos) else float("nan")


@dataclass
class _Table:
    """Counts of one order: per context (sorted hashes) n and u, per (context, symbol) pair c; discount d."""

    ctx: np.ndarray
    n: np.ndarray
    u: np.ndarray
    pair: np.ndarray
    c: np.ndarray
    d: float

    @classmethod
    def from_pairs(cls, pair: np.ndarray, pair_ctx: np.ndarray, c: np.ndarray) -> "_Table":
        """From distinct (sorted) pair hashes, each pair's context hash and count."""
        ctx, inv = np.unique(pair_ctx, return_inverse=True)
        n1, n2 = int((c == 1).sum()), int((c == 2).sum())
        d = n1 / (n1 + 2 * n2) if n1 else 0.5  # Ney, Essen & Kneser (1994)
        n = np.bincount(inv, weights=c).astype(np.uint32)
        return cls(ctx, n, np.bincount(inv).astype(np.uint32), pair, c.astype(np.uint32), d)

    def lookup(self, ctx: np.ndarray, pair: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        i, found = _find(self.ctx, ctx)
        j, hit = _find(self.pair, pair)
        return np.where(found, self.n[i], 0.0), np.where(found, self.u[i], 0.0), np.where(hit, self.c[j], 0.0)


class Markov:
    """Variable-order Markov model; `order` is the longest context used (see the module docstring)."""

    def __init__(self, max_order: int = 16, order: int | None = None, method: str = "kn") -> None:
        if method not in ("kn", "ppmc"):
            raise ValueError(f"method must be 'kn' or 'ppmc', not {method!r}")
        self.max_order, self.method = max_order, method
        self.order = order if order is not None else min(5, max_order)
        self.raw: list[_Table] = []  # counts of each order
        self.cont: list[_Table] = []  # Kneser-Ney continuation counts of each order below the top

    def fit(self, seqs: list[np.ndarray]) -> "Markov":
        """Count every order 0..max_order (and continuation counts for Kneser-Ney)."""
        flat, pos = targets(seqs, self.max_order)
        self.raw, self.cont, prev = [], [], None
        for _, ctx, pair in _contexts(flat, pos, self.max_order):
            keys, first, c = np.unique(pair, return_index=True, return_counts=True)
            self.raw.append(_Table.from_pairs(keys, ctx[first], c))
            if prev is not None and self.method == "kn":  # distinct left extensions of each shorter pair
                low_ctx, low_pair = prev[0][first], prev[1][first]
                keys, first_low, c = np.unique(low_pair, return_index=True, return_counts=True)
                self.cont.append(_Table.from_pairs(keys, low_ctx[first_low], c))
            prev = ctx, pair
        log.info("markov (%s): %d target tokens, orders 0..%d, %d contexts at the top", self.method, len(pos),
                 self.max_order, len(self.raw[-1].ctx) if self.raw else 0)
        return self

    def order_bits(self, seqs: list[np.ndarray]) -> np.ndarray:
        """Bits per event of `seqs` for every maximum order 0..max_order (one pass)."""
        flat, pos = targets(seqs, self.max_order)
        low = np.full(len(pos), 1.0 / codec.VOCAB_SIZE)  # P of the next shorter context (order -1: uniform)
        bits = np.full(self.max_order + 1, np.nan)
        for k, ctx, pair in _contexts(flat, pos, self.max_order):
            p = self._blend(self.raw[k], ctx, pair, low)
            if len(pos):
                bits[k] = -np.log2(p).mean()
            if self.method == "ppmc":
                low = p
            elif k < self.max_order:
                low = self._blend(self.cont[k], ctx, pair, low)
        return bits

    def _blend(self, t: _Table, ctx: np.ndarray, pair: np.ndarray, low: np.ndarray) -> np.ndarray:
        n, u, c = t.lookup(ctx, pair)
        if self.method == "ppmc":
            return np.where(n > 0, (c + u * low) / np.maximum(n + u, 1.0), low)
        return np.where(n > 0, (np.maximum(c - t.d, 0.0) + t.d * u * low) / np.maximum(n, 1.0), low)

    def select_order(self, val: list[np.ndarray]) -> int:
        """Set `order` to the maximum order with the lowest bits/event on `val`; returns it."""
        bits = self.order_bits(val)
        self.order = int(np.argmin(bits))
        log.info("markov: validation bits/event by order %s -> order %d",
                 " ".join(f"{b:.3f}" for b in bits), self.order)
        return self.order

    def nll_bits(self, seqs: list[np.ndarray]) -> float:
        """Mean bits per event of `seqs` at the selected order."""
        return float(self.order_bits(seqs)[self.order])
