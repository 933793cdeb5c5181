"""`leadline eval`: an exported model's held-out bits/event and accuracy against unigram and Markov baselines,
the quality (Yang & Lerch overlap areas) and originality (longest copy) of its continuations, and how much
its 2-bar answers sound like a lead line (`leadline.training.leadeval`: lead statistics and a realness judge).

The model runs as it ships: the exported model.onnx under onnxruntime (`engine.threads` threads), sequences
batched, the state carried from window to window, every sequence scored from a zero state at its BOS (the baselines
likewise). Eval data is a cache (its `--split`) or MIDI folders, ingested on the fly with the model's data rules;
of folders every lead line is evaluated, whatever split the song hash gives it. Baselines train on the training
split of `--train-data` (default: the training cache, else the sources, recorded in the model card); the Markov
order is chosen on that data's validation split.

Generation: for up to `--phrases` eval sequences with enough notes, the first 32 notes are the seed and the
model continues for as many notes as the real continuation (at most 64), sampled with `leadline.daemon.sampler` as the
daemon samples (the `sampling.*` settings: temperature, top-p, repetition penalty; one seeded sampler per
phrase; the note range opened to the codec's, no key). Lead-ness: up to `--phrases` sequences per corpus, each
cut at 40, 60 and 80 % (see `leadline.training.leadeval`), answered by the model and the Markov baseline.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from leadline.daemon import codec, config, engine, harmony
from leadline.daemon.errors import UserError
from leadline.daemon.sampler import Sampler
from leadline.training import cache as cache_mod
from leadline.training import features, leadeval
from leadline.training.dataset import IGNORE, PAD_INPUT
from leadline.training.markov import Markov, Unigram

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[1]
SEED_NOTES, MAX_NOTES, MIN_NOTES = 32, 64, 8
MIN_PHRASES = 10  # fewer: the distance distributions (and the half-vs-half reference) mean nothing


# --- data -----------------------------------------------------------------------------------------------

def resolve(path: str | Path) -> Path | None:
    """`path` as given (absolute or relative to the cwd), else relative to the repository root; None if absent."""
    for p in (Path(path), REPO / path):
        if p.exists():
            return p
    return None


def load_data(inputs: list[str], data_cfg: config.DataConfig) -> tuple[cache_mod.Cache, str]:
    """A cache directory (loaded) or MIDI files/folders (ingested now): the cache and 'cache' or 'midi'."""
    paths = []
    for p in inputs:
        if (r := resolve(p)) is None:
            raise UserError(f"{p}: no such cache or MIDI folder")
        paths.append(r)
    is_cache = [cache_mod.is_cache(p) for p in paths]
    if all(is_cache):
        if len(paths) > 1:
            raise UserError(f"{' '.join(inputs)}: give one cache directory (or MIDI folders, not caches)")
        return cache_mod.load(paths[0]), "cache"
    if any(is_cache):
        raise UserError(f"{' '.join(inputs)}: mixes a cache with MIDI folders; give one or the other")
    from leadline.training import ingest

    return ingest.build([str(p) for p in paths], data_cfg, progress=True), "midi"


def default_train_data(card: dict) -> list[str]:
    """The model card's training cache if it is here, else its MIDI sources."""
    d = card.get("training", {}).get("data", {})
    for p in (d.get("cache"), d.get("cache_abs")):
        if p and (r := resolve(p)) is not None and cache_mod.is_cache(r):
            return [str(r)]
    sources = [resolve(s) for s in d.get("sources", [])]
    if sources and all(sources):
        return [str(s) for s in sources]
    raise UserError(f"the model card's training data ({d.get('cache') or d.get('sources') or 'none recorded'})"
                    f" is not here; pass --train-data CACHE_OR_FOLDERS")


def eval_config(args, card: dict) -> config.Config:
    """Settings from --config/--set; without --config the data rules default to the model's own."""
    recorded = card.get("config", {}).get("data", {}) if not args.config else {}
    rules = [f"data.{k}={json.dumps(v)}" for k, v in recorded.items()]
    return config.load(args.config, rules + list(args.overrides))


# --- likelihood -----------------------------------------------------------------------------------------

_EXPR = np.isin(codec.TOKEN_KIND, codec.EXPRESSION_KINDS)


