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

Scale: the pool is fed a bounded window of files and the cache is written as results come in
(training/cachewriter.py), so memory stays flat in the number of files; `--shard K/N` ingests the K-th of N
contiguous slices of the file list (one per machine) and `leadline data merge` joins the shards into the cache
one build would give, byte for byte (training/shards.py).
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import multiprocessing
import multiprocessing.pool
import os
import re
import sqlite3
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from leadline.daemon import codec, config, harmony, midifile
from leadline.daemon.errors import UserError
from leadline.training import cache as cache_mod
from leadline.training.cache import Cache
from leadline.training.cachewriter import CacheWriter

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


@dataclass(frozen=True, slots=True)
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

class FileList:
    """Every MIDI file under the sources, in order; `files[i]` is its SourceFile, made when asked. The list
    lives in a private on-disk SQLite database (sqlite3's "" file, deleted when closed): the main process
    stays the same size for 2,000 files or 200,000."""

    def __init__(self, data_cfg) -> None:
        self.data_cfg = data_cfg
        self.sources: list[tuple[Path, str]] = []  # (folder the relative paths start from, label)
        self.db = sqlite3.connect("", check_same_thread=False)  # read by the pool's task thread, one at a time
        self.db.executescript("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;"
                              "CREATE TABLE files (i INTEGER PRIMARY KEY, rel BLOB, source INT, renamed INT);"
                              "CREATE TABLE seen (key INTEGER PRIMARY KEY);")
        self.n = 0

    def add(self, rel: str, k: int, label: str, base: Path) -> None:
        """List `rel` of source `k` unless its file is listed already (a source inside another); a name that
        another source with the same label took is named label@k."""
        if not self._first(hash(str((base / rel).resolve()))):
            return
        renamed = not self._first(hash(f"{label}/{rel}"))
        if renamed:
            self._first(hash(f"{label}@{k}/{rel}"))
        self.db.execute("INSERT INTO files VALUES (?, ?, ?, ?)", (self.n, _blob(rel), k, renamed))
        self.n += 1

    def _first(self, key: int) -> bool:
        """Whether `key` (a 64-bit hash of a path or name) is seen here for the first time; records it."""
        return self.db.execute("INSERT OR IGNORE INTO seen VALUES (?)", (key,)).rowcount == 1

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> SourceFile:
        rel, k, renamed = self.db.execute("SELECT rel, source, renamed FROM files WHERE i = ?", (i,)).fetchone()
        rel = bytes(rel).decode("utf-8", "surrogateescape")
        base, label = self.sources[k]
        name = f"{label}@{k}/{rel}" if renamed else f"{label}/{rel}"
        group = song_key(name)
        return SourceFile(str(base / rel), name, group, split_of(group, self.data_cfg))

    def __iter__(self) -> Iterator[SourceFile]:
        return (self[i] for i in range(len(self)))


def _blob(text: str) -> bytes:
    """A file name's bytes (an undecodable byte, kept by Python as a lone surrogate, back as itself)."""
    return text.encode("utf-8", "surrogateescape")


def find_files(sources: list[str], data_cfg) -> FileList:
    """Every MIDI file under `sources`, in a deterministic order; raises IngestError for a missing source.

    A file's name is its source folder's name and its path below it ('rock-o-net/a/acdc/TNT.mid'); a file
    reached twice (a source inside another) is listed once.
    """
    files = FileList(data_cfg)
    for k, src in enumerate(sources):
        root = Path(src)
        label, base = _label(root)
        files.sources.append((base, label))
        for rel in _walk(root):
            files.add(rel, k, label, base)
    if not len(files):
        raise IngestError(f"no MIDI files ({' '.join(SUFFIXES)}) under {' '.join(sources)}")
    return files


def _label(root: Path) -> tuple[str, Path]:
    """The label of a source (its folder's name) and the folder its files' relative paths start from."""
    if not root.exists():
        raise IngestError(f"{root}: no such file or folder")
    if root.is_file():
        return root.resolve().parent.name, root.parent
    return root.resolve().name, root


