"""Pinned samples of the continuous-time samplers, kept through the one-Gaussian-family
refactor (issue 19): every pre-refactor sampler name (euler, heun, dpmpp_2m ODE and SDE,
unipc, edm_euler, edm_heun with churn, flow_euler, flow_heun with SD3's shift), on the
degradation it was written for, with a fixed analytic network, x_T and noise.

``tests/data/pinned_solvers.safetensors`` was computed by commit 622e170 (the code before the
refactor; regenerate with ``python tests/test_pinned_solvers.py`` from a checkout of the commit
to pin). :data:`EXACT` lists the cases whose arithmetic the refactor kept: they must match bit
for bit — all of them: the presets edm_euler / edm_heun / flow_euler / flow_heun are the
family's Euler and Heun with the arithmetic of the former samplers (x·1.0 and α = 1 exact).
A case outside EXACT would have to match to 1e-6.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import corediff

REFERENCE = Path(__file__).resolve().parent / "data" / "pinned_solvers.safetensors"
SHAPE = (2, 3, 8, 8)

#: Degradations: (schedule type, schedule fields, degradation type, parameterizations).
FAMILIES: dict[str, tuple[str, dict[str, Any], str]] = {
    "vp": ("cosine", {"steps": 1000}, "gaussian"),
    "vp_linear": ("linear", {"steps": 1000}, "gaussian"),
    "flow": ("flow", {}, "flow"),
    "edm": ("edm", {}, "edm"),
}

#: case -> (family, parameterization, sampler type, sampler fields)
CASES: dict[str, tuple[str, str, str, dict[str, Any]]] = {
    **{f"vp_{p}_{name}_{sigmas}": (fam, p, name, {"steps": 10, "sigmas": sigmas})
       for p, fam in (("v", "vp"), ("eps", "vp_linear"))
       for name in ("euler", "heun", "dpmpp_2m", "unipc")
       for sigmas in ("schedule", "karras")},
    "vp_v_dpmpp_2m_sde": ("vp", "v", "dpmpp_2m", {"steps": 10, "sde": True}),
    "vp_eps_unipc_leading": ("vp_linear", "eps", "unipc", {"steps": 7, "spacing": "leading"}),
    "vp_eps_euler_trailing": ("vp_linear", "eps", "euler", {"steps": 7, "spacing": "trailing"}),
    "edm_edm_euler": ("edm", "edm", "edm_euler", {"steps": 12}),
    "edm_edm_heun": ("edm", "edm", "edm_heun", {"steps": 8}),
    "edm_edm_heun_churn": ("edm", "edm", "edm_heun",
                           {"steps": 8, "S_churn": 40.0, "S_tmin": 0.05, "S_tmax": 50.0,
                            "S_noise": 1.003}),
    "edm_edm_euler_rho": ("edm", "edm", "edm_euler", {"steps": 6, "rho": 3.0,
                                                      "sigma_min": 0.01}),
    "flow_velocity_flow_euler": ("flow", "velocity", "flow_euler", {"steps": 10}),
    "flow_velocity_flow_euler_shift": ("flow", "velocity", "flow_euler",
                                       {"steps": 10, "shift": 3.0}),
    "flow_velocity_flow_heun": ("flow", "velocity", "flow_heun", {"steps": 6}),
    "flow_x0_flow_heun_shift": ("flow", "x0", "flow_heun", {"steps": 6, "shift": 2.0}),
}

#: Cases whose arithmetic is unchanged by the refactor: bit for bit.
EXACT: set[str] = set(CASES)
#: Tolerance of the others (absolute, rtol 0).
ATOL = 1e-6


def network(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A fixed smooth stand-in for a trained network of (x, its time input)."""
    t = t.double().view(-1, 1, 1, 1)
    return (0.8 * torch.tanh(x) + 0.05 * torch.cos(t).to(x.dtype)
            + 0.1 * x * torch.sigmoid(-t).to(x.dtype))


def run(case: str) -> dict[str, torch.Tensor]:
    family, param, kind, fields = CASES[case]
    schedule_type, schedule_fields, degradation_type = FAMILIES[family]
    schedule = corediff.create("schedule", schedule_type, **schedule_fields)
    degradation = corediff.create("degradation", degradation_type, schedule=schedule)
    parameterization = corediff.create("parameterization", param, degradation=degradation)
    sampler = corediff.create("sampler", kind, degradation=degradation,
                              parameterization=parameterization, **fields)
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    x = x * degradation.prior_std()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = sampler.sample(network, x, generator=torch.Generator().manual_seed(1),
                                trajectory=True)
    finally:
        torch.set_num_threads(threads)
    out = {f"{case}/sample": result.sample, f"{case}/direct": result.direct}
    out.update({f"{case}/x{i}": step.x_t for i, step in enumerate(result.trajectory)})
    return {k: v.float().contiguous().clone() for k, v in out.items()}


@pytest.fixture(scope="module")
def reference() -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(REFERENCE))


@pytest.mark.parametrize("case", sorted(CASES))
def test_pinned_solver_samples(case: str, reference: dict[str, torch.Tensor]) -> None:
    ours = run(case)
    theirs = {k: v for k, v in reference.items() if k.startswith(f"{case}/")}
    assert set(ours) == set(theirs), f"{case}: visited steps changed"
    worst = max((ours[k] - theirs[k]).abs().max().item() for k in ours)
    if case in EXACT:
        assert worst == 0.0, f"{case}: bit-exact case moved by {worst:.3g}"
    else:
        assert worst <= ATOL, f"{case}: moved by {worst:.3g} > {ATOL}"


if __name__ == "__main__":
    import subprocess

    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    for name in sorted(CASES):
        tensors.update(run(name))
    source = Path(corediff.__file__).resolve().parent.parent
    commit = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    save_file(tensors, str(REFERENCE), metadata={"commit": commit, "torch": torch.__version__})
    print(f"{len(tensors)} tensors -> {REFERENCE}")
