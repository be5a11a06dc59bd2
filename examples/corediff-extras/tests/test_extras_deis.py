"""The deis sampler against diffusers' DEISMultistepScheduler, and its step count.

diffusers settings under which the two agree: ``algorithm_type="deis"``,
``solver_type="logrho"``, ``solver_order=order``, ``lower_order_final`` as ours,
``timestep_spacing="trailing"`` (ours: ``spacing="trailing"``), ``prediction_type="epsilon"``,
with two changes after ``set_timesteps``:

* the last sigma (diffusers' ᾱ at its timestep 0 = our t = 1) becomes a vanishing 1e-30: our
  last step goes to t = 0 (ᾱ = 1) and DEIS in diffusers has no ``final_sigmas_type="zero"``
  (an exact 0 gives 0·∞ = nan in its update);
* its float32 sigmas (float32 betas and cumprod: up to 1e-5 relative error, ~3e-3 on x for the
  cosine schedule) are replaced by the same float64 sigmas from our ᾱ, after checking that
  they agree to float32 precision. What is compared is then the algorithm, not the tables.
"""

from __future__ import annotations

import math

import pytest
import torch

import corediff

diffusers = pytest.importorskip("diffusers")

# diffusers' DEIS feeds torch tensors to numpy (np.log): NumPy 2 deprecation noise.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

T = 1000
DIFFUSERS_SCHEDULE = {"cosine": "squaredcos_cap_v2", "linear": "linear"}


def build(schedule_name: str, **sampler_fields):
    schedule = corediff.create("schedule", schedule_name, steps=T)
    degradation = corediff.create("degradation", "gaussian", schedule=schedule)
    parameterization = corediff.create("parameterization", "eps", degradation=degradation)
    sampler = corediff.create("sampler", "deis", degradation=degradation,
                              parameterization=parameterization, **sampler_fields)
    return schedule, sampler


def fake_eps(alpha_bar: list[float]):
    """A deterministic, nonlinear, time-dependent ε-network of diffusers' timestep k: the ideal
    ε of N(0, I) data (σ·x) plus a bounded perturbation (keeps x̂0 of order 1)."""

    def eps(x: torch.Tensor, k: int) -> torch.Tensor:
        alpha, sigma = math.sqrt(alpha_bar[k + 1]), math.sqrt(1 - alpha_bar[k + 1])
        return sigma * x + alpha * (0.1 * torch.sin(3 * x + k / 100) + 0.05 * torch.tanh(x))

    return eps


def diffusers_run(schedule, x_T, steps, order, lower_order_final, eps):
    alpha_bar = schedule.values()
    scheduler = diffusers.DEISMultistepScheduler(
        num_train_timesteps=T, beta_schedule=DIFFUSERS_SCHEDULE[schedule.config.type],
        solver_order=order, algorithm_type="deis", solver_type="logrho",
        prediction_type="epsilon", lower_order_final=lower_order_final,
        timestep_spacing="trailing", steps_offset=0)
    scheduler.set_timesteps(steps)
    ours = ((1 - alpha_bar) / alpha_bar).sqrt()[scheduler.timesteps + 1]  # ρ = σ/α
    torch.testing.assert_close(scheduler.sigmas[:-1].double(), ours, rtol=5e-5, atol=0)
    scheduler.sigmas = torch.cat([ours, torch.tensor([1e-30], dtype=torch.float64)])
    x, path = x_T.clone(), []
    for k in scheduler.timesteps:
        path.append(x)
        x = scheduler.step(eps(x, int(k)), k, x).prev_sample
    return [int(k) + 1 for k in scheduler.timesteps], path, x


CASES = [(s, n, 2, True) for s in ("cosine", "linear") for n in (10, 20, 50)]
CASES += [("cosine", 10, 2, False), ("cosine", 20, 1, True), ("linear", 10, 1, True)]


@pytest.mark.parametrize(("schedule_name", "steps", "order", "lower_order_final"), CASES)
def test_deis_matches_diffusers(schedule_name, steps, order, lower_order_final):
    schedule, sampler = build(schedule_name, steps=steps, order=order,
                              lower_order_final=lower_order_final)
    eps = fake_eps(schedule.values().tolist())
    x_T = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0),
                      dtype=torch.float64)

    def network(x, t):
        assert t.dtype == torch.long and bool((t == t[0]).all())
        return eps(x, int(t[0]) - 1)  # our step t is diffusers' timestep t - 1

    result = sampler.sample(network, x_T, trajectory=True)
    steps_d, path_d, sample_d = diffusers_run(schedule, x_T, steps, order, lower_order_final, eps)
    assert [s.t for s in result.trajectory] == steps_d == sampler.timesteps()
    assert len(path_d) == steps
    for ours, theirs in zip(result.trajectory, path_d, strict=True):
        torch.testing.assert_close(ours.x_t, theirs, atol=1e-5, rtol=0)
    torch.testing.assert_close(result.sample, sample_d, atol=1e-5, rtol=0)
    assert torch.isfinite(result.sample).all() and result.sample.abs().max() < 10


@pytest.mark.parametrize("fields", [{}, {"steps": 10}, {"steps": 7, "spacing": "leading"},
                                    {"steps": 25, "spacing": "linspace", "order": 1},
                                    {"spacing": "ddim50"}])
@pytest.mark.parametrize("start", [None, 600])
def test_nfe(fields, start):
    _, sampler = build("cosine", **fields)
    x_T = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    calls = []

    def network(x, t):
        calls.append(1)
        return 0.5 * torch.tanh(x)

    result = sampler.sample(network, x_T, start=start)
    assert sampler.nfe(start) == len(sampler.timesteps(start)) == result.nfe == len(calls)


def test_history_lives_in_the_run():
    """Two runs give the same result: the multistep history is per run (step.state)."""
    _, sampler = build("linear", steps=20)
    x_T = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(2))

    def network(x, t):
        return 0.5 * torch.tanh(x) + t.view(-1, 1, 1, 1) / 2000

    first = sampler.sample(network, x_T)
    assert torch.equal(first.sample, sampler.sample(network, x_T).sample)


def test_order_one_is_ddim():
    schedule, deis = build("cosine", steps=15, order=1)
    degradation, parameterization = deis.degradation, deis.parameterization
    ddim = corediff.create("sampler", "ddim", degradation=degradation,
                           parameterization=parameterization, steps=15)
    x_T = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(3), dtype=torch.float64)

    def network(x, t):
        return 0.9 * torch.tanh(x) + 0.1 * torch.cos(t.view(-1, 1, 1, 1) / 100.0)

    torch.testing.assert_close(deis.sample(network, x_T).sample,
                               ddim.sample(network, x_T).sample, atol=1e-9, rtol=1e-9)


def test_zero_terminal_snr_with_v_prediction():
    """ᾱ_T = 0 (ρ = ∞) is fine in the x̂0 form of the update when x̂0 is (v-prediction)."""
    schedule = corediff.create("schedule", "linear", steps=T, rescale_zero_terminal_snr=True)
    degradation = corediff.create("degradation", "gaussian", schedule=schedule)
    parameterization = corediff.create("parameterization", "v", degradation=degradation)
    sampler = corediff.create("sampler", "deis", degradation=degradation,
                              parameterization=parameterization, steps=10)
    x_T = torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(4))
    result = sampler.sample(lambda x, t: 0.5 * torch.tanh(x), x_T)
    assert torch.isfinite(result.sample).all()