def _walk(root: Path) -> Iterator[str]:
    """The MIDI files under `root` as paths relative to it, in sorted order (as sorting them all would give:
    a folder sorts as its name and a slash), walked one folder at a time; symlinked folders are not followed."""
    if root.is_file():
        yield root.name
        return
    yield from _walk_dir(str(root), "")


def _walk_dir(path: str, prefix: str) -> Iterator[str]:
    try:
        with os.scandir(path) as it:
            entries = [(e.name + "/" if _is_dir(e) else e.name, e) for e in it]
    except OSError:
        return
    for key, e in sorted(entries, key=lambda x: x[0]):
        if key.endswith("/"):
            yield from _walk_dir(e.path, prefix + key)
        elif os.path.splitext(e.name)[1].lower() in SUFFIXES and e.is_file():
            yield prefix + e.name


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir() and not entry.is_symlink()
    except OSError:
        return False


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
    backing = harmony.backing_notes(harmony.backing_tracks(data.tracks, lead.tracks))
    if len(line) < cfg.min_notes:
        return FileResult(TOO_FEW, f"{len(line)} < {cfg.min_notes}", tracks)
    if cfg.unique_factor > 0 and (ratio := unique_ratio(pitch)) < cfg.unique_factor:
        return FileResult(REPETITIVE, f"distinct-pitch ratio {ratio:.3f} < {cfg.unique_factor}", tracks)
    start = data.bar_start(int(line.onset[0]))
    # duplicates are found on the line as played, so a snapped training copy still matches its test twin
    played = _encode(line, pitch, start)
    digest = hashlib.sha1(played.tobytes()).hexdigest()
    if src.split == 0 and cfg.snap_below > 0 and grid_share(line.onset - start) < cfg.snap_below:
        line = dataclasses.replace(line, onset=on_grid(line.onset - start, cfg.snap_below) + start)
        played = _encode(line, pitch, start)
    shifts = [0] + (sorted(set(cfg.transpose) - {0}) if src.split == 0 else [])
    # a shift that would take a note out of the codec's range is skipped (folding would change the line)
    shifts = [k for k in shifts if codec.PITCH_LO <= pitch.min() + k and pitch.max() + k <= codec.PITCH_HI]
    harm = harmony.codes_at(token_ticks(played, start), *backing)
    sequences = [(k, packed(transposed(played, k), harmony.transpose(harm, k))) for k in shifts]
    return FileResult(tracks=tracks, digest=digest, sequences=sequences)


def packed(tokens: np.ndarray, harm: np.ndarray) -> np.ndarray:
    """One uint32 a step: the token in the low 16 bits, the harmony code (daemon/harmony.py) in the high 16."""
    return np.asarray(tokens, np.uint32) | (np.asarray(harm, np.uint32) << 16)


