"""Layers shared by the model plugins: the sinusoidal step embedding and its MLP.

The embedding is the Transformer positional encoding (Vaswani et al. 2017, §3.5) applied to
the diffusion step, as in DDPM (Ho et al. 2020, Appendix B): for i < d/2,
``emb[i] = cos(t · ω_i)`` and ``emb[d/2 + i] = sin(t · ω_i)`` with ``ω_i = P^(−i/(d/2))``,
P = 10000. t is the original step index (0..T), embedded as a float.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding [B, dim] (float32) of steps t [B]; odd dims get a zero pad."""
    half = dim // 2
    omega = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    )
    angle = t.float()[:, None] * omega[None, :]
    emb = torch.cat([torch.cos(angle), torch.sin(angle)], dim=-1)
    return nn.functional.pad(emb, (0, dim % 2))


class TimestepMLP(nn.Module):
    """t -> sinusoidal(t) -> Linear -> SiLU -> Linear: the conditioning vector of a network."""

    def __init__(self, frequency_dim: int, embed_dim: int) -> None:
        super().__init__()
        self.frequency_dim = frequency_dim
        self.mlp = nn.Sequential(
            nn.Linear(frequency_dim, embed_dim), nn.SiLU(), nn.Linear(embed_dim, embed_dim)
        )

    def forward(self, t: Tensor) -> Tensor:
        return self.mlp(timestep_embedding(t, self.frequency_dim))


class LabelEmbedding(nn.Module):
    """Class labels -> vectors, with one extra row (index ``num_classes``) for the null label
    of classifier-free guidance (Ho & Salimans 2022). ``y=None`` and negative labels are null.
    """

    def __init__(self, num_classes: int, embed_dim: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.table = nn.Embedding(num_classes + 1, embed_dim)

    def forward(self, y: Tensor | None, batch: int, device: torch.device) -> Tensor:
        if y is None:
            y = torch.full((batch,), self.num_classes, dtype=torch.long, device=device)
        y = torch.where(y < 0, self.num_classes, y)
        return self.table(y)


def count_params(module: nn.Module) -> int:
    """Number of parameters of a module (works on the meta device)."""
    return sum(p.numel() for p in module.parameters())
