"""`leadline bench` section "echo": what the session memory (sampling.echo_player, issue 17) costs a generation step.

A step is one `Improviser.next_note(max_steps=1)`: the memory's mix where it has a context, rest shaping, the
sampler, one engine step (CPU, 1 thread) and the decoder, as the live loop runs it in duet. The memory has heard
a real lead line (a rock-o-net song's, from ../shared/data) and is full (`memory.SIZE` tokens); the same steps
are timed with the mix off (0) and on (0.3, 1.0), each improviser from the same state and seed, one step of each
in turn (a busy machine slows them alike). `mixed_share` is the share of steps where the memory had a context
(the only steps where the mix costs more than a few dict lookups); `cpu` is the same steps in the thread's CPU
time (onnxruntime runs one thread, the caller's), which a busy machine's other processes do not inflate;
`mix_alone` times the mix by itself on a context it knows, `hear_one_note` the memory learning one more note of
the player's (on the engine thread when the note ends).
"""
from __future__ import annotations

import gc
import time
from pathlib import Path

import numpy as np

from leadline.bench.run import Bench, section, stats, time_calls
from leadline.daemon import codec, config, memory
from leadline.daemon.codec import Note
from leadline.daemon.engine import CpuEngine
from leadline.daemon.improviser import Improviser
from leadline.daemon.modes import FOREVER
from leadline.daemon.sampler import Sampler

SONG = Path(__file__).resolve().parents[2] / "shared" / "data" / "rock-o-net" / "b" / "black_sabbath" / "Sweet_Leaf.mid"
WEIGHTS = (0.0, 0.3, 1.0)


def _player() -> list[Note]:
    """The player's line: the song's lead line, looped until it fills the memory."""
    from leadline.daemon.offline import player_phrase

    line = player_phrase(SONG, config.DataConfig())
    length = line[-1].end + 96
    loops = -(-memory.SIZE // (3 * len(line)))  # about three tokens a note
    return [Note(n.onset + k * length, n.duration, n.pitch, n.velocity) for k in range(loops + 1) for n in line]


def _improviser(model, player: list[Note], echo: float) -> Improviser:
    eng = CpuEngine(model, threads=1)
    eng.warm_up()
    imp = Improviser(eng, Sampler(config.SamplingConfig(), seed=0), 64, echo)
    imp.hear(player)
    imp.begin(imp.cursor + 24, FOREVER, fill=True)  # duet: a phrase that never ends
    return imp


def _interleaved(model, player: list[Note], n: int) -> dict:
    """A step at each weight in turn, n times, so that every weight meets the same load on the machine."""
    imps = {w: _improviser(model, player, w) for w in WEIGHTS}
    ns = {w: np.zeros((2, n + 20), np.int64) for w in WEIGHTS}  # wall time, the thread's CPU time
    found = dict.fromkeys(WEIGHTS, 0)
    enabled = gc.isenabled()
    gc.disable()
    try:
        for i in range(n + 20):
            for w, imp in imps.items():
                found[w] += w > 0 and imp.memory.context(imp.window) >= 0  # (untimed) the memory will speak
                t0, c0 = time.perf_counter_ns(), time.thread_time_ns()
                imp.next_note(max_steps=1)
                ns[w][:, i] = time.perf_counter_ns() - t0, time.thread_time_ns() - c0
    finally:
        if enabled:
            gc.enable()
    return {f"step_echo_{w}": stats(ns[w][0, 20:]) | {"cpu": stats(ns[w][1, 20:]), "mixed_share": found[w] / (n + 20)}
            for w in WEIGHTS}  # (the first 20 steps warm up)


def _mix_alone(player: list[Note], n: int) -> dict:
    m = memory.SessionMemory()
    m.hear(player)
    recent = codec.encode(player[-4:], start=player[-4].onset, bos=False)  # the player's last notes: known
    logits = np.random.default_rng(0).normal(size=codec.VOCAB_SIZE).astype(np.float32)
    out = np.empty_like(logits)
    assert m.lookup(recent) is not None
    return time_calls(lambda i: m.mix(logits, recent, 0.3, out), n)


def _hear(player: list[Note], n: int) -> dict:
    """Hearing one more note of the player's, the memory full (counts forgotten as new ones come)."""
    m = memory.SessionMemory()
    m.hear(player)
    end = player[-1].onset
    more = [Note(end + 12 * (i + 1), p.duration, p.pitch, p.velocity) for i, p in enumerate(player * 3)]
    return time_calls(lambda i: m.hear((more[i],)), n)


@section("echo")
def bench_echo(b: Bench) -> dict:
    """A generation step with the session memory's mix off and on (CPU, 1 thread), and the mix alone."""
    if not SONG.is_file():
        return {"skipped": f"{SONG} is not here (../shared/data)"}
    player = _player()
    out = _interleaved(b.model, player, b.steps)
    out["mix_alone"] = _mix_alone(player, b.steps)
    out["hear_one_note"] = _hear(player, b.steps)
    out["memory"] = {"tokens": memory.SIZE, "order": memory.ORDER, "min_order": memory.MIN_ORDER}
    return out