def unpacked(seq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(tokens uint16, harmony codes uint16) of a `packed` sequence."""
    seq = np.asarray(seq, np.uint32)
    return (seq & 0xFFFF).astype(np.uint16), (seq >> 16).astype(np.uint16)


def token_ticks(tokens: np.ndarray, start: int) -> np.ndarray:
    """The time cursor after each token (grid ticks), the sequence's first token at `start`."""
    kind = codec.TOKEN_KIND[tokens]
    return start + np.cumsum(np.where(kind == codec.K_SHIFT, codec.TOKEN_VALUE[tokens], 0))


_NOTE = codec.kind_mask("NOTE")


def transposed(tokens: np.ndarray, k: int) -> np.ndarray:
    """`tokens` moved by `k` semitones (every pitch and the shifted one in range): only NOTE tokens change, as
    encode sorts a chord's notes by pitch, which a shift keeps: a training line is encoded once, not 5 times."""
    if not k:
        return tokens
    out = tokens.copy()
    out[_NOTE[tokens]] += np.uint16(k % 2**16)  # a negative shift wraps round to the same uint16 sum
    return out


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
    """`codec.encode` of the line (BOS first), on arrays: the same tokens, 10x sooner on a long line."""
    onset, dur, vel = (np.asarray(a, np.int64) for a in (line.onset, line.duration, line.velocity))
    expr = line.expression_or_zeros().astype(np.int64)
    order = np.lexsort((dur, pitch, onset))  # stable, as encode's sort by (onset, pitch, duration)
    onset, dur, pitch, vel = onset[order], dur[order], np.asarray(pitch, np.int64)[order], vel[order]
    bend, bend_at, release, vib = expr[order].T
    gap = np.diff(onset, prepend=start)
    if len(onset) and (gap.min() < 0 or dur.min() < 1 or vel.min() < 1 or vel.max() > 127 or onset[0] < 0):
        notes = [codec.Note(*map(int, n)) for n in zip(onset, dur, pitch, vel)]  # raises what encode raises
        return np.array(codec.encode(notes, start=start), np.uint16)
    full, rest = np.divmod(gap, codec.MAX_SHIFT)
    vbin = vel // codec.VEL_STEP
    new_vel = np.r_[True, vbin[1:] != vbin[:-1]] if len(vbin) else vbin.astype(bool)
    bent, rel, vibr = bend != 0, (bend != 0) & (release > 0), vib > 0
    # SHIFTs, a VEL when the bin changes, BEND BAT [REL] when bent, VIB, NOTE, DUR
    count = full + (rest > 0) + new_vel + 2 * bent + rel + vibr + 2
    pos = 1 + np.cumsum(count) - count  # where each note's tokens start
    out = np.full(1 + int(count.sum()), codec.OFFSETS["SHIFT"] + codec.MAX_SHIFT - 1, np.int64)
    out[0] = codec.BOS
    has_rest = rest > 0
    out[(pos + full)[has_rest]] = codec.OFFSETS["SHIFT"] + rest[has_rest] - 1
    out[(pos + full + has_rest)[new_vel]] = codec.OFFSETS["VEL"] + vbin[new_vel]
    at = pos + full + has_rest + new_vel  # the note's expression starts here
    steps, ats = np.array(codec.BEND_STEPS), np.array(codec.BEND_AT)
    out[at[bent]] = codec.OFFSETS["BEND"] + np.searchsorted(steps, bend[bent])
    out[at[bent] + 1] = codec.OFFSETS["BAT"] + np.searchsorted(ats, bend_at[bent])
    out[at[rel] + 2] = codec.OFFSETS["REL"] + release[rel] - 1
    out[(pos + count - 3)[vibr]] = codec.OFFSETS["VIB"] + vib[vibr] - 1
    out[pos + count - 2] = codec.OFFSETS["NOTE"] + pitch - codec.PITCH_LO
    out[pos + count - 1] = codec.OFFSETS["DUR"] + codec.DUR_INDEX[np.minimum(dur, codec.MAX_DURATION)]
    return out.astype(np.uint16)


def unique_ratio(pitches: np.ndarray, window: int = 32) -> float:
    """Mean share of distinct pitches in consecutive windows of `window` notes (a chugged riff ~0.1)."""
    if not len(pitches):
        return 0.0
    w = min(window, len(pitches))
    return float(np.mean([len(np.unique(pitches[i:i + w])) / w for i in range(0, len(pitches) - w + 1, w)]))


# --- the whole build ---------------------------------------------------------------------------------

def build(sources: list[str], data_cfg, jobs: int = 0, progress: bool = True) -> Cache:
    """The cache (in memory) of every lead line under `sources`; see the module docstring."""
    with tempfile.TemporaryDirectory(prefix="leadline-build-") as tmp:
        build_to(Path(tmp), sources, data_cfg, jobs, progress)
        return cache_mod.load(tmp, in_memory=True)


def build_to(out: Path, sources: list[str], data_cfg, jobs: int = 0, progress: bool = True) -> dict:
    """Ingest `sources` into folder `out` (tokens.npy, index.npy, manifest.json) as results come in;
    returns the manifest without its per-file entries."""
    with workers(jobs, data_cfg) as pool:  # started before the file list exists: workers don't copy it
        files = find_files(sources, data_cfg)
        writer = CacheWriter(out / ".scratch", config.as_dict(data_cfg), sources)
        for src, result in results(files, range(len(files)), data_cfg, pool, progress):
            writer.add(src.name, src.group, src.split, result)
    return writer.finish(out)


@contextmanager
def workers(jobs: int, data_cfg) -> Iterator[multiprocessing.pool.Pool | None]:
    """A pool of `jobs` worker processes (0: every core) holding `data_cfg`; None for 1 job."""
    jobs = jobs or os.cpu_count() or 1
    if jobs == 1:
        yield None
        return
    # fork on Linux: workers start at once and never re-run the caller's script; they use no threads
    ctx = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
    with ctx.Pool(jobs, initializer=_worker_init, initargs=(data_cfg,)) as pool:
        yield pool


def results(files: FileList, which: range, data_cfg, pool: multiprocessing.pool.Pool | None,
            progress: bool = True) -> Iterator[tuple[SourceFile, FileResult]]:
    """`process` over `files[i]` for i in `which` on `pool` (None: here), in file order.

    The pool is fed through a window of a few thousand files, so neither the jobs waiting nor the results
    waiting for a slow file before them grow with the corpus."""
    from tqdm import tqdm

    with tqdm(total=len(which), unit="file", desc="ingest", disable=not progress, file=sys.stderr) as bar:
        if pool is None:
            for i in which:
                yield files[i], process((files[i], data_cfg))
                bar.update(1)
            return
        jobs = pool._processes  # noqa: SLF001  (the pool's size; no public accessor)
        chunk = max(1, min(16, len(which) // (8 * jobs)))
        window = threading.BoundedSemaphore(max(256, 64 * jobs * chunk))
        sent: deque[SourceFile] = deque()  # the files on their way, in order (the list is the task thread's)
        for r in pool.imap(_work, _fed(files, which, window, sent), chunksize=chunk):
            window.release()
            yield sent.popleft(), r
            bar.update(1)


def _fed(files: FileList, which: range, window: threading.BoundedSemaphore, sent: deque) -> Iterator[SourceFile]:
    for i in which:  # runs in the pool's task thread: blocks while the window is full
        window.acquire()
        src = files[i]
        sent.append(src)
        yield src


_CFG = None  # a worker's data settings, sent once when it starts (not with every file)


def _worker_init(data_cfg) -> None:
    global _CFG
    _CFG = data_cfg


def _work(src: SourceFile) -> FileResult:
    return process((src, _CFG))


# --- CLI -------------------------------------------------------------------------------------------

def run(args) -> int:
    """`leadline data build` (or `data merge`): build the cache, write it atomically, print a summary."""
    if args.data_command == "merge":
        from leadline.training import shards

        return shards.run_merge(args)
    cfg = config.load(args.config, args.overrides).data
    if args.jobs < 0:
        raise IngestError(f"--jobs {args.jobs}: must be 0 (every core) or more")
    out = check_out(args.out)
    if args.shard:
        from leadline.training import shards

        return shards.run_shard(args, cfg, out)
    t0 = time.perf_counter()
    with cache_mod.atomic_dir(out) as tmp:
        manifest = build_to(tmp, args.sources, cfg, jobs=args.jobs, progress=True)
        if not manifest["files"]["used"]:
            raise IngestError(f"no lead lines in {' '.join(args.sources)}: {_reasons(manifest)}")
    print(summary(manifest, time.perf_counter() - t0, out))
    return 0


def check_out(out: str | Path) -> Path:
    """`--out` as a Path; raises IngestError if it holds something other than a cache or a shard to replace."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not cache_mod.is_cache(out) \
            and not (out / "shard.json").is_file():
        raise IngestError(f"--out {out}: exists and is not a leadline cache; choose a new or empty folder")
    return out


def summary(manifest: dict, seconds: float, out: Path | str) -> str:
    """One paragraph: files seen/used/skipped by reason, songs and events per split, files/s."""
    f, s = manifest["files"], manifest["splits"]
    per_split = ", ".join(f"{k} {v['songs']} songs {v['events']:,} events" for k, v in s.items())
    return (f"{out}: {f['seen']} files seen, {f['used']} used, {f['duplicates']} duplicates, "
            f"{f['skipped']} skipped ({_reasons(manifest)}); {manifest['songs']} songs: {per_split}; "
            f"{seconds:.1f} s, {f['seen'] / max(seconds, 1e-9):.0f} files/s.")


def _reasons(manifest: dict) -> str:
    return ", ".join(f"{n} {r}" for r, n in manifest["skipped"].items()) or "none"
