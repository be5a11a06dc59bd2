"""Denoising plus a singular-spectrum term: the SVD notes' first idea, "预测每个对应k的奇异值"
("predict each k's singular value", ../shared/seeds/svd_cold_diffusion_notes.md), as an
auxiliary loss on the denoiser's x̂0.

Per sample, with σ_k(·) the k-th singular value of one channel's H×W image
(``torch.linalg.svdvals``, descending) and x̂0 the parameterization's prediction at x_t:

    loss = w_imp · (λ(t)·ℓ_denoising + weight · mean_{c, k} (σ_k(x̂0_c) − σ_k(x0_c))²)

— the ``denoising`` objective's loss (same draws, same order) plus ``weight`` times the mean
squared gap of the two spectra over channels c and ranks k = 1..min(H, W); w_imp is the
time sampler's importance weight (1 unless importance-sampled). The gap's batch mean is
logged as ``spectrum_gap``. Singular values are differentiable everywhere through
``svdvals`` (their gradient u_k v_kᵀ needs no distinct values).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from corediff.interfaces import ObjectiveBatch, ObjectiveLosses
from corediff_plugins.objectives.denoising import DenoisingObjective, DenoisingObjectiveConfig


class SVDSpectrumObjectiveConfig(DenoisingObjectiveConfig):
    type: Literal["svd_spectrum"] = "svd_spectrum"  # type: ignore[assignment]
    weight: float = Field(0.1, ge=0, description="Weight of the mean squared gap between the "
                          "singular values of x̂0 and x0 (per channel, per rank).")


class SVDSpectrumObjective(DenoisingObjective):
    """The denoising loss plus ``weight`` × the mean squared singular-value gap of x̂0."""

    Config = SVDSpectrumObjectiveConfig

    def losses(self, batch: ObjectiveBatch) -> ObjectiveLosses:
        regression = self.regress(batch)
        x0_hat = self.parameterization.predict(regression.output, regression.x_t,
                                               regression.t).x0
        gap = (torch.linalg.svdvals(x0_hat.float()) - torch.linalg.svdvals(batch.x0.float())
               ).square().mean((1, 2))
        return self.finish(batch, regression, regression.weighted + self.config.weight * gap,
                           {"spectrum_gap": gap.mean().detach()})
