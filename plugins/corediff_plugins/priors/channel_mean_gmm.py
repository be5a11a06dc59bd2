"""Channel-mean Gaussian-mixture prior (Bansal et al. 2022, "Cold Diffusion", §5.1: fully blurred
images are constant per channel; generation samples that constant from a GMM fitted to the
channel means of degraded training images, then deblurs).

``fit(images)`` fits a full-covariance mixture of ``components`` Gaussians (scikit-learn EM) to
the per-channel means of D(x, T); ``sample`` draws a mean vector per image and fills the image
with it. The mixture (weights, means, Cholesky factors) is saved by ``extra_state``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np
import torch
from pydantic import Field, PositiveInt
from sklearn.mixture import GaussianMixture
from torch import Tensor

from corediff.config import ComponentConfig
from corediff.interfaces import Degradation, Prior
from corediff.maths.noise import multinomial, randn


class ChannelMeanGMMConfig(ComponentConfig):
    type: Literal["channel_mean_gmm"] = "channel_mean_gmm"
    components: PositiveInt = Field(10, description="Mixture components (at most the images).")
    seed: int = Field(0, description="Seed of the EM initialisation.")


class ChannelMeanGMMPrior(Prior):
    Config = ChannelMeanGMMConfig

    def __init__(
        self, config: ChannelMeanGMMConfig | None = None, *, degradation: Degradation
    ) -> None:
        super().__init__(config, degradation=degradation)
        self.mixture: dict[str, Tensor] = {}

    def fit(self, images: Tensor) -> None:
        t = torch.full((images.shape[0],), self.degradation.steps, device=images.device)
        generator = torch.Generator(images.device).manual_seed(self.config.seed)
        noise = self.degradation.sample_noise(images, generator)
        means = self.degradation.degrade(images, t, noise).mean((-2, -1)).double().cpu().numpy()
        distinct = len(np.unique(means.round(12), axis=0))  # e.g. every image degrades to 0
        gmm = GaussianMixture(
            min(self.config.components, distinct), covariance_type="full",
            random_state=self.config.seed,
        ).fit(means)
        self.mixture = {
            "weights": torch.from_numpy(gmm.weights_),
            "means": torch.from_numpy(gmm.means_),
            "scale_tril": torch.linalg.cholesky(torch.from_numpy(gmm.covariances_)),
        }

    def extra_state(self) -> dict[str, Tensor]:
        return dict(self.mixture)

    def load_extra_state(self, state: Mapping[str, Tensor]) -> None:
        keys = ("weights", "means", "scale_tril")
        self.mixture = {key: state[key].double().cpu() for key in keys}

    def sample(
        self, shape: tuple[int, ...], *, generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
    ) -> Tensor:
        if not self.mixture:
            raise RuntimeError("channel_mean_gmm prior is not fitted: call fit(images) first")
        weights, means, scale_tril = (self.mixture[k] for k in ("weights", "means", "scale_tril"))
        if shape[1] != means.shape[1]:
            raise ValueError(f"prior fitted on {means.shape[1]} channels, asked for {shape[1]}")
        component = multinomial(weights, shape[0], generator, device="cpu")
        z = randn((shape[0], means.shape[1], 1), generator, "cpu", torch.float64)
        mean = means[component] + (scale_tril[component] @ z).squeeze(-1)
        return mean.float()[:, :, None, None].expand(shape).contiguous().to(device)
