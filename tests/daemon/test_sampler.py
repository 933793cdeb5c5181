"""Sampler: grammar, range and key masks, temperature, top-p, determinism, repetition control; Krumhansl-Kessler
key finding."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from leadline.daemon import codec
from leadline.daemon.config import SCALES, SamplingConfig, note_number
from leadline.daemon.sampler import Sampler, estimate_key

V = codec.VOCAB_SIZE
NOTE0, DUR0 = codec.OFFSETS["NOTE"], codec.OFFSETS["DUR"]


def _logits(seed: int = 0, scale: float = 1.0) -> np.ndarray:
    return (np.random.default_rng(seed).normal(size=V) * scale).astype(np.float32)


def _run(sampler: Sampler, n: int, seed: int = 0) -> list[int]:
    """n tokens, each from fresh random logits, each conditioned on the one before."""
    rng = np.random.default_rng(seed)
    toks, prev = [], codec.BOS
    for _ in range(n):
        prev = sampler.sample(rng.normal(size=V).astype(np.float32) * 3, prev)
        toks.append(prev)
    return toks


def test_grammar_note_then_dur_and_never_bos():
    toks = _run(Sampler(SamplingConfig(temperature=2.0, top_p=1.0), seed=1), 5000)
    kinds = codec.TOKEN_KIND[toks]
    assert codec.K_BOS not in kinds
    for prev, cur in zip(kinds, kinds[1:]):
        assert (cur == codec.K_DUR) == (prev == codec.K_NOTE)
    assert kinds[0] != codec.K_DUR
    assert np.sum(kinds == codec.K_NOTE) > 100  # the test saw many notes


@pytest.mark.parametrize("mode", ["full", "bends", "off"])
def test_expression_keeps_its_order_and_its_mode(mode):
    """Sampled streams decode without a single grammar error: BEND then BAT, [REL], [VIB], then a NOTE; `bends`
    samples no VIB, `off` no expression at all (a synth that mishandles pitch bend)."""
    toks = _run(Sampler(SamplingConfig(temperature=2.0, top_p=1.0, low="C1", high="B7"), seed=7, expression=mode),
                20000)
    d = codec.Decoder()
    notes = [n for n in map(d.feed, toks) if n is not None]
    assert d.errors == 0 and len(notes) > 500
    bent, vib = sum(n.bend != 0 for n in notes), sum(n.vibrato != 0 for n in notes)
    assert (bent > 20, vib > 20) == {"full": (True, True), "bends": (True, False), "off": (False, False)}[mode]


def test_grammar_overrides_strong_logits():
    s = Sampler(SamplingConfig(), seed=0)
    bos_heavy = np.zeros(V, np.float32)
    bos_heavy[codec.BOS] = 50.0
    bos_heavy[DUR0] = 40.0
    assert codec.TOKEN_KIND[s.sample(bos_heavy, codec.token("SHIFT", 4))] not in (codec.K_BOS, codec.K_DUR)
    assert s.sample(bos_heavy, codec.token("NOTE", 60)) == DUR0


def test_range_mask():
    cfg = SamplingConfig(low="C4", high="C5", temperature=3.0, top_p=1.0)
    toks = _run(Sampler(cfg, seed=2), 5000)
    pitches = [codec.describe(t)[1] for t in toks if codec.TOKEN_KIND[t] == codec.K_NOTE]
    assert pitches and min(pitches) >= note_number("C4") and max(pitches) <= note_number("C5")
    assert len(set(pitches)) == 13


@pytest.mark.parametrize("key,tonic,scale", [("E minor", 4, "minor"), ("A blues", 9, "blues")])
def test_key_mask(key, tonic, scale):
    s = Sampler(SamplingConfig(key=key, temperature=3.0, top_p=1.0), seed=3)
    allowed = {(tonic + i) % 12 for i in SCALES[scale]}
    pcs = {codec.describe(t)[1] % 12 for t in _run(s, 5000) if codec.TOKEN_KIND[t] == codec.K_NOTE}
    assert pcs == allowed
    s.set_key(None)
    pcs = {codec.describe(t)[1] % 12 for t in _run(s, 5000) if codec.TOKEN_KIND[t] == codec.K_NOTE}
    assert len(pcs) == 12


def test_auto_key_starts_unconstrained():
    s = Sampler(SamplingConfig(key="auto"))
    assert s.auto_key and s.key is None
    s.set_key(*estimate_key(_histogram(9, "minor")))
    assert s.key == (9, SCALES["minor"])


def test_tiny_top_p_is_argmax():
    s = Sampler(SamplingConfig(top_p=0.01, temperature=1.0, low="C1", high="B7"), seed=4)  # no range mask
    for seed in range(50):
        lg = _logits(seed, scale=0.5)  # flat-ish: sampling without the nucleus would wander
        lg[[codec.BOS] + list(range(DUR0, V))] = -1e9  # argmax among what the grammar allows
        assert s.sample(lg, codec.token("SHIFT", 1)) == int(lg.argmax())


def test_top_p_keeps_the_nucleus():
    lg = np.full(V, -1e9, np.float32)
    shift = [codec.token("SHIFT", n) for n in (1, 2, 3, 4)]
    lg[shift] = np.log([0.5, 0.3, 0.15, 0.05])
    s = Sampler(SamplingConfig(top_p=0.75, temperature=1.0), seed=5)
    got = {s.sample(lg, codec.BOS) for _ in range(2000)}
    assert got == set(shift[:2])


def test_temperature_sharpens_and_flattens():
    lg = _logits(7, scale=2.0)
    lg[[codec.BOS] + list(range(DUR0, V))] = -1e9
    best = int(lg.argmax())

    def hit_rate(t: float) -> float:
        s = Sampler(SamplingConfig(temperature=t, top_p=1.0), seed=6)
        return np.mean([s.sample(lg, codec.BOS) == best for _ in range(2000)])

    cold, warm, hot = hit_rate(0.1), hit_rate(1.0), hit_rate(5.0)
    assert cold > 0.95 and cold > warm > hot


def test_set_temperature_clamps():
    s = Sampler(SamplingConfig())
    s.set_temperature(100)
    assert s.temperature == 5.0


def test_deterministic_per_seed():
    cfg = SamplingConfig(temperature=1.2)
    a, b = _run(Sampler(cfg, seed=9), 500), _run(Sampler(cfg, seed=9), 500)
    c = _run(Sampler(cfg, seed=10), 500)
    assert a == b and a != c
    assert _run(Sampler(SamplingConfig(seed=9)), 100) == _run(Sampler(SamplingConfig(seed=9)), 100)


def _histogram(tonic: int, scale: str) -> np.ndarray:
    """A melody-like pitch-class count: scale tones, with tonic and fifth (and third) heavier."""
    h = np.zeros(12)
    for i in SCALES[scale]:
        h[(tonic + i) % 12] += 3
    third = 3 if scale == "minor" else 4
    h[tonic % 12] += 6
    h[(tonic + 7) % 12] += 3
    h[(tonic + third) % 12] += 2
    return h


@pytest.mark.parametrize("tonic,scale", [(0, "major"), (9, "minor"), (4, "minor"), (7, "major")])
def test_estimate_key(tonic, scale):
    assert estimate_key(_histogram(tonic, scale)) == (tonic, scale)


def test_estimate_key_needs_information():
    assert estimate_key(np.zeros(12)) is None
    assert estimate_key(np.ones(12)) is None


def _looping_logits(pitch: int, margin: float = 12.0):
    """A model stuck in a loop: after a DUR a sixteenth's SHIFT, after the SHIFT `pitch` (by `margin` logits
    over every other note), after the NOTE its DUR."""
    after_dur = np.full(V, -30.0, np.float32)
    after_dur[codec.token("SHIFT", 6)] = 0.0
    after_shift = np.full(V, -30.0, np.float32)
    after_shift[NOTE0:DUR0] = 0.0
    after_shift[codec.token("NOTE", pitch)] = margin
    return lambda prev: after_shift if codec.TOKEN_KIND[prev] == codec.K_SHIFT else after_dur


def _onsets(sampler: Sampler, logits_after, n: int) -> list[int]:
    """Pitches of the first `n` onsets sampled in a closed loop (each token fed back as prev_token)."""
    out, prev = [], codec.token("SHIFT", 6)
    while len(out) < n:
        prev = sampler.sample(logits_after(prev), prev)
        if codec.TOKEN_KIND[prev] == codec.K_NOTE:
            out.append(int(codec.TOKEN_VALUE[prev]))
    return out


def _longest_run(xs: list[int]) -> int:
    best = run = 1
    for a, b in zip(xs, xs[1:]):
        run = run + 1 if a == b else 1
        best = max(best, run)
    return best


def test_repetition_penalty_breaks_a_loop():
    loop = _looping_logits(52)
    cfg = SamplingConfig(temperature=1.0, top_p=0.9, low="C1", high="B7")
    stuck = _onsets(Sampler(replace(cfg, repeat_penalty=0.0), seed=0), loop, 200)
    assert set(stuck) == {52}  # without the control the loop never ends
    # with it, the k-th repeat costs 0.5 k logits: past ~11 repeats 52 leaves the nucleus alone
    free = _onsets(Sampler(replace(cfg, repeat_penalty=0.5), seed=0), loop, 200)
    assert _longest_run(free) <= 16 and free.count(52) > 100  # the loop is broken, the favourite stays
    assert len(set(free)) > 5


def test_repetition_penalty_resets_after_a_new_pitch_set():
    s = Sampler(SamplingConfig(temperature=1.0, top_p=1.0, repeat_penalty=2.0, low="C1", high="B7"), seed=0)
    shift, dur = codec.token("SHIFT", 6), DUR0 + 5
    flat = np.zeros(V, np.float32)

    def strike(*pitches):
        for p in pitches:
            s.sample(flat, codec.token("NOTE", p))  # each note arrives as prev_token, then its DUR
            s.sample(flat, dur)
        s.sample(flat, shift)  # the onset ends
        return s._penalty[NOTE0:DUR0].copy()

    pen = strike(40, 47)  # a fifth
    assert pen[40 - codec.PITCH_LO] == pen[47 - codec.PITCH_LO] == -2.0 and np.count_nonzero(pen) == 2
    pen = strike(40, 47)  # the same fifth again: a run of two
    assert pen[40 - codec.PITCH_LO] == -4.0
    pen = strike(45)  # something else: only its own pitch, once
    assert pen[45 - codec.PITCH_LO] == -2.0 and np.count_nonzero(pen) == 1
    s.reset_repetition()
    assert not s._penalty.any()



def test_repeat_penalty_setting_is_range_checked():
    from leadline.daemon import config

    assert config.load(None, ["sampling.repeat_penalty=1.5"]).sampling.repeat_penalty == 1.5
    with pytest.raises(config.ConfigError, match=r"sampling\.repeat_penalty: -1"):
        config.load(None, ["sampling.repeat_penalty=-1"])
