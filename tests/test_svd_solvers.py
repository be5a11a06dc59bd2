"""SVD degradation solvers (``SVDConfig.solver``) against a per-sample float64 reference:
torch.linalg.svd of each image in float64, then an explicit U diag(S_masked) Vᵀ truncation.

On CPU the cuSOLVER drivers fall back to LAPACK, so the gesvd / gesvdj / gesvda cases check
that fallback; the CUDA test compares every route on a GPU (skipped without one)."""

from __future__ import annotations

import pydantic
import pytest
import torch

from corediff_plugins.degradations.svd import SVDConfig, SVDDegradation
from corediff_plugins.schedules.rank_linear import RankLinearConfig, RankLinearSchedule

SOLVERS = ["auto", "gesvd", "gesvdj", "gesvda", "gram_eigh"]
SHAPES = [(3, 2, 12, 20), (3, 2, 20, 12), (2, 3, 16, 16)]


def tolerance(solver: str) -> float:
    """Max abs error over every rank: LAPACK in float32 reaches ~1.04e-5 on one 20×12 case
    here (a near-tie of singular values); gram_eigh, computed in float64, stays below 1e-6."""
    return 1e-5 if solver == "gram_eigh" else 2e-5


def reference_truncation(x: torch.Tensor, k: list[int]) -> torch.Tensor:
    """Per image: float64 SVD, keep the k largest singular values, U diag(S) Vᵀ."""
    out = []
    for image, rank in zip(x.double(), k, strict=True):
        U, S, Vh = torch.linalg.svd(image, full_matrices=False)
        out.append(U @ torch.diag_embed(torch.where(torch.arange(S.shape[-1]) < rank, S, 0.0))
                   @ Vh)
    return torch.stack(out).to(x.dtype)


def make(steps: int, solver: str) -> SVDDegradation:
    schedule = RankLinearSchedule(RankLinearConfig(steps=steps))
    return SVDDegradation(SVDConfig(solver=solver), schedule=schedule)


