"""eps / x0 / mu / v parameterizations: perfect predictions agree on x0 and the posterior mean
(DDPM eq. 7, written out here), x0_loss_scale is the exact ratio of the losses, and the
learned-range variance / L_hybrid of improved-diffusion behave as specified."""

from __future__ import annotations

import pytest
import torch

from corediff.config import ComponentConfig
from corediff.interfaces import Degradation
from corediff_plugins.degradations.gaussian import GaussianDegradation
from corediff_plugins.parameterizations.eps import EpsParameterization
from corediff_plugins.parameterizations.mu import MuParameterization
from corediff_plugins.parameterizations.v import VParameterization
from corediff_plugins.parameterizations.x0 import X0Parameterization
from corediff_plugins.schedules.cosine import CosineSchedule

DEGRADATION = GaussianDegradation(schedule=CosineSchedule(CosineSchedule.Config(steps=200)))
A = DEGRADATION.schedule.values()
PARAMS = (EpsParameterization, X0Parameterization, MuParameterization, VParameterization)


def _batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(16, 3, 8, 8, generator=g, dtype=torch.float64) * 2 - 1
    noise = torch.randn(16, 3, 8, 8, generator=g, dtype=torch.float64)
    t = torch.randint(1, 201, (16,), generator=g)
    return x0, noise, t


def _col(v: torch.Tensor) -> torch.Tensor:
    return v.view(-1, 1, 1, 1)


def _closed_form(x0, noise, t):
    """x_t, the true outputs of each parameterization and the posterior mean, from ᾱ."""
    a, a_prev = _col(A[t]), _col(A[t - 1])
    beta = 1 - a / a_prev
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
    mean = (a_prev.sqrt() * beta * x0 + (1 - beta).sqrt() * (1 - a_prev) * x_t) / (1 - a)
    v = a.sqrt() * noise - (1 - a).sqrt() * x0
    outputs = {"eps": noise, "x0": x0, "mu": mean, "v": v}
    return x_t, outputs, mean


@pytest.mark.parametrize("cls", PARAMS)
def test_perfect_prediction_gives_true_posterior(cls):
    x0, noise, t = _batch()
    x_t, outputs, mean = _closed_form(x0, noise, t)
    torch.testing.assert_close(DEGRADATION.degrade(x0, t, noise), x_t)
    param = cls(degradation=DEGRADATION)
    output = outputs[param.config.type]
    torch.testing.assert_close(param.target(x0, x_t, t, noise), output)
    prediction = param.predict(output, x_t, t)
    torch.testing.assert_close(prediction.x0, x0)
    torch.testing.assert_close(prediction.eps, noise)
    coef_x0, coef_xt, _, _ = DEGRADATION.posterior(t, t - 1)
    posterior = _col(coef_x0) * prediction.x0 + _col(coef_xt) * x_t
    torch.testing.assert_close(posterior, mean)
    if prediction.mean is not None:
        torch.testing.assert_close(prediction.mean, mean)


@pytest.mark.parametrize("cls", PARAMS)
def test_x0_loss_scale_is_the_loss_ratio(cls):
    x0, noise, t = _batch(1)
    x_t, outputs, _ = _closed_form(x0, noise, t)
    param = cls(degradation=DEGRADATION)
    output = outputs[param.config.type] + 0.1 * torch.randn_like(x0)
    x0_hat = param.predict(output, x_t, t).x0
    own = (output - param.target(x0, x_t, t, noise)).square().flatten(1).sum(1)
    in_x0 = (x0_hat - x0).square().flatten(1).sum(1)
    torch.testing.assert_close(own / in_x0, param.x0_loss_scale(t))


class _Fade(Degradation):
    """A deterministic test degradation: D(x0, t) = (1 - t/T)·x0."""

    Config = ComponentConfig
    provides = frozenset({"deterministic"})

    def degrade(self, x0, t, noise=None):
        return x0 * _col(1 - t / self.steps).to(x0.dtype)


def test_x0_with_deterministic_degradation():
    fade = _Fade(ComponentConfig(type="fade"), schedule=CosineSchedule())
    param = X0Parameterization(degradation=fade)
    x0, _, t = _batch(2)
    prediction = param.predict(x0, fade.degrade(x0, t), t)
    assert prediction.eps is None and prediction.x0 is x0
    assert torch.equal(param.x0_loss_scale(t), torch.ones(16, dtype=torch.float64))
    with pytest.raises(ValueError):
        X0Parameterization(X0Parameterization.Config(variance="learned_range"), degradation=fade)


