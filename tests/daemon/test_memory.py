"""The session memory (issue 17): the player's motifs counted and predicted, its size bounded, its mix into the
model's distribution (weight 0: the model's own, bit for bit; weight 1: the memory's continuation), the CC that
sets the weight, and with the shipped model, answers that quote the player's phrase more as the weight grows."""
from __future__ import annotations

import gc
from collections import deque
from pathlib import Path

import numpy as np
import pytest

from leadline.daemon import codec, config
from leadline.daemon.codec import Note
from leadline.daemon.memory import FLOOR, SessionMemory, echo_weight

V = codec.VOCAB_SIZE
MODEL = Path(__file__).resolve().parents[2] / "models" / "default"
ROCK = Path(__file__).resolve().parents[3] / "shared" / "data" / "rock-o-net"
MOTIF = [(64, 6), (67, 6), (69, 12), (67, 6), (64, 18)]  # (pitch, duration in ticks), one after the other


def _line(rng, bars: int, motif_every: int = 2) -> list[Note]:
    """A player's line: the motif at the start of every `motif_every`-th bar, random eighths elsewhere."""
    notes = []
    for bar in range(bars):
        t = bar * 96
        if bar % motif_every == 0:
            for p, d in MOTIF:
                notes.append(Note(t, d, p, 96))
                t += d
        while t < (bar + 1) * 96:
            notes.append(Note(t, 12, int(rng.integers(45, 80)), int(rng.integers(40, 127))))
            t += 12
    return notes


def _tokens(notes: list[Note]) -> list[int]:
    return codec.encode(notes, bos=False)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def test_a_repeated_motif_is_predicted_note_by_note():
    m = SessionMemory()
    m.hear(_line(np.random.default_rng(0), 16))
    # the line plays the motif's first two notes; the memory goes on with its third, its duration, then the gap
    recent = deque(_tokens([Note(960, 6, 64, 96), Note(966, 6, 67, 96)]))
    for want in (codec.token("SHIFT", 6), codec.token("NOTE", 69), codec.token("DUR", codec.DURATIONS.index(12)),
                 codec.token("SHIFT", 12)):
        nxt = m.lookup(recent)
        assert nxt is not None and max(nxt, key=nxt.get) == want, (codec.describe(want), nxt)
        recent.append(want)
    assert m.lookup(deque(_tokens([Note(0, 7, 30, 96)]))) is None  # a note the player never played: no context


def test_human_timing_and_dynamics_do_not_hide_a_motif():
    """The player's motif at a human's timing (a tick or two off the grid) and velocities (a new one each note)
    is still recognised in a line that plays it on the grid at one velocity: rhythm is compared in classes
    about 20 % wide and VELs are skipped, while the prediction is the player's exact next pitch."""
    rng = np.random.default_rng(5)
    notes, t = [], 0
    for _ in range(6):
        for p in (64, 67, 69, 71):
            notes.append(Note(t, int(rng.integers(10, 14)), p, int(rng.integers(40, 127))))
            t += int(rng.integers(11, 14))
        t += 48
    m = SessionMemory()
    m.hear(notes)
    grid = _tokens([Note(0, 12, 64, 80), Note(12, 12, 67, 80), Note(24, 12, 69, 80)]) + [codec.token("SHIFT", 12)]
    nxt = m.lookup(grid)
    assert nxt is not None and set(nxt) == {codec.token("NOTE", 71)}, nxt


def test_a_short_context_does_not_speak():
    m = SessionMemory(min_order=3)
    m.hear([Note(0, 6, 64, 96), Note(6, 6, 67, 96)])
    assert m.lookup([codec.token("DUR", codec.DURATIONS.index(6))]) is None  # seen, but one token is too short
    assert m.lookup(_tokens([Note(0, 6, 64, 96)])) is None  # NOTE, DUR (its VEL does not count): too short
    assert m.lookup(_tokens([Note(0, 6, 64, 96)]) + [codec.token("SHIFT", 6)]) == {codec.token("NOTE", 67): 1}


def test_size_is_bounded_and_forgetting_leaves_the_counts_of_the_tokens_held():
    rng = np.random.default_rng(1)
    m = SessionMemory(order=5, size=300)
    notes = _line(rng, 200)
    m.hear(notes)
    assert len(m) == 300 and m.counts() <= 300 * 5
    fresh = SessionMemory(order=5, size=10_000)
    fresh.hear(notes)
    stream = list(fresh._ring[:len(fresh)])
    again = SessionMemory(order=5, size=300)
    again.learn(stream[-300:])
    for counts in ("_next", "_pair"):  # the sliding memory counts exactly what a fresh one of its last
        assert getattr(m, counts) == getattr(again, counts)  # tokens does
    big = SessionMemory()
    big.hear(_line(rng, 2000))
    assert len(big) == big.size and big.counts() <= big.size * big.order
    assert not gc.is_tracked(big._pair) and not gc.is_tracked(big._next)  # nothing for a collection to walk


