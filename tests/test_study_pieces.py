"""The study's pieces against closed forms and oracles, on fresh random inputs: the
random_start prior, the cold_fixed_noise sampler (a transcription of Cold Diffusion's
``gen_sample`` "x0_step_down" loop from the SVD notes), the book's snr_book weighting and
quadratic_book schedule, the held-out validation loss that picks ``best``, and the refusal of
ε-prediction with zero terminal SNR."""

from __future__ import annotations

import math
import secrets
from pathlib import Path

import numpy as np
import pytest
import torch

import corediff
from corediff.cli import main
from corediff.engine import checkpoint, distributed
from corediff.engine.rundir import RunDir
from corediff.engine.trainer import Trainer, _Indexed, run_training, split_indices
from corediff.errors import ConfigError
from corediff.recipe import check_compatibility, load_recipe
from corediff.testing import write_image_folder

QUICKSTART = str(Path(__file__).resolve().parents[1] / "recipes" / "quickstart.toml")
REFUSAL = ("ε-prediction cannot predict x0 where ᾱ_T = 0 (zero terminal SNR, e.g. "
           "rescale_zero_terminal_snr = true): use v- or x0-prediction")


def fresh() -> torch.Generator:
    """A generator with a fresh seed, printed (pytest shows it when the test fails)."""
    seed = secrets.randbits(31)
    print(f"fresh seed: {seed}")
    return torch.Generator().manual_seed(seed)


def gaussian(schedule: str = "cosine", steps: int = 20, **fields):
    sched = corediff.create("schedule", schedule, steps=steps, **fields)
    return corediff.create("degradation", "gaussian", schedule=sched)


def chain(parameterization: str, **schedule):
    degradation = gaussian(**schedule)
    param = corediff.create("parameterization", parameterization, degradation=degradation)
    return degradation, param


# -- 1. random_start -------------------------------------------------------------------------
@pytest.mark.parametrize("cold", [False, True], ids=["gaussian", "blur"])
def test_random_start_step(cold):
    g = fresh()
    for _ in range(20):
        steps = int(torch.randint(1, 400, (), generator=g))
        fraction = float(torch.rand((), generator=g)) * 0.999 + 0.001
        if cold:
            schedule = corediff.create("schedule", "blur_incremental", steps=steps)
            degradation = corediff.create("degradation", "blur", schedule=schedule)
        else:
            degradation = gaussian(steps=steps)
        prior = corediff.create("prior", "random_start", degradation=degradation,
                                fraction=fraction)
        assert prior.start_step() == max(1, round(fraction * steps))
    assert corediff.create("prior", "random_start", degradation=gaussian(steps=10),
                           fraction=0.7).start_step() == 7  # the SVD notes' 70 %


@pytest.mark.parametrize("distribution", ["normal", "uniform"])
def test_random_start_draws_and_moments(distribution):
    g = fresh()
    scale = float(torch.rand((), generator=g)) * 3 + 0.1
    prior = corediff.create("prior", "random_start", degradation=gaussian(),
                            distribution=distribution, scale=scale)
    shape, seed = (50, 3, 32, 32), int(torch.randint(2**31, (), generator=g))
    x = prior.sample(shape, generator=torch.Generator().manual_seed(seed))
    reference = torch.Generator().manual_seed(seed)
    if distribution == "normal":
        expected = scale * torch.randn(shape, generator=reference)
        std = scale
    else:
        expected = scale * (2 * torch.rand(shape, generator=reference) - 1)
        std = scale / math.sqrt(3)
        assert x.min() >= -scale and x.max() < scale
    torch.testing.assert_close(x, expected)
    n = x.numel()
    assert abs(x.mean().item()) < 5 * std / math.sqrt(n)
    assert abs(x.std().item() / std - 1) < 0.02
    assert x.shape == shape and x.dtype == torch.float32


