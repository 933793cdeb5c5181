"""Building the training cache: MIDI folders -> lead lines -> token sequences, deduplicated, split by song.

`leadline data build --out DIR SRC...` walks every source for MIDI files (.mid .midi .kar .rmi, any case),
reads each on a pool of worker processes, picks its lead line (`leadline.daemon.midifile.pick_lead`) and encodes it
(`leadline.daemon.codec.encode`, BOS first, the cursor starting at the bar of the first note). A file is skipped,
with its reason in the manifest, when it cannot be read (truncated, corrupt, ...), has no lead track, too
few notes, or (with `data.unique_factor`) only repeats a few pitches.

Songs: files whose lead lines are identical (same tokens) are one file; versions of a song ("Song",
"Song_1", "Song-2 (live)") in one folder are one song group. The split of a group depends only on a hash
of its key and `data.seed`, so versions never straddle train/val/test and adding files moves nothing else.
Transposed copies (`data.transpose`) are added to the training split only; so is snapping
(`data.snap_below`): a training line with less than that share of its onsets on a 16th or eighth-triplet
position of the bar's beats is moved onto that grid (`on_grid`: most POP909 lines sit a few ticks off their
bars, every jazz solo is a transcribed performance with a quarter of its onsets on the grid; rock lines have a
median of 99 %). Validation and test stay as played. Two builds of the same sources
are byte-identical: timing is printed, never written.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import multiprocessing
import os
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from leadline.daemon import codec, config, midifile
from leadline.daemon.errors import UserError
from leadline.training import cache as cache_mod
from leadline.training.cache import SPLITS, Cache

log = logging.getLogger(__name__)

SUFFIXES = (".mid", ".midi", ".kar", ".rmi")
_T = codec.TICKS_PER_BEAT
GRID = np.array([0, _T // 4, _T // 3, _T // 2, 2 * _T // 3, 3 * _T // 4])  # 16ths and eighth triplets in a beat
GRID_ENDS = np.r_[GRID, _T]  # the next beat's start is a snap target too
NO_LEAD, TOO_FEW, REPETITIVE = "no lead track", "too few notes", "repetitive"
_VERSION = re.compile(r"([ _.\-]+(\d{1,2}|\(\d{1,2}\)|v\d{1,2}|final|version|ver|acoustic|live|remix|demo|"
                      r"edit|alt|copy)|\(\d{1,2}\))$")


class IngestError(UserError, ValueError):
    """A source that does not exist or holds no MIDI files, or an output that is not a cache."""


@dataclass(frozen=True)
class SourceFile:
    """A MIDI file found under a source: where it is, its name in the manifest, its song group and split."""

    path: str
    name: str
    group: str
    split: int


@dataclass
class FileResult:
    """What a worker sends back for one file: a skip reason, or the chosen tracks and token sequences."""

    reason: str = ""
    detail: str = ""
    tracks: list[dict] = field(default_factory=list)
    digest: str = ""
    sequences: list[tuple[int, np.ndarray]] = field(default_factory=list)  # (transpose, tokens)


# --- finding files ---------------------------------------------------------------------------------

def find_files(sources: list[str], data_cfg) -> list[SourceFile]:
    """Every MIDI file under `sources`, in a deterministic order; raises IngestError for a missing source.

    A file's name is its source folder's name and its path below it ('rock-o-net/a/acdc/TNT.mid').
    """
    found: dict[str, SourceFile] = {}
    names: set[str] = set()
    for k, src in enumerate(sources):
        label, files = _walk(Path(src))
        for path, rel in files:
            name = f"{label}/{rel}"
            if name in names:  # another source with the same folder name: keep the files apart
                name = f"{label}@{k}/{rel}"
            if (key := str(path.resolve())) not in found:
                names.add(name)
                found[key] = SourceFile(str(path), name, song_key(name), split_of(song_key(name), data_cfg))
    if not found:
        raise IngestError(f"no MIDI files ({' '.join(SUFFIXES)}) under {' '.join(sources)}")
    return list(found.values())


def _walk(root: Path) -> tuple[str, list[tuple[Path, str]]]:
    """The label of a source (its folder's name) and its MIDI files with their paths below it, sorted."""
    if not root.exists():
        raise IngestError(f"{root}: no such file or folder")
    if root.is_file():
        return root.resolve().parent.name, [(root, root.name)]
    files = [(p, p.relative_to(root).as_posix()) for p in root.rglob("*")
             if p.suffix.lower() in SUFFIXES and p.is_file()]
    return root.resolve().name, sorted(files, key=lambda f: f[1])


def song_key(name: str) -> str:
    """Song group of a file: its own folder's name and its base name without version marks.

    'rock-o-net/a/acdc/TNT_2.mid' -> 'acdc/tnt'. Only the innermost folder counts, so a song lands in the
    same split whichever folder above it was named as the source.
    """
    folder, _, base = name.rpartition("/")
    folder = folder.rpartition("/")[2]
    stem = base.rsplit(".", 1)[0].lower().strip()
    while (short := _VERSION.sub("", stem)) != stem and short:
        stem = short
    return f"{folder}/{re.sub(r'[^0-9a-z]+', '_', stem).strip('_')}"


def split_of(group: str, data_cfg) -> int:
    """Split index (0 train, 1 val, 2 test) of a song group: a hash of the key and the seed, no order."""
    digest = hashlib.sha256(f"{data_cfg.seed}\0{group}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64
    train, val, _ = data_cfg.split
    return 0 if u < train else 1 if u < train + val else 2


# --- one file (runs in a worker) ---------------------------------------------------------------------

def process(job: tuple[SourceFile, object]) -> FileResult:
    """Read one file, choose its lead line and encode it (transposed copies for the training split)."""
    src, cfg = job
    try:
        data = midifile.read(src.path)
    except midifile.MidiFileError as e:
        return FileResult(e.reason, e.detail)
    lead = midifile.pick_lead(data.tracks, cfg)
    if lead is None:
        return FileResult(NO_LEAD, f"{len(data.tracks)} tracks, none a melodic guitar or named lead part")
    tracks = [{"name": t.name, "program": t.program, "notes": len(t)} for t in lead.tracks]
    line, pitch = lead.line, folded(lead.line.pitch)
    if len(line) < cfg.min_notes:
        return FileResult(TOO_FEW, f"{len(line)} < {cfg.min_notes}", tracks)
    if cfg.unique_factor > 0 and (ratio := unique_ratio(pitch)) < cfg.unique_factor:
        return FileResult(REPETITIVE, f"distinct-pitch ratio {ratio:.3f} < {cfg.unique_factor}", tracks)
    start = data.bar_start(int(line.onset[0]))
    # duplicates are found on the line as played, so a snapped training copy still matches its test twin
    digest = hashlib.sha1(_encode(line, pitch, start).tobytes()).hexdigest()
    if src.split == 0 and cfg.snap_below > 0 and grid_share(line.onset - start) < cfg.snap_below:
        line = dataclasses.replace(line, onset=on_grid(line.onset - start, cfg.snap_below) + start)
    shifts = [0] + (sorted(set(cfg.transpose) - {0}) if src.split == 0 else [])
    # a shift that would take a note out of the codec's range is skipped (folding would change the line)
    shifts = [k for k in shifts if codec.PITCH_LO <= pitch.min() + k and pitch.max() + k <= codec.PITCH_HI]
    sequences = [(k, _encode(line, pitch + k, start)) for k in shifts]
    return FileResult(tracks=tracks, digest=digest, sequences=sequences)


def grid_share(ticks: np.ndarray) -> float:
    """Share of the distinct onsets (grid ticks from a bar line) on a 16th or eighth-triplet position."""
    phase = np.unique(ticks) % codec.TICKS_PER_BEAT
    return float(np.isin(phase, GRID).mean()) if len(phase) else 1.0


def on_grid(ticks: np.ndarray, below: float) -> np.ndarray:
    """`ticks` (from a bar line) moved onto the grid: by the one offset that puts at least `below` of the onsets
    there (a file whose whole line sits a few ticks off its bars: most of POP909), else (a performance's own
    timing) each to its nearest grid position (`snapped`)."""
    dist = np.minimum(np.arange(_T), _T - np.arange(_T))
    shift = max(range(_T), key=lambda k: (grid_share(ticks + k), -dist[k]))
    if shift > _T // 2:
        shift -= _T
    moved = np.maximum(ticks + shift, 0)
    return moved if grid_share(moved) >= below else snapped(ticks)


def snapped(ticks: np.ndarray) -> np.ndarray:
    """`ticks` (from a bar line) moved to the nearest 16th or eighth-triplet position of their beat."""
    beat, phase = np.divmod(ticks, codec.TICKS_PER_BEAT)
    near = GRID_ENDS[np.argmin(np.abs(phase[:, None] - GRID_ENDS[None, :]), axis=1)]
    return (beat * codec.TICKS_PER_BEAT + near).astype(ticks.dtype)


def folded(pitch: np.ndarray) -> np.ndarray:
    """`pitch` moved by octaves into the codec's range (as `codec.fold_pitch`, on an array)."""
    pitch = pitch.copy()
    while (low := pitch < codec.PITCH_LO).any():
        pitch[low] += 12
    while (high := pitch > codec.PITCH_HI).any():
        pitch[high] -= 12
    return pitch


def _encode(line: midifile.Track, pitch: np.ndarray, start: int) -> np.ndarray:
    notes = [codec.Note(*map(int, n)) for n in zip(line.onset, line.duration, pitch, line.velocity)]
    return np.array(codec.encode(notes, start=start), np.uint16)


def unique_ratio(pitches: np.ndarray, window: int = 32) -> float:
    """Mean share of distinct pitches in consecutive windows of `window` notes (a chugged riff ~0.1)."""
    if not len(pitches):
        return 0.0
    w = min(window, len(pitches))
    return float(np.mean([len(np.unique(pitches[i:i + w])) / w for i in range(0, len(pitches) - w + 1, w)]))


# --- the whole build ---------------------------------------------------------------------------------

def build(sources: list[str], data_cfg, jobs: int = 0, progress: bool = True) -> Cache:
    """The cache (in memory) of every lead line under `sources`; see the module docstring."""
    files = find_files(sources, data_cfg)
    results = run_jobs(files, data_cfg, jobs, progress)
    return assemble(files, results, data_cfg, sources)


def run_jobs(files: list[SourceFile], data_cfg, jobs: int = 0, progress: bool = True) -> list[FileResult]:
    """`process` over `files` on `jobs` worker processes (0: every core), results in file order."""
    from tqdm import tqdm

    jobs = jobs or os.cpu_count() or 1
    work = [(f, data_cfg) for f in files]
    bar = tqdm(total=len(work), unit="file", desc="ingest", disable=not progress, file=sys.stderr)
    with bar:
        if jobs == 1 or len(work) < 4 * jobs:
            return [_tick(bar, process(w)) for w in work]
        # fork on Linux: workers start at once and never re-run the caller's script; they use no threads
        ctx = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
        chunk = max(1, min(16, len(work) // (8 * jobs)))
        with ctx.Pool(jobs) as pool:
            return [_tick(bar, r) for r in pool.imap(process, work, chunksize=chunk)]


def _tick(bar, result: FileResult) -> FileResult:
    bar.update(1)
    return result


def assemble(files: list[SourceFile], results: list[FileResult], data_cfg, sources: list[str]) -> Cache:
    """The cache from per-file results: duplicates dropped, song ids given, manifest written."""
    seqs, per_file, first = [], {}, {}
    songs: dict[str, int] = {}
    skipped: Counter = Counter()
    for src, r in zip(files, results):
        entry: dict = {"tracks": r.tracks} if r.tracks else {}
        if r.reason:
            skipped[r.reason] += 1
            log.debug("%s: skipped, %s (%s)", src.name, r.reason, r.detail)
            entry.update(status="skipped", reason=r.reason, detail=r.detail)
        elif r.digest in first:
            entry.update(status="duplicate", of=first[r.digest])
        else:
            first[r.digest] = src.name
            song = songs.setdefault(src.group, len(songs))
            entry.update(status="used", split=SPLITS[src.split], song=song)
            seqs.extend((tokens, src.split, song, shift) for shift, tokens in r.sequences)
        per_file[src.name] = entry
    manifest = _manifest(files, per_file, skipped, seqs, data_cfg, sources)
    return cache_mod.from_sequences(seqs, manifest)


def _manifest(files, per_file, skipped, seqs, data_cfg, sources) -> dict:
    """Counts of files, songs and events per split; every file's status, tracks and split."""
    used = [e for e in per_file.values() if e["status"] == "used"]
    splits = {}
    for i, name in enumerate(SPLITS):
        mine = [s for s in seqs if s[1] == i]
        splits[name] = {"files": sum(e["split"] == name for e in used), "songs": len({s[2] for s in mine}),
                        "sequences": len(mine), "events": int(sum(len(s[0]) for s in mine)),
                        "events_untransposed": int(sum(len(s[0]) for s in mine if s[3] == 0))}
    n_dup = sum(e["status"] == "duplicate" for e in per_file.values())
    return {
        "sources": [str(s) for s in sources],
        "settings": config.as_dict(data_cfg),
        "files": {"seen": len(files), "used": len(used), "duplicates": n_dup, "skipped": sum(skipped.values())},
        "skipped": dict(sorted(skipped.items())),
        "songs": len({e["song"] for e in used}),
        "versions": len(used) - len({e["song"] for e in used}),  # used files beyond one per song group
        "splits": splits,
        "per_file": per_file,
    }


# --- CLI -------------------------------------------------------------------------------------------

def run(args) -> int:
    """`leadline data build`: build the cache, write it atomically, print a summary."""
    cfg = config.load(args.config, args.overrides).data
    if args.jobs < 0:
        raise IngestError(f"--jobs {args.jobs}: must be 0 (every core) or more")
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not cache_mod.is_cache(out):
        raise IngestError(f"--out {out}: exists and is not a leadline cache; choose a new or empty folder")
    t0 = time.perf_counter()
    cache = build(args.sources, cfg, jobs=args.jobs, progress=True)
    seconds = time.perf_counter() - t0
    if not cache.manifest["files"]["used"]:
        raise IngestError(f"no lead lines in {' '.join(args.sources)}: {_reasons(cache.manifest)}")
    cache_mod.write(cache, out)
    print(summary(cache.manifest, seconds, out))
    return 0


def summary(manifest: dict, seconds: float, out: Path | str) -> str:
    """One paragraph: files seen/used/skipped by reason, songs and events per split, files/s."""
    f, s = manifest["files"], manifest["splits"]
    per_split = ", ".join(f"{k} {v['songs']} songs {v['events']:,} events" for k, v in s.items())
    return (f"{out}: {f['seen']} files seen, {f['used']} used, {f['duplicates']} duplicates, "
            f"{f['skipped']} skipped ({_reasons(manifest)}); {manifest['songs']} songs: {per_split}; "
            f"{seconds:.1f} s, {f['seen'] / max(seconds, 1e-9):.0f} files/s.")


def _reasons(manifest: dict) -> str:
    return ", ".join(f"{n} {r}" for r, n in manifest["skipped"].items()) or "none"