def token_stats(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Over the targets `y` (IGNORE skipped) of `logits`: [nll nats, top-1 hits, top-5 hits, events, then the
    notes' share: nll nats of the targets that are not expression tokens with the expression tokens'
    probability taken out (what a codec 1 model's bits/event measured), their count, then the nll nats of the
    expression targets and their count]."""
    m = y != IGNORE
    lg, tgt = logits[m].astype(np.float64), y[m]
    mx = lg.max(axis=1, keepdims=True)
    ex = np.exp(lg - mx)
    lse = mx[:, 0] + np.log(ex.sum(axis=1))
    lse_notes = mx[:, 0] + np.log(ex[:, ~_EXPR].sum(axis=1))
    at = lg[np.arange(len(tgt)), tgt]
    higher = (lg > at[:, None]).sum(axis=1)
    is_expr = _EXPR[tgt]
    return np.array([float((lse - at).sum()), (higher == 0).sum(), (higher < 5).sum(), len(tgt),
                     float((lse_notes - at)[~is_expr].sum()), (~is_expr).sum(),
                     float((lse - at)[is_expr].sum()), is_expr.sum()], np.float64)


def score(sess, info: engine.ModelInfo, seqs: list[np.ndarray], batch: int = 16, window: int = 512,
          harm: list[np.ndarray] | None = None) -> np.ndarray:
    """Per sequence, `token_stats` of the ONNX model over it (each from a zero state), the backing's harmony codes
    `harm` beside the tokens (None: no backing): an array (sequences, 8)."""
    from tqdm import tqdm

    order = np.argsort([len(s) for s in seqs], kind="stable")
    per = np.zeros((len(seqs), 8))
    for i in tqdm(range(0, len(order), batch), desc="score", unit="batch", leave=False):
        rows = order[i:i + batch]
        group = [np.asarray(seqs[j], np.int64) for j in rows]
        width = max(len(s) for s in group) - 1
        x = np.full((len(group), width), PAD_INPUT, np.int64)
        y = np.full((len(group), width), IGNORE, np.int64)
        codes = np.zeros((len(group), width), np.uint16)
        for b, s in enumerate(group):
            x[b, :len(s) - 1], y[b, :len(s) - 1] = s[:-1], s[1:]
            if harm is not None:
                codes[b, :len(s) - 1] = harm[rows[b]][:len(s) - 1]
        h = c = np.zeros(info.state_shape(len(group)), np.float32)
        for t in range(0, width, window):
            feed = {"events": x[:, t:t + window], "harmony": harmony.features(codes[:, t:t + window]), "h": h, "c": c}
            logits, h, c = sess.run(None, feed)
            for b, j in enumerate(rows):
                per[j] += token_stats(logits[b:b + 1], y[b:b + 1, t:t + window])
    return per


def summed(per: np.ndarray) -> dict:
    """The report's likelihood numbers from `score`'s rows."""
    t = per.sum(axis=0)
    n = max(t[3], 1)
    return {"nll_bits_per_event": t[0] / n / math.log(2), "top1": t[1] / n, "top5": t[2] / n,
            "n_events": int(t[3]), "notes_nll_bits_per_event": t[4] / max(t[5], 1) / math.log(2),
            "expression_events": int(t[7]),
            "expression_nll_bits_per_token": t[6] / t[7] / math.log(2) if t[7] else None}


# --- generation -----------------------------------------------------------------------------------------

def make_phrases(seqs: list[np.ndarray], limit: int, seed: int) -> list[tuple[np.ndarray, list[codec.Note]]]:
    """Up to `limit` (seed tokens, real continuation notes) pairs from sequences with enough notes."""
    picks = []
    for s in seqs:
        onset, _, _ = features.token_notes(s)
        if len(onset) >= SEED_NOTES + MIN_NOTES:
            picks.append(s)
    chosen = sorted(np.random.default_rng(seed).permutation(len(picks))[:limit])
    out = []
    for i in chosen:
        s = np.asarray(picks[i], np.int64)
        kind = codec.TOKEN_KIND[s]
        notes_at = np.flatnonzero((kind[:-1] == codec.K_NOTE) & (kind[1:] == codec.K_DUR))
        end = int(notes_at[SEED_NOTES - 1]) + 2  # the seed ends with its 32nd note's DUR
        real = codec.decode(s)[SEED_NOTES:SEED_NOTES + MAX_NOTES]
        out.append((s[:end], real))
    return out


def generate(info: engine.ModelInfo, phrases: list, seed: int,
             sampling: config.SamplingConfig = config.SamplingConfig()) -> list[list[codec.Note]]:
    """Continue each seed for as many notes as its real continuation, all phrases stepped as one batch."""
    eng = engine.CpuEngine(info, threads=1, batch=len(phrases))
    states, logits, decoders = [], [], []
    for tokens, _ in phrases:
        lg, h, c = eng.run_window(tokens)
        states.append((h, c))
        logits.append(lg[-1])
        decoders.append(codec.Decoder())
        for t in tokens:
            decoders[-1].feed(int(t))
    eng.state = (np.concatenate([h for h, _ in states], 1), np.concatenate([c for _, c in states], 1))
    cfg = replace(sampling, low="C1", high="B7", key=None)
    samplers = [Sampler(cfg, seed=seed * 100_003 + b) for b in range(len(phrases))]  # one repetition state each
    want = [len(real) for _, real in phrases]
    out: list[list[codec.Note]] = [[] for _ in phrases]
    prev = [int(tokens[-1]) for tokens, _ in phrases]
    rows = np.stack(logits)
    for _ in range(12 * max(want) + 64):
        toks = np.array([samplers[b].sample(rows[b], prev[b]) for b in range(len(phrases))], np.int64)
        for b, t in enumerate(toks):
            if len(out[b]) < want[b] and (note := decoders[b].feed(int(t))) is not None:
                out[b].append(note)
        if all(len(o) >= w for o, w in zip(out, want)):
            break
        rows, prev = eng.step_batch(toks), toks.tolist()
    return out


def train_symbols(train: list[np.ndarray]) -> list[np.ndarray]:
    """The training sequences as copy symbols (`features.note_symbols`)."""
    return [features.note_symbols(*features.token_notes(s)) for s in train]


def quality(phrases: list, generated: list[list[codec.Note]], train_syms: list[np.ndarray], seed: int) -> dict:
    """Overlap areas (with the real-vs-real reference) and the 95th percentile of the longest copies."""
    pairs = [(seed_toks, real, gen) for (seed_toks, real), gen in zip(phrases, generated) if gen]
    if len(pairs) < MIN_PHRASES:
        return {"oa": None, "oa_reference": None, "copy_longest_p95": None, "copy_longest_p95_real": None,
                "n_phrases": len(pairs)}
    real = [features.phrase_features(r) for _, r, _ in pairs]
    gen = [features.phrase_features(g) for _, _, g in pairs]

    def syms(seed_toks, notes):
        last = int(features.token_notes(seed_toks)[0][-1])
        return features.note_symbols([n.onset for n in notes], [n.pitch for n in notes],
                                     [n.duration for n in notes], prev_onset=last)

    copies = features.longest_copies([syms(s, g) for s, _, g in pairs], train_syms)
    copies_real = features.longest_copies([syms(s, r) for s, r, _ in pairs], train_syms)
    return {"oa": features.oa(real, gen), "oa_reference": features.oa_reference(real, seed),
            "copy_longest_p95": float(np.percentile(copies, 95)),
            "copy_longest_p95_real": float(np.percentile(copies_real, 95)), "n_phrases": len(pairs)}


# --- the whole evaluation -------------------------------------------------------------------------------

def baselines(train: list[np.ndarray], val: list[np.ndarray], test: list[np.ndarray]) -> tuple[dict, Markov]:
    """Unigram and Markov bits/event on `test`, the Markov order chosen on `val` (else the default); the
    fitted Markov model."""
    uni = Unigram().fit(train)
    markov = Markov().fit(train)
    if val:
        markov.select_order(val)
    else:
        log.warning("the training data has no validation split: Markov order %d, not chosen", markov.order)
    return {"unigram_nll_bits_per_event": uni.nll_bits(test), "markov_nll_bits_per_event": markov.nll_bits(test),
            "markov_order": markov.order}, markov


def evaluate(info: engine.ModelInfo, test: list[np.ndarray], train: list[np.ndarray], val: list[np.ndarray],
             seed: int = 0, phrases: int = 100, sampling: config.SamplingConfig = config.SamplingConfig(),
             test_corpora: list[str] | None = None, val_corpora: list[str] | None = None, threads: int = 1,
             test_harm: list[np.ndarray] | None = None, test_labelled: list | None = None,
             val_labelled: list | None = None) -> dict:
    """The report's numbers (see `run`) for eval sequences `test` and the baselines' `train` and `val`;
    `*_corpora` label each sequence with its corpus for the lead section (default: one corpus, 'data');
    `threads`: onnxruntime's threads for scoring (0: all cores); `test_harm`: the backing's harmony codes
    beside each test sequence; `*_labelled`: (tokens, corpus, harmony) triples for the lead section."""
    if not test:
        raise UserError("no sequences to evaluate (empty split or no lead lines in the eval data)")
    if not train:
        raise UserError("the baselines' training data has no training sequences; pass another --train-data")
    sess = engine.session(info.onnx, engine.cpu_options(threads=threads), ["CPUExecutionProvider"])
    per = score(sess, info, test, harm=test_harm)
    report = summed(per)
    report["n_sequences"] = len(test)
    if test_harm is not None:  # the same model with the harmony zeroed: what listening to the backing buys
        deaf = score(sess, info, test)
        report["no_harmony_nll_bits_per_event"] = summed(deaf)["nll_bits_per_event"]
        report["per_corpus_bits"] = {
            c: {"with_harmony": summed(per[m])["nll_bits_per_event"],
                "no_harmony": summed(deaf[m])["nll_bits_per_event"],
                "notes": summed(per[m])["notes_nll_bits_per_event"], "sequences": int(m.sum())}
            for c in leadeval.corpus_order(test_corpora or ["data"])
            for m in [np.array(test_corpora or ["data"] * len(test)) == c]}
    numbers, markov = baselines(train, val, test)
    report.update(numbers)
    report["improvement_vs_markov"] = (numbers["markov_nll_bits_per_event"] - report["nll_bits_per_event"]) \
        / numbers["markov_nll_bits_per_event"]
    chosen = make_phrases(test, phrases, seed)
    generated = generate(info, chosen, seed, sampling) if chosen else []
    train_syms = train_symbols(train)
    q = quality(chosen, generated, train_syms, seed)
    report.update({k: v for k, v in q.items() if k != "n_phrases"})
    report["generation"] = {"phrases": q["n_phrases"], "seed_notes": SEED_NOTES, "max_notes": MAX_NOTES,
                            "temperature": sampling.temperature, "top_p": sampling.top_p,
                            "repeat_penalty": sampling.repeat_penalty, "seed": seed}
    report["lead"] = leadeval.lead_report(
        info, markov, test_labelled or list(zip(test, test_corpora or ["data"] * len(test))),
        val_labelled or list(zip(val, val_corpora or ["data"] * len(val))), train_syms, sampling, phrases, seed)
    report["sampling"] = asdict(sampling)
    return report


def format_table(r: dict) -> str:
    """The report as a few readable lines."""
    m, d = r["model"], r["data"]
    lines = [f"model   {m['dir']}  ({m['shape'].get('layers')}x{m['shape'].get('hidden')} LSTM, codec "
             f"{r['codec_version']})",
             f"data    {' '.join(d['inputs'])} ({d['split']}): {r['n_sequences']} sequences, "
             f"{r['n_events']:,} events",
             f"{'':24}{'bits/event':>11}{'top-1':>8}{'top-5':>8}",
             f"{'LSTM (onnxruntime)':24}{r['nll_bits_per_event']:>11.4f}{r['top1']:>8.3f}{r['top5']:>8.3f}",
             f"{'Markov (order %d)' % r['markov_order']:24}{r['markov_nll_bits_per_event']:>11.4f}",
             f"{'unigram':24}{r['unigram_nll_bits_per_event']:>11.4f}",
             f"improvement vs Markov: {100 * r['improvement_vs_markov']:.1f} %",
             f"notes only (expression tokens' probability taken out): {r['notes_nll_bits_per_event']:.4f} "
             f"bits/event; {r['expression_events']:,} expression tokens"
             + (f", {r['expression_nll_bits_per_token']:.3f} bits each" if r.get("expression_nll_bits_per_token")
                else "")]
    if r.get("no_harmony_nll_bits_per_event"):
        lines.append(f"harmony zeroed (same model, no backing heard): {r['no_harmony_nll_bits_per_event']:.4f} "
                     f"bits/event; harmony lowers it by "
                     f"{100 * (1 - r['nll_bits_per_event'] / r['no_harmony_nll_bits_per_event']):.1f} %")
        for c, v in r.get("per_corpus_bits", {}).items():
            lines.append(f"  {c:14} {v['with_harmony']:.4f} with harmony, {v['no_harmony']:.4f} without, "
                         f"notes only {v['notes']:.4f} ({v['sequences']} sequences)")
    g = r["generation"]
    sampling = f"T={g['temperature']}, top-p {g['top_p']}, repeat penalty {g.get('repeat_penalty', 0)}"
    if r.get("oa"):
        names = features.FEATURES + ("mean",)
        short = {"pitch_class_histogram": "PCH", "pitch_range": "range", "mean_abs_interval": "interval",
                 "ioi_mean": "IOI", "note_length_mean": "length", "mean": "mean"}
        lines += [f"generation: {g['phrases']} phrases, {g['seed_notes']}-note seeds, {sampling}",
                  f"  {'overlap area':16}" + "".join(f"{short[n]:>9}" for n in names),
                  f"  {'model vs real':16}" + "".join(f"{r['oa'][n]:>9.3f}" for n in names),
                  f"  {'real vs real':16}" + "".join(f"{r['oa_reference'][n]:>9.3f}" for n in names),
                  f"  longest copy from the training data, p95: {r['copy_longest_p95']:.0f} notes "
                  f"(real continuations: {r['copy_longest_p95_real']:.0f})"]
    else:
        lines.append(f"generation: {g['phrases']} eval sequences with {SEED_NOTES + MIN_NOTES}+ notes, "
                     f"too few to compare (needs {MIN_PHRASES})")
    if r.get("lead", {}).get("per_corpus"):
        lines += leadeval.format_lead(r["lead"])
    return "\n".join(lines)


def of_corpus(labelled: list, corpus: str | None, which: str) -> list:
    """The (tokens, corpus) pairs of `corpus` (None: all); UserError when it has none."""
    if corpus is None:
        return labelled
    mine = [x for x in labelled if x[1] == corpus]
    if not mine:
        names = ", ".join(leadeval.corpus_order({x[1] for x in labelled})) or "none"
        raise UserError(f"--corpus {corpus!r}: no such corpus in the {which} (it has: {names})")
    return mine


def lead_only(info, labelled: list, val_labelled: list, train: list, sampling: config.SamplingConfig, args) -> int:
    """`--lead-only`: the lead section alone (no bits/event, baselines or overlap areas; no Markov column)."""
    r = leadeval.lead_report(info, None, labelled, val_labelled, train_symbols(train), sampling,
                             getattr(args, "phrases", 100), args.seed)
    report = {"lead": r, "sampling": asdict(sampling), "model": {"dir": str(args.model)},
              "data": {"inputs": list(args.data), "split": args.split, "corpus": args.corpus}}
    print(f"lead only: {args.model} on {' '.join(args.data)} ({args.split}); sampling {asdict(sampling)}")
    if r["per_corpus"]:
        print("\n".join(leadeval.format_lead(r)))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
    return 0


def run(args) -> int:
    """`leadline eval --model DIR --data CACHE|FOLDERS... [--train-data ...] [--split test] [--json FILE]`."""
    info = engine.load_model(args.model)
    cfg = eval_config(args, info.card)
    if args.split not in cache_mod.SPLITS:
        raise UserError(f"--split {args.split!r}: expected one of {', '.join(cache_mod.SPLITS)}")
    data, kind = load_data(args.data, cfg.data)
    labelled = of_corpus(leadeval.labelled(data, args.split if kind == "cache" else None), args.corpus, "data")
    test = [t for t, *_ in labelled]
    test_harm = [h for *_, h in labelled]
    train_inputs = args.train_data or default_train_data(info.card)
    tdata, tkind = load_data(train_inputs, cfg.data)
    train, val_labelled = tdata.sequences("train"), of_corpus(leadeval.labelled(tdata, "val"), args.corpus, "train")
    val = [t for t, *_ in val_labelled]
    if kind == "midi" and tkind == "midi" and {resolve(p) for p in args.data} & {resolve(p) for p in train_inputs}:
        log.warning("the eval folders are also training sources: part of the eval data is training data")
    if args.lead_only:
        return lead_only(info, labelled, val_labelled, train, cfg.sampling, args)
    report = evaluate(info, test, train, val, seed=args.seed, phrases=getattr(args, "phrases", 100),
                      sampling=cfg.sampling, test_corpora=[c for _, c, _ in labelled],
                      val_corpora=[c for _, c, _ in val_labelled], threads=cfg.engine.threads,
                      test_harm=test_harm, test_labelled=labelled, val_labelled=val_labelled)
    report.update(model={"dir": str(args.model), "shape": info.card.get("model", {}),
                         "validation": info.card.get("validation"), "created": info.card.get("created")},
                  codec_version=codec.CODEC_VERSION,
                  data={"inputs": list(args.data), "kind": kind, "split": args.split if kind == "cache" else "all"},
                  train_data={"inputs": list(train_inputs), "kind": tkind, "train_events": int(sum(map(len, train))),
                              "train_sequences": len(train), "val_sequences": len(val)})
    print(format_table(report))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
    return 0
