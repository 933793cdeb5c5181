"""`leadline bench` sections "ingest" and "train": the offline side's throughput (needs the training extra).

ingest: files/s of `leadline data build` over ../shared/data with every core (what CI and users run).
train: training events/s of the default model's shape (and its neighbours) on the CPU, and on the GPU when
there is one: AdamW steps of batch 32 x 128 events on random tokens, the trainer's inner loop.
"""
from __future__ import annotations

import time
from pathlib import Path

from leadline.bench.run import Bench, section

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@section("ingest")
def bench_ingest(b: Bench) -> dict:
    from leadline.daemon.config import DataConfig
    from leadline.training import ingest

    if not DATA.is_dir():
        return {"skipped": f"no corpus at {DATA}"}
    sources = [str(DATA / "wjd-jazz-solos")] if b.quick else [str(DATA)]
    t0 = time.perf_counter()
    built = ingest.build(sources, DataConfig(), progress=False)
    dt = time.perf_counter() - t0
    files = built.manifest["files"]["seen"]
    return {"files": files, "seconds": round(dt, 2), "files_per_s": round(files / dt, 1),
            "events": int(len(built.tokens)), "sources": sources}


def _train_rate(hidden: int, device: str, seconds: float) -> dict:
    import torch

    from leadline.training.model import LeadLSTM, ModelArgs

    torch.manual_seed(0)
    model = LeadLSTM(ModelArgs(hidden=hidden)).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randint(1, model.args.vocab, (32, 129), device=device)
    harm = (torch.rand(32, 128, model.args.harmony, device=device) < 0.25).float()  # some backing heard
    h, c = model.init_state(32, device)
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or steps < 3:
        logits, _, _ = model(x[:, :-1], harm, h, c)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        steps += 1
    if device == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    return {"events_per_s": round(steps * 32 * 128 / dt), "steps": steps, "threads": torch.get_num_threads()}


@section("train")
def bench_train(b: Bench) -> dict:
    try:
        import torch
    except ModuleNotFoundError:
        return {"skipped": "torch is not installed (pip install -e '.[train]')"}
    seconds = 2.0 if b.quick else 20.0
    out = {f"cpu_hidden_{h}": _train_rate(h, "cpu", seconds) for h in ((256,) if b.quick else (256, 384, 512))}
    if torch.cuda.is_available():
        out.update({f"cuda_hidden_{h}": _train_rate(h, "cuda", seconds) for h in (256, 384, 512)})
    else:
        out["cuda"] = {"skipped": "no CUDA device"}
    return out
