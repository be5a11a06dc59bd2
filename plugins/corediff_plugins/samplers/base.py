"""Bases shared by the first-party samplers (their grids come from the public
:func:`corediff.maths.timesteps.time_grid`, which a third-party sampler calls the same way).

* :class:`RespacedSampler`: a Gaussian sampler on a respaced grid of steps (DDPM, DDIM),
  configured by :class:`corediff.maths.timesteps.TimeGridConfig`.
* :class:`ColdSampler`: Cold Diffusion's reverse loop (Bansal et al. 2022, §3.2) for any
  degradation: x̂0 = R(x_s, s), then :meth:`ColdSampler.update` moves x_s to the next step.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping
from typing import Any

from torch import Tensor

from corediff.config import ComponentConfig
from corediff.interfaces import Denoise, Sampler, Step
from corediff.maths.timesteps import refuse_continuous_only, time_grid


class RespacedSampler(Sampler):
    """A Gaussian sampler visiting the steps :func:`corediff.maths.timesteps.time_grid` gives for
    its config's ``steps`` and ``spacing``."""

    requires = {"degradation": frozenset({"gaussian"})}

    def __init__(self, config: ComponentConfig | None = None, **dependencies: Any) -> None:
        super().__init__(config, **dependencies)
        self.timesteps()  # refuse a grid the schedule cannot give when the sampler is built

    def timesteps(self, start: int | None = None) -> list[int]:
        return time_grid(self.degradation.steps, self.config.steps, self.config.spacing, start)


class ColdSampler(Sampler):
    """Cold Diffusion's reverse loop over the visited steps s_1 = start > … > s_n ≥ 1.

    At each visited step s: x̂0 = R(x_s, s) (the parameterization's x̂0 of the network
    output), then :meth:`update` moves x_s to the next visited step s' (0 after the last).
    Stochastic degradations reuse ``degradation.estimate_noise(x_s, x̂0, s)`` as the noise
    of every D term, so for a Gaussian degradation Algorithm 2 is DDIM with η = 0.
    Config: ``steps`` (None: every step; N: N steps evenly spaced from start to 1).
    """

    @classmethod
    def check_recipe(cls, config: ComponentConfig, others: Mapping[str, Any]) -> list[str]:
        return refuse_continuous_only(f"Cold Diffusion's '{config.type}'", others)

    def timesteps(self, start: int | None = None) -> list[int]:
        return time_grid(self.degradation.steps, self.config.steps, "even", start)

    @abstractmethod
    def update(
        self, x_s: Tensor, x0_hat: Tensor, s: Tensor, s_next: Tensor, noise: Tensor | None
    ) -> Tensor:
        """x at the next visited step s_next, from x_s and the restoration x̂0."""

    def step(self, x: Tensor, step: Step, denoise: Denoise) -> tuple[Tensor, Tensor]:
        x0_hat = denoise(x, step.t).x0
        s = step.t_tensor(x)
        noise = self.degradation.estimate_noise(x, x0_hat, s)
        return self.update(x, x0_hat, s, step.t_next_tensor(x), noise), x0_hat
