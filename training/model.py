"""The lead-line LSTM: token embedding, stacked LSTM, one softmax head over the codec vocabulary."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from leadline.daemon import codec


@dataclass(frozen=True)
class ModelArgs:
    vocab: int = codec.VOCAB_SIZE
    embed: int = 128
    hidden: int = 384
    layers: int = 2
    dropout: float = 0.2

    def as_dict(self) -> dict:
        return asdict(self)


class LeadLSTM(nn.Module):
    """events (B, T) int64, state (h, c) each (layers, B, hidden) -> logits (B, T, vocab), new state."""

    def __init__(self, args: ModelArgs) -> None:
        super().__init__()
        self.args = args
        self.embed = nn.Embedding(args.vocab, args.embed)
        self.lstm = nn.LSTM(args.embed, args.hidden, args.layers, batch_first=True,
                            dropout=args.dropout if args.layers > 1 else 0.0)
        self.drop = nn.Dropout(args.dropout)
        self.head = nn.Linear(args.hidden, args.vocab)

    def init_state(self, batch: int, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        shape = (self.args.layers, batch, self.args.hidden)
        return torch.zeros(shape, device=device), torch.zeros(shape, device=device)

    def forward(self, events: torch.Tensor, h: torch.Tensor, c: torch.Tensor):
        out, (h_out, c_out) = self.lstm(self.embed(events), (h, c))
        return self.head(self.drop(out)), h_out, c_out
