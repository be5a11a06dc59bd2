"""Generation priors for cold diffusion: constant, channel-mean GMM (Cold Diffusion §5.1) and
partial degradation (the SVD notes' start at 70 % of T)."""

from __future__ import annotations

import pytest
import torch

from corediff_plugins.degradations.blur import BlurConfig, BlurDegradation
from corediff_plugins.degradations.svd import SVDDegradation
from corediff_plugins.priors.channel_mean_gmm import ChannelMeanGMMConfig, ChannelMeanGMMPrior
from corediff_plugins.priors.constant import ConstantPrior, ConstantPriorConfig
from corediff_plugins.priors.partial import PartialPrior, PartialPriorConfig
from corediff_plugins.schedules.blur_constant import BlurConstantConfig, BlurConstantSchedule
from corediff_plugins.schedules.rank_linear import RankLinearConfig, RankLinearSchedule


def svd(steps: int = 10) -> SVDDegradation:
    return SVDDegradation(schedule=RankLinearSchedule(RankLinearConfig(steps=steps)))


def test_constant_prior():
    prior = ConstantPrior(degradation=svd())
    assert torch.equal(prior.sample((2, 3, 4, 4)), torch.zeros(2, 3, 4, 4))
    assert prior.start_step() == 10
    noisy = ConstantPrior(ConstantPriorConfig(value=0.5, noise_std=0.2), degradation=svd())
    x = noisy.sample((64, 3, 16, 16), generator=torch.Generator().manual_seed(0))
    assert abs(x.mean().item() - 0.5) < 0.01 and abs(x.std().item() - 0.2) < 0.01
    again = noisy.sample((64, 3, 16, 16), generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, again)


def test_channel_mean_gmm_recovers_the_mixture():
    generator = torch.Generator().manual_seed(1)
    centers = torch.tensor([[-0.5, 0.0, 0.5], [0.4, 0.3, -0.4]])
    component = (torch.rand(600, generator=generator) < 0.3).long()  # weights 0.7 / 0.3
    means = centers[component] + 0.05 * torch.randn(600, 3, generator=generator)
    images = means[:, :, None, None] + 0.3 * torch.randn(600, 3, 8, 8, generator=generator)
    images = images - images.mean((-2, -1), keepdim=True) + means[:, :, None, None]
    schedule = BlurConstantSchedule(BlurConstantConfig(steps=5))
    degradation = BlurDegradation(BlurConfig(padding="circular", to_mean=True), schedule=schedule)
    prior = ChannelMeanGMMPrior(ChannelMeanGMMConfig(components=2), degradation=degradation)
    with pytest.raises(RuntimeError, match="not fitted"):
        prior.sample((1, 3, 8, 8))
    prior.fit(images)
    fitted = prior.extra_state()
    order = fitted["weights"].argsort(descending=True)
    torch.testing.assert_close(fitted["weights"][order], torch.tensor([0.7, 0.3]).double(),
                               atol=0.05, rtol=0)
    torch.testing.assert_close(fitted["means"][order], centers.double(), atol=0.02, rtol=0)
    std = fitted["scale_tril"].diagonal(dim1=-2, dim2=-1)
    torch.testing.assert_close(std, torch.full_like(std, 0.05), atol=0.01, rtol=0)
    x = prior.sample((4000, 3, 8, 8), generator=torch.Generator().manual_seed(2))
    assert torch.equal(x, x[..., :1, :1].expand_as(x))  # constant image per channel
    mixture_mean = 0.7 * centers[0] + 0.3 * centers[1]
    torch.testing.assert_close(x[:, :, 0, 0].mean(0), mixture_mean, atol=0.03, rtol=0)
    restored = ChannelMeanGMMPrior(degradation=degradation)
    restored.load_extra_state(fitted)
    again = restored.sample((4000, 3, 8, 8), generator=torch.Generator().manual_seed(2))
    assert torch.equal(x, again)


def test_partial_prior_degrades_bank_images():
    generator = torch.Generator().manual_seed(3)
    images = torch.rand(20, 3, 12, 12, generator=generator) * 2 - 1
    degradation = svd(steps=12)
    prior = PartialPrior(PartialPriorConfig(bank_size=8), degradation=degradation)
    assert prior.start_step() == 8  # round(0.7 · 12)
    with pytest.raises(RuntimeError, match="not fitted"):
        prior.sample((1, 3, 12, 12))
    prior.fit(images)
    assert prior.extra_state()["bank"].shape[0] == 8
    x = prior.sample((16, 3, 12, 12), generator=torch.Generator().manual_seed(4))
    bank = degradation.degrade(images[:8], torch.full((8,), 8))
    distance = (x[:, None] - bank[None]).flatten(2).abs().amax(-1).amin(-1)
    assert (distance < 1e-6).all()
    with pytest.raises(ValueError, match="bank"):
        prior.sample((1, 3, 8, 8))
