"""Starting a run from an exported model's weights (`leadline train --init MODEL_DIR`).

A model directory holds only the ONNX step graph (the run's checkpoint may be long gone), so the weights are
read back from it: the embedding, each layer's ONNX LSTM node (W, R, B in ONNX's gate order i, o, f, c;
torch keeps i, f, g, o) and the head's MatMul + Add. The optimizer starts fresh; the learning-rate schedule
(warm-up, cosine) runs again over `train.max_steps`. The card records which model the run started from.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

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
    matmul = [n for n in graph.node if n.op_type == "MatMul"]
    add = [n for n in graph.node if n.op_type == "Add"]
    if len(lstms) != layers or len(matmul) != 1 or len(add) != 1 or "embed.weight" not in init:
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
    return {k: torch.from_numpy(np.array(v, copy=True)) for k, v in sd.items()}


def load_into(model: LeadLSTM, model_dir: str | Path) -> dict:
    """Copy the weights of the model directory `model_dir` into `model`; what the card should say of it."""
    from leadline.daemon import engine

    info = engine.load_model(model_dir)  # the daemon's own checks: card, codec version, sha256
    a = model.args
    shape = {"embed": a.embed, "hidden": a.hidden, "layers": a.layers, "vocab": a.vocab}
    theirs = {"embed": info.embed, "hidden": info.hidden, "layers": info.layers, "vocab": info.vocab}
    if shape != theirs:
        raise UserError(f"--init {model_dir}: its model is {theirs}, this run's is {shape}; set "
                        f"train.embed/hidden/layers to match")
    model.load_state_dict(onnx_state_dict(info.onnx, a.hidden, a.layers))
    digest = hashlib.sha256(info.onnx.read_bytes()).hexdigest()
    return {"model": str(model_dir), "sha256": digest}