def check_factors(factors, shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> None:
    U, S, Vh = factors
    K = min(shape[-2:])
    assert U.shape == (*shape[:2], shape[-2], K) and Vh.shape == (*shape[:2], K, shape[-1])
    assert S.dtype == U.dtype == Vh.dtype == dtype
    assert all(bool(part.isfinite().all()) for part in factors)
    assert (S >= 0).all() and (S.diff(dim=-1) <= 0).all()  # non-negative, descending


def check_every_rank(degradation: SVDDegradation, x: torch.Tensor, atol: float) -> float:
    """D(x0, t) from the factors at every t (all ranks K..0) against the reference; returns
    the largest absolute error."""
    K = min(x.shape[-2:])
    factors = degradation.decompose(x)
    check_factors(factors, x.shape, torch.float64 if x.dtype == torch.float64 else torch.float32)
    worst = 0.0
    for step in range(K + 1):
        t = torch.full((x.shape[0],), step)
        got = degradation.degrade_from_factors(factors, t).to(x.dtype)
        want = reference_truncation(x, [K - step] * x.shape[0])
        torch.testing.assert_close(got, want, atol=atol, rtol=0)
        worst = max(worst, (got.double() - want.double()).abs().max().item())
    return worst


def test_solver_is_validated_and_defaults_to_auto():
    assert SVDConfig().solver == "auto"
    with pytest.raises(pydantic.ValidationError):
        SVDConfig(solver="qr")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
@pytest.mark.parametrize("shape", SHAPES)
def test_cpu_auto_and_drivers_are_todays_lapack_route(shape, dtype):
    """On CPU auto and every driver give exactly the solver-less tensors (no driver error)."""
    x = (torch.rand(shape, generator=torch.Generator().manual_seed(0)) * 2 - 1).to(dtype)
    expected = torch.linalg.svd(x if dtype == torch.float64 else x.float(), full_matrices=False)
    t = torch.arange(shape[0]) * 3
    want = make(steps=min(shape[-2:]), solver="auto").degrade(x, t)
    for solver in ["auto", "gesvd", "gesvdj", "gesvda"]:
        degradation = make(steps=min(shape[-2:]), solver=solver)
        for got, ref in zip(degradation.decompose(x), expected, strict=True):
            assert torch.equal(got, ref)
        assert torch.equal(degradation.degrade(x, t), want)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("solver", SOLVERS)
def test_solver_matches_reference(solver, shape):
    x = torch.rand(shape, generator=torch.Generator().manual_seed(1)) * 2 - 1
    degradation = make(steps=min(shape[-2:]), solver=solver)
    check_every_rank(degradation, x, tolerance(solver))
    t = torch.zeros(shape[0], dtype=torch.long)  # full rank: x0 (degrade returns it exactly)
    torch.testing.assert_close(degradation.degrade_from_factors(degradation.decompose(x), t), x,
                               atol=tolerance(solver), rtol=0)
    assert torch.equal(degradation.degrade(x, t), x)


@pytest.mark.parametrize("tall", [False, True])
@pytest.mark.parametrize("solver", SOLVERS)
def test_rank_deficient_inputs(solver, tall):
    """Channel 0 has rank 2, channel 1 is all zero, channel 2 is rank 1 with a tiny rank-2
    part (singular values 1e-6 times the largest)."""
    generator = torch.Generator().manual_seed(2)
    H, W = (20, 12) if tall else (12, 20)
    a, b = torch.randn(2, 3, H, 2, generator=generator), torch.randn(2, 3, 2, W,
                                                                      generator=generator)
    x = a @ b
    x[:, 1] = 0
    x[:, 2] = a[:, 2, :, :1] @ b[:, 2, :1] + 1e-6 * (a[:, 2] @ b[:, 2])
    degradation = make(steps=min(H, W), solver=solver)
    check_every_rank(degradation, x, tolerance(solver))
    _, S, _ = degradation.decompose(x)
    assert (S[:, 0, 2:] < 1e-5 * S[:, 0, :1]).all()
    assert torch.count_nonzero(S[:, 1]) == 0
    zero = degradation.degrade_from_factors(degradation.decompose(x), torch.tensor([0, 5]))
    assert torch.count_nonzero(zero[:, 1]) == 0


def test_gram_eigh_factors_cached_and_flipped():
    x = torch.rand(4, 3, 16, 12, generator=torch.Generator().manual_seed(3)) * 2 - 1
    degradation = make(steps=12, solver="gram_eigh")
    t = torch.tensor([1, 5, 11, 12])
    factors = degradation.decompose(x)
    torch.testing.assert_close(degradation.degrade_from_factors(factors, t),
                               degradation.degrade(x, t), atol=1e-6, rtol=0)
    flipped = degradation.degrade_from_factors(degradation.flip_factors(factors), t)
    torch.testing.assert_close(flipped, reference_truncation(x.flip(-1), [11, 7, 1, 0]),
                               atol=1e-4, rtol=0)
    U, _, Vh = factors  # U orthonormal; Vh rows unit length (full rank here: orthonormal)
    eye = torch.eye(12).expand(4, 3, 12, 12)
    torch.testing.assert_close(U.mT @ U, eye, atol=1e-5, rtol=0)
    torch.testing.assert_close(Vh @ Vh.mT, eye, atol=1e-5, rtol=0)


def test_gram_eigh_keeps_float64():
    x = torch.randn(2, 3, 10, 14, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    check_every_rank(make(steps=10, solver="gram_eigh"), x, atol=1e-10)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("solver", SOLVERS)
def test_cuda_solvers_match_reference(solver):
    """Every route on the GPU, including the 64×64 training size and rank-deficient channels,
    against the float64 CPU reference; auto is gram_eigh for float32 on CUDA."""
    generator = torch.Generator().manual_seed(5)
    for shape in [(4, 3, 64, 64), (3, 2, 12, 20), (3, 2, 20, 12)]:
        x = torch.rand(shape, generator=generator) * 2 - 1
        x[0, 1] = 0
        x[1, 0] = x[1, 0, :, :2] @ x[1, 0, :2, :]  # rank 2
        degradation = make(steps=min(shape[-2:]), solver=solver)
        factors = degradation.decompose(x.cuda())
        check_factors(factors, shape)
        K = min(shape[-2:])
        for step in [0, 1, K // 2, K - 2, K]:
            t = torch.full((shape[0],), step)
            got = degradation.degrade_from_factors(factors, t.cuda()).cpu()
            atol = 1e-3 if solver == "gesvda" else 2e-4  # float32 at 64×64: ~1e-4 (see bench)
            torch.testing.assert_close(got, reference_truncation(x, [K - step] * shape[0]),
                                       atol=atol, rtol=0)
    if solver == "auto":
        gram = make(steps=K, solver="gram_eigh").decompose(x.cuda())
        for got, want in zip(factors, gram, strict=True):
            torch.testing.assert_close(got, want)
