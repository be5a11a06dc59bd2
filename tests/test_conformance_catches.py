"""Mutation tests of corediff.testing (issue 19): fifteen plausible bugs, each planted in a small
plugin written against the public API only, and the share of them the conformance suite
catches (target ≥ 13 of 15). Correct twins of the trickiest ones (DPM-Solver++(3M), APG) must
pass, so the checks catching the bugs are not merely strict.

The plugins live on the EDM degradation (t = σ, α = 1: Karras et al. 2022), the flow path
(t ∈ [0, 1]) or the Gaussian (VP) steps, as their real counterparts do.
"""

from __future__ import annotations

import math
from typing import Literal

import pytest
import torch
from pydantic import Field
from torch import nn

import corediff
from corediff import testing
from corediff.config import ComponentConfig
from corediff.interfaces import Guidance, Model, Prediction, Prior, Sampler, Schedule, TimeSampler
from corediff.registry import registry


# -- samplers on EDM's Karras grid ------------------------------------------------------------
class KarrasConfig(ComponentConfig):
    type: str = "karras"
    steps: int = Field(18, ge=2, description="N, the noise levels visited.")


def karras(steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> list[float]:
    """Karras et al. 2022, eq. 5, from σ_max down to σ_min."""
    low, high = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return [(high + i / (steps - 1) * (low - high)) ** rho for i in range(steps)]


class KarrasSampler(Sampler):
    """Base of the planted EDM samplers: the Karras grid, the last step to σ = 0 is x̂0."""

    requires = {"degradation": frozenset({"sigma_time"})}
    order = 1

    def timesteps(self, start=None):
        t_max = self.degradation.t_max if start is None else start
        return karras(self.config.steps, self.degradation.schedule.config.sigma_min, t_max)

    def step(self, x, step, denoise):
        x0 = denoise(x, step.t).x0
        if step.is_last:
            return x0, x0
        return self.move(x, x0, step), x0

    def move(self, x, x0, step):
        """Euler: x + (σ_next − σ)·(x − x̂0)/σ."""
        return x + (step.t_next - step.t) * (x - x0) / step.t


def named(base: type, name: str, **attributes) -> type:
    """A subclass of ``base`` registered as ``name`` (its Config's type is the name)."""
    config = type(f"{name}_config", (base.Config,), {
        "__annotations__": {"type": Literal[name]}, "type": name})
    return type(name, (base,), {"Config": config, **attributes})


class DPMSolver3M(KarrasSampler):
    """DPM-Solver++(3M) (Lu et al. 2022, data prediction; diffusers'
    ``multistep_dpm_solver_third_order_update``) for α = 1, σ = t, λ = −log σ; orders 1 and 2
    for its first two steps, x̂0 on the last."""

    Config = KarrasConfig
    order = 3
    half = 0.5  # the ½ in −((e^{−h} − 1 + h)/h² − ½)·D2

    def move(self, x, x0, step):
        history = step.state.setdefault("history", [])
        history.append((-math.log(step.t), x0))
        lam_next = -math.log(step.t_next)
        (lam, d0), h = history[-1], lam_next - history[-1][0]
        phi1, phi2 = math.expm1(-h), math.expm1(-h) / h + 1
        x = step.t_next / step.t * x - phi1 * d0
        if len(history) == 1:
            return x
        h0 = lam - history[-2][0]
        d1_0 = (d0 - history[-2][1]) * h / h0
        if len(history) == 2:
            return x - 0.5 * phi1 * d1_0
        h1 = history[-2][0] - history[-3][0]
        r0, r1 = h0 / h, h1 / h
        d1_1 = (history[-2][1] - history[-3][1]) / r1
        d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)
        d2 = (d1_0 - d1_1) / (r0 + r1)
        phi3 = (math.expm1(-h) + h) / h**2 - self.half
        return x + phi2 * d1 - phi3 * d2


class TenPercentOff(KarrasSampler):
    Config = KarrasConfig

    def move(self, x, x0, step):
        return x + 1.1 * (step.t_next - step.t) * (x - x0) / step.t


class SkipsLastStep(KarrasSampler):
    Config = KarrasConfig

    def step(self, x, step, denoise):
        x0 = denoise(x, step.t).x0
        return (x if step.is_last else self.move(x, x0, step)), x0


class OffByOneGrid(KarrasSampler):
    """Euler's slope divided by the next grid entry's σ (an index off by one)."""

    Config = KarrasConfig

    def move(self, x, x0, step):
        return x + (step.t_next - step.t) * (x - x0) / step.t_next


