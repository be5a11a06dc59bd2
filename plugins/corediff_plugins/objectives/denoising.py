"""The denoising objective: DDPM's Algorithm 1 (Ho et al. 2020) generalised to any
degradation, parameterization, loss weighting and time sampler.

t, w ~ time sampler (t ~ U{1..T} and w = 1 for DDPM; w = 1/(T·p(t)) when importance-sampled),
noise = degradation.sample_noise(x0), x_t = D(x0, t, noise), labels dropped with probability
``train.label_dropout`` (classifier-free guidance, Ho & Salimans 2022), and per sample
w·λ(t)·parameterization.loss(net(condition(x_t, t), y), x0, x_t, t, noise) — the mean of
which, for ε-prediction, uniform t and λ = 1, is DDPM's L_simple (their Eq. 14).
"""

from __future__ import annotations

from typing import Literal

from corediff.config import ObjectiveConfig
from corediff.interfaces import Objective, ObjectiveBatch, ObjectiveLosses


class DenoisingObjectiveConfig(ObjectiveConfig):
    type: Literal["denoising"] = "denoising"


class DenoisingObjective(Objective):
    """Regress the parameterization's target at a random time (random draws in the order
    t, noise, dropped labels: corediff's training stream since 0.1)."""

    Config = DenoisingObjectiveConfig

    def losses(self, batch: ObjectiveBatch) -> ObjectiveLosses:
        x0, g = batch.x0, batch.generator
        t, importance = self.time_sampler.sample(x0.shape[0], g, x0.device)
        noise = self.degradation.sample_noise(x0, generator=g)
        x_t = batch.degrade(t, noise)
        output = batch.net(*self.parameterization.condition(x_t, t), batch.drop_labels())
        per_sample = self.parameterization.loss(
            output, x0, x_t, t, noise, self.loss_weighting.per_element)
        weighted = self.loss_weighting.weight(t).to(per_sample) * per_sample
        if batch.training:  # loss-aware time samplers learn from training steps only
            self.time_sampler.observe(t, weighted.detach())
        return ObjectiveLosses(weighted if importance is None else weighted * importance.to(
            weighted))
