"""`leadline plot`: a piano-roll PNG of a .mid file, one colour a track, bar lines on the grid."""
from __future__ import annotations

from pathlib import Path

from daemon import midifile
from daemon.codec import TICKS_PER_BEAT

COLOURS = {"player": "#2f6fb0", "leadline": "#e07020"}
OTHERS = ("#4a9c5d", "#a04ab0", "#b0a02f", "#555555")


def piano_roll(path: str | Path, png: str | Path, title: str | None = None) -> Path:
    """Draw every note of `path` (tracks in their own colours, bars marked) into `png`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = midifile.read(path)
    tracks = [t for t in data.tracks if len(t)]
    end = max((int((t.onset + t.duration).max()) for t in tracks), default=TICKS_PER_BEAT * 4)
    fig, ax = plt.subplots(figsize=(min(24, 4 + end / (TICKS_PER_BEAT * 4) * 0.9), 4.5), dpi=110)
    others = iter(OTHERS * 4)
    for t in tracks:
        colour = COLOURS.get(t.name.lower()) or next(others)
        ax.broken_barh([], (0, 0), color=colour, label=t.name or f"program {t.program}")
        for on, du, p, v in zip(t.onset, t.duration, t.pitch, t.velocity):
            ax.broken_barh([(on / TICKS_PER_BEAT, du / TICKS_PER_BEAT)], (p - 0.4, 0.8),
                           color=colour, alpha=0.45 + 0.55 * v / 127)
    tick = 0
    while tick <= end:
        ax.axvline(tick / TICKS_PER_BEAT, color="#bbbbbb", lw=0.8, zorder=0)
        tick += data.bar_ticks(tick)
    pitches = [int(p) for t in tracks for p in t.pitch] or [60]
    ax.set_ylim(min(pitches) - 2, max(pitches) + 2)
    ax.set_xlim(0, end / TICKS_PER_BEAT)
    ax.set_xlabel("beats (grey lines: bars)")
    ax.set_ylabel("MIDI pitch")
    ax.set_title(title or Path(path).name)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png)
    plt.close(fig)
    return png


def run(args) -> int:
    print(piano_roll(args.input, args.output))
    return 0
