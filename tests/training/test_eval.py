"""Evaluation: baselines (proper distributions, Markov beats unigram on real data), features, the report (with
its lead section)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from leadline.daemon import codec
from leadline.daemon.cli import main
from leadline.training import cache, features, leadstats
from leadline.training.markov import Markov, Unigram

KEYS = {"nll_bits_per_event", "top1", "top5", "unigram_nll_bits_per_event", "markov_nll_bits_per_event",
        "markov_order", "improvement_vs_markov", "n_events", "n_sequences", "oa", "oa_reference",
        "copy_longest_p95", "model", "codec_version", "data", "train_data", "generation", "lead", "sampling"}


def test_markov_is_a_proper_distribution_at_every_order():
    rng = np.random.default_rng(0)
    train = [np.r_[codec.BOS, rng.integers(1, 12, 300)] for _ in range(5)]
    ctx = [codec.BOS, 3, 4, 5, 3, 4]
    for method, order in (("kn", 0), ("kn", 2), ("kn", 6), ("ppmc", 3)):
        m = Markov(max_order=6, order=order, method=method).fit(train)
        n = len(ctx)  # targets of ctx + [x]: everything after the BOS
        before = m.nll_bits([np.array(ctx)]) * (n - 1)
        p = [2.0 ** -(m.nll_bits([np.array(ctx + [x])]) * n - before) for x in range(codec.VOCAB_SIZE)]
        assert sum(p) == pytest.approx(1.0, abs=1e-9)
    u = Unigram().fit(train)
    assert np.exp2(u.logp).sum() == pytest.approx(1.0)


def test_markov_learns_a_repeated_riff_and_resets_at_bos():
    riff = [10, 20, 30, 40, 50, 60, 70]
    train = [np.array([codec.BOS] + riff * 20)]
    m = Markov(max_order=4).fit(train)
    bits = m.order_bits(train)
    assert bits[0] > 2.5 and bits[3] < 0.3  # order 0 sees 7 symbols; order >= 1 predicts the riff
    assert m.select_order(train) >= 1


def test_markov_beats_unigram_on_real_data(tiny_cache):
    c = cache.load(tiny_cache)
    train, val, test = c.sequences("train"), c.sequences("val"), c.sequences("test")
    m = Markov().fit(train)
    m.select_order(val)
    assert m.nll_bits(test) < Unigram().fit(train).nll_bits(test) < np.log2(codec.VOCAB_SIZE)


def test_longest_copies_stay_inside_training_sequences():
    train = [np.array([1, 2, 3, 4, 5, 6]), np.array([7, 8, 9])]
    gen = [np.array([9, 3, 4, 5, 1]), np.array([6, 7, 8]), np.array([10, 11])]
    assert features.longest_copies(gen, train).tolist() == [3, 2, 0]


def test_overlap_area_of_a_set_with_itself_is_high_and_of_a_shifted_set_low():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=300), rng.normal(size=300)
    assert features.overlap_area(a, b) > 0.85 and features.overlap_area(a, b + 4) < 0.1


def test_eval_report_on_a_cache(trained_model, tiny_cache, tmp_path, capsys):
    out = tmp_path / "report.json"
    assert main(["eval", "--model", str(trained_model), "--data", str(tiny_cache), "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert KEYS <= set(r)
    test = cache.load(tiny_cache).sequences("test")
    assert r["n_sequences"] == len(test) and r["n_events"] == sum(len(s) - 1 for s in test)
    assert r["markov_nll_bits_per_event"] < r["unigram_nll_bits_per_event"]
    assert r["nll_bits_per_event"] < np.log2(codec.VOCAB_SIZE) and 0 < r["top1"] <= r["top5"] <= 1
    assert r["train_data"]["inputs"] == [str(tiny_cache)]  # found through the model card
    assert "Markov (order" in capsys.readouterr().out


def test_eval_on_midi_folders_measures_generation(trained_model, tiny_cache, wjd16, tmp_path):
    """Raw folders: every lead line is evaluated (all splits), and 32-note seeds are continued."""
    out = tmp_path / "report.json"
    args = ["eval", "--model", str(trained_model), "--data", str(wjd16), "--train-data", str(tiny_cache),
            "--json", str(out), "--phrases", "12", "--seed", "1"]
    assert main(args) == 0
    r = json.loads(out.read_text())
    assert r["data"]["kind"] == "midi" and r["n_sequences"] == len(cache.load(tiny_cache).sequences("train", False)
                                                                   + cache.load(tiny_cache).sequences("val")
                                                                   + cache.load(tiny_cache).sequences("test"))
    assert r["generation"]["phrases"] == 12
    for key in ("oa", "oa_reference"):
        assert set(r[key]) == set(features.FEATURES) | {"mean"}
        assert all(0.0 <= v <= 1.0 for v in r[key].values())
    assert r["copy_longest_p95"] >= 1
    lead = r["lead"]
    assert lead["corpora"] == ["wjd16"] and lead["val_cuts"] >= 10  # the training cache's validation cuts
    e = lead["per_corpus"]["wjd16"]
    assert 10 <= e["cuts"] <= 12 * 3 and set(e["stats"]) == {"model", "markov", "real"}
    for who in e["stats"].values():
        assert set(who) == set(leadstats.STATS)
        assert 0 <= who["repeat_share"]["q25"] <= who["repeat_share"]["median"] <= who["repeat_share"]["q75"] <= 1
        assert who["onsets_per_beat"]["n"] == e["cuts"]  # every window has notes (the first falls on the cut)
    assert set(e["judge_auc"]) == {"model", "markov", "real_vs_real"}
    assert all(0 <= v <= 1 for v in e["judge_auc"].values())
    assert e["judge_auc"]["model"] > e["judge_auc"]["real_vs_real"]  # a 2-epoch toy model gives itself away
    assert e["copy_longest_p95"] >= 1 and e["copy_longest_p95_real"] >= 1
    assert r["generation"]["repeat_penalty"] == r["sampling"]["repeat_penalty"]
    assert main(args[:-1] + ["1"]) == 0
    again = json.loads(out.read_text())
    assert again["oa"] == r["oa"] and again["lead"] == r["lead"]  # seeded


def test_lead_only_for_one_corpus_measures_quoting_with_the_session_memory(trained_model, tiny_cache, tmp_path,
                                                                            capsys):
    """`--lead-only --corpus`: the lead section alone; with sampling.echo_player 1 the answers quote more of the
    pitch 4-grams the seed played than with 0 (the same seeds and cuts)."""
    share = {}
    for echo in (0.0, 1.0):
        out = tmp_path / f"lead-{echo}.json"
        args = ["eval", "--model", str(trained_model), "--data", str(tiny_cache), "--lead-only", "--corpus",
                "wjd16", "--phrases", "12", "--set", f"sampling.echo_player={echo}", "--json", str(out)]
        assert main(args) == 0
        r = json.loads(out.read_text())
        assert set(r) == {"lead", "sampling", "model", "data"} and r["sampling"]["echo_player"] == echo
        e = r["lead"]["per_corpus"]["wjd16"]
        assert set(e["stats"]) == {"model", "real"} and set(e["echo_share"]) == {"model", "real"}
        share[echo] = e["echo_share"]
    assert share[0.0]["real"] == share[1.0]["real"]  # the same cuts
    assert share[1.0]["model"] > share[0.0]["model"] + 0.1, share
    assert "pitch 4-grams found in the song before the cut" in capsys.readouterr().out
    bad = ["eval", "--model", str(trained_model), "--data", str(tiny_cache), "--lead-only", "--corpus", "rock"]
    assert main(bad) == 1
    assert "--corpus 'rock': no such corpus in the data (it has: wjd16)" in capsys.readouterr().err
