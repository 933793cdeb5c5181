"""The player's notes as leadline hears them: what sounds now, and completed notes in onset order for the model."""
from __future__ import annotations

import numpy as np

from leadline.daemon.codec import Note

MAX_WAITING = 64  # completed player notes kept waiting for an earlier, still held one (bounded memory)


class PlayerNotes:
    """The player's sounding notes; completed notes come out in onset order for the model."""

    def __init__(self) -> None:
        self.sounding: dict[int, tuple[int, int, int]] = {}  # pitch -> (onset tick, velocity, channel)
        self.done: list[Note] = []
        self.pc_hist = np.zeros(12)

    def on(self, pitch: int, tick: int, velocity: int, channel: int = 0) -> None:
        if pitch in self.sounding:
            self.off(pitch, tick)
        self.sounding[pitch] = (tick, velocity, channel)
        self.pc_hist *= 0.97
        self.pc_hist[pitch % 12] += 1.0

    def off(self, pitch: int, tick: int) -> None:
        if pitch in self.sounding:
            onset, vel, _ = self.sounding.pop(pitch)
            onset = min(onset, tick)  # held while the song jumped back (Start, Song Position): from here
            self.done.append(Note(max(onset, 0), max(tick - onset, 1), pitch, vel))
            if len(self.done) > MAX_WAITING:  # a note held for long: forget the oldest waiting notes
                del self.done[0]

    def held(self, channel: int | None = None, since: int | None = None) -> list[int]:
        """Pitches sounding (on `channel`; struck before tick `since`)."""
        return [p for p, (t, _, ch) in self.sounding.items()
                if (channel is None or ch == channel) and (since is None or t < since)]

    def ready(self) -> list[Note]:
        """Completed notes whose onset precedes every sounding note's (so the stream stays in order)."""
        if not self.done:
            return []
        limit = min((t for t, _, _ in self.sounding.values()), default=1 << 62)
        out = sorted((n for n in self.done if n.onset <= limit), key=lambda n: (n.onset, n.pitch))
        self.done = [n for n in self.done if n.onset > limit]
        return out
