"""Choosing `sampling.*` on the validation split: lead statistics and a cross-validated realness judge per setting.

`python -m leadline.bench.sweep --model DIR --data CACHE --try "sampling.temperature=0.9" --try "..."` cuts the
validation sequences as `leadline eval` does (40, 60, 80 %), samples each setting's 2-bar answers from the same
seeds, and reports per corpus (rock first, then all) the lead statistics' medians against the real
continuations' and the judge's ROC AUC, cross-validated over 5 folds of sequences (a sequence's cuts stay in
one fold), so nothing of the test split is looked at, and how much the answers quote the song before the cut
(`leadstats.echo_share`, for sampling.echo_player). The first setting is the baseline (`--try ""`: the
config's own). Writes the table, and with --json the numbers.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from leadline.daemon import config, engine
from leadline.training import cache as cache_mod, judge, leadeval, leadstats

FOLDS = 5


def cv_auc(gen: np.ndarray, real: np.ndarray, group: np.ndarray, folds: int = FOLDS) -> float:
    """Judge AUC pooled over folds: fitted on the other folds' (gen, real) rows, scored on the held-out fold's."""
    ids = np.unique(group)
    fold_of = dict(zip(ids, np.random.default_rng(0).permutation(len(ids)) % folds))
    f = np.array([fold_of[g] for g in group])
    scores = np.empty(2 * len(gen))
    for k in range(folds):
        out = f == k
        j = judge.fit(np.r_[gen[~out], real[~out]], np.r_[np.ones((~out).sum()), np.zeros((~out).sum())])
        scores[:len(gen)][out], scores[len(gen):][out] = j.score(gen[out]), j.score(real[out])
    return judge.auc(scores, np.r_[np.ones(len(gen)), np.zeros(len(real))])


def sweep(info, cuts: list, group: np.ndarray, tries: list[list[str]], base: config.Config, seed: int) -> list:
    """One row per setting: its overrides, and per corpus the model's stats and judge AUC (+ real stats)."""
    corpus = np.array([c.corpus for c in cuts])
    masks = {c: corpus == c for c in leadeval.corpus_order(corpus)} | {"all": np.ones(len(cuts), bool)}
    real = leadeval._rows([c.real for c in cuts])
    rows = []
    for sets in tries:
        cfg = config.load(None, [*base_sets(base), *sets]).sampling
        windows = leadeval.model_answers(info, cuts, replace(cfg, seed=None), seed)
        gen = leadeval._rows(windows)
        row = {"set": sets, "per_corpus": {}}
        for name, m in masks.items():
            idx = np.flatnonzero(m)
            row["per_corpus"][name] = {
                "cuts": len(idx), "judge_auc": cv_auc(gen[m], real[m], group[m]),
                "model": leadstats.summary([windows[i] for i in idx]),
                "real": leadstats.summary([cuts[i].real for i in idx]),
                "echo_share": leadeval.echo_shares({"model": windows, "real": [c.real for c in cuts]}, cuts, idx)}
        rows.append(row)
        print(format_row(row), flush=True)
    return rows


def base_sets(cfg: config.Config) -> list[str]:
    """The sampling section of `cfg` as --set overrides (so each try starts from the config file's values)."""
    return [f"sampling.{k}={json.dumps(v)}" for k, v in config.as_dict(cfg)["sampling"].items()
            if k not in ("seed",) and v is not None]


def format_row(row: dict) -> str:
    short = ("repeat_share", "range", "top_interval", "onsets_per_beat", "chord_share", "notes_per_phrase")
    out = [" ".join(row["set"]) or "(config)"]
    for name, e in row["per_corpus"].items():
        cells = " ".join(f"{k.split('_')[0]} {e['model'][k]['median']:.2f}/{e['real'][k]['median']:.2f}"
                         for k in short)
        out.append(f"  {name:16} AUC {e['judge_auc']:.3f} ({e['cuts']} cuts)  model/real: {cells}"
                   f" quoted {e['echo_share']['model']:.3f}/{e['echo_share']['real']:.3f}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m leadline.bench.sweep", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True, help="a cache from `leadline data build`")
    p.add_argument("--config", default=None)
    p.add_argument("--try", dest="tries", action="append", default=[], help="space-separated k=v overrides")
    p.add_argument("--phrases", type=int, default=130, help="sequences per corpus (3 cuts each)")
    p.add_argument("--corpus", action="append", help="only these corpora (default: every one)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json")
    args = p.parse_args(argv)
    info = engine.load_model(args.model)
    base = config.load(args.config)
    seqs = [s for s in leadeval.labelled(cache_mod.load(args.data), "val") if not args.corpus or s[1] in args.corpus]
    cuts = leadeval.pick_cuts(seqs, args.phrases * len(leadeval.CUTS), args.seed, leadeval.CUTS)
    group = np.array([hash(c.seed[:64].tobytes()) for c in cuts])  # cuts of one sequence share its opening
    rows = sweep(info, cuts, group, [t.split() for t in args.tries] or [[]], base, args.seed)
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
