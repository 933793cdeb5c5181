"""A corpus too big for one machine: ingest it in shards (`leadline data build --shard K/N`), then merge them.

Every machine lists the same sources in the same order (`ingest.find_files`) and ingests the K-th of N
contiguous slices of that list. A shard folder holds each file's result as `ingest.process` gave it
(results.jsonl: one line a file, in order; tokens.raw: the sequences back to back, uint32 token | harmony << 16)
and shard.json (the sources, settings and slice). `leadline data merge --out CACHE SHARD...` checks that the
shards are the N slices of one corpus with one set of settings and feeds their results, in file order, to the
same writer one build uses: duplicates, song ids and splits are decided there, so the merged cache is the
one-machine cache byte for byte (the split of a song is a hash of its name: its versions never straddle splits,
whichever shards they are in).
"""
from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from leadline.daemon import codec, config
from leadline.training import cache as cache_mod
from leadline.training import ingest
from leadline.training.cachewriter import CacheWriter

FORMAT = "leadline-shard 2"
HEADER, RESULTS, TOKENS = "shard.json", "results.jsonl", "tokens.raw"


class ShardError(ingest.IngestError):
    """A --shard value that is not K/N, or shards that are not the slices of one corpus."""


def parse(value: str) -> tuple[int, int]:
    """'K/N' -> (K, N), K counted from 0."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", value)
    if not m or not int(m[1]) < int(m[2]):
        raise ShardError(f"--shard {value}: give K/N with 0 <= K < N (shard K of N, counting from 0)")
    return int(m[1]), int(m[2])


def run_shard(args, data_cfg, out: Path) -> int:
    """`leadline data build --shard K/N --out SHARD SRC...`: ingest one slice of the file list."""
    k, n = parse(args.shard)
    t0 = time.perf_counter()
    with ingest.workers(args.jobs, data_cfg) as pool, cache_mod.atomic_dir(out) as tmp:
        files = ingest.find_files(args.sources, data_cfg)
        which = range(k * len(files) // n, (k + 1) * len(files) // n)
        with open(tmp / RESULTS, "w") as res, open(tmp / TOKENS, "wb") as toks:
            for src, r in ingest.results(files, which, data_cfg, pool, progress=True):
                for _, seq in r.sequences:
                    toks.write(np.asarray(seq, "<u4").tobytes())
                res.write(json.dumps({"name": src.name, "group": src.group, "split": src.split, "reason": r.reason,
                                      "detail": r.detail, "tracks": r.tracks, "digest": r.digest,
                                      "sequences": [[shift, len(t)] for shift, t in r.sequences]}) + "\n")
        header = {"format": FORMAT, "shard": [k, n], "files": [which.start, which.stop], "total_files": len(files),
                  "sources": [str(s) for s in args.sources], "settings": config.as_dict(data_cfg),
                  "codec_version": codec.CODEC_VERSION, "vocab_size": codec.VOCAB_SIZE}
        (tmp / HEADER).write_text(json.dumps(header, indent=1, sort_keys=True) + "\n")
    seconds = time.perf_counter() - t0
    print(f"{out}: shard {k}/{n}, files {which.start}..{which.stop - 1} of {len(files)}; {seconds:.1f} s, "
          f"{len(which) / max(seconds, 1e-9):.0f} files/s. Merge all {n} with `leadline data merge`.")
    return 0


def read(folders: list[str]) -> list[tuple[Path, dict]]:
    """The shards' folders and headers in shard order; raises ShardError unless they are one corpus's N slices."""
    shards = []
    for f in folders:
        try:
            header = json.loads((Path(f) / HEADER).read_text())
        except (OSError, ValueError) as e:
            raise ShardError(f"{f}: not a shard from `leadline data build --shard` ({e})") from None
        if header.get("format") != FORMAT:
            raise ShardError(f"{f}: shard format {header.get('format')!r}, this leadline reads {FORMAT!r}")
        shards.append((Path(f), header))
    shards.sort(key=lambda s: s[1]["shard"][0])
    first = shards[0][1]
    for path, h in shards:
        for key in ("sources", "settings", "total_files", "codec_version", "vocab_size"):
            if h[key] != first[key]:
                raise ShardError(f"{path}: its {key} ({h[key]}) differ from {shards[0][0]}'s ({first[key]}); "
                                 "build every shard with the same sources, settings and leadline")
    have, n = [h["shard"][0] for _, h in shards], first["shard"][1]
    if have != list(range(n)) or any(h["shard"][1] != n for _, h in shards):
        given = ", ".join("{}/{}".format(*h["shard"]) for _, h in shards)
        raise ShardError(f"shards {given}: need each of 0/{n} .. {n - 1}/{n} once")
    return shards


def file_results(path: Path) -> Iterator[tuple[dict, ingest.FileResult]]:
    """A shard's files in order: their line in results.jsonl and their FileResult with its tokens."""
    with open(path / RESULTS) as res, open(path / TOKENS, "rb") as toks:
        for line in res:
            row = json.loads(line)
            seqs = [(shift, np.fromfile(toks, "<u4", count=n)) for shift, n in row["sequences"]]
            yield row, ingest.FileResult(row["reason"], row["detail"], row["tracks"], row["digest"], seqs)


def run_merge(args) -> int:
    """`leadline data merge --out CACHE SHARD...`: the cache of the whole corpus from its shards."""
    t0 = time.perf_counter()
    out = ingest.check_out(args.out)
    shards = read(args.shards)
    first = shards[0][1]
    with cache_mod.atomic_dir(out) as tmp:
        writer = CacheWriter(tmp / ".scratch", first["settings"], first["sources"])
        for path, _ in shards:
            for row, r in file_results(path):
                writer.add(row["name"], row["group"], row["split"], r)
        manifest = writer.finish(tmp)
        if not manifest["files"]["used"]:
            raise ingest.IngestError(f"no lead lines in the shards: {ingest._reasons(manifest)}")
    print(f"merged {len(shards)} shards: {ingest.summary(manifest, time.perf_counter() - t0, args.out)}")
    return 0