@pytest.mark.parametrize("cls", PARAMS)
def test_learned_range(cls):
    param = cls(cls.Config(variance="learned_range"), degradation=DEGRADATION)
    assert param.output_channels(3) == 6 and cls(degradation=DEGRADATION).output_channels(3) == 3
    x0, noise, t = _batch(3)
    t[0], t[1] = 1, 2
    x_t, outputs, _ = _closed_form(x0, noise, t)
    a, a_prev = A[t], A[t - 1]
    beta = 1 - a / a_prev
    beta_tilde = (1 - a_prev) / (1 - a) * beta
    beta_tilde[0] = beta_tilde[1]  # clipped at t = 1 (there β̃ = 0), t[1] = 2
    v = torch.rand(x0.shape, dtype=torch.float64) * 2 - 1
    v[:, :, 0, 0], v[:, :, 0, 1] = -1, 1
    log_var = param.predict(torch.cat([outputs[param.config.type], v], 1), x_t, t).log_variance
    low, high = _col(beta_tilde.log()), _col(beta.log())
    assert ((log_var >= low - 1e-12) & (log_var <= high + 1e-12)).all()
    torch.testing.assert_close(log_var[:, :, 0, 0], low.view(-1, 1).expand(16, 3))
    torch.testing.assert_close(log_var[:, :, 0, 1], high.view(-1, 1).expand(16, 3))


@pytest.mark.parametrize("cls", PARAMS)
def test_hybrid_loss(cls):
    param = cls(cls.Config(variance="learned_range"), degradation=DEGRADATION)
    x0, noise, t = _batch(4)
    t[0] = 1
    x_t, outputs, _ = _closed_form(x0, noise, t)
    perfect = outputs[param.config.type]
    v = torch.full_like(x0, -1.0)  # the true posterior variance (clipped β̃)

    def per_element(a, b):
        return (a - b).square()

    loss = param.loss(torch.cat([perfect, v], 1), x0, x_t, t, noise, per_element)
    # a perfect mean with the true variance: KL = 0 for t > 1, the decoder NLL > 0 at t = 1
    torch.testing.assert_close(loss[1:], torch.zeros(15, dtype=torch.float64), atol=1e-9, rtol=0)
    assert loss[0] > 0
    output = torch.cat([perfect + 0.1 * torch.randn_like(x0), torch.rand_like(x0) * 2 - 1], 1)
    output.requires_grad_(True)
    param.loss(output, x0, x_t, t, noise, per_element).sum().backward()
    mean_out = output.detach()[:, :3].requires_grad_(True)
    plain = cls(degradation=DEGRADATION)
    plain.loss(mean_out, x0, x_t, t, noise, per_element).sum().backward()
    torch.testing.assert_close(output.grad[:, :3], mean_out.grad)  # no L_vlb gradient in mean
    assert output.grad[:, 3:].abs().sum() > 0


def test_vlb_term_is_the_gaussian_kl():
    param = EpsParameterization(EpsParameterization.Config(variance="learned_range",
                                                           vlb_weight=1.0), degradation=DEGRADATION)
    x0, noise, t = _batch(5)
    t = t.clamp(min=2)
    x_t, _, mean = _closed_form(x0, noise, t)
    eps_hat = noise + 0.2
    v = torch.zeros_like(x0)
    output = torch.cat([eps_hat, v], 1)
    prediction = param.predict(output, x_t, t)
    coef_x0, coef_xt, beta_tilde, _ = DEGRADATION.posterior(t, t - 1)
    model_mean = _col(coef_x0) * prediction.x0 + _col(coef_xt) * x_t
    var_p, var_q = prediction.log_variance.exp(), _col(beta_tilde)
    kl = 0.5 * (var_q / var_p - 1 + var_p.log() - var_q.log() + (mean - model_mean) ** 2 / var_p)
    expected = 200 * kl.flatten(1).mean(1) / torch.log(torch.tensor(2.0))
    loss = param.loss(output, x0, x_t, t, noise, lambda a, b: (a - b).square())
    torch.testing.assert_close(loss - 0.04, expected)  # L_simple = 0.2² per element
