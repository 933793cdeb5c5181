"""`leadline replay LOG`: a take's session log fed back through the daemon's live loop, offline.

The log's settings, seed, sampler random state and model seed window rebuild the daemon as it was when
the take began; its input messages arrive at their logged times in virtual time, with loop passes where
the live loop would wake (`Live.next_wake`), and the output is leadline's own JACK client's behaviour
(timed messages written at their time, a flush dropping note-ons not yet written). What came out is
compared with what the log says left: how many of leadline's notes come out the same (pitch and velocity),
how many of those left at another time than the replay's (late in the live run), and where the first
difference is. The replay has no compute time: where the live
loop fell behind (a late step, a pass that woke late), its choices can differ, and everything after the
first difference follows another random path. The log's counters (late, dropped, echo, JACK's) and
step times are reported as logged.
"""
from __future__ import annotations

import dataclasses
import heapq
from collections import deque
from pathlib import Path

import numpy as np

from leadline.daemon import config, session
from leadline.daemon.engine import load_model, make_engine
from leadline.daemon.errors import UserError
from leadline.daemon.live import Live
from leadline.daemon.sampler import Sampler

MATCH_NS = 1_000_000
MIN_PASS_NS = 100_000


class Output:
    """JACK's side of leadline's own client (daemon/jackmidi.c), in virtual time."""

    frame_accurate = True

    def __init__(self, t_ns: int) -> None:
        self.t = t_ns
        self.timed: list = []  # heap of (due, seq, msg)
        self.seq = 0
        self.wrote: list[tuple[int, list[int]]] = []

    def now_ns(self) -> int:
        return self.t

    def send(self, msg) -> None:
        self.wrote.append((self.t, list(msg)))

    def send_at(self, t_ns: int, msg) -> None:
        self.seq += 1
        heapq.heappush(self.timed, (t_ns, self.seq, list(msg)))

    def flush(self) -> None:
        """Timed note-ons and pitch bends not yet written are dropped, the rest written now."""
        for _, _, msg in sorted(self.timed):
            if not (msg[0] & 0xF0 == 0x90 and msg[2] or msg[0] & 0xF0 == 0xE0):
                self.wrote.append((self.t, msg))
        self.timed = []

    def advance(self, t_ns: int) -> None:
        while self.timed and self.timed[0][0] <= t_ns:
            due, _, msg = heapq.heappop(self.timed)
            self.wrote.append((max(due, self.t), msg))
        self.t = t_ns


def rebuild(header: dict, model: str | None) -> tuple[Live, Output, str]:
    """The live loop as it was when the take began, its output, and the model directory it uses."""
    cfg = config.from_dict(header["config"])
    path = model or (cfg.engine.model if Path(cfg.engine.model).is_dir() else str(config.bundled_model()))
    cfg = dataclasses.replace(cfg, record=config.RecordConfig(), engine=dataclasses.replace(
        cfg.engine, model=path, provider="cpu"))
    engine = make_engine(cfg.engine, load_model(Path(path)))
    state, t0 = header.get("state", {}), header.get("t0", 0)
    out = Output(t0)
    live = Live(cfg, engine, Sampler(cfg.sampling, seed=header.get("seed"), expression=cfg.expression.mode), send=out.send)
    live.use_frame_output(out)
    imp = live.improviser
    imp.window = deque(state.get("window", []), maxlen=cfg.seed.window)
    imp.codes = deque(state.get("codes", []), maxlen=cfg.seed.window)
    imp.velocity_bin = state.get("velocity_bin", imp.velocity_bin)
    live.sampler.set_temperature(state.get("temperature", cfg.sampling.temperature))
    live.conductor.set_mode(state.get("mode", cfg.mode))
    live.enabled = state.get("enabled", True)
    if state.get("external"):  # the take began at a Start (its message went to the take before)
        live.external = True
        live.handle(t0, [0xFA])
    else:
        imp.reprime(cursor=0)
        live.start(t0)
    if "rng" in state:
        live.sampler.rng.bit_generator.state = state["rng"]
    return live, out, path


