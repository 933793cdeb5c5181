"""The model's side of the conversation: feeds heard notes, generates a phrase one token at a time.

One stateful stream: the player's notes and leadline's own notes advance the same LSTM state, one token
a step, so an answer follows what was just played. `cursor` is the song tick of the last event the state
has seen. Each step also hears the backing's harmony at the song tick after its token (`harmony`, a source
of daemon/harmony.py codes by tick: the live band, or an offline backing file), as training pairs them. A rolling window of recent tokens re-primes the state in one run (Start, mode change, reload).
Hearing the player never ends a phrase: whether the player interrupts is the jam mode's decision (Live).
"""
from __future__ import annotations

from collections import deque
from typing import Callable

import numpy as np

from leadline.daemon import codec, harmony
from leadline.daemon.codec import Note, TICKS_PER_BEAT
from leadline.daemon.memory import SessionMemory

MAX_GAP = 2 * 96  # a longer silence is fed as two bars of rest: the model has not seen longer ones
MAX_WAITING = 64  # player notes kept waiting for leadline's half-sampled note (bounded memory)


_SHIFT1 = codec.OFFSETS["SHIFT"]  # the token of SHIFT 1 (SHIFT n: _SHIFT1 + n - 1)
_TICKS = [int(v) if k == codec.K_SHIFT else 0 for k, v in zip(codec.TOKEN_KIND, codec.TOKEN_VALUE)]  # by token


def rest_limit(first: bool, cursor: int, last_onset: int, end: int, fill: bool, bar: int = codec.MAX_SHIFT) -> int:
    """SHIFTs of this many ticks or more are not sampled at `cursor` in a phrase ending at `end`: none before
    its first note. In a phrase that is to be filled (`fill`: a duet, a trade turn) also none that would make
    a bar of silence since the last note (duet keeps playing; real lead lines rest that long between onsets
    in 1.4 % of gaps) and none that would end the phrase before its last beat (a trade turn is not cut short
    by a rest). An answer in respond breathes as the model likes: filled 2-bar answers were denser than real
    ones and the realness judge told them apart better (rock AUC 0.83 against 0.71). `leadline eval` samples
    its respond-like answers with the same function (training/leadeval.py). `bar`: the song's bar in ticks
    (song.meter; a silence is never longer than MAX_SHIFT, a 4/4 bar, whatever the meter)."""
    if first:
        return 1
    if not fill:
        return codec.MAX_SHIFT + 1
    limit = min(bar, codec.MAX_SHIFT) - (cursor - last_onset)
    if end - cursor > TICKS_PER_BEAT:
        limit = min(limit, end - cursor)
    return max(limit, 1)


def mask_rests(logits: np.ndarray, limit: int) -> None:
    """In place: the SHIFTs of `limit` ticks or more get -inf."""
    logits[_SHIFT1 + limit - 1:_SHIFT1 + codec.MAX_SHIFT] = -np.inf


