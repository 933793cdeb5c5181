"""`leadline plot`: a piano-roll PNG of a .mid file: a colour a track, numbered bars, leadline's answers shaded,
a bent note's pitch bend drawn as a curve on it (read back from the file's pitch bend as the codec hears it).

A long file gets a second panel, zoomed on its end: the player's last bars and leadline's last answer, which
is what `leadline respond` writes and what a listener wants to see.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from leadline.daemon import midifile
from leadline.daemon.codec import TICKS_PER_BEAT, Note, bend_curve

COLOURS = {"player": "#1f5fa8", "leadline": "#e06010"}
OTHERS = ("#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
ANSWER = "leadline"
ZOOM_BARS = 16  # a file longer than this many bars also gets the zoomed panel
NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")


def bar_starts(data: midifile.MidiData, end: int) -> list[int]:
    """Grid ticks of every bar line from 0 up to the first one at or after `end`."""
    ticks = [0]
    while ticks[-1] < end:
        ticks.append(ticks[-1] + data.bar_ticks(ticks[-1]))
    return ticks


def answer_spans(track: midifile.Track, gap: int) -> list[tuple[int, int]]:
    """(start, end) of each group of notes of `track` separated by more than `gap` ticks of silence."""
    spans: list[tuple[int, int]] = []
    for on, du in zip(track.onset.tolist(), track.duration.tolist()):
        if spans and on <= spans[-1][1] + gap:
            spans[-1] = (spans[-1][0], max(spans[-1][1], on + du))
        else:
            spans.append((on, on + du))
    return spans


def _draw(ax, tracks, colours, bars: list[int], x0: int, x1: int) -> None:
    """Notes of `tracks` between ticks x0 and x1 (opacity from velocity), bar lines numbered, answers shaded."""
    from matplotlib.colors import to_rgba

    b = TICKS_PER_BEAT
    for t in tracks:
        if t.name.lower() == ANSWER:
            for s, e in answer_spans(t, bars[1] - bars[0]):
                ax.axvspan(s / b, e / b, color=COLOURS[ANSWER], alpha=0.08, lw=0, zorder=0)
        seen = (t.onset + t.duration > x0) & (t.onset < x1)
        rgba = [to_rgba(colours[t.name], 0.5 + 0.5 * v / 127) for v in t.velocity[seen].tolist()]
        ax.barh(t.pitch[seen], t.duration[seen] / b, left=t.onset[seen] / b, height=0.84, color=rgba,
                edgecolor="black", linewidth=0.3, zorder=2)
        _bends(ax, t, seen)
    shown = [i for i, tick in enumerate(bars) if x0 <= tick <= x1]
    for i in shown:
        ax.axvline(bars[i] / b, color="#999999", lw=0.7, zorder=1)
    step = max(1, len(shown) // 24)
    ax.set_xticks([bars[i] / b for i in shown[::step]], [str(i + 1) for i in shown[::step]])
    if len(shown) <= 32:  # beats too, faintly, where they are far enough apart to see
        ax.set_xticks(range(x0 // b, x1 // b + 1), minor=True)
        ax.grid(axis="x", which="minor", color="#eeeeee", lw=0.5, zorder=0)
    ax.set_xlim(x0 / b, x1 / b)
    ax.set_xlabel("bar")


def _bends(ax, track: midifile.Track, seen) -> None:
    """Each bent note's pitch bend as a line on it: at its pitch, moving up or down the semitones it bends."""
    if track.expression is None:
        return
    b = TICKS_PER_BEAT
    for i in np.flatnonzero(seen & ((track.expression[:, 0] != 0) | (track.expression[:, 3] != 0))):
        note = Note(*map(int, (track.onset[i], track.duration[i], track.pitch[i], track.velocity[i],
                               *track.expression[i])))
        points = bend_curve(note) + [(note.duration, None)]
        xs, ys = [], []
        for (t, semis), (t_next, _) in zip(points, points[1:]):  # a step per grid point, held to the next
            xs += [(note.onset + t) / b, (note.onset + t_next) / b]
            ys += [note.pitch + semis] * 2
        ax.plot(xs, ys, color="black", lw=1.1, zorder=3, solid_capstyle="butt")


def _pitch_axis(ax, tracks) -> None:
    """Note names on each C (and G in a narrow range), faint lines there, the range of the notes."""
    pitches = [int(p) for t in tracks for p in t.pitch] or [60]
    lo, hi = min(pitches) - 2, max(pitches) + 2
    named = (0, 7) if hi - lo <= 36 else (0,)
    cs = [p for p in range(lo, hi + 1) if p % 12 in named]
    for p in cs:
        ax.axhline(p, color="#dddddd", lw=0.6, zorder=0)
    ax.set_yticks(cs, [f"{NAMES[p % 12]}{p // 12 - 1}" for p in cs])
    ax.set_ylim(lo, hi)
    ax.set_ylabel("pitch")


def piano_roll(path: str | Path, png: str | Path, title: str | None = None) -> Path:
    """Draw the notes of `path` (tracks in their own colours, drums left out, bars numbered) into `png`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    data = midifile.read(path)
    tracks = [t for t in data.tracks if len(t) and not t.is_drum] or [t for t in data.tracks if len(t)]
    end = max((int((t.onset + t.duration).max()) for t in tracks), default=TICKS_PER_BEAT * 4)
    bars = bar_starts(data, end)
    others = iter(OTHERS * 4)
    colours = {t.name: COLOURS.get(t.name.lower()) or next(others) for t in tracks}
    zoom = _zoom_start(tracks, bars)
    width = min(24.0, 5 + (len(bars) - 1) * 0.6)
    fig, axes = plt.subplots(2 if zoom is not None else 1, 1, figsize=(width, 8.5 if zoom is not None else 4.5),
                             dpi=110, squeeze=False)
    _draw(axes[0, 0], tracks, colours, bars, 0, bars[-1])
    if zoom is not None:
        _draw(axes[1, 0], tracks, colours, bars, zoom, bars[-1])
        axes[1, 0].set_title(f"the end, from bar {bars.index(zoom) + 1}", fontsize=10, loc="left")
    for ax in axes[:, 0]:
        _pitch_axis(ax, tracks)
    handles = [Patch(color=c, label=n or "(unnamed)") for n, c in colours.items()]
    axes[0, 0].legend(handles=handles, loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=len(handles),
                      fontsize=9, frameon=False)
    axes[0, 0].set_title(title or Path(path).name, loc="left")
    fig.tight_layout()
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png)
    plt.close(fig)
    return png


def _zoom_start(tracks, bars: list[int]) -> int | None:
    """Bar line where the zoomed panel starts: 4 bars before the last answer, else the last 8 bars."""
    if len(bars) - 1 <= ZOOM_BARS:
        return None
    answers = [t for t in tracks if t.name.lower() == ANSWER]
    spans = answer_spans(answers[0], bars[1] - bars[0]) if answers else []
    if not spans:
        return bars[-9]
    return bars[max(0, max(i for i, tick in enumerate(bars) if tick <= spans[-1][0]) - 4)]


def run(args) -> int:
    print(piano_roll(args.input, args.output))
    return 0