class LyingNfe(KarrasSampler):
    """Heun's correction, but it declares one evaluation per step."""

    Config = KarrasConfig

    def step(self, x, step, denoise):
        x0 = denoise(x, step.t).x0
        if step.is_last:
            return x0, x0
        euler = self.move(x, x0, step)
        d_next = (euler - denoise(euler, step.t_next).x0) / step.t_next
        return x + (step.t_next - step.t) * ((x - x0) / step.t + d_next) / 2, x0


class EulerAncestral(KarrasSampler):
    """Euler ancestral (k-diffusion's ``sample_euler_ancestral``, η = 1): down to
    σ_down = sqrt(σ_next² − σ_up²), σ_up = σ_next·sqrt(1 − σ_next²/σ²), then noise σ_up·z."""

    Config = KarrasConfig
    order = None
    stochastic = True
    noise_scale = 1.0

    def move(self, x, x0, step):
        up = step.t_next * (1 - step.t_next**2 / step.t**2) ** 0.5
        down = (step.t_next**2 - up**2) ** 0.5
        z = torch.randn(x.shape, generator=step.generator, dtype=x.dtype).to(x.device)
        return x + (down - step.t) * (x - x0) / step.t + self.noise_scale * up * z


# -- guidance --------------------------------------------------------------------------------
class APGConfig(ComponentConfig):
    type: str = "apg"
    scale: float = Field(2.0, ge=0, description="w.")
    eta: float = Field(0.0, ge=0, le=1, description="Weight of the parallel component.")


class APG(Guidance):
    """Adaptive projected guidance (Sadat et al. 2024, eq. 9-10, no momentum, no norm
    threshold): Δ = x̂0(y) − x̂0(∅) split parallel/orthogonal to x̂0(y);
    guided = x̂0(y) + (w − 1)·(Δ⊥ + η·Δ∥)."""

    Config = APGConfig
    invariants = {"orthogonal": {"eta": 0.0}, "conditional": {"scale": 1.0},
                  "cfg": {"eta": 1.0}}
    swap = False

    def active(self, t):
        return self.config.scale != 1

    def combine(self, cond, uncond, x_t, t):
        c = self.parameterization.predict(cond, x_t, t).x0
        delta = c - self.parameterization.predict(uncond, x_t, t).x0
        unit = c.flatten(1) / c.flatten(1).norm(dim=1, keepdim=True).clamp_min(1e-12)
        parallel = ((delta.flatten(1) * unit).sum(1, keepdim=True) * unit).view_as(c)
        orthogonal = delta - parallel
        if self.swap:
            parallel, orthogonal = orthogonal, parallel
        return Prediction(c + (self.config.scale - 1) * (orthogonal + self.config.eta * parallel))


class CFGConfig(ComponentConfig):
    type: str = "cfg_bad"
    scale: float = Field(2.0, ge=0, description="s.")


class CFGOffByOne(Guidance):
    """m(y) + s·(m(y) − m(∅)): the 'scale' of another convention, so s = 1 still guides."""

    Config = CFGConfig
    invariants = {"conditional": {"scale": 1.0}}

    def active(self, t):
        return True

    def combine(self, cond, uncond, x_t, t):
        return self.parameterization.predict(cond + self.config.scale * (cond - uncond), x_t, t)


# -- models ----------------------------------------------------------------------------------
class TinyConfig(ComponentConfig):
    type: str = "tiny"


class TinyModel(Model):
    """conv(x) + a sinusoidal embedding of t + an embedding of the label (null: num_classes)."""

    Config = TinyConfig
    uses_labels = True

    def __init__(self, config=None, *, in_channels, out_channels, image_size, num_classes=None):
        super().__init__(config, in_channels=in_channels, out_channels=out_channels,
                         image_size=image_size, num_classes=num_classes)
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.time = nn.Linear(2, out_channels)
        self.label = nn.Embedding((num_classes or 0) + 1, out_channels)

    def forward(self, x, t, y=None):
        t = t.float().view(-1, 1)
        out = self.conv(x) + self.time(torch.cat([t.sin(), (t / 1000).cos()], 1))[..., None, None]
        if self.num_classes is not None and self.uses_labels:
            y = torch.full((len(x),), self.null_label, device=x.device) if y is None else y
            out = out + self.label(y)[..., None, None]
        return out