class Improviser:
    """Owns the model state's time cursor and seed window; drives an engine and a sampler. The player's notes
    also go to a session memory, whose continuation of the stream is mixed into the model's distribution with
    weight `echo` (sampling.echo_player; 0: the model's own, bit for bit). `harmony(tick)`, when set, is the
    backing's harmony code at a song tick: every step hears it (engine.set_harmony) before it runs."""

    def __init__(self, engine, sampler, window: int = 64, echo: float = 0.0) -> None:
        self.engine, self.sampler = engine, sampler
        self.memory = SessionMemory()
        self.echo = echo
        self.window: deque[int] = deque(maxlen=window)
        self.codes: deque[int] = deque(maxlen=window)  # the harmony code each token of the window heard
        self.harmony: Callable[[int], int] | None = None
        self.cursor = 0
        self.velocity_bin = codec.velocity_bin(80)
        self.last = codec.BOS
        self.logits = None
        self.decoder: codec.Decoder | None = None
        self.waiting: list[Note] = []  # player notes heard while leadline's note waits for its DUR
        self.phrase_end = 0
        self.first = False  # at a phrase's start: no rest before its first note
        self.last_onset = 0  # tick of leadline's last note in the phrase
        self.fill = False  # the phrase is to be filled (duet, trade): see rest_limit
        self.bar = codec.MAX_SHIFT  # the song's bar in ticks (song.meter), for rest_limit
        self._buf = np.empty(codec.VOCAB_SIZE, np.float32)
        self.steps = 0
        self.reprime()

    # --- state ---------------------------------------------------------------------------------------
    def reprime(self, cursor: int | None = None) -> None:
        """Fresh state primed from BOS + the seed window in one run, each token with the harmony it heard;
        the window is kept. The steps after it hear the harmony at `cursor`."""
        self.stop()
        if cursor is not None:
            self.cursor = cursor
        now = self.harmony(self.cursor) if self.harmony is not None else self.engine.harmony_code
        window = list(self.window)
        codes = list(self.codes)[-len(window):] if window else []
        codes = [now] * (len(window) - len(codes)) + codes  # (a window set from outside: a replayed take)
        toks = np.fromiter([codec.BOS, *window], np.int64)
        self.logits = self.engine.prime(toks, np.asarray([codes[0] if codes else now, *codes], np.int64))
        self.engine.set_harmony(now)
        self.last = int(toks[-1])

    def _advance(self, tok: int) -> None:
        """One model step on `tok`, hearing the harmony at the song tick after it (the one place the state
        advances: the live path, ~20 lines)."""
        self.cursor += _TICKS[tok]
        if self.harmony is not None:
            self.engine.set_harmony(self.harmony(self.cursor))
        self.logits = self.engine.step(tok)
        self.codes.append(self.engine.harmony_code)
        self.window.append(tok)
        self.last = tok
        self.steps += 1
        if codec.TOKEN_KIND[tok] == codec.K_VEL:
            self.velocity_bin = int(codec.TOKEN_VALUE[tok])

    def rest_until(self, tick: int) -> None:
        """Advance the cursor to `tick` with SHIFT tokens (a long gap is shortened to MAX_GAP: its last
        MAX_GAP ticks are heard, so the steps land on `tick` with the harmony there)."""
        gap = max(min(tick - self.cursor, MAX_GAP), 0)
        self.cursor = max(self.cursor, tick - gap)
        for tok in codec.shift_tokens(gap):
            self._advance(tok)
        self.cursor = max(self.cursor, tick)

    # --- listening -------------------------------------------------------------------------------------
    def hear(self, notes: list[Note]) -> None:
        """Feed completed player notes (sorted by onset); an onset before the cursor is moved to it.

        A phrase in progress goes on from where the state now is (duet, trade). Notes heard while
        leadline's own note is half sampled (NOTE without its DUR) wait for that note to complete, so the
        token stream stays well formed (a note's expression tokens count as half sampled too)."""
        d = self.decoder
        if d is not None and d.mid_note:
            self.waiting.extend(notes)
            del self.waiting[:-MAX_WAITING]
            return
        self._feed(notes)
        if d is not None:  # the phrase continues at the cursor, in the velocity the state now has
            d.cursor = self.cursor
            d.velocity = codec.bin_velocity(self.velocity_bin)

    def _feed(self, notes: list[Note]) -> None:
        self.memory.hear(notes)
        for n in notes:
            onset = max(n.onset, self.cursor)
            self.rest_until(onset)
            b = codec.velocity_bin(n.velocity)
            if b != self.velocity_bin:
                self._advance(codec.OFFSETS["VEL"] + b)
            for tok in codec.note_tokens(n):  # the player's bends too, when the input carries them
                self._advance(tok)

    # --- playing ---------------------------------------------------------------------------------------
    def begin(self, start: int, end: int, fill: bool = False) -> None:
        """Start a phrase from tick `start` to `end` (`fill`: rests shaped to keep it going, `rest_limit`)."""
        self.rest_until(start)
        self.decoder = codec.Decoder(self.cursor, codec.bin_velocity(self.velocity_bin))
        self.phrase_end = end
        self.fill = fill
        self.first = True
        self.last_onset = self.cursor

    def catch_up(self, tick: int) -> None:
        """A phrase whose generation fell behind `tick` rests up to it (nothing is played in the past)."""
        d = self.decoder
        if d is not None and d.cursor < tick and not d.mid_note:
            self.cursor = d.cursor
            for tok in codec.shift_tokens(tick - d.cursor):
                self._advance(tok)
            d.cursor = self.cursor = tick
            if tick >= self.phrase_end:
                self.decoder = None

    @property
    def playing(self) -> bool:
        return self.decoder is not None

    def ahead(self) -> int:
        """The tick up to which the current phrase has been generated."""
        return self.decoder.cursor if self.decoder is not None else self.cursor

    def next_note(self, max_steps: int = 16) -> Note | None:
        """Sample up to `max_steps` tokens; the first complete note (clipped to the phrase), or None.

        The phrase ends (decoder dropped) when its time cursor reaches the phrase end. Rests are shaped
        by `rest_limit`: the first note falls on the phrase start; a phrase to be filled (duet, trade) neither
        falls silent for a bar nor ends early by a rest.
        """
        d = self.decoder
        for _ in range(max_steps):
            tok = self.sampler.sample(self._next_logits(d.cursor), self.last)
            self._advance(tok)
            note = d.feed(tok)
            self.cursor = d.cursor
            if d.cursor >= self.phrase_end:
                self.decoder = None
                return None
            if note is not None:
                self.first = False
                self.last_onset = note.onset
                if self.waiting:  # the player's notes that came while this one was half sampled
                    waiting, self.waiting = self.waiting, []
                    self.hear(waiting)
                if note.end > self.phrase_end:
                    note = Note(note.onset, self.phrase_end - note.onset, note.pitch, note.velocity)
                return note
        return None

    def _next_logits(self, cursor: int) -> np.ndarray:
        """The model's logits for the next token at `cursor`, the session memory mixed in (`echo`), rests shaped
        (`rest_limit`); the model's own array when neither applies."""
        logits = self.logits
        limit = rest_limit(self.first, cursor, self.last_onset, self.phrase_end, self.fill, self.bar)
        if self.echo and self.memory.mix(logits, self.window, self.echo, self._buf):
            logits = self._buf
        if limit <= codec.MAX_SHIFT:
            if logits is not self._buf:
                np.copyto(self._buf, logits)
                logits = self._buf
            mask_rests(logits, limit)
        return logits

    def stop(self) -> None:
        self.decoder = None
        if self.waiting:
            waiting, self.waiting = self.waiting, []
            self._feed(waiting)
