"""Flow-matching maths shared by the flow plugins (and usable by third-party ones).

The straight path of rectified flow (Liu et al. 2023, "Flow Straight and Fast", eq. 1) and of
flow matching with σ_min = 0 (Lipman et al. 2023, eq. 20-23), as SD3 trains it (Esser et al.
2024, "Scaling Rectified Flow Transformers", §2-3):

    x_t = (1 − t)·x0 + t·ε,   t ∈ [0, 1],   v = dx_t/dt = ε − x0,

so x̂0 = x_t − t·v̂ and ε̂ = x_t + (1 − t)·v̂. Sampling integrates dx/dt = v̂ from t = 1 to 0 on
the time grid of diffusers' ``FlowMatchEulerDiscreteScheduler`` (:func:`flow_time_grid`),
optionally shifted towards high noise by SD3's resolution shift (Esser et al. 2024, §5.3.2,
eq. 23): t' = s·t / (1 + (s − 1)·t).

Times are float64 tensors [B] (or Python floats); :func:`bcast` views them against a batch of
images in the images' dtype.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from corediff.interfaces import Prediction

#: diffusers' ``num_train_timesteps``: its grids end at the shifted 1 / 1000.
TRAIN_STEPS = 1000


def bcast(t: Tensor, like: Tensor) -> Tensor:
    """Times t [B] as ``like``'s dtype and device, viewed [B, 1, ..., 1] against it."""
    return t.to(like.device, like.dtype).view(-1, *[1] * (like.ndim - 1))


def shift_time(t: float | Tensor, shift: float) -> float | Tensor:
    """SD3's time shift t' = s·t / (1 + (s − 1)·t) (Esser et al. 2024, eq. 23): s > 1 spends
    more of a grid at high noise; s = 1 is the identity, t = 0 and t = 1 are fixed."""
    return shift * t / (1 + (shift - 1) * t)


def flow_time_grid(steps: int, shift: float = 1.0, train_steps: int = TRAIN_STEPS) -> list[float]:
    """The times diffusers' ``FlowMatchEulerDiscreteScheduler.set_timesteps(steps)`` visits
    (also its Heun scheduler's distinct σ), with ``shift`` and ``num_train_timesteps =
    train_steps``: descending, first 1.0, without the terminal 0.

    As in diffusers: σ_min is the last σ of its training grid, shift(1 / train_steps) rounded
    to float32; the grid is linspace(1, σ_min, steps) in float64, then shifted (so its last
    point is shifted twice). Cast to float32, the values equal diffusers' ``sigmas[:-1]``.

    >>> [round(t, 4) for t in flow_time_grid(4)]
    [1.0, 0.667, 0.334, 0.001]
    """
    sigma_min = torch.ones(1, dtype=torch.float32) / train_steps
    sigma_min = float((shift * sigma_min / (1 + (shift - 1) * sigma_min)).item())
    grid = np.linspace(1.0 * train_steps, sigma_min * train_steps, steps) / train_steps
    return [float(v) for v in shift * grid / (1 + (shift - 1) * grid)]


def velocity_from(x0: Tensor, eps: Tensor) -> Tensor:
    """v = ε − x0, the velocity dx_t/dt of the straight path."""
    return eps - x0


def x0_from_velocity(x_t: Tensor, v: Tensor, t: Tensor) -> Tensor:
    """x̂0 = x_t − t·v̂ (t [B])."""
    return x_t - bcast(t, x_t) * v


def eps_from_velocity(x_t: Tensor, v: Tensor, t: Tensor) -> Tensor:
    """ε̂ = x_t + (1 − t)·v̂ (t [B])."""
    return x_t + (1 - bcast(t, x_t)) * v


def velocity_of(prediction: Prediction, x_t: Tensor, t: Tensor) -> Tensor:
    """The velocity a prediction at (x_t, t) implies on the straight path: ε̂ − x̂0 when the
    prediction has ε̂, else (x_t − x̂0) / t (t > 0). Any parameterization of a flow
    degradation drives a flow sampler through it."""
    if prediction.eps is not None:
        return velocity_from(prediction.x0, prediction.eps)
    return (x_t - prediction.x0) / bcast(t, x_t)