class FloorsTime(TinyModel):
    def forward(self, x, t, y=None):
        return super().forward(x, t.floor(), y)


class ShapeWithoutLabels(TinyModel):
    def forward(self, x, t, y=None):
        out = super().forward(x, t, y)
        return out[:, : self.in_channels] if y is None else out


# -- time samplers, schedules, priors, degradations, parameterizations ------------------------
class LogitNormalConfig(ComponentConfig):
    type: str = "logit_normal_iw"


class LogitNormalWeighted(TimeSampler):
    """SD3's logit-normal times (Esser et al. 2024, eq. 19) mixed half and half with uniform
    ones (bounded weights), with importance weights 1/p(t)."""

    Config = LogitNormalConfig
    requires = {"degradation": frozenset({"unit_time"})}
    inverted = False

    def sample(self, batch, generator, device):
        z = torch.randn(batch, generator=generator, dtype=torch.float64, device=device)
        u = torch.rand(batch, generator=generator, dtype=torch.float64, device=device)
        coin = torch.rand(batch, generator=generator, dtype=torch.float64, device=device)
        t = torch.where(coin < 0.5, u, torch.sigmoid(z)).clamp(1e-6, 1 - 1e-6)
        logit = torch.log(t / (1 - t))
        density = 0.5 + 0.5 * torch.exp(-logit.square() / 2) / math.sqrt(2 * math.pi) / (
            t * (1 - t))
        return t, (density if self.inverted else 1 / density)


class OutOfRange(TimeSampler):
    Config = LogitNormalConfig
    requires = {"degradation": frozenset({"gaussian"})}

    def sample(self, batch, generator, device):
        t_max = self.degradation.t_max  # off by one: steps 0..T, and 0 is the clean image
        t = torch.randint(0, t_max + 1, (batch,), generator=generator, device=device)
        return t, None


class CosineConfig(ComponentConfig):
    type: str = "cosine_stretch"
    steps: int = Field(1000, ge=1, description="T.")
    stretch: float = Field(1.0, ge=0.5, le=4, description="Time stretch of the cosine.")


class StretchedCosine(Schedule):
    """ᾱ_t = cos²(π/2 · min(stretch · t/T, 1)) (Nichol & Dhariwal 2021 without the offset,
    ending at 0.999·π/2); ``clamped = False`` forgets the min: past stretch 1 the cosine comes
    back up and ᾱ rises again."""

    Config = CosineConfig
    provides = frozenset({"alpha_bar"})
    clamped = True

    def values(self):
        u = self.config.stretch * torch.arange(self.steps + 1, dtype=torch.float64) / self.steps
        return torch.cos(math.pi / 2 * 0.999 * (u.clamp(max=1) if self.clamped else u)).square()


class NormalConfig(ComponentConfig):
    type: str = "normal_squared"


class SquaredStdPrior(Prior):
    """N(0, prior_std²)… drawn with the variance as the standard deviation."""

    Config = NormalConfig
    marginal = True

    def sample(self, shape, *, generator=None, device="cpu"):
        return torch.randn(shape, generator=generator, device=device) * (
            self.degradation.prior_std() ** 2)


def floors_fractional(gaussian: type) -> type:
    class FloorsFractional(gaussian):
        def degrade(self, x0, t, noise=None):
            return super().degrade(x0, t.floor().long() if t.is_floating_point() else t, noise)

    return FloorsFractional


def eps_without_alpha(eps: type) -> type:
    class EpsWithoutAlpha(eps):
        """ε target (x_t − x0)/σ: forgets α (σ² = 1/(1 + SNR))."""

        def target(self, x0, x_t, t, noise):
            sigma = (1 + self.degradation.snr(t)).rsqrt().to(x0).view(-1, 1, 1, 1)
            return (x_t - x0) / sigma

    return EpsWithoutAlpha


# -- the list --------------------------------------------------------------------------------
def _builtin(kind: str, name: str) -> type:
    return registry(kind).get(name)


