"""Prediction heads on the (projected) CLS embedding.

``MLPHead`` is the official PerceptCLIP head (release ``modeling.py``; paper §3.1, Fig. 2):
768 → 512 → ReLU → Dropout(0.5) → 256 → ReLU → Dropout(0.5) → outputs, with layers named ``fc1``,
``fc2``, ``fc3`` as in the release so official weights load by name. ``LinearHead`` is the ablation of
Table 7 (one Linear layer).
"""
from __future__ import annotations

from torch import nn

HEAD_TYPES = ("mlp", "linear")


class MLPHead(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, hidden: tuple[int, int] = (512, 256), dropout: float = 0.5):
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden[0])
        self.fc2 = nn.Linear(hidden[0], hidden[1])
        self.fc3 = nn.Linear(hidden[1], out_dim)
        self.act = nn.ReLU()
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, x):
        x = self.dropout1(self.act(self.fc1(x)))
        x = self.dropout2(self.act(self.fc2(x)))
        return self.fc3(x)


class LinearHead(nn.Module):
    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.fc = nn.Linear(in_dim, out_dim)

    def forward(self, x):
        return self.fc(x)


def create_head(head_type: str, in_dim: int, out_dim: int, hidden: tuple[int, int] = (512, 256),
                dropout: float = 0.5) -> nn.Module:
    if head_type == "mlp":
        return MLPHead(in_dim, out_dim, hidden, dropout)
    if head_type == "linear":
        return LinearHead(in_dim, out_dim)
    raise ValueError(f"unknown head type {head_type!r}; choose one of {HEAD_TYPES}")
