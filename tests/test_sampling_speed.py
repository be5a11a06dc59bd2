"""Sampling speed settings ([sample] precision and compile, batches streamed) keep samples
right: bf16 runs the network in bfloat16 and stays close to fp32, tf32 is set only while
sampling, torch.compile gives the eager samples, and batches come one at a time."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import corediff
from corediff.pipeline import sampling_network, tf32

QUICKSTART = Path(__file__).resolve().parents[1] / "recipes" / "quickstart.toml"


@pytest.fixture(scope="module")
def pipeline() -> corediff.Pipeline:
    """The quickstart pipeline with random (not zero-initialised) weights, so the network's
    output, and its precision, matter."""
    recipe = corediff.load_recipe(QUICKSTART, overrides=["diffusion.sampler.steps=5"])
    built = corediff.build(recipe)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in built.model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
    return built.model.eval() and built


def test_bf16_runs_the_network_in_bfloat16_close_to_fp32(pipeline: corediff.Pipeline) -> None:
    dtypes: list[torch.dtype] = []
    handle = pipeline.model.register_forward_hook(lambda m, i, out: dtypes.append(out.dtype))
    try:
        full = pipeline.sample(6, seed=1)
        half = pipeline.sample(6, seed=1, precision="bf16")
    finally:
        handle.remove()
    assert dtypes[:5] == [torch.float32] * 5 and set(dtypes[5:]) == {torch.bfloat16}
    difference = (full - half).abs()
    assert 0 < difference.mean() < 0.05 and half.dtype == torch.float32


def test_tf32_is_on_only_while_sampling(pipeline: corediff.Pipeline) -> None:
    seen: list[bool] = []
    handle = pipeline.model.register_forward_hook(
        lambda m, i, out: seen.append(torch.backends.cuda.matmul.allow_tf32))
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        same = pipeline.sample(4, seed=2, precision="tf32")
    finally:
        handle.remove()
    assert seen and all(seen)
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before
    assert torch.equal(same, pipeline.sample(4, seed=2))  # a CPU has no TF32
    with tf32(True):
        assert torch.backends.cudnn.allow_tf32


def test_compiled_network_samples_as_eager(pipeline: corediff.Pipeline) -> None:
    eager = pipeline.sample(4, seed=3)
    compiled = pipeline.sample(4, seed=3, compile=True)
    torch.testing.assert_close(compiled, eager, atol=1e-4, rtol=0)


def test_batches_stream_and_add_up_to_generate(pipeline: corediff.Pipeline) -> None:
    batches = list(pipeline.generate_batches(10, seed=4, batch_size=4))
    assert [len(batch.images) for batch in batches] == [4, 4, 2]
    assert torch.equal(torch.cat([b.images for b in batches]),
                       pipeline.sample(10, seed=4, batch_size=4))
    assert all(batch.nfe == pipeline.sampler.nfe() for batch in batches)


def test_sampling_network_returns_float32() -> None:
    layer = torch.nn.Linear(3, 3)
    out = sampling_network(layer, "bf16")(torch.ones(2, 3))
    assert out.dtype == torch.float32


def test_recipe_refuses_an_unknown_precision() -> None:
    with pytest.raises(corediff.CorediffError, match="precision"):
        corediff.load_recipe(QUICKSTART, overrides=["sample.precision='fp8'"])