def test_weight_0_leaves_the_model_distribution_untouched():
    m = SessionMemory()
    m.hear(_line(np.random.default_rng(0), 8))
    recent = deque(_tokens([Note(0, 6, 64, 96), Note(6, 6, 67, 96)]))
    assert m.lookup(recent) is not None
    logits = np.random.default_rng(2).normal(size=V).astype(np.float32)
    out = logits.copy()
    assert not m.mix(logits, recent, 0.0, out)
    assert np.array_equal(out, logits)


def test_weight_1_is_the_memorys_continuation_and_between_a_mix_of_probabilities():
    """The model's probability of expression tokens (which the memory never hears) stays whole; the rest is
    mixed: at weight 1 the memory's continuation, between a mix of probabilities."""
    m = SessionMemory()
    m.hear(_line(np.random.default_rng(0), 8))
    recent = deque(_tokens([Note(0, 6, 64, 96), Note(6, 6, 67, 96)]))
    nxt = m.lookup(recent)
    want = np.zeros(V)
    for t, c in nxt.items():
        want[t] = c / sum(nxt.values())
    logits = np.random.default_rng(3).normal(size=V).astype(np.float32) * 3
    model = _softmax(logits.astype(np.float64))
    expr = np.isin(codec.TOKEN_KIND, codec.EXPRESSION_KINDS)
    e = model[expr].sum()
    assert e > 0.01
    out = np.empty(V, np.float32)
    assert m.mix(logits, recent, 1.0, out)
    got = _softmax(out.astype(np.float64))
    assert np.allclose(got[expr], model[expr], rtol=1e-5)
    assert np.allclose(got[~expr], (1 - e) * want[~expr], atol=10 * FLOOR)
    assert m.mix(logits, recent, 0.3, out)
    mixed = np.where(expr, model, 0.7 * model + 0.3 * (1 - e) * want)
    assert np.allclose(_softmax(out.astype(np.float64)), mixed, rtol=1e-5, atol=1e-9)


def test_the_cc_maps_0_127_onto_0_1():
    values = [echo_weight(v) for v in range(128)]
    assert values[0] == 0.0 and values[127] == 1.0 and values[64] == pytest.approx(64 / 127)
    assert all(a < b for a, b in zip(values, values[1:]))


def test_config_keys_and_their_checks():
    cfg = config.load(None, ["sampling.echo_player=0.4", "control.echo_cc=30"])
    assert cfg.sampling.echo_player == 0.4 and cfg.control.echo_cc == 30
    assert config.load(None, ["control.echo_cc=null"]).control.echo_cc is None
    for bad, message in (("sampling.echo_player=1.5", "sampling.echo_player: 1.5"),
                         ("sampling.echo_player=-0.1", "sampling.echo_player: -0.1"),
                         ("control.echo_cc=128", "control.echo_cc: 128")):
        with pytest.raises(config.ConfigError) as e:
            config.load(None, [bad])
        assert str(e.value).startswith(message)


# --- with the shipped model ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def engine():
    from leadline.daemon.engine import CpuEngine, load_model

    eng = CpuEngine(load_model(MODEL))
    eng.warm_up()
    return eng


def _answer(engine, phrase: list[Note], echo: float, seed: int) -> tuple[list[int], list[Note]]:
    from leadline.daemon.improviser import Improviser
    from leadline.daemon.offline import answer
    from leadline.daemon.sampler import Sampler

    engine.reset()
    sampler = Sampler(config.load(None, []).sampling, seed=seed)
    imp = Improviser(engine, sampler, window=64, echo=echo)
    notes = answer(imp, phrase, 1.0, 2)
    return list(imp.window), notes


def test_echo_0_never_consults_the_memory(engine, monkeypatch):
    """At weight 0 the sampler gets the model's own logits: a full memory whose mix would fail is never asked,
    and the step's logits are the engine's very array."""
    from leadline.daemon import memory

    def fail(*args):
        raise AssertionError("mixed at weight 0")

    phrase = _line(np.random.default_rng(4), 4)
    monkeypatch.setattr(memory.SessionMemory, "mix", fail)
    toks, notes = _answer(engine, phrase, 0.0, 1)
    assert notes and len(toks) == 64


