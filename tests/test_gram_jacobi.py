"""gram_eigh's batched Jacobi (issue 20): the route it takes on CUDA, checked on this CPU.
Its factors match LAPACK's SVD in float64 on fresh random inputs (a new seed each run,
printed on failure), and it dispatches no torch.linalg decomposition (each reads its error
flags on the host, a sync on CUDA) and, after the first call on a device, copies nothing from
the host: on the ``meta`` stand-in device under tests/test_host_copies.py's spy."""

from __future__ import annotations

import secrets

import pytest
import torch
from test_host_copies import META, HostToDevice
from torch.utils._python_dispatch import TorchDispatchMode

from corediff_plugins.degradations.svd import JACOBI_MAX, gram_eigh_svd


class Ops(TorchDispatchMode):
    """The names of the aten ops dispatched inside."""

    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(func.name())
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("shape", [(3, 7, 7), (2, 2, 16, 24), (4, 33, 20), (2, 64, 64)])
def test_factors_match_lapack_svd_in_float64(shape: tuple[int, ...]) -> None:
    seed = secrets.randbits(32)
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    U, S, Vh = gram_eigh_svd(x)
    reference = torch.linalg.svd(x, full_matrices=False)
    where = f"shape {shape}, seed {seed}"
    torch.testing.assert_close(S, reference.S, rtol=1e-10, atol=1e-12, msg=where)
    torch.testing.assert_close(U @ torch.diag_embed(S) @ Vh, x, rtol=0, atol=1e-11, msg=where)
    for k in range(1, S.shape[-1]):  # every truncation: the same rank-k projection
        ours = U[..., :k] @ torch.diag_embed(S[..., :k]) @ Vh[..., :k, :]
        lapack = reference.U[..., :k] @ torch.diag_embed(reference.S[..., :k]) @ \
            reference.Vh[..., :k, :]
        gap = (reference.S[..., k - 1] - reference.S[..., k]).min() / reference.S.max()
        torch.testing.assert_close(ours, lapack, rtol=0, atol=1e-9 / gap.item(),
                                   msg=f"{where}, rank {k}")


def test_rank_deficient_inputs_keep_their_rank() -> None:
    """Rank-3 matrices: three singular values as LAPACK's, the rest ~0, and the rank-3
    truncation gives the matrix back (the null space's eigenvectors are arbitrary)."""
    seed = secrets.randbits(32)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(6, 40, 3, dtype=torch.float64, generator=generator) @ torch.randn(
        6, 3, 40, dtype=torch.float64, generator=generator)
    U, S, Vh = gram_eigh_svd(x)
    torch.testing.assert_close(S[..., :3], torch.linalg.svdvals(x)[..., :3], rtol=1e-10,
                               atol=0, msg=str(seed))
    assert (S[..., 3:] <= 1e-7 * S[..., :1]).all(), seed
    torch.testing.assert_close(U[..., :3] @ torch.diag_embed(S[..., :3]) @ Vh[..., :3, :], x,
                               rtol=0, atol=1e-9 * x.abs().max().item(), msg=str(seed))


def test_no_linalg_call_and_no_host_copy_after_the_first() -> None:
    x = torch.randn(4, 3, 64, 48, dtype=torch.float64)
    with Ops() as ops:
        gram_eigh_svd(x)
    assert not {n for n in ops.names if "linalg" in n and "norm" not in n}, ops.names
    x = torch.empty(4, 3, 32, 32, device=META)
    gram_eigh_svd(x)  # the round tables go to the device once
    with HostToDevice() as spy:
        U, S, Vh = gram_eigh_svd(x)
    assert spy.copies == [] and U.device == S.device == Vh.device == META


def test_larger_matrices_take_torch_eigh() -> None:
    with Ops() as ops:
        gram_eigh_svd(torch.randn(1, JACOBI_MAX + 1, JACOBI_MAX + 2, dtype=torch.float64))
    assert "aten::_linalg_eigh" in ops.names
