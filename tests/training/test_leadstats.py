"""Lead statistics on hand-made lines, the realness judge on toy sets, cuts and the Markov sampler's distribution."""
from __future__ import annotations

import numpy as np
import pytest

from leadline.daemon import codec
from leadline.daemon.codec import Note
from leadline.training import judge, leadeval, leadstats
from leadline.training.markov import PAD, Markov

S16 = codec.TICKS_PER_BEAT // 4  # a sixteenth note in ticks


def _line(pitches, step: int = S16, dur: int = S16, start: int = 0) -> list[Note]:
    """One note per onset (an int) or a chord (a tuple) every `step` ticks."""
    out = []
    for i, p in enumerate(pitches):
        out += [Note(start + i * step, dur, q, 100) for q in (p if isinstance(p, tuple) else (p,))]
    return out


def test_a_repeated_double_stop_is_all_repeats():
    notes = _line([(40, 47)] * 32)  # two bars of one fifth in straight sixteenths
    s = leadstats.lead_stats(notes)
    assert s["repeat_share"] == 1.0 and s["longest_run"] == 32
    assert s["range"] == 7 and s["top_interval"] == 0.0
    assert s["onsets_per_beat"] == 4.0 and s["chord_share"] == 1.0
    assert s["notes_per_phrase"] == 64  # no rest: one phrase


def test_a_scale_run_never_repeats():
    scale = [52, 54, 55, 57, 59, 60, 62, 64]
    run = scale + scale[-2::-1] + [50]  # up and down an E minor scale in eighths, 16 onsets
    s = leadstats.lead_stats(_line(run, step=2 * S16))
    assert s["repeat_share"] == 0.0 and s["longest_run"] == 1
    assert s["range"] == 14 and s["onsets_per_beat"] == 2.0 and s["chord_share"] == 0.0
    assert s["top_interval"] == pytest.approx(np.abs(np.diff(run)).mean())
    assert s["notes_per_phrase"] == 16


def test_phrases_split_at_a_beat_of_rest():
    a = _line([60, 62, 64], dur=S16)  # ends at tick 18
    b = _line([65, 67], start=18 + codec.TICKS_PER_BEAT)  # a beat of rest: a new phrase
    c = _line([69], start=b[-1].end + codec.TICKS_PER_BEAT - 1)  # a rest just under a beat: the same phrase
    assert leadstats.phrases(a + b + c) == 2
    assert leadstats.lead_stats(a + b + c)["notes_per_phrase"] == 3.0


def test_window_and_undefined_statistics():
    notes = _line([60] * 40)  # 2.5 bars
    assert len(leadstats.window(notes)) == 32
    assert len(leadstats.window(notes, start=leadstats.WINDOW)) == 8
    one = leadstats.lead_stats([Note(0, 6, 60, 100)])
    assert np.isnan(one["repeat_share"]) and np.isnan(one["top_interval"]) and one["longest_run"] == 1
    assert all(np.isnan(v) for v in leadstats.lead_stats([]).values())
    assert leadstats.features([]).shape == (len(leadstats.FEATURES),)


def test_echo_share_counts_the_pitch_4grams_played_before():
    earlier = _line([60, 62, 64, 65, 67, (40, 47), 69], step=2 * S16)
    quote = _line([62, 64, 65, 67, (40, 47), 50, 51], start=400)  # 2 of its 4 4-grams were played, in another rhythm
    assert leadstats.echo_share(quote, earlier) == 0.5
    assert leadstats.echo_share(_line([65, 67, (40, 47), 69]), earlier) == 1.0  # a double stop is one item
    assert leadstats.echo_share(_line([65, 67, 40, 69]), earlier) == 0.0  # not its top note alone
    assert np.isnan(leadstats.echo_share(_line([60, 62, 64]), earlier))  # fewer than 4 onsets
    assert leadstats.echo_share(quote, []) == 0.0


