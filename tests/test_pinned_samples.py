"""Pinned samples: the core refactor must not change what a recipe and a seed produce.

``tests/data/pinned_samples.safetensors`` holds samples computed by the code as it was
before the refactor (commit in the file's metadata; regenerate with
``tests/data/make_pinned.py``). Every test here recomputes one of them with the code now
installed and requires it to match to atol = 1e-5 (rtol = 0; SVD cases 1e-3, see SVD_ATOL):

* ``quickstart`` / ``quickstart_ddpm20``: ``recipes/quickstart.toml`` trained for 30 steps
  through the CLI, then 10 samples (seed 0) from the EMA weights with the recipe's DDIM
  sampler, and with ``diffusion.sampler.type=ddpm``, ``diffusion.sampler.steps=20``.
* ``sampler/<case>/{sample,direct}``: each sampler on a fixed analytic "network"
  (:func:`pinned_network`) from a fixed start, no training involved.

Only entry points meant to survive the refactor are used: ``corediff.load_recipe``,
``corediff.create``, ``corediff.build``, ``corediff.cli.main`` and
``Sampler.sample(fn, x, generator=..., trajectory=False)`` with a plain ``fn(x, t)``.
Loading a checkpoint goes through ``corediff.load`` once it exists (see :func:`sample_run`).

Bitwise-level agreement assumes the same torch build and CPU kind as the references; both
sides run on the CPU with one intra-op thread (:func:`one_thread`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch

import corediff

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = Path(__file__).resolve().parent / "data" / "pinned_samples.safetensors"
QUICKSTART = ROOT / "recipes" / "quickstart.toml"

ATOL = 1e-5
#: SVD cases: LAPACK's float32 SVD differs in its last bits between CPU kinds (MKL picks its
#: code path by instruction set), and x <- D(f(x, s), s') over T steps amplifies that to
#: ~4e-4 (measured between the reference machine and a Xeon with AVX-512). A changed
#: algorithm, rank or step order moves samples by ~1e-1, far above this.
SVD_ATOL = 1e-3

# -- the quickstart pins ------------------------------------------------------------------------
#: Overrides of recipes/quickstart.toml for the pinned training run (run.device = "cpu" so a
#: machine with a GPU trains and samples exactly as the reference did).
TRAIN_OVERRIDES = [
    "train.steps=30", "train.batch_size=16", "train.log_every=10",
    "train.checkpoint_every=30", "train.warmup_steps=5",
    "sample.n=10", "sample.batch_size=10", "run.device=cpu",
]
#: Sample-time overrides per pinned key (as ``corediff sample RUN --set ...``).
QUICKSTART_SAMPLES: dict[str, list[str]] = {
    "quickstart": [],
    "quickstart_ddpm20": ["diffusion.sampler.type=ddpm", "diffusion.sampler.steps=20"],
}
SAMPLE_N, SAMPLE_SEED = 10, 0


@contextmanager
def one_thread() -> Iterator[None]:
    """One intra-op thread: CPU reductions (conv backward) then do not depend on core count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def train_quickstart(run_dir: Path) -> None:
    """30 training steps of the quickstart recipe through the CLI, into ``run_dir``."""
    from corediff.cli import main

    args = ["train", str(QUICKSTART), "--run-dir", str(run_dir)]
    for override in TRAIN_OVERRIDES:
        args += ["--set", override]
    with one_thread():
        code = main(args)
    assert code == 0, f"corediff train exited with {code}"


def sample_run(run_dir: Path, overrides: Sequence[str] = ()) -> torch.Tensor:
    """SAMPLE_N samples (seed SAMPLE_SEED) from the run's ``last`` checkpoint, EMA weights and
    the recipe's [sample] settings (guidance 2.0, batch 10, no fixed label), as
    ``corediff sample RUN --n 10 --seed 0 [--set ...]`` would draw them; [N, C, H, W] on CPU."""
    with one_thread():
        pipeline = corediff.load(run_dir, which="last", overrides=list(overrides))
        return pipeline.sample(SAMPLE_N, seed=SAMPLE_SEED)


def quickstart_samples(run_dir: Path) -> dict[str, torch.Tensor]:
    """Train once into ``run_dir`` and draw every pinned quickstart sample."""
    train_quickstart(run_dir)
    return {key: sample_run(run_dir, overrides) for key, overrides in QUICKSTART_SAMPLES.items()}


# -- the sampler pins ---------------------------------------------------------------------------
SHAPE = (2, 3, 16, 16)


