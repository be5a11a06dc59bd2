"""Helpers shared by the Cold Diffusion plugins (Bansal et al. 2022, "Cold Diffusion").

* :func:`composed_sigma`: the width of t Gaussian blurs applied in turn (variances add).
* :func:`svd_error_curve`: mean |x − D_k(x)| of rank-k truncation for every k.
* :func:`randn`: seeded normal noise drawn on the generator's device.
* :class:`ColdSampler`: the reverse loop shared by Algorithms 1 and 2 (paper §3.2).
"""

from __future__ import annotations

from abc import abstractmethod

import torch
from torch import Tensor

from corediff.interfaces import DenoiseFn, Sampler, SampleResult, TrajectoryStep


def composed_sigma(kernel_std: Tensor) -> Tensor:
    """Effective widths [T + 1] of blurs with stds ``kernel_std`` [T] applied in turn.

    The convolution of Gaussians is a Gaussian whose variance is the sum:
    σ(t) = sqrt(Σ_{i ≤ t} σ_i²), with σ(0) = 0.
    """
    variance = torch.cat([kernel_std.new_zeros(1), kernel_std.square().cumsum(0)])
    return variance.sqrt()


def svd_error_curve(images: Tensor) -> Tensor:
    """Mean |x − D_k(x)| over ``images`` [N, C, H, W] for k = 0 .. min(H, W), float64.

    D_k keeps the k largest singular values of every channel; rank-1 terms are added one
    at a time (a loop over ranks, never over images).
    """
    x = images.double()
    U, S, Vh = torch.linalg.svd(x, full_matrices=False)
    recon = torch.zeros_like(x)
    errors = [x.abs().mean()]
    for k in range(S.shape[-1]):
        recon = recon + S[..., k, None, None] * U[..., :, k, None] * Vh[..., k, None, :]
        errors.append((x - recon).abs().mean())
    return torch.stack(errors)


def randn(
    shape: tuple[int, ...] | torch.Size,
    generator: torch.Generator | None,
    device: torch.device | str,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Standard normal noise; drawn on the generator's own device, then moved."""
    source = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=source, dtype=dtype).to(device)


class ColdSampler(Sampler):
    """Cold Diffusion's reverse loop over the visited steps s_1 = start > … > s_n ≥ 1.

    At each visited step s: x̂0 = R(x_s, s) (the parameterization's x̂0 of the network
    output), then :meth:`update` moves x_s to the next visited step s' (0 after the last).
    Stochastic degradations reuse ``degradation.estimate_noise(x_s, x̂0, s)`` as the noise
    of every D term, so for a Gaussian degradation Algorithm 2 is DDIM with η = 0.
    Config: ``steps`` (None: every step; N: N steps evenly spaced from start to 1).
    """

    def timesteps(self, start: int | None = None) -> list[int]:
        start = self.degradation.steps if start is None else start
        if not 0 < start <= self.degradation.steps:
            raise ValueError(f"start must lie in 1..{self.degradation.steps}, got {start}")
        steps = self.config.steps  # type: ignore[attr-defined]
        if steps is None or steps >= start:
            return list(range(start, 0, -1))
        grid = torch.linspace(start, 0, steps + 1, dtype=torch.float64)[:-1]
        return sorted({int(s) for s in grid.round().long().tolist()}, reverse=True)

    @abstractmethod
    def update(
        self, x_s: Tensor, x0_hat: Tensor, s: Tensor, s_next: Tensor, noise: Tensor | None
    ) -> Tensor:
        """x at the next visited step s_next, from x_s and the restoration x̂0."""

    @torch.no_grad()
    def sample(
        self,
        model: DenoiseFn,
        x: Tensor,
        *,
        start: int | None = None,
        generator: torch.Generator | None = None,
        trajectory: bool = False,
    ) -> SampleResult:
        visited = self.timesteps(start)
        batch = x.shape[0]
        direct: Tensor | None = None
        steps: list[TrajectoryStep] = []
        for i, step in enumerate(visited):
            s = torch.full((batch,), step, dtype=torch.long, device=x.device)
            s_next = torch.full_like(s, visited[i + 1] if i + 1 < len(visited) else 0)
            x0_hat = self.parameterization.predict(model(x, s), x, s).x0
            direct = x0_hat if direct is None else direct
            if trajectory:
                steps.append(TrajectoryStep(t=step, x_t=x, x0_hat=x0_hat))
            noise = self.degradation.estimate_noise(x, x0_hat, s)
            x = self.update(x, x0_hat, s, s_next, noise)
        return SampleResult(sample=x, direct=x if direct is None else direct, trajectory=steps)
