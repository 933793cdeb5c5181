"""The lead-line LSTM: token embedding plus a projection of the backing's harmony (codec 2: 24 numbers a step,
daemon/harmony.py), stacked LSTM, one softmax head over the codec vocabulary."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from leadline.daemon import codec, harmony


@dataclass(frozen=True)
class ModelArgs:
    vocab: int = codec.VOCAB_SIZE
    embed: int = 128
    hidden: int = 384
    layers: int = 2
    dropout: float = 0.2
    harmony: int = harmony.N_FEATURES

    def as_dict(self) -> dict:
        return asdict(self)


class LeadLSTM(nn.Module):
    """events (B, T) int64, harmony (B, T, 24) float32, state (h, c) each (layers, B, hidden) -> logits
    (B, T, vocab), new state. The harmony reaches the model twice: projected into the LSTM's input (added to
    the token embedding: the state can follow the changes) and straight onto the logits (`harmony_out`: a
    chord-tone prior per token, which a warm-started LSTM learns in far fewer steps; with the input path alone
    one epoch from the codec 1 weights left the harmony unused, 0.0 % fewer bits). Both start at zero: a fresh
    model, or one started from a codec 1 model's weights, plays as if there were no backing until it has learnt
    to listen."""

    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.args = args
        self.embed = nn.Embedding(args.vocab, args.embed)
        self.harmony = nn.Linear(args.harmony, args.embed, bias=False)
        nn.init.zeros_(self.harmony.weight)
        self.lstm = nn.LSTM(args.embed, args.hidden, args.layers, batch_first=True,
                            dropout=args.dropout if args.layers > 1 else 0.0)
        self.drop = nn.Dropout(args.dropout)
        self.head = nn.Linear(args.hidden, args.vocab)
        self.harmony_out = nn.Linear(args.harmony, args.vocab, bias=False)
        nn.init.zeros_(self.harmony_out.weight)

    def init_state(self, batch: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        shape = (self.args.layers, batch, self.args.hidden)
        return torch.zeros(shape, device=device), torch.zeros(shape, device=device)

    def forward(self, events: torch.Tensor, harm: torch.Tensor, h: torch.Tensor, c: torch.Tensor):
        out, (h_out, c_out) = self.lstm(self.embed(events) + self.harmony(harm), (h, c))
        return self.head(self.drop(out)) + self.harmony_out(harm), h_out, c_out


_PCS = torch.arange(12)


def harmony_features(codes: torch.Tensor) -> torch.Tensor:
    """float (..., 24) of int64 harmony codes (as `leadline.daemon.harmony.features`)."""
    pcs = _PCS.to(codes.device)
    chroma = (codes.unsqueeze(-1) >> pcs) & 1
    bass = ((codes >> 12).unsqueeze(-1) - 1) == pcs
    return torch.cat([chroma.float(), bass.float()], dim=-1)


def unpack(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(events, harmony features) of a chunk of int64 `token | harmony_code << 16` (training streams)."""
    return x & 0xFFFF, harmony_features(x >> 16)
