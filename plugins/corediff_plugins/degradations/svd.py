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
  code). For float32 on CUDA, ``gram_eigh``.

Why gram_eigh decomposes G with its own batched Jacobi (:func:`jacobi_eigenvectors`) where
it can: every torch.linalg decomposition but the ``*_ex`` ones (Cholesky, LU, LDL, inverse,
solve; there is no ``eigh_ex``) reads its error flags on the host, a sync per call; and above
32×32 PyTorch's CUDA eigh loops one cuSOLVER syevj/syevd call per matrix (its batched
syevjBatched is used only up to 32×32), as its svd loops gesvdj (gesvda is batched but
approximate, poor for rank-deficient matrices). The parallel cyclic Jacobi is plain batched
matmuls: no host sync, one launch sequence for the whole batch (about 15 launches per round,
n − 1 rounds per sweep, a fixed ⌈log2 n⌉ + 4 sweeps), at sweeps·n⁴ flops per matrix; so it
serves n ≤ ``JACOBI_MAX`` = 128, and larger matrices go back to ``torch.linalg.eigh``
(n³ per matrix, looped, one sync). From PyTorch's source (BatchLinearAlgebraLib.cpp,
linalg_eigh_cusolver) and cuSOLVER's documentation; no GPU has timed it here
(``corediff bench`` measures it).
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch
from pydantic import Field, NonNegativeFloat, NonNegativeInt
from torch import Tensor

from corediff.config import ComponentConfig
from corediff.interfaces import Degradation
from corediff.maths.cold import svd_error_curve
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
    gram = wide @ wide.mT
    U = jacobi_eigenvectors(gram) if gram.shape[-1] <= JACOBI_MAX else \
        torch.linalg.eigh(gram).eigenvectors
    Y = U.mT @ wide  # rows σ_i v_iᵀ, in any order: sorted by σ below
    S, order = torch.linalg.vector_norm(Y, dim=-1).sort(dim=-1, descending=True, stable=True)
    U = U.gather(-1, order.unsqueeze(-2).expand_as(U))
    Y = Y.gather(-2, order.unsqueeze(-1).expand_as(Y))
    Vh = torch.where(S[..., None] > 0, Y / S[..., None].clamp_min(1e-300), 0.0)
    return SVDFactors(U.to(x.dtype), S.to(x.dtype), Vh.to(x.dtype))


#: Largest n whose Gram matrices :func:`jacobi_eigenvectors` decomposes (see the module doc).
JACOBI_MAX = 128
_ROUNDS: dict[tuple[int, torch.device], tuple[Tensor, Tensor]] = {}


def _rounds(m: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """For each of the m − 1 rounds of the round-robin (circle) ordering of m indices, in
    which every index is paired once: the flat positions in an m×m matrix read (a_pp, a_qq,
    a_pq) and written (r_pp, r_pq, r_qp, r_qq) by its m/2 disjoint rotations. Built once per
    (m, device): a host→device copy the first time only."""
    key = (m, torch.device(device))
    if key not in _ROUNDS:
        order, reads, writes = list(range(m)), [], []
        for _ in range(m - 1):
            p, q = order[: m // 2], order[::-1][: m // 2]
            diagonal = [i * m + i for i in p] + [j * m + j for j in q]
            pairs = list(zip(p, q, strict=True))
            upper, lower = [i * m + j for i, j in pairs], [j * m + i for i, j in pairs]
            reads.append(diagonal + upper)
            writes.append(diagonal[: m // 2] + upper + lower + diagonal[m // 2:])
            order = [order[0], order[-1], *order[1:-1]]
        _ROUNDS[key] = (torch.tensor(reads, device=device), torch.tensor(writes, device=device))
    return _ROUNDS[key]


def jacobi_eigenvectors(gram: Tensor) -> Tensor:
    """Eigenvectors (columns, in no particular order) of symmetric matrices [..., n, n] by
    the parallel cyclic Jacobi method (Golub & Van Loan, "Matrix Computations", 4th ed.,
    §8.5.2 symmetric Schur decomposition and §8.5.5 parallel ordering): each round zeroes
    m/2 disjoint off-diagonal pairs at once, G ← Rᵀ G R, V ← V R, with
    t = sign(τ) / (|τ| + √(1 + τ²)), τ = (a_qq − a_pp) / (2 a_pq), c = 1 / √(1 + t²), s = t·c.
    A fixed ⌈log2 n⌉ + 4 sweeps (no convergence test: it would be a host sync); odd n is
    padded with a zero row and column, which decouples."""
    n = gram.shape[-1]
    m = n + n % 2
    if m != n:
        gram = torch.nn.functional.pad(gram, (0, 1, 0, 1))
    reads, writes = _rounds(m, gram.device)
    flat = (*gram.shape[:-2], m * m)
    vectors = torch.eye(m, dtype=gram.dtype, device=gram.device).expand_as(gram)
    for _ in range(math.ceil(math.log2(max(m, 2))) + 4):
        for read, write in zip(reads, writes, strict=True):
            app, aqq, apq = gram.flatten(-2).index_select(-1, read).chunk(3, -1)
            coupled = apq != 0
            tau = (aqq - app) / (2 * torch.where(coupled, apq, 1.0))
            t = torch.where(tau >= 0, 1.0, -1.0) / (tau.abs() + torch.hypot(
                torch.ones_like(tau), tau))
            t = torch.where(coupled, t, 0.0)
            c = torch.rsqrt(1 + t * t)
            s = t * c
            rotation = gram.new_zeros(flat).index_copy_(
                -1, write, torch.cat([c, s, -s, c], -1)).view(gram.shape)
            gram = rotation.mT @ gram @ rotation
            vectors = vectors @ rotation
    return vectors[..., :n, :n]
