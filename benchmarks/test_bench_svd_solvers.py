"""SVD degradation solvers on CPU (batch 32 of 3×64×64): the LAPACK route (``solver="auto"``,
torch.linalg.svd) versus ``gram_eigh`` (float64 Gram matrix + eigh), timed in the same run.

Only a CPU figure: the GPU choice in ``auto`` is argued in the plugin's docstring, and the
CUDA accuracy check is ``tests/test_svd_solvers.py::test_cuda_solvers_match_reference``.
"""

from __future__ import annotations

import torch
from timing import best_time

from corediff_plugins.degradations.svd import SVDConfig, SVDDegradation
from corediff_plugins.schedules.rank_linear import RankLinearConfig, RankLinearSchedule

SHAPE = (32, 3, 64, 64)


def test_lapack_vs_gram_eigh_decompose(benchmark):
    x0 = torch.rand(SHAPE, generator=torch.Generator().manual_seed(0)) * 2 - 1
    schedule = RankLinearSchedule(RankLinearConfig(steps=64))
    lapack, gram = (SVDDegradation(SVDConfig(solver=solver), schedule=schedule)
                    for solver in ("auto", "gram_eigh"))
    t = torch.randint(1, 65, (SHAPE[0],), generator=torch.Generator().manual_seed(1))
    reference = lapack.degrade(x0.double(), t).float()
    for degradation in (lapack, gram):
        torch.testing.assert_close(degradation.degrade(x0, t), reference, atol=1e-4, rtol=0)
    lapack_s = best_time(lambda: lapack.decompose(x0), repeats=3)
    gram_s = best_time(lambda: gram.decompose(x0), repeats=3)
    ratio = lapack_s / gram_s
    benchmark.extra_info.update(lapack_s=lapack_s, gram_eigh_s=gram_s, lapack_over_gram=ratio)
    benchmark.pedantic(lambda: gram.decompose(x0), rounds=3, iterations=1)
    print(f"\nlapack {lapack_s * 1e3:.1f} ms, gram_eigh {gram_s * 1e3:.1f} ms: "
          f"lapack / gram_eigh = {ratio:.2f}x")
