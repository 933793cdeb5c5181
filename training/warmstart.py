"""Starting a run from an exported model's weights (`leadline train --init MODEL_DIR`).

A model directory holds only the ONNX step graph (the run's checkpoint may be long gone), so the weights are
read back from it: the embedding, each layer's ONNX LSTM node (W, R, B in ONNX's gate order i, o, f, c;
torch keeps i, f, g, o) and the head's MatMul + Add. The optimizer starts fresh; the learning-rate schedule
(warm-up, cosine) runs again over `train.max_steps`. The card records which model the run started from.

A model of an older codec can start a run too, as long as the codec only grew: codec 2 appended the expression
tokens to codec 1's vocabulary (every old token keeps its id) and added the harmony input. Their weights start
as a fresh model's would (new tokens: the embedding's initialisation and the rarest old token's output bias;
the harmony projection: zero), so the warm-started model plays as the old one did until it learns them.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from leadline.daemon import codec
from leadline.daemon.errors import UserError
from leadline.training.model import LeadLSTM

# torch block k (i, f, g, o) is ONNX block TORCH_FROM_ONNX[k] (i, o, f, c)
TORCH_FROM_ONNX = (0, 2, 3, 1)


def _gates(a: np.ndarray, hidden: int) -> np.ndarray:
    """Rows of an ONNX LSTM weight or bias in torch's gate order."""
    return np.concatenate([a[k * hidden:(k + 1) * hidden] for k in TORCH_FROM_ONNX])


def onnx_state_dict(path: str | Path, hidden: int, layers: int) -> dict[str, torch.Tensor]:
    """The `LeadLSTM` state dict held by the ONNX step graph at `path` (as `export.export_onnx` writes it)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    init = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    lstms = [n for n in graph.node if n.op_type == "LSTM"]
    matmuls = [n for n in graph.node if n.op_type == "MatMul"]
    add = [n for n in graph.node if n.op_type == "Add" and any(i in init for i in n.input)]  # the head's bias
    vocab = len(init["embed.weight"]) if "embed.weight" in init else -1
    weights = [next((init[i] for i in n.input if i in init), None) for n in matmuls]
    matmul = [n for n, w in zip(matmuls, weights) if w is not None and w.shape[0] == hidden]  # the head
    # codec 2's harmony paths: into the LSTM's input (24, embed), onto the logits (24, vocab)
    harm = [w for n, w in zip(matmuls, weights) if w is not None and w.shape[0] != hidden and w.shape[1] != vocab]
    harm_out = [w for n, w in zip(matmuls, weights) if w is not None and w.shape[0] != hidden and w.shape[1] == vocab]
    if (len(lstms) != layers or len(matmul) != 1 or len(harm) > 1 or len(harm_out) > 1 or len(add) != 1
            or "embed.weight" not in init):
        raise UserError(f"{path}: not a leadline step graph of {layers} LSTM layers (found {len(lstms)} LSTM, "
                        f"{len(matmul)} MatMul nodes)")
    sd = {"embed.weight": init["embed.weight"]}
    for i, node in enumerate(lstms):
        w, r, b = (init[name][0] for name in node.input[1:4])
        sd[f"lstm.weight_ih_l{i}"] = _gates(w, hidden)
        sd[f"lstm.weight_hh_l{i}"] = _gates(r, hidden)
        sd[f"lstm.bias_ih_l{i}"] = _gates(b[:4 * hidden], hidden)
        sd[f"lstm.bias_hh_l{i}"] = _gates(b[4 * hidden:], hidden)
    sd["head.weight"] = next(init[n] for n in matmul[0].input if n in init).T
    sd["head.bias"] = next(init[n] for n in add[0].input if n in init)
    if harm:
        sd["harmony.weight"] = harm[0].T
    if harm_out:
        sd["harmony_out.weight"] = harm_out[0].T
    return {k: torch.from_numpy(np.array(v, copy=True)) for k, v in sd.items()}


def load_into(model: LeadLSTM, model_dir: str | Path) -> dict:
    """Copy the weights of the model directory `model_dir` into `model`; what the card should say of it."""
    from leadline.daemon import engine

    try:
        info = engine.load_model(model_dir)  # the daemon's own checks: card, codec version, sha256
        old_codec = None
    except UserError:
        info, old_codec = _older(model_dir)
        if info is None:
            raise
    a = model.args
    shape = {"embed": a.embed, "hidden": a.hidden, "layers": a.layers}
    theirs = {"embed": info.embed, "hidden": info.hidden, "layers": info.layers}
    if shape != theirs:
        raise UserError(f"--init {model_dir}: its model is {theirs}, this run's is {shape}; set "
                        f"train.embed/hidden/layers to match")
    sd = onnx_state_dict(info.onnx, a.hidden, a.layers)
    fresh = model.state_dict()
    n = sd["embed.weight"].shape[0]
    if n > a.vocab:
        raise UserError(f"--init {model_dir}: its vocabulary of {n} tokens is larger than this codec's {a.vocab}")
    for key in ("embed.weight", "head.weight"):
        sd[key] = torch.cat([sd[key], fresh[key][n:]])
    sd["head.bias"] = torch.cat([sd["head.bias"], sd["head.bias"].min().expand(a.vocab - n)])
    for key in ("harmony.weight", "harmony_out.weight"):  # (a model from before either path)
        sd.setdefault(key, fresh[key])
    model.load_state_dict(sd)
    digest = hashlib.sha256(info.onnx.read_bytes()).hexdigest()
    return {"model": str(model_dir), "sha256": digest, **({"codec_version": old_codec} if old_codec else {})}


def _older(model_dir: str | Path):
    """(ModelInfo, its codec version) of a model directory of an older codec this one extends; (None, None)."""
    import json

    from leadline.daemon import engine

    d = Path(model_dir)
    try:
        card = json.loads((d / "card.json").read_text())
        m = card["model"]
        old = int(card["codec_version"])
    except (OSError, ValueError, KeyError, TypeError):
        return None, None
    if old != 1 or codec.CODEC_VERSION != 2 or not (d / "model.onnx").is_file():
        return None, None
    return engine.ModelInfo(d, d / "model.onnx", card, card.get("vocab_size"), m["embed"], m["hidden"],
                            m["layers"]), old
