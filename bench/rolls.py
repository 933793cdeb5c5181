"""Piano rolls of the same held-out phrases answered before and after a change (the README's picture).

`python -m leadline.bench.rolls --data CACHE --before "MODEL [k=v ...]" --after "MODEL [k=v ...]" --png OUT`
takes three rock-o-net test songs, writes the 4 bars before each one's 60 % cut (leadline eval's cut) as a
phrase file, answers it with `leadline respond --seed N` (N = 1, 2, 3, one a song) for each side, and draws
phrase and answer side by side, with each answer's lead statistics in its title.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from leadline.daemon import codec, midifile, recording
from leadline.daemon.cli import main as leadline
from leadline.daemon.codec import Note
from leadline.training import cache as cache_mod, leadeval, leadstats

SONGS = ("y/yes/Lift_Me_Up.mid", "i/iron_maiden/Trooper.mid", "w/white_stripes/Fell_In_Love_With_A_Girl_2.mid")
BAR = 4 * codec.TICKS_PER_BEAT


def phrase_of(c, name: str) -> list[Note]:
    """The 4 bars before the 60 % cut of test song `name` (a path ending), from bar 0."""
    per = c.manifest["per_file"]
    full = next(n for n, e in per.items() if n.endswith(name) and e.get("status") == "used")
    row = next(r for r in c.index if r["song"] == per[full]["song"] and r["transpose"] == 0)
    tokens = c.tokens[row["start"]:row["end"]].astype("int64")
    cut = leadeval.make_cut(tokens, "rock-o-net", 0.6)
    notes = [n for n in codec.decode(tokens) if cut.start - 4 * BAR <= n.onset < cut.start]
    return [Note(n.onset - (cut.start - 4 * BAR), n.duration, n.pitch, n.velocity) for n in notes]


def answer(phrase_mid: Path, side: list[str], seed: int, out: Path) -> tuple[list[Note], list[Note]]:
    """(phrase, answer) notes of `leadline respond` on `phrase_mid` with model and overrides `side`."""
    sets = [a for kv in side[1:] for a in ("--set", kv)]
    assert leadline(["respond", str(phrase_mid), "-o", str(out), "--model", side[0], "--seed", str(seed),
                     *sets]) == 0
    tracks = {t.name: t.notes() for t in midifile.read(out).tracks}
    return tracks["player"], tracks["leadline"]


def draw(rows: list, labels: tuple[str, str], png: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), 2, figsize=(13, 3.2 * len(rows)), dpi=80, squeeze=False)
    for r, (title, seed, sides) in enumerate(rows):
        for k, (phrase, ans) in enumerate(sides):
            ax = axes[r, k]
            for notes, colour in ((phrase, "#2f6fb0"), (ans, "#e06010")):
                for n in notes:
                    ax.broken_barh([(n.onset / BAR, n.duration / BAR)], (n.pitch - 0.4, 0.8), color=colour)
                    curve = codec.bend_curve(n) + [(n.duration, 0.0)] if n.expressive else []
                    if curve:  # a bend as a line on its note (steps: the value holds until the next point)
                        ax.step([(n.onset + t) / BAR for t, _ in curve], [n.pitch + b for _, b in curve],
                                where="post", color="k", lw=0.8)
            s = leadstats.lead_stats(leadstats.window(ans))
            ax.set_title(f"{labels[k]}: {title}, seed {seed}: {len(ans)} notes, repeats {s['repeat_share']:.0%}, "
                         f"range {s['range']:.0f}", fontsize=8, loc="left")
            ax.set_xlim(3, 7)
            for b in range(3, 8):
                ax.axvline(b, color="0.7", lw=0.6)
    axes[-1, 0].set_xlabel("bar")
    axes[-1, 1].set_xlabel("bar")
    fig.tight_layout()
    fig.savefig(png)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m leadline.bench.rolls", description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--before", required=True, help='"MODEL_DIR [key=value ...]"')
    p.add_argument("--after", required=True, help='"MODEL_DIR [key=value ...]"')
    p.add_argument("--labels", default="before,after")
    p.add_argument("--png", required=True)
    args = p.parse_args(argv)
    c = cache_mod.load(args.data)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed, name in enumerate(SONGS, 1):
            mid = recording.write(Path(tmp) / "phrase.mid", {"player": phrase_of(c, name)}, 120.0)
            sides = [answer(mid, side.split(), seed, Path(tmp) / f"{k}.mid")
                     for k, side in enumerate((args.before, args.after))]
            title = name.split("/", 1)[1].rsplit(".", 1)[0].replace("_", " ")
            rows.append((title, seed, sides))
    draw(rows, tuple(args.labels.split(",")), args.png)
    print(args.png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
