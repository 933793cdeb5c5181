"""Export a trained LSTM to a model directory: the ONNX step graph plus its card, written atomically.

The graph: events (batch, time) int64, h and c (layers, batch, hidden) float32 -> logits (batch, time, vocab),
h_out, c_out. Batch and time are dynamic: time > 1 primes the state from a seed window in one run, batch > 1
samples several continuations at once. The codec version, vocabulary size and model shape are stamped into
the ONNX metadata and the card; the daemon refuses a mismatch.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from daemon import codec
from daemon.errors import UserError
from training.cache import current_umask
from training.model import LeadLSTM, ModelArgs

OPSET = 17
INPUTS = ("events", "h", "c")
OUTPUTS = ("logits", "h_out", "c_out")
CHECKPOINT = "checkpoint.pt"


def export_onnx(model: LeadLSTM, path: str | Path) -> None:
    """Write `model`'s step graph to `path` (TorchScript exporter, opset 17, dynamic batch and time)."""
    model = model.eval()
    events = torch.zeros(2, 3, dtype=torch.long)
    h, c = model.init_state(2)
    dyn = {"events": {0: "batch", 1: "time"}, "logits": {0: "batch", 1: "time"}}
    dyn.update({n: {1: "batch"} for n in ("h", "c", "h_out", "c_out")})
    # The dynamo exporter (torch's default) specialises the logits' time axis to the example's length;
    # the TorchScript exporter keeps it dynamic, so it is chosen explicitly.
    torch.onnx.export(model, (events, h, c), str(path), input_names=list(INPUTS), output_names=list(OUTPUTS),
                      dynamic_axes=dyn, opset_version=OPSET, dynamo=False)
    _stamp(path, model.args)


def _stamp(path: str | Path, args: ModelArgs) -> None:
    import onnx

    proto = onnx.load(str(path))
    meta = {"codec_version": codec.CODEC_VERSION, "vocab_size": args.vocab, "layers": args.layers,
            "hidden": args.hidden, "embed": args.embed}
    del proto.metadata_props[:]
    for k, v in meta.items():
        proto.metadata_props.add(key=k, value=str(v))
    onnx.save(proto, str(path))


def write_model_dir(model: LeadLSTM, out: str | Path, card: dict, force: bool = False) -> Path:
    """Write model.onnx + card.json into `out` atomically; an existing `out` needs `force`."""
    out = Path(out)
    if out.exists() and not force:
        raise UserError(f"{out} exists; pass --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    os.chmod(tmp, 0o755 & ~current_umask())
    try:
        export_onnx(model, tmp / "model.onnx")
        card = dict(card, codec_version=codec.CODEC_VERSION, vocab_size=model.args.vocab,
                    model=model.args.as_dict(), onnx={"opset": OPSET, "inputs": INPUTS, "outputs": OUTPUTS})
        (tmp / "card.json").write_text(json.dumps(card, indent=1, sort_keys=True) + "\n")
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _replace_dir(tmp: Path, out: Path) -> None:
    """Move directory `tmp` to `out`, keeping any other files already in `out` (eval report, loss curve)."""
    if not out.exists():
        os.replace(tmp, out)
        return
    for f in sorted(tmp.iterdir(), key=lambda p: p.name != "card.json"):  # the card last: it vouches for the rest
        os.replace(f, out / f.name)
    tmp.rmdir()


def load_checkpoint(path: str | Path) -> dict:
    """A checkpoint dict ({state_dict, model_args, config, codec_version, step, ...}), safely loaded."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: no checkpoint; train first with `leadline train`") from None
    except Exception as e:  # torch raises many kinds on a corrupt file
        raise UserError(f"{path}: unreadable checkpoint ({type(e).__name__}); retrain or restore it") from None
    if ckpt.get("codec_version") != codec.CODEC_VERSION:
        raise UserError(f"{path}: trained with codec {ckpt.get('codec_version')}, this leadline uses "
                        f"codec {codec.CODEC_VERSION}; retrain on a rebuilt cache")
    return ckpt


def model_from_checkpoint(ckpt: dict) -> LeadLSTM:
    model = LeadLSTM(ModelArgs(**ckpt["model_args"]))
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()


# --- `leadline export` ---------------------------------------------------------------------------------

BEST = "best.pt"


def model_card(ckpt: dict, source: Path) -> dict:
    """The card's training record: data, settings, validation numbers, time and device of the run."""
    import datetime
    import math

    cfg = ckpt.get("config", {})
    best = ckpt.get("best") or {}
    best_val = best.get("val_loss")
    return {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "checkpoint": {"path": str(source), "step": ckpt.get("step"), "epoch": ckpt.get("epoch")},
        "training": {"data": ckpt.get("data", {}), "device": ckpt.get("device"), "torch": ckpt.get("torch"),
                     "seconds": round(float(ckpt.get("elapsed", 0.0)), 1), "steps": ckpt.get("step")},
        "config": {k: cfg[k] for k in ("data", "train") if k in cfg},
        "validation": {"bits_per_event": None if best_val is None else best_val / math.log(2),
                       "epoch": best.get("epoch"), "step": best.get("step")},
    }


def run(args) -> int:
    """`leadline export RUN_DIR --out MODEL_DIR [--force]`: the run's best checkpoint (else its last)."""
    run_dir = Path(args.run_dir)
    source = run_dir / BEST if (run_dir / BEST).exists() else run_dir / CHECKPOINT
    ckpt = load_checkpoint(source)
    card = model_card(ckpt, source)
    out = write_model_dir(model_from_checkpoint(ckpt), args.out, card, force=args.force)
    curve = run_dir / "loss.png"
    if curve.exists():
        tmp = out / ".loss.png.tmp"
        shutil.copyfile(curve, tmp)
        os.replace(tmp, out / "loss.png")
    bits = card["validation"]["bits_per_event"]
    print(f"wrote {out} from {source.name} (step {ckpt.get('step')}"
          + (f", validation {bits:.4f} bits/event)" if bits is not None else ")"))
    return 0
