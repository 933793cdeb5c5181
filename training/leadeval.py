"""Lead-ness and realness for `eval`: 2-bar answers against the real next 2 bars of the same seeds, per corpus.

Cuts: in each eval sequence with enough notes, the bar lines at or before its notes at 40, 60 and 80 % (as a
player would stop and hand over mid-song) are cuts; everything before a cut is its seed (at least 32 notes,
then rests up to the bar line, as the daemon's `rest_until`), the real notes of the 2 bars from the cut are
the real answer and the 2 bars after those a second real window (the real-vs-real floor). A cut without a
note in either real window is skipped. Corpora: the eval data's source folders (`corpus_of`), rock first.

Answers: the model (as it ships, onnxruntime) and the Markov baseline continue every seed from the cut with the
daemon's sampler (`sampling.*` settings, one sampler per seed, so each has its own repetition state) and rests
as the daemon's respond shapes them (`improviser.rest_limit`: the first note on the cut, then as the model likes).
Each answer is the 2-bar window of notes from the cut.

Measures per corpus: `leadline.training.leadstats` medians and quartiles of model, Markov and real windows; the
realness judge (`leadline.training.judge`) trained on the validation split of the training data (generated vs real
windows of its cuts, all corpora) and its ROC AUC on the eval cuts, for the model, the Markov baseline and real vs
real; the 95th percentile of the longest run copied from the training data.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace

import numpy as np

from leadline.daemon import codec, engine, memory
from leadline.daemon.config import SamplingConfig
from leadline.daemon.improviser import mask_rests, rest_limit
from leadline.daemon.sampler import Sampler
from leadline.training import exprharm, features, judge, leadstats
from leadline.training.cache import SPLITS
from leadline.training.markov import _P, PAD, Markov, _mix  # its context hashing, so the hashes match its tables

CUT_AT, SEED_NOTES = 0.6, 32
CUTS = (0.4, 0.6, 0.8)  # the eval's cuts per sequence
MIN_CUTS = 10  # fewer judge training or test windows: no AUC
FIRST = "rock-o-net"  # the target style: reported first
MAX_STEPS = 16 * leadstats.WINDOW // 3  # more tokens than a 2-bar window of 32nd-note triads needs
_NAMES = {"model": "model", "markov": "markov", "real_next": "real_vs_real"}  # judge AUC keys


@dataclass(frozen=True)
class Cut:
    """One seed and its real continuations."""

    corpus: str
    seed: np.ndarray  # BOS .. the last note before the cut, then SHIFTs to it
    start: int  # the cut (a bar line), ticks from the sequence's start
    velocity: int  # the velocity the seed ends in
    real: list  # codec.Note of the 2 bars from the cut
    real_next: list  # the 2 bars after those
    earlier: list = ()  # codec.Note of the seed: what the "player" played (the session memory hears it)
    harm: exprharm.Lookup | None = None  # the backing's harmony over the sequence (None: no backing known)


# --- cuts -------------------------------------------------------------------------------------------------

def corpus_of(names: list[str], most: int = 8, share: float = 0.05) -> dict[str, str]:
    """The corpus of each file name ('source/path/in/it.mid'): its source folder, or, for a source whose files
    sit in a few big subfolders (at most `most`, each with at least `share` of its files, as
    ../shared/data's rock-o-net, wjd-jazz-solos and pop909), that subfolder."""
    out = {}
    for source in sorted({n.split("/", 1)[0] for n in names}):
        mine = [n for n in names if n.split("/", 1)[0] == source]
        sub = [n.split("/")[1] if n.count("/") >= 2 else "" for n in mine]
        groups, counts = np.unique(sub, return_counts=True)
        split = "" not in groups and 1 < len(groups) <= most and counts.min() >= share * len(mine)
        for n, g in zip(mine, sub):
            out[n] = g if split else source.split("@", 1)[0]
    return out


def corpus_labels(c) -> np.ndarray:
    """Per index row of cache `c`, the corpus of its file (`corpus_of`), from the manifest."""
    used = {n: e["song"] for n, e in c.manifest.get("per_file", {}).items() if e.get("status") == "used"}
    corpus = corpus_of(list(used))
    song_corpus = {}
    for name, song in used.items():
        song_corpus.setdefault(song, corpus[name])
    return np.array([song_corpus.get(int(s), "unknown") for s in c.index["song"]], dtype=object)


def labelled(c, split: str | None) -> list[tuple[np.ndarray, str, np.ndarray]]:
    """(tokens, corpus, harmony codes) of every untransposed sequence of `split` (None: every split)."""
    labels = corpus_labels(c)
    rows = np.flatnonzero((c.index["transpose"] == 0)
                          & ((c.index["split"] == SPLITS.index(split)) if split else True))
    harm = c.harmony if c.harmony is not None else np.zeros(len(c.tokens), np.uint16)
    return [(np.asarray(c.tokens[c.index[i]["start"]:c.index[i]["end"]], np.int64), labels[i],
             np.asarray(harm[c.index[i]["start"]:c.index[i]["end"]])) for i in rows]


def make_cut(tokens: np.ndarray, corpus: str, at: float = CUT_AT, notes: list | None = None,
             harm: np.ndarray | None = None) -> Cut | None:
    """The cut of one sequence at the bar line at or before its note at fraction `at`, or None (see the
    module docstring); `notes` are the sequence's notes, when already decoded; `harm` its harmony codes."""
    notes = codec.decode(tokens) if notes is None else notes
    if len(notes) < SEED_NOTES + 2:
        return None
    bar = 4 * codec.TICKS_PER_BEAT
    start = notes[int(at * len(notes))].onset // bar * bar
    before = [n for n in notes if n.onset < start]
    real = leadstats.window(notes, start)
    real_next = leadstats.window(notes, start + leadstats.WINDOW)
    if len(before) < SEED_NOTES or not real or not real_next:
        return None
    kind = codec.TOKEN_KIND[tokens]
    is_note = np.flatnonzero((kind[:-1] == codec.K_NOTE) & (kind[1:] == codec.K_DUR))
    end = int(is_note[len(before) - 1]) + 2  # through the last seed note's DUR
    vel = np.flatnonzero(kind[:end] == codec.K_VEL)
    velocity = codec.bin_velocity(int(codec.TOKEN_VALUE[tokens[vel[-1]]])) if len(vel) else 80
    seed = np.r_[tokens[:end], codec.shift_tokens(start - before[-1].onset)].astype(np.int64)
    lookup = exprharm.Lookup.of(tokens, harm) if harm is not None else None
    return Cut(corpus, seed, start, velocity, real, real_next, before, lookup)


def corpus_order(names) -> list[str]:
    """Corpora in report order: the target style (`FIRST`) first, then by name."""
    return sorted(set(names), key=lambda n: (n != FIRST, n))


def pick_cuts(seqs: list[tuple[np.ndarray, str]], limit: int, seed: int, at=(CUT_AT,)) -> list[Cut]:
    """Up to `limit` cuts per corpus (sequences in a seeded random order, each cut at every fraction of
    `at` that makes a cut), corpora in report order."""
    out = []
    for corpus in corpus_order(c for _, c, *_ in seqs):
        mine = [(t, h[0] if h else None) for t, c, *h in seqs if c == corpus]
        cuts: list[Cut] = []
        for i in np.random.default_rng(seed).permutation(len(mine)):
            tokens, harm = mine[i]
            notes = codec.decode(tokens)
            cuts += [c for a in at if (c := make_cut(tokens, corpus, a, notes, harm)) is not None]
            if len(cuts) >= limit:
                break
        out.extend(cuts[:limit])
    return out


# --- answers ----------------------------------------------------------------------------------------------

def answer(first: np.ndarray, step, cuts: list[Cut], cfg: SamplingConfig, seed: int, hear=None,
           shift: int = 0) -> list[list[codec.Note]]:
    """Sample every cut's 2-bar answer from logits `first` (batch, vocab) and `step(tokens) -> logits`;
    `hear(codes)`, when given, is told each row's backing harmony (moved `shift` semitones) before each step."""
    cfg = replace(cfg, low="C1", high="B7", key=None)  # the eval data's own range, no key
    samplers = [Sampler(cfg, seed=seed * 100_003 + i) for i in range(len(cuts))]
    echo = cfg.echo_player
    memories = [heard(c.earlier) for c in cuts] if echo else []
    recent = [deque(c.seed[-2 * memory.ORDER:].tolist(), maxlen=2 * memory.ORDER) for c in cuts]  # VELs skipped
    decoders = [codec.Decoder(c.start, c.velocity) for c in cuts]
    out: list[list[codec.Note]] = [[] for _ in cuts]
    prev = [int(c.seed[-1]) for c in cuts]
    last = [c.start for c in cuts]  # each answer's last onset
    live = np.ones(len(cuts), bool)
    rows, toks = first, np.zeros(len(cuts), np.int64)
    for _ in range(MAX_STEPS):
        for b in np.flatnonzero(live):
            lg = np.array(rows[b], np.float64)  # rests as the daemon's respond shapes them (first note on the cut)
            if echo:
                memories[b].mix(lg, recent[b], echo, lg)
            limit = rest_limit(not out[b], decoders[b].cursor, last[b], cuts[b].start + leadstats.WINDOW, False)
            if limit <= codec.MAX_SHIFT:
                mask_rests(lg, limit)
            toks[b] = tok = samplers[b].sample(lg, prev[b])
            if (note := decoders[b].feed(tok)) is not None:
                out[b].append(note)
                last[b] = note.onset
            live[b] = decoders[b].cursor < cuts[b].start + leadstats.WINDOW
            prev[b] = tok
            recent[b].append(tok)
        if not live.any():
            break
        if hear is not None:
            hear(harmony_rows(cuts, [d.cursor for d in decoders], shift))
        rows = step(toks)
    return out


def harmony_rows(cuts: list[Cut], ticks: list[int], shift: int = 0) -> np.ndarray:
    """Each cut's backing harmony code at its tick (silence where no backing is known)."""
    return np.array([c.harm.moved(shift).at(t)[0] if c.harm is not None else 0 for c, t in zip(cuts, ticks)],
                    np.uint16)


def heard(notes: list[codec.Note]) -> memory.SessionMemory:
    """A session memory that heard `notes` as the player's (`sampling.echo_player`)."""
    m = memory.SessionMemory()
    m.hear(notes)
    return m


def model_answers(info: engine.ModelInfo, cuts: list[Cut], cfg: SamplingConfig, seed: int, shift: int = 0) -> list:
    """The model's answers: each seed primed in one run (with its backing's harmony beside it), then all stepped
    as one batch, each row hearing its backing (moved `shift` semitones: the tritone check)."""
    if not cuts:
        return []
    eng = engine.CpuEngine(info, threads=1, batch=len(cuts))
    hs, cs, first = [], [], []
    for cut in cuts:
        codes = None
        if cut.harm is not None:
            codes = cut.harm.moved(shift).at(exprharm.Lookup.of(cut.seed, np.zeros(len(cut.seed))).ticks)
        lg, h, c = eng.run_window(cut.seed, codes)
        hs.append(h), cs.append(c), first.append(lg[-1])
    eng.state = (np.concatenate(hs, 1), np.concatenate(cs, 1))
    return answer(np.stack(first), eng.step_batch, cuts, cfg, seed, eng.set_harmony_rows, shift)


def _counts(keys: np.ndarray, values: np.ndarray, query: np.ndarray) -> np.ndarray:
    """values[i] where keys[i] == query (keys sorted), else 0."""
    if not len(keys):
        return np.zeros(query.shape)
    i = np.minimum(np.searchsorted(keys, query), len(keys) - 1)
    return np.where(keys[i] == query, values[i], 0).astype(np.float64)


def markov_probs(m: Markov, ctx: np.ndarray) -> np.ndarray:
    """P(next = x | context) for every x and row of `ctx` (batch, width >= m.order; newest token last), as
    `Markov.order_bits` blends them at the selected order (Kneser-Ney or PPM-C)."""
    sym = np.arange(codec.VOCAB_SIZE, dtype=np.uint64) + np.uint64(1)
    h = np.zeros(len(ctx), np.uint64)
    low = np.full((len(ctx), codec.VOCAB_SIZE), 1.0 / codec.VOCAB_SIZE)
    with np.errstate(over="ignore"):
        for k in range(m.order + 1):
            if k:
                h = _mix(h * _P + ctx[:, -k].astype(np.uint64) + np.uint64(1))
            t = m.raw[k] if k == m.order or m.method == "ppmc" else m.cont[k]
            pair = _mix(h[:, None] ^ (sym[None] * _P))
            n, u = _counts(t.ctx, t.n, h)[:, None], _counts(t.ctx, t.u, h)[:, None]
            c = _counts(t.pair, t.c, pair)
            if m.method == "ppmc":
                p = (c + u * low) / np.maximum(n + u, 1.0)
            else:
                p = (np.maximum(c - t.d, 0.0) + t.d * u * low) / np.maximum(n, 1.0)
            low = np.where(n > 0, p, low)
    return low


class MarkovStepper:
    """Next-token log-probabilities of a fitted Markov model for a batch of growing contexts."""

    def __init__(self, m: Markov, contexts: list[np.ndarray]) -> None:
        self.m, width = m, max(m.order, 1)
        self.ctx = np.full((len(contexts), width), PAD, np.int64)  # newest token last
        for b, c in enumerate(contexts):
            tail = np.asarray(c, np.int64)[-width:]
            self.ctx[b, width - len(tail):] = tail

    def logits(self) -> np.ndarray:
        return np.log(np.maximum(markov_probs(self.m, self.ctx), 1e-300))

    def step(self, toks: np.ndarray) -> np.ndarray:
        self.ctx = np.c_[self.ctx[:, 1:], toks]
        return self.logits()


def markov_answers(m: Markov, cuts: list[Cut], cfg: SamplingConfig, seed: int) -> list:
    """The Markov baseline's answers, sampled like the model's."""
    if not cuts:
        return []
    stepper = MarkovStepper(m, [c.seed for c in cuts])
    return answer(stepper.logits(), stepper.step, cuts, cfg, seed)


# --- the report -------------------------------------------------------------------------------------------

def copies(windows: list[list[codec.Note]], train_syms: list[np.ndarray]) -> np.ndarray:
    """The longest run of each window's notes copied verbatim from the training data (features' symbols)."""
    syms = [features.note_symbols([n.onset for n in w], [n.pitch for n in w], [n.duration for n in w])
            for w in windows]
    return features.longest_copies(syms, train_syms)


def _rows(windows: list[list[codec.Note]]) -> np.ndarray:
    return np.array([leadstats.features(w) for w in windows]).reshape(len(windows), len(leadstats.FEATURES))


def judged(val: dict, test: dict, masks: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """{name: {corpus: AUC}}: for each name, a judge fitted on its validation (generated, real) feature rows,
    scored on its eval rows within each corpus mask."""
    out = {}
    for name, (gen, real) in val.items():
        j = judge.fit(np.r_[gen, real], np.r_[np.ones(len(gen)), np.zeros(len(real))])
        tg, tr = test[name]
        out[name] = {c: judge.auc(np.r_[j.score(tg[m]), j.score(tr[m])], np.r_[np.ones(m.sum()), np.zeros(m.sum())])
                     for c, m in masks.items()}
    return out


def answers(info, markov: Markov | None, cuts: list[Cut], cfg: SamplingConfig, seed: int) -> dict[str, list]:
    """Windows of `cuts`: the model's and the Markov baseline's answers, the real ones and the real next ones."""
    out = {"model": model_answers(info, cuts, cfg, seed)}
    if markov is not None:
        out["markov"] = markov_answers(markov, cuts, cfg, seed)
    return out | {"real": [c.real for c in cuts], "real_next": [c.real_next for c in cuts]}


def echo_shares(windows: dict[str, list], cuts: list[Cut], idx: np.ndarray) -> dict[str, float]:
    """Per kind of window (model, Markov, real): the mean `leadstats.echo_share` over the cuts `idx` whose window
    has 4 onsets or more: how much of each answer's pitch 4-grams the song played before the cut."""
    out = {}
    for k in ("model", "markov", "real"):
        if k in windows:
            v = np.array([leadstats.echo_share(windows[k][i], cuts[i].earlier) for i in idx])
            out[k] = float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
    return out


def lead_report(info, markov: Markov | None, eval_seqs: list, val_seqs: list, train_syms: list[np.ndarray],
                cfg: SamplingConfig, phrases: int, seed: int, at=CUTS) -> dict:
    """Lead statistics, judge AUCs and copying per corpus of the eval sequences (see the module docstring).

    `eval_seqs` and `val_seqs` are (tokens, corpus) lists, `phrases` the sequences per corpus; the judge
    trains on `val_seqs`' cuts."""
    test, val = (pick_cuts(s, phrases * len(at), seed, at) for s in (eval_seqs, val_seqs))
    names = corpus_order(c.corpus for c in test)
    report = {"corpora": names, "cuts_at": list(at), "window_ticks": leadstats.WINDOW,
              "phrase_rest_ticks": leadstats.PHRASE_REST, "val_cuts": len(val), "per_corpus": {}}
    if not test:
        return report
    w_test, w_val = answers(info, markov, test, cfg, seed), answers(info, markov, val, cfg, seed + 1)
    corpus = np.array([c.corpus for c in test])
    masks = {c: corpus == c for c in names} | ({"all": np.ones(len(test), bool)} if len(names) > 1 else {})
    auc = {}
    if len(val) >= MIN_CUTS:
        gen = [k for k in w_test if k != "real"]
        f_test, f_val = ({k: _rows(w[k]) for k in w} for w in (w_test, w_val))
        auc = judged({_NAMES[k]: (f_val[k], f_val["real"]) for k in gen},
                     {_NAMES[k]: (f_test[k], f_test["real"]) for k in gen}, masks)
    cp = copies(w_test["model"] + w_test["real"], train_syms)
    tritone = model_answers(info, test, cfg, seed, exprharm.TRITONE)
    for c, m in masks.items():
        idx = np.flatnonzero(m)
        backed = [i for i in idx if test[i].harm is not None]
        own = [test[i].harm for i in backed]
        report["per_corpus"][c] = {
            "cuts": len(idx),
            "stats": {k: leadstats.summary([w_test[k][i] for i in idx]) for k in w_test if k != "real_next"},
            "judge_auc": {k: v[c] for k, v in auc.items()} if len(idx) >= MIN_CUTS else {},
            "echo_share": echo_shares(w_test, test, idx),
            "copy_longest_p95": float(np.percentile(cp[idx], 95)),
            "copy_longest_p95_real": float(np.percentile(cp[len(test) + idx], 95)),
            "expression": {k: exprharm.expression_stats([w_test[k][i] for i in idx]) for k in ("model", "real")},
            "chord_tones": {
                "model": exprharm.chord_tone_share([w_test["model"][i] for i in backed], own),
                "real": exprharm.chord_tone_share([w_test["real"][i] for i in backed], own),
                "model_tritone": exprharm.chord_tone_share([tritone[i] for i in backed],
                                                           [h.moved(exprharm.TRITONE) for h in own]),
                "real_vs_tritone": exprharm.chord_tone_share([w_test["real"][i] for i in backed],
                                                             [h.moved(exprharm.TRITONE) for h in own])}}
    return report


def format_lead(r: dict) -> list[str]:
    """The lead section of the printed report: per corpus, median [IQR] of model, Markov and real windows."""
    lines = [f"lead: 2-bar windows after cuts at {', '.join(f'{a:.0%}' for a in r['cuts_at'])} of each "
             f"sequence; judge trained on {r['val_cuts']} validation cuts"]
    short = {"repeat_share": "repeated onsets", "longest_run": "longest repeat run", "range": "range (st)",
             "top_interval": "top-note interval", "onsets_per_beat": "onsets per beat",
             "chord_share": "chord share", "notes_per_phrase": "notes per phrase"}
    for c in r["corpora"] + (["all"] if "all" in r["per_corpus"] else []):
        e = r["per_corpus"][c]
        cols = list(e["stats"])
        lines += [f"  {c}, {e['cuts']} cuts", f"    {'median [IQR]':22}" + "".join(f"{k:>22}" for k in cols)]
        for k in leadstats.STATS:
            cells = [e["stats"][col][k] for col in cols]
            lines.append(f"    {short[k]:22}" + "".join(f"{_cell(s):>22}" for s in cells))
        if e["judge_auc"]:
            lines.append("    judge AUC (0.5: indistinguishable): " + ", ".join(
                f"{k.replace('_', ' ')} {v:.2f}" for k, v in e["judge_auc"].items()))
        if e.get("echo_share"):
            lines.append("    pitch 4-grams found in the song before the cut (mean share): " + ", ".join(
                f"{k} {v:.3f}" for k, v in e["echo_share"].items()))
        lines.append(f"    longest copy from the training data, p95: {e['copy_longest_p95']:.0f} notes "
                     f"(real: {e['copy_longest_p95_real']:.0f})")
        if e.get("expression"):
            x = e["expression"]
            lines.append("    notes bent / with vibrato (pooled): " + ", ".join(
                f"{k} {x[k]['bent_share']:.3f} / {x[k]['vibrato_share']:.4f}" for k in x))
        if e.get("chord_tones"):
            t = e["chord_tones"]
            lines.append("    chord tones among notes on a beat over the backing: " + ", ".join(
                f"{k.replace('_', ' ')} {v['share']:.3f} (n={v['notes']})" for k, v in t.items()))
    return lines


def _cell(s: dict) -> str:
    return "-" if s["n"] == 0 else f"{s['median']:.2f} [{s['q25']:.2f}-{s['q75']:.2f}]"
