"""Degraded-image Gaussian-mixture prior: a fitted generative start at a partial degradation
(the analogue for any cold degradation, e.g. SVD rank truncation, of Bansal et al. 2022,
"Cold Diffusion", §5.1, where a GMM fitted to the channel means of fully blurred training
images gives the start of generation; see ``channel_mean_gmm``).

With s = start_step() = max(1, round(fraction · T)) (fraction · t_max for continuous times,
``corediff.maths.timesteps.time_at``) and training images x0_1..x0_N, ``fit(images)`` computes

    y_n = vec D(x0_n, s) ∈ R^P                      (P = C·H·W; seeded noise if stochastic)
    μ = (1/N) Σ_n y_n,   Y = [y_1 − μ, …, y_N − μ]ᵀ = U Σ Vᵀ     (float64 thin SVD: PCA)
    B = the first d rows of Vᵀ (d = min(dims, N, P)),   c_n = B (y_n − μ) ∈ R^d
    c ~ p(c) = Σ_k π_k N(c; m_k, S_k)               (full-covariance EM, scikit-learn)

and ``sample`` draws k ~ Cat(π), z ~ N(0, I_d), c = m_k + L_k z (L_k L_kᵀ = S_k) and returns

    x = μ + Bᵀ c,   then x_s = D(x, s) when ``project`` (the default)

so that a sample lies where the degradation's images at s live: an SVD sample has exactly the
rank k(s) of that step, a blur sample is blurred to s. The projection re-applies D, so it is
refused for stochastic degradations (D would add its noise a second time; the mixture already
models it): set ``project = false`` there. The mixture (π, m, L), μ and B are saved by
``extra_state``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, PositiveInt
from sklearn.mixture import GaussianMixture
from torch import Tensor

from corediff.config import ComponentConfig
from corediff.interfaces import Degradation, Prior, steps_like
from corediff.maths.noise import multinomial, randn
from corediff.maths.timesteps import time_at

KEYS = ("weights", "means", "scale_tril", "pca_mean", "basis")


class DegradedGMMConfig(ComponentConfig):
    type: Literal["degraded_gmm"] = "degraded_gmm"
    fraction: float = Field(
        0.7, gt=0, le=1,
        description="Start time s as a fraction of T: max(1, round(fraction·T)).")
    dims: PositiveInt = Field(
        32, description="Principal components of D(x0, s) modelled (at most the images).")
    components: PositiveInt = Field(10, description="Mixture components (at most the images).")
    seed: int = Field(0, description="Seed of the EM initialisation (and of D's noise in fit).")
    project: bool = Field(True, description=(
        "Re-apply D(x, s) to each sample (an SVD sample gets the rank k(s), a blur sample the "
        "blur of s); deterministic degradations only."))


def _refusal(config: DegradedGMMConfig, capabilities: frozenset[str]) -> list[str]:
    if config.project and "deterministic" not in capabilities:
        return ["degraded_gmm with project = true re-applies D(x, s), which would add a "
                "stochastic degradation's noise twice: set project = false"]
    return []


class DegradedGMMPrior(Prior):
    Config = DegradedGMMConfig

    @classmethod
    def check_recipe(cls, config: ComponentConfig, others: Mapping[str, Any]) -> list[str]:
        degradation_cls, degradation_config = others["degradation"]
        return _refusal(config, degradation_cls.capabilities(degradation_config))

    def __init__(
        self, config: DegradedGMMConfig | None = None, *, degradation: Degradation
    ) -> None:
        super().__init__(config, degradation=degradation)
        refusal = _refusal(self.config, degradation.provides)
        if refusal:
            raise ValueError(refusal[0])
        self.mixture: dict[str, Tensor] = {}

    def start_step(self) -> int | float:
        return time_at(self.config.fraction, self.degradation.t_max)

    def fit(self, images: Tensor) -> None:
        t = steps_like(self.start_step(), images)
        generator = torch.Generator(images.device).manual_seed(self.config.seed)
        noise = self.degradation.sample_noise(images, generator)
        degraded = self.degradation.degrade(images, t, noise)
        y = degraded.flatten(1).double().cpu()
        pca_mean = y.mean(0)
        dims = min(self.config.dims, *y.shape)
        basis = torch.linalg.svd(y - pca_mean, full_matrices=False).Vh[:dims]
        coeffs = ((y - pca_mean) @ basis.T).numpy()
        distinct = len(np.unique(coeffs.round(12), axis=0))  # e.g. every image degrades to 0
        gmm = GaussianMixture(
            min(self.config.components, distinct), covariance_type="full",
            random_state=self.config.seed,
        ).fit(coeffs)
        self.mixture = {
            "weights": torch.from_numpy(gmm.weights_),
            "means": torch.from_numpy(gmm.means_),
            "scale_tril": torch.linalg.cholesky(torch.from_numpy(gmm.covariances_)),
            "pca_mean": pca_mean.reshape(degraded.shape[1:]),
            "basis": basis.contiguous(),
        }

    def extra_state(self) -> dict[str, Tensor]:
        return dict(self.mixture)

    def load_extra_state(self, state: Mapping[str, Tensor]) -> None:
        self.mixture = {key: state[key].double().cpu() for key in KEYS}

    def sample(
        self, shape: tuple[int, ...], *, generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
    ) -> Tensor:
        if not self.mixture:
            raise RuntimeError("degraded_gmm prior is not fitted: call fit(images) first")
        weights, means, scale_tril, pca_mean, basis = (self.mixture[k] for k in KEYS)
        if tuple(shape[1:]) != tuple(pca_mean.shape):
            raise ValueError(f"prior fitted on {tuple(pca_mean.shape)} images, asked for "
                             f"{tuple(shape)}")
        component = multinomial(weights, shape[0], generator, device="cpu")
        z = randn((shape[0], means.shape[1], 1), generator, "cpu", torch.float64)
        coeffs = means[component] + (scale_tril[component] @ z).squeeze(-1)
        x = (pca_mean.flatten() + coeffs @ basis).reshape(shape).float().to(device)
        if self.config.project:
            x = self.degradation.degrade(x, steps_like(self.start_step(), x))
        return x
