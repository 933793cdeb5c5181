"""The session memory: the player's own tokens as a small variable-order Markov model, mixed into the model's
next-token distribution (`sampling.echo_player`) so leadline quotes and develops the player's motifs.

What it counts: the player's notes (only theirs, never leadline's), encoded with the codec as one stream of
their own (SHIFTs between the player's onsets, a gap capped at two bars as the improviser caps it, NOTE, DUR;
no VEL: velocity stays leadline's). For every token it counts the contexts of 1..`ORDER` tokens before it:
Continuator-style (Pachet 2003), the longest context seen predicts. A context is compared by pitch exactly and
by rhythm in classes about 20 % wide (`TIME_CLASSES`), and the VELs of the line it ends are skipped, so a
player's human timing and dynamics do not hide a motif; what it predicts is the player's exact token. The memory slides over the player's last
`SIZE` tokens (about 1,300 notes: rock-o-net lines take 3.1 tokens a note); a token that falls out takes its
counts with it, so it never holds more than `SIZE` x `ORDER` counts. It is never cleared while leadline runs: a
Stop and Start is the next take of the same song, whose motifs are the ones to quote; a new run of leadline
starts empty.

What it predicts: given the last tokens of the stream the model sees (the player's and leadline's own), the
counts after the longest of those contexts the player has played, if that context is at least `MIN_ORDER`
tokens long: three tokens are about one note (gap, pitch, duration), so the memory speaks only once the line
has just played a note as the player played it. Tokens are exact: a motif is quoted at its own pitches.

The mix, in probability space after the model's softmax and before every sampling control (masks, repetition
penalty, temperature, top-p), only where the memory has a context:

    p = (1 - w) softmax(logits) + w counts / total          w = sampling.echo_player (control.echo_cc)

At w = 1 the model keeps a share of `FLOOR`, so when the masks forbid all of the memory's continuations (a rest
before a phrase's first note) the model's choice remains. The hot path allocates no arrays: one dict lookup a
context length (integer keys), numpy in preallocated buffers.
"""
from __future__ import annotations

from array import array

import numpy as np

from leadline.daemon import codec

ORDER = 12  # longest context, tokens (about four notes)
MIN_ORDER = 3  # shortest context that speaks: one whole note
SIZE = 4096  # player tokens remembered
FLOOR = 1e-9  # the model's share at echo_player 1
MAX_GAP = 2 * 96  # a longer gap between the player's onsets is counted as two bars (as the improviser feeds it)
TIME_CLASSES = (2, 4, 7, 10, 14, 20, 28, 40, 56, 80, 112)  # upper ends (ticks) of the classes of SHIFTs and DURs


def _digits() -> tuple[int, ...]:
    """Each token's digit in a context key: a NOTE its pitch, a SHIFT or DUR its time class (a tick or two of a
    human's timing apart is the same rhythm), BOS its own; a VEL 0: not part of any context (a player's
    velocities change from note to note, the model's rarely)."""
    out = []
    for tok in range(codec.VOCAB_SIZE):
        kind, value = codec.describe(tok)
        ticks = value if kind == "SHIFT" else codec.DURATIONS[value] if kind == "DUR" else 0
        cls = sum(ticks > e for e in TIME_CLASSES)
        out.append({"BOS": 1, "SHIFT": 2 + cls, "DUR": 14 + cls, "VEL": 0}.get(kind, 26 + value - codec.PITCH_LO))
    return tuple(out)


_DIGIT = _digits()
_BITS = max(_DIGIT).bit_length()  # bits of one context digit (digits are never 0: a key's length is its own)
_TOK = codec.VOCAB_SIZE.bit_length()  # bits of a token in a (context, token) key
_EXPRESSION = codec.OFFSETS["BEND"]  # the first expression token; all after it are expression too


def echo_weight(value: int) -> float:
    """control.echo_cc's value 0..127 -> sampling.echo_player 0..1."""
    return min(max(value, 0), 127) / 127