def pinned_network(steps: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """A fixed deterministic stand-in for a trained network: f(x, t) of both arguments.

    0.9 rather than a smaller gain: x0-predicting cold samplers iterate x <- D(f(x, s), s'),
    and a strong contraction would make their samples forget the start (and hide changes)."""

    def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return 0.9 * torch.tanh(x) + 0.1 * t.float().view(-1, 1, 1, 1) / steps

    return fn


#: Degradations by name: (schedule type, schedule fields, degradation type, its fields).
DEGRADATIONS: dict[str, tuple[str, dict[str, Any], str, dict[str, Any]]] = {
    "gaussian": ("cosine", {"steps": 100}, "gaussian", {}),
    "svd": ("rank_linear", {"steps": 8}, "svd", {}),
    "blur": ("blur_incremental", {"steps": 10}, "blur", {}),
}

#: With ε-prediction, x̂0 = (x - sqrt(1 - ᾱ_t)·ε̂)/sqrt(ᾱ_t) reaches ~1e3 at t = T (ᾱ_T ≈ 1e-6
#: for cosine, T = 100), where float32 rounding alone exceeds ATOL; so the ε cases clamp x̂0
#: (clip_x0 = true) and the v cases cover the unclamped path.
_CLIP = {"eps": {"clip_x0": True}, "v": {}}
_GAUSSIAN_SAMPLERS: dict[str, tuple[str, dict[str, Any]]] = {
    "ddpm10_fixed_small": ("ddpm", {"steps": 10, "variance": "fixed_small"}),
    "ddpm10_fixed_large": ("ddpm", {"steps": 10, "variance": "fixed_large"}),
    "ddim10_eta0": ("ddim", {"steps": 10, "eta": 0.0}),
    "ddim10_eta1_leading": ("ddim", {"steps": 10, "eta": 1.0, "spacing": "leading"}),
    "ddim_spacing_ddim20": ("ddim", {"spacing": "ddim20"}),
    "one_step": ("one_step", {}),
}
_COLD_SAMPLERS: dict[str, tuple[str, dict[str, Any]]] = {
    "cold_naive": ("cold_naive", {}),
    "cold_improved": ("cold_improved", {}),
    "cold_improved4": ("cold_improved", {"steps": 4}),
}

#: case -> (degradation, parameterization, sampler type, sampler fields)
SAMPLER_CASES: dict[str, tuple[str, str, str, dict[str, Any]]] = {
    **{f"gaussian_{p}_{name}": ("gaussian", p, kind, {**fields, **_CLIP[p]})
       for p in ("eps", "v") for name, (kind, fields) in _GAUSSIAN_SAMPLERS.items()},
    **{f"svd_{p}_{name}": ("svd", p, kind, fields)
       for p in ("residual", "x0") for name, (kind, fields) in _COLD_SAMPLERS.items()},
    **{f"blur_x0_{name}": ("blur", "x0", kind, fields)
       for name, (kind, fields) in _COLD_SAMPLERS.items() if name != "cold_improved4"},
}


def sampler_case(case: str) -> dict[str, torch.Tensor]:
    """Run one sampler case; returns {"sampler/<case>/sample": ..., ".../direct": ...}."""
    degradation_name, param, kind, fields = SAMPLER_CASES[case]
    schedule_type, schedule_fields, degradation_type, degradation_fields = (
        DEGRADATIONS[degradation_name])
    schedule = corediff.create("schedule", schedule_type, **schedule_fields)
    degradation = corediff.create(
        "degradation", degradation_type, schedule=schedule, **degradation_fields)
    parameterization = corediff.create("parameterization", param, degradation=degradation)
    sampler = corediff.create(
        "sampler", kind, degradation=degradation, parameterization=parameterization, **fields)
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    with one_thread():
        result = sampler.sample(
            pinned_network(schedule_fields["steps"]), x,
            generator=torch.Generator().manual_seed(1), trajectory=False,
        )
    return {f"sampler/{case}/sample": result.sample.float().cpu(),
            f"sampler/{case}/direct": result.direct.float().cpu()}


def all_sampler_cases() -> dict[str, torch.Tensor]:
    return {key: value for case in SAMPLER_CASES for key, value in sampler_case(case).items()}


# -- the tests ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def reference() -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(REFERENCE))


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    return quickstart_samples(tmp_path_factory.mktemp("pinned") / "quickstart")


def test_reference_covers_every_case(reference: dict[str, torch.Tensor]) -> None:
    expected = set(QUICKSTART_SAMPLES) | {
        f"sampler/{case}/{part}" for case in SAMPLER_CASES for part in ("sample", "direct")}
    assert set(reference) == expected


@pytest.mark.parametrize("key", list(QUICKSTART_SAMPLES))
def test_quickstart_samples_unchanged(
    key: str, quickstart: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]
) -> None:
    """Same recipe, same 30 training steps, same seed: the same samples as before."""
    torch.testing.assert_close(quickstart[key], reference[key], rtol=0, atol=ATOL)


@pytest.mark.parametrize("case", list(SAMPLER_CASES))
def test_sampler_unchanged(case: str, reference: dict[str, torch.Tensor]) -> None:
    """Same sampler config, network, start and generator: the same sample and direct x̂0."""
    atol = SVD_ATOL if case.startswith("svd_") else ATOL
    for key, value in sampler_case(case).items():
        torch.testing.assert_close(
            value, reference[key], rtol=0, atol=atol, msg=lambda m, k=key: f"{k}: {m}")