def run_loop(live: Live, out: Output, inputs: list, end_ns: int) -> None:
    """Passes of the live loop in virtual time: at each input, and where the loop would wake."""
    now, i = out.t, 0
    while now <= end_ns:
        out.advance(now)
        while i < len(inputs) and inputs[i][0] <= now:
            live.handle(*inputs[i])
            i += 1
        live.tick(now)
        wake = live.next_wake(now) - 1_000_000
        if i < len(inputs):
            wake = min(wake, inputs[i][0])
        now = max(wake, now + MIN_PASS_NS)
    out.advance(end_ns)
    live.all_off(everything=True)  # the take's end: Stop (replayed above) or exit


def logged_inputs(events: list) -> list[tuple[int, list[int], bool]]:
    """(t_ns, message, whether it came on the band's port) of what came in, in the log's order."""
    return [(e[1], e[2:], e[0] == "b") for e in events if e[0] in ("i", "b")]


def note_ons(events, channel: int) -> list[tuple[int, int, int]]:
    return [(t, m[1], m[2]) for t, m in events if len(m) == 3 and m[0] == 0x90 | channel and m[2]]


def compare(logged: list, replayed: list) -> dict:
    """How far the replay's note-ons follow the logged ones: `same` notes (pitch and velocity, in order) before
    the first difference; of those, `moved` left more than 1 ms away from the replay's time (late in the
    live run, most often: the loop fell behind there), by up to `moved_max_ms`."""
    same = 0
    for a, b in zip(logged, replayed):
        if a[1:] != b[1:]:
            break
        same += 1
    moved = [(a[0] - b[0]) / 1e6 for a, b in zip(logged[:same], replayed) if abs(a[0] - b[0]) > MATCH_NS]
    first = None
    if same < max(len(logged), len(replayed)):
        first = (logged[same] if same < len(logged) else None, replayed[same] if same < len(replayed) else None)
    return {"logged": len(logged), "replayed": len(replayed), "same": same, "moved": len(moved),
            "moved_max_ms": round(max(moved, key=abs), 2) if moved else 0.0, "first_difference": first}


def replay(path: str | Path, model: str | None = None) -> dict:
    """Replay a session log; the comparison and the log's own figures."""
    try:
        header, events = session.read(path)
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: {e}") from None
    live, out, path = rebuild(header, model)
    inputs = logged_inputs(events)
    logged_out = [(e[1], e[2:]) for e in events if e[0] == "o"]
    ends = [e[1] for e in events if e[0] == "c"]  # the last counters: the take's end (Stop, exit)
    run_loop(live, out, inputs, ends[-1] if ends else max((e[1] for e in events), default=out.t))
    result = compare(note_ons(logged_out, live.out_ch), note_ons(out.wrote, live.out_ch))
    steps = np.array([e[2] for e in events if e[0] == "s"], np.int64)
    counters = [e[2] for e in events if e[0] == "c"]
    result.update(model=(path, path == header["config"]["engine"]["model"]), inputs=len(inputs), steps=len(steps), counters=counters[-1] if counters else {},
                  step_ms={k: round(float(np.percentile(steps, q)) / 1e6, 3) for k, q in (("p50", 50), ("p99", 99))}
                  if len(steps) else {}, step_max_ms=round(float(steps.max()) / 1e6, 3) if len(steps) else None)
    return result


def run(args) -> int:
    r = replay(args.log, args.model)
    print(f"{args.log}: {r['inputs']} messages in, {r['logged']} notes of leadline's logged, "
          f"{r['replayed']} replayed; the first {r['same']} the same (pitch, velocity)")
    if r["moved"]:
        print(f"  {r['moved']} of them left more than 1 ms away from the replay's time (up to {r['moved_max_ms']} "
              "ms; later: the live loop fell behind there)")
    if r["first_difference"] is not None:
        a, b = r["first_difference"]
        print(f"  first difference: logged {_note(a)}, replayed {_note(b)}")
    print(f"  logged counters: {r['counters']}")
    model, same = r["model"]
    print(f"  model: {model}" + ("" if same else " (not the logged one, which is not here: the notes may differ)"))
    if r["step_ms"]:
        print(f"  model steps: {r['steps']}, p50 {r['step_ms']['p50']} ms, p99 {r['step_ms']['p99']} ms, "
              f"max {r['step_max_ms']} ms")
    return 0


def _note(n) -> str:
    return "nothing" if n is None else f"pitch {n[1]} velocity {n[2]} at {n[0] / 1e9:.4f} s"