# -- 2. cold_fixed_noise ---------------------------------------------------------------------
def fake_network(seed: int):
    """A fixed nonlinear "network" output(x_t, t), as the x0 parameterization reads it."""
    weights = torch.randn(3, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)

    def network(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        mixed = torch.einsum("oc,bchw->bohw", weights, x)
        return torch.tanh(mixed + 0.01 * t.to(x.dtype).view(-1, 1, 1, 1))

    return network


def notes_x0_step_down(denoise_fn, img, alpha_bar, steps):
    """Cold Diffusion's ``gen_sample``, sampling_routine 'x0_step_down', as in the SVD notes
    (their step k is our step k + 1: ``q_sample(.., t=k)`` uses ᾱ_{k+1})."""
    sqrt_ab, sqrt_1m = alpha_bar.sqrt(), (1 - alpha_bar).sqrt()

    def q_sample(x_start, x_end, k):
        return sqrt_ab[k + 1] * x_start + sqrt_1m[k + 1] * x_end

    noise = img
    t = steps
    while t:
        step = torch.full((img.shape[0],), t - 1, dtype=torch.long)
        x1_bar = denoise_fn(img, step + 1)
        x2_bar = noise
        xt_bar = q_sample(x1_bar, x2_bar, t - 1)
        xt_sub1_bar = x1_bar
        if t - 1 != 0:
            xt_sub1_bar = q_sample(xt_sub1_bar, x2_bar, t - 2)
        img = img - xt_bar + xt_sub1_bar
        t = t - 1
    return img


def fixed_noise_loop(denoise_fn, x, alpha_bar, visited):
    """x_{s'} = x_s − D(x̂0, s, z) + D(x̂0, s', z) over the visited steps, z the noise of the
    start estimated at the first step."""
    z = None
    for s, s_next in zip(visited, visited[1:] + [0], strict=True):
        x0_hat = denoise_fn(x, torch.full((x.shape[0],), s))
        if z is None:
            z = (x - alpha_bar[s].sqrt() * x0_hat) / (1 - alpha_bar[s]).sqrt()
        d_s = alpha_bar[s].sqrt() * x0_hat + (1 - alpha_bar[s]).sqrt() * z
        d_next = alpha_bar[s_next].sqrt() * x0_hat + (1 - alpha_bar[s_next]).sqrt() * z
        x = x - d_s + d_next
    return x


def fixed_noise(degradation, param, **config):
    return corediff.create("sampler", "cold_fixed_noise", degradation=degradation,
                           parameterization=param, **config)


def test_cold_fixed_noise_is_the_notes_loop_at_zero_terminal_snr():
    g = fresh()
    steps = int(torch.randint(25, 60, (), generator=g))  # linear needs T > 20 (β_T = 20/T)
    degradation, param = chain("x0", schedule="linear", steps=steps,
                               rescale_zero_terminal_snr=True)
    alpha_bar = degradation.schedule.values()
    assert alpha_bar[-1] == 0
    network = fake_network(int(torch.randint(2**31, (), generator=g)))
    x_T = torch.randn(4, 3, 8, 8, generator=g, dtype=torch.float64)
    result = fixed_noise(degradation, param).sample(network, x_T)
    expected = notes_x0_step_down(network, x_T, alpha_bar, steps)
    torch.testing.assert_close(result.sample, expected, rtol=0, atol=1e-12)
    assert result.nfe == steps


@pytest.mark.parametrize("count", [None, 7])
def test_cold_fixed_noise_keeps_the_first_noise(count):
    g = fresh()
    steps = int(torch.randint(10, 60, (), generator=g))
    degradation, param = chain("x0", schedule="cosine", steps=steps)
    alpha_bar = degradation.schedule.values()
    network = fake_network(int(torch.randint(2**31, (), generator=g)))
    x_T = torch.randn(4, 3, 8, 8, generator=g, dtype=torch.float64)
    sampler = fixed_noise(degradation, param, steps=count)
    result = sampler.sample(network, x_T)
    expected = fixed_noise_loop(network, x_T, alpha_bar, sampler.timesteps())
    torch.testing.assert_close(result.sample, expected, rtol=0, atol=1e-12)
    improved = corediff.create("sampler", "cold_improved", degradation=degradation,
                               parameterization=param, steps=count).sample(network, x_T)
    assert (improved.sample - result.sample).abs().max() > 1e-3  # re-estimated noise differs


def test_cold_fixed_noise_returns_x0_with_the_oracle_from_any_start():
    g = fresh()
    steps = int(torch.randint(25, 60, (), generator=g))
    degradation, param = chain("x0", schedule="linear", steps=steps)
    sampler = fixed_noise(degradation, param)
    x0 = torch.rand(4, 3, 8, 8, generator=g, dtype=torch.float64) * 2 - 1
    for start in (steps, int(torch.randint(1, steps + 1, (), generator=g))):
        noise = torch.randn(x0.shape, generator=g, dtype=torch.float64)
        x_start = degradation.degrade(x0, torch.full((4,), start), noise)
        result = sampler.sample(lambda x, t: x0, x_start, start=start)
        torch.testing.assert_close(result.sample, x0, rtol=0, atol=1e-10)


def test_cold_fixed_noise_needs_a_stochastic_degradation():
    from corediff_plugins.degradations.blur import BlurDegradation
    from corediff_plugins.samplers.cold_fixed_noise import ColdFixedNoiseSampler

    problems = check_compatibility({("diffusion", "sampler"): ColdFixedNoiseSampler,
                                    ("diffusion", "degradation"): BlurDegradation})
    assert len(problems) == 1 and "'stochastic'" in problems[0]


# -- 3. snr_book -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["eps", "x0", "v"])
def test_snr_book_weight_closed_form(name):
    g = fresh()
    steps = int(torch.randint(25, 1000, (), generator=g))
    degradation, param = chain(name, schedule="linear", steps=steps)
    weighting = corediff.create("loss_weighting", "snr_book", degradation=degradation,
                                parameterization=param)
    t = torch.randint(1, steps + 1, (16,), generator=g)
    alpha_bar = degradation.schedule.values()[t]
    snr = alpha_bar / (1 - alpha_bar)
    expected = {"eps": 1 / (1 + snr), "x0": snr / (1 + snr), "v": snr / (1 + snr) ** 2}[name]
    weight = weighting.weight(t)
    assert weight.dtype == torch.float32
    torch.testing.assert_close(weight, expected.float(), rtol=1e-6, atol=0)
    # on any parameterization, λ·(its own loss) is the book's λ(t)·||ε − ε̂||² = ε-MSE/(1 + SNR)
    x0 = torch.rand(16, 3, 8, 8, generator=g, dtype=torch.float64) * 2 - 1
    noise = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    x_t = degradation.degrade(x0, t, noise)
    output = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    own = param.loss(output, x0, x_t, t, noise, weighting.per_element)
    eps_hat = param.predict(output, x_t, t).eps
    book = (noise - eps_hat).square().flatten(1).mean(1) / (1 + snr)
    torch.testing.assert_close(weight.double() * own, book, rtol=1e-5, atol=0)


@pytest.mark.parametrize("name", ["x0", "v"])
def test_snr_book_at_zero_terminal_snr(name):
    degradation, param = chain(name, schedule="linear", steps=50, rescale_zero_terminal_snr=True)
    weighting = corediff.create("loss_weighting", "snr_book", degradation=degradation,
                                parameterization=param)
    weight = weighting.weight(torch.arange(1, 51))
    assert torch.isfinite(weight).all() and weight[-1] == 0 and (weight[:-1] > 0).all()


# -- 4. quadratic_book -----------------------------------------------------------------------
def test_quadratic_book_betas_closed_form():
    g = fresh()
    for steps in [1, 2, *torch.randint(3, 3000, (4,), generator=g).tolist()]:
        start = float(torch.rand((), generator=g)) * 1e-3 + 1e-5
        end = float(torch.rand((), generator=g)) * 0.04 + 0.005
        schedule = corediff.create("schedule", "quadratic_book", steps=steps, beta_start=start,
                                   beta_end=end)
        t = torch.arange(1, steps + 1, dtype=torch.float64)
        tau = (t - 1) / (steps - 1) if steps > 1 else torch.zeros(1, dtype=torch.float64)
        expected = start + (end - start) * tau**2
        torch.testing.assert_close(schedule.betas(), expected, rtol=1e-12, atol=0)
        book = start + (end - start) * np.linspace(0, 1, steps) ** 2  # the book's own code
        np.testing.assert_allclose(schedule.betas().numpy(), book, rtol=1e-12)
        alpha_bar = torch.cat([torch.ones(1, dtype=torch.float64), torch.cumprod(1 - expected, 0)])
        torch.testing.assert_close(schedule.values(), alpha_bar, rtol=1e-12, atol=0)
        assert schedule.betas()[0] == start  # β_1 = β_start; β_T = β_end unless T = 1
        assert math.isclose(schedule.betas()[-1], end if steps > 1 else start)
    assert schedule.provides == frozenset({"alpha_bar"})


def test_quadratic_book_differs_from_quadratic():
    book = corediff.create("schedule", "quadratic_book", steps=1000).betas()
    ddpm = corediff.create("schedule", "quadratic", steps=1000).betas()
    # same endpoints; inside, (a + (b − a)τ)² − (a² + (b² − a²)τ²) = 2a(b − a)τ(1 − τ) > 0
    a, b = 1e-4**0.5, 0.02**0.5
    tau = torch.linspace(0, 1, 1000, dtype=torch.float64)
    torch.testing.assert_close(ddpm - book, 2 * a * (b - a) * tau * (1 - tau), rtol=0, atol=1e-12)
    assert (ddpm - book)[499] > 6e-4
    # at T ≠ 1000 quadratic rescales its endpoints by 1000/T, quadratic_book does not
    short = corediff.create("schedule", "quadratic_book", steps=100).betas()
    assert short[0] == 1e-4 and math.isclose(short[-1], 0.02)


# -- 5. held-out validation loss -------------------------------------------------------------
def test_split_is_deterministic_disjoint_and_covering():
    g = fresh()
    for _ in range(20):
        size = int(torch.randint(2, 3000, (), generator=g))
        fraction = float(torch.rand((), generator=g)) * 0.4999
        seed = int(torch.randint(2**31, (), generator=g))
        train, held_out = split_indices(size, fraction, seed)
        assert (train, held_out) == split_indices(size, fraction, seed)
        assert set(train).isdisjoint(held_out)
        assert sorted(train + held_out) == list(range(size))
        assert len(held_out) == max(1, round(fraction * size))
        assert train == sorted(train) and held_out == sorted(held_out)
    assert split_indices(10, 0.0, 3) == (list(range(10)), [])
    assert split_indices(1000, 0.2, 0)[1] != split_indices(1000, 0.2, 1)[1]
    with pytest.raises(corediff.CorediffError, match="leaving none to train on"):
        split_indices(1, 0.3, 0)


def test_indexed_subset_yields_original_indices():
    data = [(torch.full((1,), float(i)), i % 3) for i in range(50)]
    picked = torch.randperm(50, generator=fresh())[:17].tolist()
    indexed = _Indexed(torch.utils.data.Subset(data, picked), seed=0)
    for position, original in enumerate(picked):
        index, image, label = indexed[position]
        assert index == original and image.item() == original and label == original % 3


TINY = ["--set", "data.image_size=8", "--set", "train.batch_size=8", "--set", "train.steps=6",
        "--set", "train.checkpoint_every=2", "--set", "run.device='cpu'",
        "--set", "train.val_fraction=0.2", "--set", "train.best_by='val_loss'"]


def states(run: Path) -> tuple[dict, dict]:
    found = (checkpoint.find(run / "checkpoints" / name) for name in ("last", "best"))
    return tuple(checkpoint.load_state(path) for path in found)  # type: ignore[return-value]


def test_best_is_picked_by_validation_loss(tmp_path, monkeypatch):
    scripted = iter([0.5, 0.2, 0.3])  # lowest at step 4, whatever the training loss does
    monkeypatch.setattr(Trainer, "validation_loss", lambda self: next(scripted))
    assert main(["train", QUICKSTART, "--run-dir", str(tmp_path / "run"), *TINY]) == 0
    last, best = states(tmp_path / "run")
    assert last["val_history"] == [[2, 0.5], [4, 0.2], [6, 0.3]]
    assert last["step"] == 6 and last["val_loss"] == 0.3 and last["best"] == 0.2
    assert best["step"] == 4 and best["val_loss"] == 0.2


def test_validation_loss_uses_the_ema_weights_and_survives_resume(tmp_path):
    small = [*TINY, "--set", "train.val_fraction=0.03"]  # 54 held-out images: fast
    recipe = load_recipe(QUICKSTART, [o for o in small if o != "--set"])
    context = distributed.setup("cpu")
    trainer = run_training(recipe, RunDir(tmp_path / "full"), context, resume=False)
    history = trainer.val_history
    assert [step for step, _ in history] == [2, 4, 6]
    assert all(math.isfinite(loss) and loss > 0 for _, loss in history)
    # the same draws at every call, on the EMA weights, without gradients, and training's
    # random streams untouched
    rng = torch.get_rng_state(), trainer.generator.get_state()
    assert trainer.validation_loss() == trainer.validation_loss() == history[-1][1]
    assert torch.equal(torch.get_rng_state(), rng[0])
    assert torch.equal(trainer.generator.get_state(), rng[1])
    with torch.no_grad():
        for parameter in trainer.model.parameters():
            parameter.add_(1.0)
    assert trainer.validation_loss() == history[-1][1]
    with torch.no_grad():
        next(trainer.ema.module.parameters()).add_(1.0)
    assert trainer.validation_loss() != history[-1][1]
    assert all(p.grad is None for p in trainer.ema.module.parameters())
    _, best = states(tmp_path / "full")
    losses = [loss for _, loss in history]
    assert best["step"] == max(s for s, loss in history if loss == min(losses))
    # interrupted at step 4 and resumed: the history is kept and continues identically
    part = str(tmp_path / "part")
    assert main(["train", QUICKSTART, "--run-dir", part, *small, "--set", "train.steps=4"]) == 0
    assert main(["train", QUICKSTART, "--run-dir", part, "--resume", *small]) == 0
    last, _ = states(Path(part))
    assert [tuple(entry) for entry in last["val_history"]] == history


def test_validation_repeats_random_augmentations(tmp_path):
    root = write_image_folder(tmp_path / "images")  # 6 images: 2 held out, crop and flip random
    recipe = load_recipe(QUICKSTART, [
        o for o in TINY if o != "--set"] + ["data.type='image_folder'", f"data.root='{root}'",
                                          "data.crop='random'", "data.class_labels=true",
                                          "train.val_fraction=0.3", "train.steps=2"])
    trainer = run_training(recipe, RunDir(tmp_path / "run"), distributed.setup("cpu"),
                           resume=False)
    assert len(trainer.val_loader.dataset) == 2
    assert trainer.validation_loss() == trainer.validation_loss() == trainer.val_history[-1][1]


def test_val_loss_needs_held_out_images():
    with pytest.raises(ConfigError, match=r"\[train\] best_by: .*'val_loss' needs held-out"):
        load_recipe(QUICKSTART, ["train.best_by='val_loss'"])
    with pytest.raises(ConfigError, match=r"\[train\] val_fraction"):
        load_recipe(QUICKSTART, ["train.val_fraction=0.5"])


# -- 6. ε-prediction with zero terminal SNR --------------------------------------------------
@pytest.mark.parametrize("command", ["validate", "train"])
def test_eps_with_zero_terminal_snr_is_refused_at_validation(tmp_path, capsys, command):
    sets = ["--set", "diffusion.parameterization.type=eps",
            "--set", "diffusion.schedule.rescale_zero_terminal_snr=true"]
    argv = (["recipe", "validate", QUICKSTART] if command == "validate"
            else ["train", QUICKSTART, "--run-dir", str(tmp_path / "run")])
    assert main([*argv, *sets]) == 2
    err = capsys.readouterr().err
    assert f"parameterization 'eps' [diffusion.parameterization]: {REFUSAL}" in err
    assert not (tmp_path / "run").exists()  # refused before anything was written
    for name in ("v", "x0"):
        assert main(["recipe", "validate", QUICKSTART, *sets[:1],
                     f"diffusion.parameterization.type={name}", *sets[2:]]) == 0
