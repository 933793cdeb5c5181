"""Export a trained LSTM to a model directory: the ONNX step graph plus its card, written atomically.

The graph: events (batch, time) int64, harmony (batch, time, 24) float32 (daemon/harmony.py `features`), h and c
(layers, batch, hidden) float32 -> logits (batch, time, vocab), h_out, c_out. Batch and time are dynamic: time > 1
primes the state from a seed window in one run, batch > 1
samples several continuations at once. The codec version, vocabulary size and model shape are stamped into
the ONNX metadata and the card; the daemon refuses a mismatch.
"""
from __future__ import annotations

import glob
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from leadline.daemon import codec
from leadline.daemon.engine import file_sha256
from leadline.daemon.errors import UserError
from leadline.training.cache import current_umask
from leadline.training.callbacks import BEST, CHECKPOINT
from leadline.training.model import LeadLSTM, ModelArgs

OPSET = 17
INPUTS = ("events", "harmony", "h", "c")
OUTPUTS = ("logits", "h_out", "c_out")


def export_onnx(model: LeadLSTM, path: str | Path) -> None:
    """Write `model`'s step graph to `path` (TorchScript exporter, opset 17, dynamic batch and time)."""
    model = model.eval()
    events = torch.zeros(2, 3, dtype=torch.long)
    harm = torch.zeros(2, 3, model.args.harmony)
    h, c = model.init_state(2)
    dyn = {"events": {0: "batch", 1: "time"}, "harmony": {0: "batch", 1: "time"}, "logits": {0: "batch", 1: "time"}}
    dyn.update({n: {1: "batch"} for n in ("h", "c", "h_out", "c_out")})
    # The dynamo exporter (torch's default) specialises the logits' time axis to the example's length;
    # the TorchScript exporter keeps it dynamic, so it is chosen explicitly.
    torch.onnx.export(model, (events, harm, h, c), str(path), input_names=list(INPUTS), output_names=list(OUTPUTS),
                      dynamic_axes=dyn, opset_version=OPSET, dynamo=False)
    _stamp(path, model.args)


def _stamp(path: str | Path, args: ModelArgs) -> None:
    import onnx

    proto = onnx.load(str(path))
    meta = {"codec_version": codec.CODEC_VERSION, "vocab_size": args.vocab, "layers": args.layers,
            "hidden": args.hidden, "embed": args.embed, "harmony": args.harmony}
    del proto.metadata_props[:]
    for k, v in meta.items():
        proto.metadata_props.add(key=k, value=str(v))
    onnx.save(proto, str(path))


def write_model_dir(model: LeadLSTM, out: str | Path, card: dict, force: bool = False,
                    extra: dict[str, Path] | None = None) -> Path:
    """Write model.onnx + card.json (+ `extra` files, name -> source) into `out` atomically.

    An existing `out` needs `force`; its other files (eval report, ...) are kept. The new directory is built
    next to `out` as `.NAME.<pid>.*` and swapped in whole, so a crash at any moment leaves the old model or
    the new one, never a mix; temporary directories of writers that died are removed on the next write.
    """
    out = Path(out)
    if out.is_symlink():  # models/default -> models/v3: replace v3, the link stays
        out = out.resolve()
    _clean_stale(out)  # first: it may put back the old directory of a writer that died
    if out.exists() and not force:
        raise UserError(f"{out} exists; pass --force to replace it")
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a model directory; choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.{os.getpid()}.", dir=out.parent))
    os.chmod(tmp, 0o755 & ~current_umask())
    try:
        export_onnx(model, tmp / "model.onnx")
        card = dict(card, codec_version=codec.CODEC_VERSION, vocab_size=model.args.vocab,
                    model=model.args.as_dict(), onnx={"opset": OPSET, "inputs": INPUTS, "outputs": OUTPUTS},
                    model_sha256=file_sha256(tmp / "model.onnx"))
        (tmp / "card.json").write_text(json.dumps(card, indent=1, sort_keys=True) + "\n")
        for name, src in (extra or {}).items():
            shutil.copyfile(src, tmp / name)
        _replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # the new directory on failure, the old one on success
    return out


def _replace_dir(tmp: Path, out: Path) -> None:
    """Put directory `tmp` at `out` in one step, first copying in `out`'s other files; the old one ends at `tmp`."""
    if not out.exists():
        os.replace(tmp, out)
        return
    for f in out.iterdir():
        if not (tmp / f.name).exists():
            (shutil.copytree if f.is_dir() else shutil.copy2)(f, tmp / f.name)
    if not _exchange(tmp, out):  # no atomic exchange here: two renames, undone by `_clean_stale` if cut between
        old = out.with_name(f".{out.name}.{os.getpid()}.old")
        os.replace(out, old)
        os.replace(tmp, out)
        os.replace(old, tmp)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where the system cannot."""
    import ctypes
    import errno

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _clean_stale(out: Path) -> None:
    """Remove `.NAME.<pid>.*` siblings of `out` whose writer is gone (killed mid-write); if `out` itself is
    missing because a writer died between two renames, its old directory (`.NAME.<pid>.old`) goes back."""
    for p in sorted(out.parent.glob(f".{glob.escape(out.name)}.*")):
        pid, _, tail = p.name[len(out.name) + 2:].partition(".")  # tail: mkdtemp's letters, or "old"
        if not pid.isdigit() or "." in tail or _alive(int(pid)) or not p.is_dir() or p.is_symlink():
            continue
        if tail == "old" and not out.exists():
            os.replace(p, out)
        else:
            shutil.rmtree(p, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
    if not isinstance(ckpt, dict) or not all(k in ckpt for k in ("state_dict", "model_args", "step")):
        raise UserError(f"{path}: not a leadline checkpoint (no state_dict, model_args and step); retrain or "
                        f"restore it")
    if ckpt.get("codec_version") != codec.CODEC_VERSION:
        raise UserError(f"{path}: trained with codec {ckpt.get('codec_version')}, this leadline uses "
                        f"codec {codec.CODEC_VERSION}; retrain on a rebuilt cache")
    return ckpt


def model_from_checkpoint(ckpt: dict, source: str | Path = "checkpoint") -> LeadLSTM:
    """The LSTM of a checkpoint from `load_checkpoint` (read from `source`); UserError if its weights do not fit."""
    try:
        model = LeadLSTM(ModelArgs(**ckpt["model_args"]))
        model.load_state_dict(ckpt["state_dict"])
    except (TypeError, ValueError, RuntimeError) as e:  # model_args or weights tampered with or mismatched
        raise UserError(f"{source}: the model {ckpt['model_args']!r} does not load "
                        f"({type(e).__name__}: {str(e).splitlines()[0][:120]}); retrain or restore it") from None
    return model.eval()


# --- `leadline export` ---------------------------------------------------------------------------------


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
                     "seconds": round(float(ckpt.get("elapsed", 0.0)), 1), "steps": ckpt.get("step"),
                     "init": ckpt.get("init")},
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
    curve = {"loss.png": run_dir / "loss.png"} if (run_dir / "loss.png").exists() else {}
    out = write_model_dir(model_from_checkpoint(ckpt, source), args.out, card, force=args.force, extra=curve)
    bits = card["validation"]["bits_per_event"]
    print(f"wrote {out} from {source.name} (step {ckpt.get('step')}"
          + (f", validation {bits:.4f} bits/event)" if bits is not None else ")"))
    return 0