def _share(answer: list[Note], phrase: list[Note], n: int = 4) -> float:
    """Share of the answer's pitch n-grams that the phrase played."""
    def grams(notes):
        p = [x.pitch for x in sorted(notes, key=lambda x: (x.onset, x.pitch))]
        return [tuple(p[i:i + n]) for i in range(len(p) - n + 1)]
    seen, mine = set(grams(phrase)), grams(answer)
    return sum(g in seen for g in mine) / max(len(mine), 1)


def test_echo_quotes_the_players_phrase_more(engine):
    """A real rock lead line (8 bars) answered over 6 seeds: at weight 1 more of the answers' pitch 4-grams
    come from the player's phrase than at weight 0."""
    from leadline.daemon.offline import player_phrase

    phrase = player_phrase(ROCK / "b" / "black_sabbath" / "Sweet_Leaf.mid", config.DataConfig())
    start = phrase[len(phrase) // 3].onset // 96 * 96
    phrase = [Note(n.onset - start, n.duration, n.pitch, n.velocity) for n in phrase
              if start <= n.onset < start + 8 * 96 and n.onset + n.duration <= start + 8 * 96]
    assert len(phrase) >= 16
    off = [_share(_answer(engine, phrase, 0.0, s)[1], phrase) for s in range(6)]
    on = [_share(_answer(engine, phrase, 1.0, s)[1], phrase) for s in range(6)]
    assert np.mean(on) > np.mean(off) + 0.1, (off, on)


def test_the_cc_sets_the_weight_live_and_the_memory_hears_the_players_notes(engine, monkeypatch):
    """Through Live (the in-process rig): control.echo_cc sets the improviser's weight, and the notes the player
    plays reach the memory; with the CC set to null, CC 26 is nobody's."""
    from leadline.bench.liverig import BAR, PLAYER_CH, START, Rig, player_notes

    rig = Rig(engine, monkeypatch, 1, "mode=respond", "sampling.echo_player=0.2")
    imp = rig.live.improviser
    assert imp.echo == 0.2
    for value, want in ((127, 1.0), (0, 0.0), (64, 64 / 127)):
        rig.feed([0xB0 | PLAYER_CH, 26, value])
        assert imp.echo == pytest.approx(want)
    rig.feed([START])
    rig.song(3 * BAR, player_notes({}, [(BAR + 12 * i, BAR + 12 * i + 10, p) for i, p in enumerate((64, 67, 69))]))
    assert len(imp.memory) > 0
    assert imp.memory.lookup(_tokens([Note(0, 10, 64, 100), Note(12, 10, 67, 100)])[1:]) is not None
    off = Rig(engine, monkeypatch, 1, "control.echo_cc=null", "sampling.echo_player=0.2")
    off.feed([0xB0 | PLAYER_CH, 26, 127])
    assert off.live.improviser.echo == 0.2


def _duet(engine, monkeypatch, echo: float, seed: int) -> list[int]:
    """Live in duet (the in-process rig), the player playing one motif in bars 2, 4 and 6: leadline's pitches."""
    from leadline.bench.liverig import BAR, START, Rig, per_bar, player_notes

    rig = Rig(engine, monkeypatch, seed, "mode=duet", f"sampling.echo_player={echo}")
    events = {}
    for bar in (1, 3, 5):
        player_notes(events, [(bar * BAR + 12 * i, bar * BAR + 12 * i + 10, p) for i, p in enumerate(MOTIF3)])
    rig.feed([START])
    rig.song(8 * BAR, events)
    assert all(per_bar(rig.onsets, 8)), f"duet fell silent at echo {echo}: {per_bar(rig.onsets, 8)}"
    assert rig.live.queue.late == 0
    rig.live.all_off()
    assert not rig.sounding()
    return [m[1] for m in rig.sent if m[0] == 0x90 | rig.live.out_ch and m[2]]


MOTIF3 = (64, 67, 69, 71)


def test_duet_at_full_echo_plays_on_in_every_bar_and_plays_the_players_motif_back(engine, monkeypatch):
    """The mix does not break the jam (a note in every bar while the player plays bars 2, 4 and 6, nothing late,
    nothing left sounding), and over 4 seeds at echo 1 more of leadline's pitch 3-grams are the player's motif's
    than at 0."""
    motif = {MOTIF3[i:i + 3] for i in range(len(MOTIF3) - 2)}

    def quoted(played):
        return sum(tuple(played[i:i + 3]) in motif for i in range(len(played) - 2))

    off = sum(quoted(_duet(engine, monkeypatch, 0.0, seed)) for seed in range(1, 5))
    on = sum(quoted(_duet(engine, monkeypatch, 1.0, seed)) for seed in range(1, 5))
    assert on > off + 6, (off, on)
