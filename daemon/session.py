"""Session logs: every message in and out of a take with its time, step times and counters, for `leadline replay`.

Beside each take's .mid (record.dir) a `.log` of the same name: JSON lines, the first a header (format,
timebase, the resolved settings, the sampler's random state and the model's seed window at the take's
start), then one short array per event, times in nanoseconds of the daemon's timebase (JACK frames x 1e9 /
rate with leadline's own JACK client, else perf_counter):
    ["i", t, b0, b1, ...]   a message that came in (echoes included: the log holds what arrived)
    ["b", t, b0, b1, ...]   a message that came in on the band's port (midi.backing_port)
    ["o", t, b0, b1, ...]   a message that left (with leadline's own JACK client: at the frame JACK wrote it)
    ["s", t, ns, code]      a model step took ns nanoseconds (the mean over one generation call ending at t);
                            code: the backing's harmony its last step heard (daemon/harmony.py; 0 silence)
    ["c", t, {counters}]    counters at a chunk's end: late, dropped, echo, step p99, JACK late/lost

Logging stays off the live path: the engine thread appends to a list (no formatting, no I/O); every
CHUNK_S a writer thread takes the list, formats it and appends it to a temporary file in the folder,
which becomes `<take>.log` when the take ends (a crash leaves the temporary `.leadline.*.log` readable).
"""
from __future__ import annotations

import json
import logging
import os
import queue
import tempfile
import threading
from pathlib import Path

log = logging.getLogger(__name__)

FORMAT = "leadline-session-1"
CHUNK_NS = 2_000_000_000


class Writer:
    """One background thread doing a take's file work in order: appending log chunks, writing the .mid."""

    def __init__(self) -> None:
        self.jobs: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._run, name="leadline-writer", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            try:
                job()
            except OSError as e:  # a full disk must not stop the music: said, and the take goes on
                log.error("record.dir: cannot write the take or its session log (%s)", e)

    def put(self, job) -> None:
        self.jobs.put(job)

    def close(self, timeout: float = 10.0) -> None:
        """Finish every job queued (exit waits for the last take to be written)."""
        self.jobs.put(None)
        self.thread.join(timeout)


class SessionLog:
    """A take's event log: appended on the engine thread, written on the writer thread."""

    def __init__(self, folder: Path, writer: Writer, header: dict) -> None:
        self.folder, self.writer = folder, writer
        self.events: list = []
        self.next_chunk = 0
        folder.mkdir(parents=True, exist_ok=True)  # (OSError: the recorder goes on without a log)
        fd, self.tmp = tempfile.mkstemp(prefix=".leadline.", suffix=".log", dir=folder)
        os.close(fd)
        line = json.dumps({"format": FORMAT, **header}, separators=(",", ":")) + "\n"
        writer.put(lambda: self._append([line]))

    def add(self, event: list, t_ns: int, counters) -> None:
        self.events.append(event)
        if t_ns >= self.next_chunk:
            self.next_chunk = t_ns + CHUNK_NS
            self.chunk(t_ns, counters())

    def chunk(self, t_ns: int, counters: dict) -> None:
        """Hand what was logged since the last chunk to the writer thread (a list swap, no I/O here)."""
        self.events.append(["c", t_ns, counters])
        events, self.events = self.events, []
        self.writer.put(lambda: self._append([json.dumps(e, separators=(",", ":")) + "\n" for e in events]))

    def _append(self, lines: list[str]) -> None:
        with open(self.tmp, "a") as f:
            f.writelines(lines)

    def close(self, t_ns: int, counters: dict, name: Path | None) -> None:
        """The last chunk, then the file takes its name (`name`: the take's path, .log beside .mid)."""
        self.chunk(t_ns, counters)
        self.writer.put(lambda: self._place(name))

    def _place(self, name: Path | None) -> None:
        os.chmod(self.tmp, 0o644 & ~_umask())
        target = name() if callable(name) else name
        if target is None:
            os.unlink(self.tmp)
        else:
            os.replace(self.tmp, target)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read(path: str | Path) -> tuple[dict, list]:
    """(header, events) of a session log; ValueError (one line) when it is not one."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = [line for line in f.read().splitlines() if line.strip()]
    except UnicodeDecodeError:
        raise ValueError("not a leadline session log (not text)") from None
    try:
        header = json.loads(lines[0]) if lines else {}
        events = [json.loads(line) for line in lines[1:-1]]
    except json.JSONDecodeError as e:
        raise ValueError(f"not a leadline session log ({e})") from None
    try:
        events += [json.loads(line) for line in lines[1:][-1:]]
    except json.JSONDecodeError:
        pass  # the last line cut short (the daemon was killed while writing it)
    if header.get("format") != FORMAT:
        raise ValueError(f"not a leadline session log (format {header.get('format')!r}, expected {FORMAT})")
    return header, events
