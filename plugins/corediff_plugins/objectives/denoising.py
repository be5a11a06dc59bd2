"""The denoising objective: DDPM's Algorithm 1 (Ho et al. 2020) generalised to any
degradation, parameterization, loss weighting and time sampler.

t, w ~ time sampler (t ~ U{1..T} and w = 1 for DDPM; w = 1/(T·p(t)) when importance-sampled),
noise = degradation.sample_noise(x0), x_t = D(x0, t, noise), labels dropped with probability
``train.label_dropout`` (classifier-free guidance, Ho & Salimans 2022), and per sample
w·λ(t)·parameterization.loss(net(condition(x_t, t), y), x0, x_t, t, noise) — the mean of
which, for ε-prediction, uniform t and λ = 1, is DDPM's L_simple (their Eq. 14).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor

from corediff.config import ObjectiveConfig
from corediff.interfaces import Objective, ObjectiveBatch, ObjectiveLosses


class DenoisingObjectiveConfig(ObjectiveConfig):
    type: Literal["denoising"] = "denoising"


@dataclass
class Regression:
    """One denoising regression: the times drawn and their importance weights (or None),
    x_t, the network's output there and the λ(t)-weighted per-sample losses [B]."""

    t: Tensor
    importance: Tensor | None
    x_t: Tensor
    output: Tensor
    weighted: Tensor


class DenoisingObjective(Objective):
    """Regress the parameterization's target at a random time (random draws in the order
    t, noise, dropped labels: corediff's training stream since 0.1)."""

    Config = DenoisingObjectiveConfig

    def losses(self, batch: ObjectiveBatch) -> ObjectiveLosses:
        regression = self.regress(batch)
        return self.finish(batch, regression, regression.weighted)

    def regress(self, batch: ObjectiveBatch) -> Regression:
        """Draw t, the noise and the dropped labels; run the network at x_t; λ(t)·loss."""
        x0, g = batch.x0, batch.generator
        t, importance = self.time_sampler.sample(x0.shape[0], g, x0.device)
        noise = self.degradation.sample_noise(x0, generator=g)
        x_t = batch.degrade(t, noise)
        output = batch.net(*self.parameterization.condition(x_t, t), batch.drop_labels())
        per_sample = self.parameterization.loss(
            output, x0, x_t, t, noise, self.loss_weighting.per_element)
        weighted = self.loss_weighting.weight(t).to(per_sample) * per_sample
        return Regression(t, importance, x_t, output, weighted)

    def finish(self, batch: ObjectiveBatch, regression: Regression, losses: Tensor,
               logs: dict[str, Tensor] | None = None) -> ObjectiveLosses:
        """``losses`` [B] at the regression's times: shown to the time sampler on a training
        step (loss-aware samplers learn from them), then importance-weighted."""
        if batch.training:
            self.time_sampler.observe(regression.t, losses.detach())
        importance = regression.importance
        return ObjectiveLosses(losses if importance is None else losses * importance.to(losses),
                               logs or {})
