"""SVD rank-truncation degradation, a "cold" degradation (Bansal et al. 2022, "Cold Diffusion",
§3 with D(x0, t) a deterministic operator; here D keeps the top singular values).

Each channel of an image is an H×W matrix X = U Σ Vᵀ; D(x0, t) = U diag(σ_i · [i < k(t)]) Vᵀ
keeps the k(t) largest singular values, k(0) = min(H, W) (D(x0, 0) = x0 exactly) and
k(T) = ``min_rank``. The schedule (capability "rank") gives the kept FRACTION f(t) ∈ [0, 1]
of the removable ranks, so one schedule serves any image size:
k(t) = min_rank + round(f(t) · (min(H, W) − min_rank)).

Factor cache for training (the issue: never decompose the same image at every step)::

    factors = degradation.decompose(x0)              # once per image, e.g. cached by index
    factors = degradation.flip_factors(factors)      # horizontal flip: reverses Vᵀ's columns
    x_t = degradation.degrade_from_factors(factors, t)

``degrade_many`` serves every requested step from one decomposition (Algorithm 2 needs
D(x̂0, s) and D(x̂0, s − 1)). With ``noise_std`` > 0 the degradation is stochastic:
x_t = D_k(t)(x0) + noise_std · (t / T) · ε.

Solvers (``solver``; every one returns factors in the input's float dtype, float32 at least):

* ``gesvd`` / ``gesvdj`` / ``gesvda``: ``torch.linalg.svd(..., driver=...)``, cuSOLVER's
  QR-based, Jacobi and approximate (strided-batched) SVD. ``driver`` is accepted on CUDA
  inputs only, so on CPU these use torch's default LAPACK route (gesdd) instead.
* ``gram_eigh``: for H ≤ W, eigh of the float64 Gram matrix G = X Xᵀ (batched; H > W uses
  Xᵀ). U = its eigenvectors, by descending eigenvalue; Y = Uᵀ X has rows σ_i v_iᵀ, so
  S = the row norms of Y (= √λ exactly, but accurate to ε·σ₁ instead of √ε·σ₁ for small σ)
  and Vh = Y / S, zero rows where S = 0. U diag(S·mask) Vh = Σ_kept u_i u_iᵀ X is then an
  exact projection whatever the eigh error; rows of Vh for S ≈ 0 need not be orthogonal.
  Float64 absorbs the squared condition number for float32 inputs, not for float64 ones.
* ``auto``: on CPU, and for float64 inputs, torch's default (bit-identical to the solver-less
  code). For float32 on CUDA, ``gram_eigh``: for matrices over 32×32 PyTorch loops one
  cuSOLVER gesvdj (or gesvd) call per matrix plus a host sync for the convergence check,
  gesvda is batched but approximate (poor for rank-deficient matrices), while gram_eigh is
  two batched matmuls and one batched eigh. Argued from the PyTorch/cuSOLVER docs, not
  measured on a GPU here.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
from pydantic import Field, NonNegativeFloat, NonNegativeInt
from torch import Tensor

from corediff.maths.cold import svd_error_curve
from corediff.config import ComponentConfig
from corediff.interfaces import Degradation
from corediff.maths.noise import randn

Solver = Literal["auto", "gesvd", "gesvdj", "gesvda", "gram_eigh"]


class SVDConfig(ComponentConfig):
    type: Literal["svd"] = "svd"
    min_rank: NonNegativeInt = Field(0, description="Singular values kept at t = T.")
    noise_std: NonNegativeFloat = Field(
        0.0, description="Std of additive noise at t = T (grows as t / T; 0: deterministic)."
    )
    solver: Solver = Field("auto", description=(
        "How channels are decomposed. gesvd / gesvdj / gesvda: torch.linalg.svd with that "
        "cuSOLVER driver (QR-based / Jacobi / approximate) on CUDA; on CPU the driver is not "
        "available and torch's default LAPACK route is used. gram_eigh: eigh of the float64 "
        "Gram matrix X Xᵀ (fast batched on GPU). auto: gram_eigh for float32 on CUDA, "
        "otherwise torch's default (on CPU exactly the solver-less results)."))


class SVDFactors(NamedTuple):
    """Thin SVD of every channel: U [B, C, H, K], S [B, C, K], Vh [B, C, K, W]."""

    U: Tensor
    S: Tensor
    Vh: Tensor


class SVDDegradation(Degradation):
    Config = SVDConfig
    provides = frozenset({"deterministic", "svd"})
    requires = {"schedule": frozenset({"rank"})}

    @classmethod
    def capabilities(cls, config: SVDConfig) -> frozenset[str]:
        """Stochastic rather than deterministic when ``noise_std > 0``."""
        return frozenset({"stochastic", "svd"}) if config.noise_std > 0 else cls.provides

    def ranks(self, full_rank: int, device: torch.device | str = "cpu") -> Tensor:
        """k(t) for t = 0..T (LongTensor [T + 1]) for matrices of rank ``full_rank``, on
        ``device``. The table is copied to the device once and kept (per rank and device)
        while the schedule's values stay the same (a fitted schedule changes them): a copy
        from the host in every step would make the host wait for the device."""
        min_rank = self.config.min_rank
        if min_rank > full_rank:
            raise ValueError(f"svd min_rank={min_rank} exceeds the image rank {full_rank}")
        values = self.schedule.values()
        cache = self.__dict__.setdefault("_rank_tables", {})
        key = (full_rank, torch.device(device))
        kept = cache.get(key)
        if kept is not None and kept[0].shape == values.shape and torch.equal(kept[0], values):
            return kept[1]
        fraction = values.clamp(0, 1)
        table = (min_rank + (fraction * (full_rank - min_rank)).round()).long().to(device)
        cache[key] = (values.clone(), table)
        return table

    def decompose(self, x0: Tensor) -> SVDFactors:
        """Thin SVD of every channel of x0 [B, C, H, W], in float32 at least."""
        wide = x0 if x0.dtype == torch.float64 else x0.float()
        solver = self.config.solver
        if solver == "auto":
            solver = "gram_eigh" if wide.is_cuda and wide.dtype == torch.float32 else None
        if solver == "gram_eigh":
            return gram_eigh_svd(wide)
        driver = solver if wide.is_cuda else None  # cuSOLVER drivers only exist on CUDA
        return SVDFactors(*torch.linalg.svd(wide, full_matrices=False, driver=driver))

    @staticmethod
    def flip_factors(factors: SVDFactors) -> SVDFactors:
        """Factors of the horizontally flipped images: X[:, ::-1] = U Σ (V[::-1])ᵀ."""
        return factors._replace(Vh=factors.Vh.flip(-1))

    def degrade_from_factors(
        self, factors: SVDFactors, t: Tensor, noise: Tensor | None = None
    ) -> Tensor:
        """D(x0, t) from cached factors (equals x0 at t = 0 up to float rounding)."""
        U, S, Vh = factors
        k = self.ranks(S.shape[-1], S.device)[t]
        kept = torch.arange(S.shape[-1], device=S.device) < k[:, None]
        x_t = (U * (S * kept[:, None, :])[..., None, :]) @ Vh
        return self._add_noise(x_t, t, noise)

    def degrade(self, x0: Tensor, t: Tensor, noise: Tensor | None = None) -> Tensor:
        return self.degrade_many(x0, [t], noise)[0]

    def degrade_many(
        self, x0: Tensor, ts: list[Tensor], noise: Tensor | None = None
    ) -> list[Tensor]:
        if self.config.noise_std > 0 and noise is None:
            noise = torch.randn_like(x0)
        factors = self.decompose(x0)
        out = []
        for t in ts:
            x_t = self.degrade_from_factors(factors, t, noise)
            out.append(torch.where((t == 0)[:, None, None, None], x0, x_t.to(x0.dtype)))
        return out

    def sample_noise(self, x0: Tensor, generator: torch.Generator | None = None) -> Tensor | None:
        if self.config.noise_std == 0:
            return None
        return randn(x0.shape, generator, x0.device, x0.dtype)

    def estimate_noise(self, x_t: Tensor, x0_hat: Tensor, t: Tensor) -> Tensor | None:
        if self.config.noise_std == 0:
            return None
        zero = torch.zeros_like(x_t)
        residual = x_t - self.degrade(x0_hat, t, zero)
        scale = self._noise_scale(t, x_t)
        return torch.where(scale > 0, residual / scale.clamp_min(1e-12), zero)

    def error_curve(self, images: Tensor) -> Tensor:
        """Mean |x − D_k(x)| for k = 0 .. min(H, W) (float64 [K + 1])."""
        return svd_error_curve(images)

    def _noise_scale(self, t: Tensor, like: Tensor) -> Tensor:
        scale = self.config.noise_std * t.to(torch.float64) / self.steps
        return scale.to(like.dtype)[:, None, None, None]

    def _add_noise(self, x_t: Tensor, t: Tensor, noise: Tensor | None) -> Tensor:
        if self.config.noise_std == 0:
            return x_t
        noise = torch.randn_like(x_t) if noise is None else noise
        return x_t + self._noise_scale(t, x_t) * noise


def gram_eigh_svd(x: Tensor) -> SVDFactors:
    """Thin SVD of x [..., H, W] from eigh of its float64 Gram matrix, in x's dtype."""
    if x.shape[-2] > x.shape[-1]:  # tall: from the wide Xᵀ = V Σ Uᵀ
        U, S, Vh = gram_eigh_svd(x.mT)
        return SVDFactors(Vh.mT.contiguous(), S, U.mT.contiguous())
    wide = x.double()
    U = torch.linalg.eigh(wide @ wide.mT).eigenvectors.flip(-1)  # descending eigenvalues
    Y = U.mT @ wide  # rows σ_i v_iᵀ
    S, order = torch.linalg.vector_norm(Y, dim=-1).sort(dim=-1, descending=True, stable=True)
    U = U.gather(-1, order.unsqueeze(-2).expand_as(U))
    Y = Y.gather(-2, order.unsqueeze(-1).expand_as(Y))
    Vh = torch.where(S[..., None] > 0, Y / S[..., None].clamp_min(1e-300), 0.0)
    return SVDFactors(U.to(x.dtype), S.to(x.dtype), Vh.to(x.dtype))