#: (what is wrong, kind, a factory of the plugin class).
PLANTED = [
    ("DPM-Solver++(3M) with a wrong third-order coefficient (⅙ for ½)", "sampler",
     lambda: named(DPMSolver3M, "bad_3m", half=1 / 6)),
    ("every intermediate step 10 % off (Euler's increment × 1.1)", "sampler",
     lambda: named(TenPercentOff, "ten_percent_off")),
    ("APG keeping the parallel instead of the orthogonal component", "guidance",
     lambda: named(APG, "apg_parallel", swap=True)),
    ("a model ignoring labels", "model", lambda: named(TinyModel, "no_labels", uses_labels=False)),
    ("inverted importance weights p(t) for 1/p(t) in a time sampler", "time_sampler",
     lambda: named(LogitNormalWeighted, "inverted_weights", inverted=True)),
    ("a sampler skipping the last step (returns x at σ_min)", "sampler",
     lambda: named(SkipsLastStep, "skips_last")),
    ("an off-by-one in the time grid (steps with the next level's σ)", "sampler",
     lambda: named(OffByOneGrid, "off_by_one_grid")),
    ("a schedule non-monotone only for a non-default config (stretch > 1)", "schedule",
     lambda: named(StretchedCosine, "cosine_stretch", clamped=False)),
    ("a prior with the variance as its standard deviation", "prior",
     lambda: named(SquaredStdPrior, "squared_std")),
    ("a degradation whose degrade ignores the fractional part of t", "degradation",
     lambda: named(floors_fractional(_builtin("degradation", "gaussian")), "floors_t")),
    ("a parameterization whose target and predict are not inverse", "parameterization",
     lambda: named(eps_without_alpha(_builtin("parameterization", "eps")), "eps_no_alpha")),
    ("guidance not returning the conditional at scale 1", "guidance",
     lambda: named(CFGOffByOne, "cfg_off_by_one")),
    ("a model returning the wrong shape when labels are None", "model",
     lambda: named(ShapeWithoutLabels, "shape_without_labels")),
    ("a time sampler whose samples fall outside (0, T]", "time_sampler",
     lambda: named(OutOfRange, "out_of_range")),
    ("a sampler whose nfe lies (Heun declaring one evaluation per step)", "sampler",
     lambda: named(LyingNfe, "lying_nfe")),
]

#: Bugs beyond the fifteen, for the checks none of them exercises.
EXTRA = [
    ("an ancestral sampler adding 1.5 times its noise", "sampler",
     lambda: named(EulerAncestral, "loud_ancestral", noise_scale=1.5)),
    ("a model flooring a fractional t", "model", lambda: named(FloorsTime, "floors_time")),
]

#: Correct twins: the checks must pass them.
CORRECT = [("sampler", lambda: named(DPMSolver3M, "good_3m")),
           ("sampler", lambda: named(EulerAncestral, "euler_ancestral")),
           ("guidance", lambda: named(APG, "apg")),
           ("model", lambda: named(TinyModel, "tiny_model")),
           ("time_sampler", lambda: named(LogitNormalWeighted, "logit_normal_iw")),
           ("schedule", lambda: named(StretchedCosine, "cosine_unstretched"))]


@pytest.fixture
def registered():
    names = []

    def add(kind, cls):
        corediff.register(kind)(cls)
        names.append((kind, cls.Config.model_fields["type"].default))
        return names[-1][1]

    yield add
    for kind, name in names:
        registry(kind).unregister(name)


def _caught(kind: str, name: str) -> str:
    """The suite's message for the plugin, or '' when every check passes."""
    try:
        testing.check_plugin(kind, name, devices=["cpu"])
    except Exception as error:  # noqa: BLE001 - a check failing or a crash: both are caught
        return f"{type(error).__name__}: {error}"
    return ""


@pytest.mark.parametrize(("kind", "factory"), CORRECT,
                         ids=[f"{k}-{i}" for i, (k, _) in enumerate(CORRECT)])
def test_correct_twins_pass(registered, kind, factory):
    name = registered(kind, factory())
    assert _caught(kind, name) == ""


def test_the_suite_catches_at_least_13_of_15(registered, capsys):
    missed, messages = [], []
    for what, kind, factory in PLANTED:
        message = _caught(kind, registered(kind, factory()))
        messages.append(f"{'caught' if message else 'MISSED'}: {what}: {message[:300]}")
        if not message:
            missed.append(what)
    rate = len(PLANTED) - len(missed)
    with capsys.disabled():
        print(f"\nconformance suite catches {rate} of {len(PLANTED)} planted bugs")
        print("\n".join(messages))
    assert rate >= 13, f"caught {rate} of {len(PLANTED)}; missed: {missed}"


@pytest.mark.parametrize(("what", "kind", "factory"), EXTRA, ids=[w for w, _, _ in EXTRA])
def test_the_suite_catches_more(registered, what, kind, factory):
    assert _caught(kind, registered(kind, factory())), what