class SessionMemory:
    """Counts of the player's tokens after each context of 1..order tokens, over the last `size` tokens.

    Only ints in flat dicts (and an array for the tokens), so the garbage collector never tracks or walks the
    counts (a dict of dicts of this size made a full collection take 7 ms)."""

    def __init__(self, order: int = ORDER, size: int = SIZE, min_order: int = MIN_ORDER) -> None:
        if not 1 <= min_order <= order < size:
            raise ValueError(f"need 1 <= min_order <= order < size, got {min_order}, {order}, {size}")
        self.order, self.size, self.min_order = order, size, min_order
        self._next: dict[int, int] = {}  # context key -> bit mask of the tokens seen after it
        self._pair: dict[int, int] = {}  # context key << _TOK | token -> count
        self._ring = array("H", [0]) * size
        self._start = self._end = 0  # absolute positions of the tokens held: [start, end)
        self._cursor = -1  # onset tick of the player's last note (-1: none yet)
        self._p = np.empty(codec.VOCAB_SIZE)

    def __len__(self) -> int:
        """Tokens held."""
        return self._end - self._start

    def counts(self) -> int:
        """(context, next token) pairs counted: at most len(self) x order."""
        return len(self._pair)

    def clear(self) -> None:
        for d in (self._next, self._pair):
            d.clear()
        self._start = self._end = 0
        self._cursor = -1

    # --- learning (the player's notes) -------------------------------------------------------------
    def hear(self, notes) -> None:
        """Learn the player's completed notes (codec.Note, in onset order)."""
        for n in notes:
            if self._cursor >= 0:
                self.learn(codec.shift_tokens(min(max(n.onset - self._cursor, 0), MAX_GAP)))
            self._cursor = n.onset
            self.learn((codec.OFFSETS["NOTE"] + codec.fold_pitch(n.pitch) - codec.PITCH_LO,
                        codec.OFFSETS["DUR"] + int(codec.DUR_INDEX[min(n.duration, codec.MAX_DURATION)])))

    def learn(self, tokens) -> None:
        """Append tokens to the player's stream (VELs left out), counting each after its contexts."""
        ring, size, nxt, pair = self._ring, self.size, self._next, self._pair
        for t in tokens:
            t = int(t)
            if not _DIGIT[t]:
                continue
            if self._end - self._start == size:
                self._forget()
            e = self._end
            key = 0
            for k in range(1, min(self.order, e - self._start) + 1):
                key |= _DIGIT[ring[(e - k) % size]] << (_BITS * (k - 1))  # newest token in the lowest digit
                pk = (key << _TOK) | t
                c = pair.get(pk, 0)
                if not c:
                    nxt[key] = nxt.get(key, 0) | (1 << t)
                pair[pk] = c + 1
            ring[e % size] = t
            self._end = e + 1

    def _forget(self) -> None:
        """Drop the oldest token: the counts whose context starts with it."""
        ring, size, s, nxt, pair = self._ring, self.size, self._start, self._next, self._pair
        key = 0
        for k in range(1, min(self.order, self._end - s - 1) + 1):
            key = (key << _BITS) | _DIGIT[ring[(s + k - 1) % size]]  # context [s, s + k): oldest digit highest
            t = ring[(s + k) % size]
            pk = (key << _TOK) | t
            c = pair[pk] - 1
            if c:
                pair[pk] = c
            elif nxt[key] == 1 << t:  # its last token: the context goes
                del pair[pk], nxt[key]
            else:
                del pair[pk]
                nxt[key] ^= 1 << t
        self._start = s + 1

    # --- predicting ------------------------------------------------------------------------------------
    def context(self, recent) -> int:
        """The key of the longest context ending `recent` (a sequence, newest last; VELs skipped) that the player
        has played, if it is at least min_order long; else -1."""
        nxt, found, key, k = self._next, -1, 0, 0
        for tok in reversed(recent):
            d = _DIGIT[tok]
            if not d:
                continue
            key |= d << (_BITS * k)
            k += 1
            if key not in nxt:
                break
            if k >= self.min_order:
                found = key
            if k == self.order:
                break
        return found

    def lookup(self, recent) -> dict[int, int] | None:
        """{next token: count} after `context(recent)`, or None."""
        key = self.context(recent)
        if key < 0:
            return None
        mask = self._next[key]
        return {t: self._pair[(key << _TOK) | t] for t in range(mask.bit_length()) if mask >> t & 1}

    def mix(self, logits: np.ndarray, recent, weight: float, out: np.ndarray) -> bool:
        """Write into `out` the log of (1 - weight) softmax(`logits`) + weight x the memory's continuation of
        `recent`, and return True; return False (`out` untouched) where the memory has no context.

        The memory hears notes, not their expression: the model's probability of a bend or vibrato is kept
        whole and the mix shares out the rest (mixed in too, at echo_player 0.6 a third of the model's bends
        were lost: rock validation answers bent 0.7 % of their notes, 1.7 % without the memory, real 1.6 %)."""
        key = self.context(recent) if weight > 0.0 else -1
        if key < 0:
            return False
        p = self._p
        np.subtract(logits, logits.max(), out=p)
        np.exp(p, out=p)
        p /= p.sum()
        expressive = float(p[_EXPRESSION:].sum())  # (codec 2's expression tokens close the vocabulary)
        p[:_EXPRESSION] *= max(1.0 - weight, FLOOR)
        weight *= 1.0 - expressive
        pair, base, total, mask = self._pair, key << _TOK, 0, self._next[key]
        while mask:  # the tokens seen after the context: lowest bit first
            low = mask & -mask
            total += pair[base | (low.bit_length() - 1)]
            mask ^= low
        share, mask = weight / total, self._next[key]
        while mask:
            low = mask & -mask
            t = low.bit_length() - 1
            p[t] += share * pair[base | t]
            mask ^= low
        np.maximum(p, 1e-300, out=p)  # an underflowed token stays possible for the masks to judge: no log(0)
        np.log(p, out=out)
        return True
