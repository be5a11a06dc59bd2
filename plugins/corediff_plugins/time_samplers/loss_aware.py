"""Loss-aware importance sampling of training steps: improved-diffusion's
``LossSecondMomentResampler`` (Nichol & Dhariwal 2021, "Improved Denoising Diffusion
Probabilistic Models", §3.3, eq. 17 for L_vlb).

p_t ∝ sqrt(E[L_t²]) over the last ``history`` losses seen at step t, mixed with a uniform
``uniform_prob``; uniform until every step has ``history`` losses. Each draw carries the
importance weight 1 / (T·p_t), so the weighted loss still estimates the uniform-step
objective. The history is a ring buffer on the training device, updated by vectorised
scatters (no host sync; the second moment does not depend on the order of the losses it
holds, so it equals improved-diffusion's shifting list), and saved in checkpoints so a
resume is exact. Under DDP each process learns from its own losses.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
from pydantic import Field, PositiveInt
from torch import Tensor

from corediff.config import ComponentConfig
from corediff.interfaces import Degradation, TimeSampler
from corediff.maths.noise import rand
from corediff.maths.timesteps import refuse_continuous_only


class LossAwareTimeSamplerConfig(ComponentConfig):
    type: Literal["loss_aware"] = "loss_aware"
    history: PositiveInt = Field(10, le=1000, description="Losses remembered per step.")
    uniform_prob: float = Field(
        0.001, gt=0, le=1, description="Probability mass spread uniformly over the steps.")


class LossAwareTimeSampler(TimeSampler):
    """Steps 1..T drawn ∝ the root mean square of their recent losses."""

    Config = LossAwareTimeSamplerConfig

    def __init__(self, config: ComponentConfig | None = None, *, degradation: Degradation) -> None:
        super().__init__(config, degradation=degradation)
        steps, history = degradation.steps, self.config.history
        self.losses = torch.zeros(steps + 1, history, dtype=torch.float64)  # row T: a sink
        self.counts = torch.zeros(steps, dtype=torch.long)

    @classmethod
    def check_recipe(cls, config: ComponentConfig, others: Mapping[str, Any]) -> list[str]:
        return refuse_continuous_only("loss_aware", others)

    def probabilities(self) -> Tensor:
        """p over steps 1..T (float64 [T]): uniform until every step has a full history."""
        steps = self.degradation.steps
        rms = self.losses[:steps].square().mean(1).sqrt()
        total = rms.sum()
        learned = rms / total.clamp_min(1e-300) * (1 - self.config.uniform_prob) + (
            self.config.uniform_prob / steps)
        ready = (self.counts >= self.config.history).all() & (total > 0)
        return torch.where(ready, learned, torch.full_like(learned, 1 / steps))

    def sample(
        self, batch: int, generator: torch.Generator | None, device: torch.device | str,
    ) -> tuple[Tensor, Tensor]:
        self._move(device)
        p = self.probabilities()
        cdf = p.cumsum(0)  # inverse-CDF draws: no host sync (torch.multinomial may check)
        u = rand((batch,), generator, p.device, torch.float64) * cdf[-1]
        index = torch.searchsorted(cdf, u, right=True).clamp_max(len(p) - 1)
        return index + 1, 1 / (self.degradation.steps * p[index])

    def observe(self, t: Tensor, losses: Tensor) -> None:
        """Append each step's losses in batch order (only the last ``history`` per step)."""
        self._move(t.device)
        index = t.long() - 1
        order = torch.argsort(index, stable=True)
        ranked = index[order]
        first = torch.searchsorted(ranked, ranked)
        seen = torch.searchsorted(ranked, ranked, right=True) - first  # this step, in batch
        rank = torch.empty_like(index).scatter_(0, order, torch.arange(len(index),
                                                                        device=t.device) - first)
        seen = torch.empty_like(index).scatter_(0, order, seen)
        keep = seen - rank <= self.config.history
        row = torch.where(keep, index, self.degradation.steps)
        column = (self.counts[index] + rank) % self.config.history
        self.losses.index_put_((row, column), losses.detach().double())
        self.counts.index_add_(0, index, torch.ones_like(index))

    def extra_state(self) -> dict[str, Tensor]:
        return {"losses": self.losses.cpu(), "counts": self.counts.cpu()}

    def load_extra_state(self, state: Mapping[str, Tensor]) -> None:
        device = self.losses.device
        self.losses, self.counts = state["losses"].to(device), state["counts"].to(device)

    def _move(self, device: torch.device | str) -> None:
        self.losses, self.counts = self.losses.to(device), self.counts.to(device)