def test_summary_is_median_and_quartiles():
    windows = [_line([60] * k + [62]) for k in (1, 2, 3, 4, 5)]  # longest runs 1..5
    s = leadstats.summary(windows)["longest_run"]
    assert (s["q25"], s["median"], s["q75"], s["n"]) == (2.0, 3.0, 4.0, 5)


def test_judge_separates_a_separable_set():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(200, 4)), rng.normal(size=(200, 4)) + [3, 0, 0, 0]
    auc, j = judge.judge_auc(a[:100], b[:100], a[100:], b[100:])
    assert auc > 0.95 and abs(j.w[0]) > abs(j.w[1:]).max()


def test_judge_cannot_tell_identical_sets():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 6))
    auc, _ = judge.judge_auc(x[:100], x[100:200], x[200:300], x[300:])
    assert abs(auc - 0.5) < 0.1
    assert judge.judge_auc(x[:100], x[:100], x[200:300], x[200:300])[0] == 0.5  # the very same rows: 0.5 exactly


def test_auc_counts_ties_half():
    assert judge.auc(np.array([1.0, 2.0, 3.0, 4.0]), np.array([0, 0, 1, 1])) == 1.0
    assert judge.auc(np.array([1.0, 1.0]), np.array([0, 1])) == 0.5
    assert judge.auc(np.array([4.0, 3.0, 2.0, 1.0]), np.array([0, 0, 1, 1])) == 0.0


def test_markov_distribution_matches_its_scores():
    rng = np.random.default_rng(0)
    train = [np.r_[codec.BOS, rng.integers(1, 12, 300)] for _ in range(5)]
    history = [codec.BOS, 3, 4, 5, 3, 4]
    for method, order in (("kn", 2), ("kn", 6), ("ppmc", 3)):
        m = Markov(max_order=6, order=order, method=method).fit(train)
        before = m.nll_bits([np.array(history)]) * (len(history) - 1)
        want = [2.0 ** -(m.nll_bits([np.array(history + [x])]) * len(history) - before)
                for x in range(codec.VOCAB_SIZE)]
        ctx = np.full((1, 8), PAD)
        ctx[0, -len(history):] = history
        assert leadeval.markov_probs(m, ctx)[0] == pytest.approx(want, abs=1e-12)


def test_cuts_fall_on_bar_lines_with_the_real_windows_after():
    notes = _line(list(range(50, 70)) * 4, step=2 * S16)  # 80 eighth notes, 10 bars
    tokens = np.array(codec.encode(notes), np.int64)
    cut = leadeval.make_cut(tokens, "rock")
    bar = 4 * codec.TICKS_PER_BEAT
    assert cut.start % bar == 0 and cut.start <= notes[48].onset < cut.start + bar
    assert [n.onset for n in cut.real] == [n.onset for n in notes if cut.start <= n.onset < cut.start + 2 * bar]
    seeded = codec.decode(cut.seed)
    assert all(n.onset < cut.start for n in seeded) and len(seeded) >= leadeval.SEED_NOTES
    assert sum(codec.TOKEN_VALUE[t] for t in cut.seed if codec.TOKEN_KIND[t] == codec.K_SHIFT) == cut.start
    assert leadeval.make_cut(tokens[:60], "rock") is None  # too few notes


def test_corpora_are_source_folders_or_their_few_big_subfolders():
    names = [f"data/{c}/{i}.mid" for c in ("rock-o-net", "pop909") for i in range(10)]
    assert set(leadeval.corpus_of(names).values()) == {"rock-o-net", "pop909"}
    letters = [f"rock-o-net/{chr(97 + i)}/x/{i}.mid" for i in range(20)]  # many small subfolders: one corpus
    assert set(leadeval.corpus_of(letters).values()) == {"rock-o-net"}
    assert set(leadeval.corpus_of(["wjd16/a.mid", "wjd16/b.mid"]).values()) == {"wjd16"}
    assert leadeval.corpus_order(["pop909", "wjd", "rock-o-net"]) == ["rock-o-net", "pop909", "wjd"]
