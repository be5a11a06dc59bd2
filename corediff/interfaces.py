"""The component interfaces every plugin implements.

**Time.** Every component works on a time value t with t = 0 the clean image
(``D(x0, 0) = x0`` for every degradation) and ``degradation.t_max`` the end of the forward
process, where generation starts. A degradation's capabilities say which values t takes:

* discrete (the default): t is a step in {0, 1, ..., T}, T = ``schedule.steps``, passed as a
  LongTensor; every time-dependent quantity is a table indexed by t (ᾱ_t, a blur width, a
  rank) and ``t_max`` is the int T. DDPM, DDIM and Cold Diffusion live here, exactly as in
  corediff 0.1;
* ``"continuous"``: t is any real in [0, t_max], passed as a float64 tensor. The Gaussian
  (variance-preserving) degradation is discrete *and* continuous: between its integer steps
  it interpolates log σ linearly in t (as k-diffusion evaluates discrete models), so fast
  ODE solvers visit fractional steps of models trained on integer ones, while integer t gives
  the tables bit for bit;
* ``"unit_time"``: continuous with t ∈ [0, 1] (flow matching, x_t = (1 − t)·x0 + t·ε);
* ``"sigma_time"``: continuous with t = σ, the noise level (EDM, x_σ = x0 + σ·ε).

A sampler's :meth:`Sampler.timesteps` returns Python ints (discrete) or floats (continuous);
the loop turns them into tensors with :func:`steps_like`. Training draws t from the
recipe's :class:`TimeSampler` (uniform steps by default, as before). The network never
sees t itself but ``parameterization.condition(x_t, t)``: the parameterization owns the time
convention (the step index for DDPM, 1000·t for flow matching, EDM's c_noise = ¼·ln σ) and
any input scaling (EDM's c_in), so a model plugin needs no change for a new method.

Compatibility is declared, not special-cased: each component class lists the capabilities
it ``provides`` and those it ``requires`` of the other components, by kind; the recipe
loader refuses a combination whose requirements are not met
(``corediff.recipe.check_compatibility``).

Every component is usable alone: ``Cls(Cls.Config(...), ...)``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import torch
from torch import Tensor, nn

from corediff.config import ComponentConfig

#: A denoising network seen by samplers: ``model(x_t, t) -> output`` with t the original
#: step indices (a LongTensor of shape [B]).
DenoiseFn = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class DataSpec:
    """What a model needs to know of the data: channels, square size, class count (None:
    unconditional data)."""

    channels: int
    image_size: int
    num_classes: int | None = None


class Component(ABC):  # noqa: B024 - each kind adds its abstract methods
    """Base of every plugin class.

    Class attributes a plugin sets:
      * ``Config``: its config class (``type: Literal["name"]``).
      * ``provides``: capabilities it offers, e.g. ``frozenset({"gaussian", "snr"})``.
      * ``requires``: capabilities it needs of other kinds, e.g.
        ``{"degradation": frozenset({"gaussian"})}``.

    Capability names come from the vocabulary of :mod:`corediff.capabilities` and are
    checked when the plugin loads.
    """

    kind: ClassVar[str] = ""
    Config: ClassVar[type[ComponentConfig]] = ComponentConfig
    provides: ClassVar[frozenset[str]] = frozenset()
    requires: ClassVar[Mapping[str, frozenset[str]]] = {}

    def __init__(self, config: ComponentConfig | None = None) -> None:
        self.config = config if config is not None else type(self).Config()
        self.provides = type(self).capabilities(self.config)

    @classmethod
    def capabilities(cls, config: ComponentConfig) -> frozenset[str]:
        """What an instance with ``config`` provides (default: the class's ``provides``).

        Override when a capability depends on the config (``svd`` with ``noise_std > 0`` is
        stochastic, not deterministic): the recipe check calls this with the recipe's config
        and the instance gets the same set, so the two cannot disagree.
        """
        return cls.provides

    @classmethod
    def check_recipe(
        cls, config: ComponentConfig, others: Mapping[str, tuple[type, ComponentConfig]]
    ) -> list[str]:
        """Why this component, with ``config``, cannot work with the recipe's others (empty:
        it can). ``others`` maps each kind to its (class, config). Called when a recipe is
        validated, after the capability check; e.g. ε-prediction refuses a schedule whose
        ᾱ_T = 0. ``corediff.create`` runs it on the dependencies it is given, and a
        pipeline's ``recipe`` on the whole composition; a class called directly is not
        checked."""
        return []

    def fit(self, images: Tensor) -> None:  # noqa: B027 - optional hook, no-op by default
        """Calibrate on a batch of training images in [-1, 1] (default: nothing to fit)."""

    def extra_state(self) -> dict[str, Tensor]:
        """Tensors learnt by :meth:`fit`, saved with checkpoints (default: none)."""
        return {}

    def load_extra_state(self, state: Mapping[str, Tensor]) -> None:  # noqa: B027
        """Restore what :meth:`extra_state` returned."""


class Schedule(Component):
    """Maps the step index t in {0..T} to the quantity a degradation needs.

    ``values()`` returns a float64 tensor of length T + 1 (index 0: clean). Which quantity
    it is (ᾱ_t, a blur sigma, a kept-rank fraction) is named by the schedule's
    ``provides`` (e.g. ``{"alpha_bar"}``), so degradations can require it.
    """

    kind = "schedule"

    @property
    def steps(self) -> int:
        """T, the number of degradation steps."""
        return int(self.config.steps)  # type: ignore[attr-defined]

    @abstractmethod
    def values(self) -> Tensor:
        """float64 tensor of shape [T + 1]; index t is the quantity at step t."""


class Degradation(Component):
    """The forward process D(x0, t); t = 0 returns x0 unchanged.

    Optional factor protocol (duck typed, e.g. ``svd``): a degradation whose cost is a
    per-image decomposition may define ``decompose(x0) -> factors`` (a tensor or a (named)
    tuple of tensors, batch first), ``flip_factors(factors)`` (the factors of
    ``x0.flip(-1)``) and ``degrade_from_factors(factors, t, noise=None)`` (equal to
    ``degrade(x0, t, noise)`` for t ≥ 1); training then decomposes each dataset image once
    and reuses its factors (``corediff.engine.factor_cache``).
    """

    kind = "degradation"

    def __init__(self, config: ComponentConfig | None = None, *, schedule: Schedule) -> None:
        super().__init__(config)
        self.schedule = schedule

    @property
    def steps(self) -> int:
        return self.schedule.steps

    @property
    def t_max(self) -> int | float:
        """The last time of the forward process, where generation starts: the int T for a
        discrete degradation (the default), a float for a continuous one (1, σ_max)."""
        return self.steps

    def prior_std(self) -> float:
        """Standard deviation of pure noise at ``t_max`` (1 for variance-preserving and flow
        degradations, σ_max for EDM): what the ``normal`` prior scales its draws by."""
        return 1.0

    @abstractmethod
    def degrade(self, x0: Tensor, t: Tensor, noise: Tensor | None = None) -> Tensor:
        """D(x0, t) for a batch x0 [B, C, H, W] and times t [B] (a LongTensor of steps, or a
        float tensor for a continuous degradation: see the module docstring).

        Stochastic degradations use ``noise`` (same shape as x0) when given and draw it
        otherwise; deterministic ones ignore it.
        """

    def degrade_many(
        self, x0: Tensor, ts: list[Tensor], noise: Tensor | None = None
    ) -> list[Tensor]:
        """D(x0, t) for several step tensors at once; override to share work (an SVD)."""
        return [self.degrade(x0, t, noise) for t in ts]

    def sample_noise(self, x0: Tensor, generator: torch.Generator | None = None) -> Tensor | None:
        """Noise for a training step (None for deterministic degradations)."""
        return None

    def estimate_noise(self, x_t: Tensor, x0_hat: Tensor, t: Tensor) -> Tensor | None:
        """The noise that maps x0_hat to x_t at step t (None when deterministic)."""
        return None

    def snr(self, t: Tensor) -> Tensor:
        """Signal-to-noise ratio at steps t (only for degradations that provide 'snr')."""
        raise TypeError(f"degradation '{self.config.type}' has no signal-to-noise ratio")


@dataclass
class Prediction:
    """A network output interpreted: x̂0 always; ε̂, the posterior mean and the log
    variance where the parameterization defines them."""

    x0: Tensor
    eps: Tensor | None = None
    mean: Tensor | None = None
    log_variance: Tensor | None = None


class Parameterization(Component):
    """What the network predicts, and how that becomes x̂0 and a training target."""

    kind = "parameterization"

    def __init__(
        self, config: ComponentConfig | None = None, *, degradation: Degradation
    ) -> None:
        super().__init__(config)
        self.degradation = degradation

    def output_channels(self, image_channels: int) -> int:
        """Channels the network must output for images with ``image_channels``."""
        return image_channels

    def condition(self, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """What the network is called with at (x_t, t): (its input, its time value). Default
        (x_t, t): the step index, as DDPM networks take it; EDM returns (c_in·x, c_noise)."""
        return x_t, t

    @abstractmethod
    def predict(self, output: Tensor, x_t: Tensor, t: Tensor) -> Prediction:
        """Interpret the network output at (x_t, t)."""

    @abstractmethod
    def target(self, x0: Tensor, x_t: Tensor, t: Tensor, noise: Tensor | None) -> Tensor:
        """The regression target for the network at (x_t, t)."""

    def x0_loss_scale(self, t: Tensor) -> Tensor:
        """s(t) with  ||target − output||² = s(t) · ||x0 − x̂0||²  (1 for x0-prediction).

        Loss weightings defined in x0 space divide by it, e.g. min-SNR for ε-prediction:
        min(snr, γ) / snr.
        """
        return torch.ones_like(t, dtype=torch.float64)

    def loss(
        self,
        output: Tensor,
        x0: Tensor,
        x_t: Tensor,
        t: Tensor,
        noise: Tensor | None,
        per_element: Callable[[Tensor, Tensor], Tensor],
    ) -> Tensor:
        """Per-sample loss [B] before weighting: mean of ``per_element(output, target)``."""
        return per_element(output, self.target(x0, x_t, t, noise)).flatten(1).mean(1)


class ParameterizedComponent(Component):  # noqa: B024 - a shared constructor, no new method
    """Base of the kinds built from a degradation and a parameterization (loss weighting,
    sampler, guidance): ``Cls(config, degradation=..., parameterization=...)``."""

    def __init__(
        self,
        config: ComponentConfig | None = None,
        *,
        degradation: Degradation,
        parameterization: Parameterization,
    ) -> None:
        super().__init__(config)
        self.degradation = degradation
        self.parameterization = parameterization


class LossWeighting(ParameterizedComponent):
    """Per-sample weight λ(t) of the training loss, plus the element-wise loss type."""

    kind = "loss_weighting"

    @abstractmethod
    def weight(self, t: Tensor) -> Tensor:
        """Weights [B] (float) for steps t, on the parameterization's own loss."""

    def from_x0_weight(self, weight_x0: Tensor, t: Tensor) -> Tensor:
        """The weight on the parameterization's own loss that equals ``weight_x0`` on the x0
        MSE: weight_x0 / s(t) with s = ``parameterization.x0_loss_scale(t)`` (float64).

        0/0 and ∞/∞ (only at SNR ∈ {0, ∞} for weights and scales affine in the SNR, as
        SNR-based weights are) take their limit 1.
        """
        ratio = weight_x0 / self.parameterization.x0_loss_scale(t).to(weight_x0)
        return torch.where(ratio.isnan(), torch.ones_like(ratio), ratio)

    def per_element(self, output: Tensor, target: Tensor) -> Tensor:
        """Element-wise loss: the config's ``loss_type`` (see
        :class:`corediff.config.LossWeightingConfig`), "l2" when it has none, or "l1"."""
        loss_type = getattr(self.config, "loss_type", "l2")
        diff = output - target
        return diff.abs() if loss_type == "l1" else diff.square()


class TimeSampler(Component):
    """The distribution of training times: each training step draws t for its batch.

    ``sample`` returns the times (as :class:`Degradation` takes them) and, for importance
    sampling, the weights 1 / (T·p(t)) that keep the loss an unbiased estimate of the
    uniform-time objective (None: all 1). ``observe`` receives the per-sample losses of the
    times drawn (detached; loss-aware samplers learn from them, on the device, without a host
    sync); state that must survive a resume goes in ``extra_state``.
    """

    kind = "time_sampler"

    def __init__(self, config: ComponentConfig | None = None, *, degradation: Degradation) -> None:
        super().__init__(config)
        self.degradation = degradation

    @abstractmethod
    def sample(
        self, batch: int, generator: torch.Generator | None, device: torch.device | str,
    ) -> tuple[Tensor, Tensor | None]:
        """(times t [B], importance weights [B] or None) on ``device``."""

    def observe(self, t: Tensor, losses: Tensor) -> None:  # noqa: B027 - optional hook
        """The per-sample losses [B] of a training step at times t (default: ignored)."""


@dataclass
class TrajectoryStep:
    """One step of a sampling run: the state x_t at time t and the x̂0 predicted there."""

    t: int | float
    x_t: Tensor
    x0_hat: Tensor


@dataclass
class SampleResult:
    """What a sampler returns.

    ``sample``: x at step 0. ``direct``: the x̂0 predicted at the first visited step (Cold
    Diffusion's "direct reconstruction"; for a one-step sampler it is the sample).
    ``trajectory``: every visited step when asked for. ``nfe``: network evaluations made (a
    guided evaluation runs the network once on a doubled batch and counts as one).
    """

    sample: Tensor
    direct: Tensor
    trajectory: list[TrajectoryStep] = field(default_factory=list)
    nfe: int = 0


@dataclass
class Step:
    """What :meth:`Sampler.step` is told about the step it takes.

    ``t`` is the current time and ``t_next`` the next visited one (0 after the last): steps
    in the schedule's original indices (ints) or continuous times (floats, see the module
    docstring); ``index`` counts visited steps from 0; ``plan`` is this
    step's entry of :meth:`Sampler.plan` (precomputed float64 coefficients, as Python floats);
    ``state`` is a dict that lives for one sampling run (multistep history).
    """

    index: int
    t: int | float
    t_next: int | float
    is_last: bool
    plan: Any
    generator: torch.Generator | None
    state: dict[str, Any]

    def t_tensor(self, like: Tensor) -> Tensor:
        """``t`` as a tensor [B] on ``like``'s device (B = like.shape[0]; see steps_like)."""
        return steps_like(self.t, like)

    def t_next_tensor(self, like: Tensor) -> Tensor:
        """``t_next`` as a tensor [B] on ``like``'s device."""
        return steps_like(self.t_next, like)


def steps_like(t: int | float, like: Tensor) -> Tensor:
    """The time t repeated for each sample of ``like`` on its device (a fill, no host-device
    copy): a LongTensor [B] for a step (int), float64 [B] for a continuous time (float)."""
    dtype = torch.long if isinstance(t, int) else torch.float64
    return torch.full((like.shape[0],), t, dtype=dtype, device=like.device)


class Denoise(Protocol):
    """The network as a sampler sees it: ``denoise(x_t, t) -> Prediction`` at time t (an int
    step or a float time), with the parameterization and guidance applied and the
    evaluation counted."""

    def __call__(self, x: Tensor, t: int | float) -> Prediction: ...


class Sampler(ParameterizedComponent):
    """Walks from x at step ``start`` (default T) down to step 0.

    The base class owns the loop (``sample``): no_grad, the visited steps, the trajectory,
    the direct reconstruction, the generator, the progress callback and the count of network
    evaluations. A sampler implements :meth:`timesteps` (which steps it visits) and
    :meth:`step` (one move from t to t_next); :meth:`plan` precomputes per-step coefficients
    once per run so the loop does no float64 maths and no host sync. A sampler that evaluates
    the network more than once per step (Heun: 2) sets ``evaluations_per_step``.

    ``order`` declares the global convergence order of a deterministic sampler on the
    probability-flow ODE (Euler 1, Heun and DPM-Solver++(2M) 2, ...); the conformance suite
    checks that its error falls at that rate. ``stochastic`` marks a sampler whose output
    depends on fresh noise (ancestral, SDE); it is checked by the moments of its outputs.
    ``None`` (the default) leaves the order unchecked.
    """

    kind = "sampler"
    evaluations_per_step: ClassVar[int] = 1
    order: ClassVar[int | None] = None
    stochastic: ClassVar[bool] = False

    @abstractmethod
    def timesteps(self, start: int | float | None = None) -> list[int] | list[float]:
        """The visited times, descending (first = start or ``degradation.t_max``): steps in
        original indices, or floats for a continuous sampler."""

    def nfe(self, start: int | float | None = None) -> int:
        """Network evaluations of one run from ``start`` (equals ``SampleResult.nfe``)."""
        return self.evaluations_per_step * len(self.timesteps(start))

    def plan(self, steps: list[int]) -> list[Any]:
        """Per visited step, what :meth:`step` receives as ``step.plan`` (default: None)."""
        return [None] * len(steps)

    @abstractmethod
    def step(self, x: Tensor, step: Step, denoise: Denoise) -> tuple[Tensor, Tensor]:
        """Move x from ``step.t`` to ``step.t_next``; return (x at t_next, x̂0 at t)."""

    @torch.no_grad()
    def sample(
        self,
        model: DenoiseFn | Denoise,
        x: Tensor,
        *,
        start: int | float | None = None,
        generator: torch.Generator | None = None,
        trajectory: bool = False,
        callback: Callable[[int, int], None] | None = None,
    ) -> SampleResult:
        """Run the reverse process from x at step ``start`` (default T).

        ``model`` is a :class:`corediff.denoiser.Denoiser` (guidance, labels) or any plain
        callable ``model(x_t, t) -> network output`` (t a LongTensor [B]).
        ``callback(i, n)`` is called after each of the n visited steps.
        """
        from corediff.denoiser import Denoiser

        denoise = model if isinstance(model, Denoiser) else Denoiser(model, self.parameterization)
        denoise.start()
        first_count = denoise.evaluations
        visited = self.timesteps(start)
        plan = self.plan(visited)
        state: dict[str, Any] = {}
        direct: Tensor | None = None
        path: list[TrajectoryStep] = []
        for i, t in enumerate(visited):
            last = i == len(visited) - 1
            info = Step(i, t, 0 if last else visited[i + 1], last, plan[i], generator, state)
            x_next, x0_hat = self.step(x, info, denoise)
            direct = x0_hat if direct is None else direct
            if trajectory:
                path.append(TrajectoryStep(t, x, x0_hat))
            x = x_next
            if callback is not None:
                callback(i, len(visited))
        assert direct is not None, "a sampler visits at least one step"
        return SampleResult(x, direct, path, denoise.evaluations - first_count)


class Guidance(ParameterizedComponent):
    """Combines a class-conditional network's conditional and unconditional outputs into the
    prediction a sampler uses (classifier-free guidance and its variants).

    The null label is ``num_classes`` (see :class:`Model`); the unconditional output is the
    network at the null label. When :meth:`active` is false at a step, the sampler sees the
    conditional prediction alone and the network runs once on B images, not 2B.

    Per-run state: :attr:`state` is a dict that lives for one sampling run (a momentum
    buffer, the previous step's guided output), as ``Step.state`` does for a sampler;
    :meth:`start` empties it before the first step of every run.

    ``invariants`` declares what :mod:`corediff.testing` checks on unequal conditional and
    unconditional outputs: ``{name: config overrides}`` with names from
    ``corediff.testing.GUIDANCE_INVARIANTS`` (e.g. ``{"conditional": {"scale": 1.0}}``: at
    scale 1 the guided prediction is the conditional one).
    """

    kind = "guidance"
    invariants: ClassVar[Mapping[str, Mapping[str, Any]]] = {}

    def __init__(
        self, config: ComponentConfig | None = None, *, degradation: Degradation,
        parameterization: Parameterization,
    ) -> None:
        super().__init__(config, degradation=degradation, parameterization=parameterization)
        self.state: dict[str, Any] = {}

    def start(self) -> None:
        """Begin a sampling run: :attr:`state` becomes a new empty dict. The sampler's loop
        calls it (through the :class:`~corediff.denoiser.Denoiser`) once per run, before its
        first step: each batch of ``Pipeline.generate``, each ``restore``. Override to put
        the run's initial state in it, calling ``super().start()`` first."""
        self.state = {}

    @abstractmethod
    def active(self, t: int | float) -> bool:
        """Whether time t needs the unconditional output (a Python number: no host sync)."""

    @abstractmethod
    def combine(self, cond: Tensor, uncond: Tensor, x_t: Tensor, t: Tensor) -> Prediction:
        """The guided prediction from the network's conditional and unconditional outputs."""


class Prior(Component):
    """Where unconditional generation starts: x at time ``start_step()``.

    ``marginal`` declares that, at its default config, the draws follow the data's marginal
    at the start time (a standard normal scaled by ``prior_std()`` for Gaussian
    degradations); :mod:`corediff.testing` then compares their moments with the data's.
    """

    kind = "prior"
    marginal: ClassVar[bool] = False

    def __init__(self, config: ComponentConfig | None = None, *, degradation: Degradation) -> None:
        super().__init__(config)
        self.degradation = degradation

    def start_step(self) -> int | float:
        """The time the prior's samples live at (default ``degradation.t_max``: T)."""
        return self.degradation.t_max

    @abstractmethod
    def sample(
        self, shape: tuple[int, ...], *, generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
    ) -> Tensor:
        """Starting points of the given shape [B, C, H, W]."""


class Model(nn.Module, Component):
    """The denoising network ``forward(x_t, t, y=None)``.

    Engine contract: labels y are LongTensors [B] in 0..num_classes − 1, or the **null label**
    ``num_classes`` (:attr:`null_label`), the unconditional input of classifier-free guidance
    — a class-conditional model therefore embeds ``num_classes + 1`` labels; ``y=None`` (and a
    model built with ``num_classes=None``) means unconditional. t [B] is the time value the
    parameterization gives (:meth:`Parameterization.condition`): the step index for DDPM-style
    methods, possibly fractional, or a real time such as EDM's c_noise.
    :meth:`check_data_spec` refuses data the network cannot take, at recipe validation.
    """

    kind = "model"

    def __init__(
        self,
        config: ComponentConfig | None = None,
        *,
        in_channels: int,
        out_channels: int,
        image_size: int,
        num_classes: int | None = None,
    ) -> None:
        nn.Module.__init__(self)
        Component.__init__(self, config)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.image_size = image_size
        self.num_classes = num_classes

    @property
    def null_label(self) -> int | None:
        """The label meaning "no class" (``num_classes``), None for unconditional models."""
        return self.num_classes

    @classmethod
    def check_data_spec(cls, config: ComponentConfig, spec: DataSpec) -> list[str]:
        """Why this network cannot take data of ``spec`` (empty: it can). Override to state
        the network's constraints (e.g. a size divisible by its downsampling factor); it is
        called when a recipe is validated, before any data is read."""
        return []

    @abstractmethod
    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """Output [B, out_channels, H, W] for input [B, in_channels, H, W] at steps t."""


class Dataset(torch.utils.data.Dataset, Component):
    """Training images: ``__getitem__`` returns (image [C, H, W] in [-1, 1], label int);
    label is -1 when the dataset has no classes.

    What ``corediff eval`` measures is declared, not guessed from the dataset's name:

    * ``metrics``: the sample-quality metric families that fit these images, from the
      vocabulary ``"digits_classifier"`` (Fréchet distance in the features of a small
      classifier trained on the embedded digits, its confidence and class histogram: 8×8
      one-channel digits only) and ``"natural_images"`` (Inception FID/KID/IS/precision-
      recall against real images: photographs). Empty: none of them. Every dataset also gets
      ``memorization`` (distance of each sample to its nearest training image) and, for a
      non-Gaussian degradation, restoration metrics; see :mod:`corediff.evaluation.report`.
    * ``held_out_config(config)``: the config of held-out real images to compare samples
      with (e.g. a test split), or None when there is none and a seeded subset of the
      training images is used.

    Optional hook: ``prepare_cache(config)`` (``corediff data prepare``) writes a cache of
    decoded, resized images that the dataset reads instead of its sources (see
    :mod:`corediff.data_cache`); datasets without one (in-memory ones) keep the default.
    """

    kind = "dataset"

    #: Sample-quality metric families for these images (vocabulary above).
    metrics: ClassVar[frozenset[str]] = frozenset()

    channels: int
    image_size: int
    num_classes: int | None = None

    @classmethod
    def held_out_config(cls, config: ComponentConfig) -> ComponentConfig | None:
        """Config of the held-out images matching ``config`` (default None: none)."""
        return None

    @classmethod
    def fixed_items(cls, config: ComponentConfig) -> bool:
        """Whether item i is always the same image, up to a horizontal mirror (no random
        crop or other augmentation): what lets training cache per-image factors (the SVD
        factor cache) and skip re-decomposing them. Default False (the safe answer)."""
        return False

    @classmethod
    def prepare_cache(cls, config: ComponentConfig) -> Any:
        """Write the prepared cache for ``config`` and return its folder (a
        ``pathlib.Path``), or None (the default) when this dataset has nothing to prepare.
        A classmethod so that a stale cache, which opening the dataset refuses, can be
        rebuilt."""
        return None

    def __init__(self, config: ComponentConfig | None = None) -> None:
        Component.__init__(self, config)

    @classmethod
    def describe(cls, config: ComponentConfig) -> DataSpec | None:
        """The DataSpec this config yields when known without reading any data (None
        otherwise); lets recipe validation check the model against the data."""
        return None

    @property
    def spec(self) -> DataSpec:
        """Channels, size and class count of the images."""
        return DataSpec(self.channels, self.image_size, self.num_classes)

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def __getitem__(self, index: int) -> tuple[Tensor, int]: ...


class Logger(Component):
    """An experiment tracker (TensorBoard, Weights & Biases, MLflow, ...) the trainer reports
    to, besides ``<run>/metrics.csv`` which is always written.

    A recipe lists its loggers as ``[[log]]`` tables. The engine builds each one on rank 0
    with ``run_dir``, a folder of the run directory where it may keep local files, and per
    training session calls :meth:`start` once, then :meth:`log_scalars` and
    :meth:`log_image` any number of times, and :meth:`close` (also when training stops with
    an error or a signal). Keys are ``train/loss``, ``train/lr``, ``train/grad_norm``,
    ``train/images_per_s``, ``eval/<metric>`` (``eval/val_loss`` at checkpoints, ``corediff
    eval``'s metrics) and ``samples`` for sample grids.

    ``packages`` maps each Python module the logger imports to its pip requirement; a recipe
    naming a logger whose module is missing is refused at validation with the pip command
    (the module is imported in :meth:`start`, never when the plugin loads).
    """

    kind = "logger"
    #: Import name -> pip requirement of the packages :meth:`start` imports.
    packages: ClassVar[Mapping[str, str]] = {}

    def __init__(self, config: ComponentConfig | None = None, *, run_dir: Any) -> None:
        super().__init__(config)
        from pathlib import Path

        self.run_dir = Path(run_dir)

    @classmethod
    def missing_packages(cls) -> list[str]:
        """The pip requirements of :attr:`packages` whose module cannot be imported."""
        import importlib.util

        return [req for module, req in cls.packages.items()
                if importlib.util.find_spec(module) is None]

    @classmethod
    def check_recipe(
        cls, config: ComponentConfig, others: Mapping[str, tuple[type, ComponentConfig]]
    ) -> list[str]:
        missing = cls.missing_packages()
        if not missing:
            return []
        quoted = " ".join(f"'{req}'" for req in missing)
        return [f"needs {', '.join(missing)}, which is not installed: pip install {quoted} "
                "(or pip install 'corediff[trackers]')"]

    @abstractmethod
    def start(
        self, recipe: Mapping[str, Any], *, tags: Mapping[str, str], step: int,
        resume: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        """Open the tracker run and record ``recipe`` (the resolved recipe, plain data) as
        its config. ``step`` is the step training starts from. ``resume`` is what this
        method returned in the run's previous session (None for a new run): continue that
        tracker run. Returns JSON-ready data identifying the tracker run."""

    @abstractmethod
    def log_scalars(self, values: Mapping[str, float], step: int) -> None:
        """Record scalar values at a training step."""

    @abstractmethod
    def log_image(self, name: str, image: Any, step: int) -> None:
        """Record an image, a uint8 numpy array [H, W, C] (C = 1 or 3), at a step."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Flush and close the tracker run (called once per session)."""


@dataclass
class ObjectiveBatch:
    """One batch as an objective sees it.

    ``x0`` [B, C, H, W] (on the training device), ``y`` labels [B] or None, ``index`` their
    dataset indices (or None). ``net(x, time_value, y)`` is the trained network (wrapped for
    DDP or ``torch.compile``, run under the recipe's autocast) returning float32; call it with
    ``parameterization.condition(x_t, t)``. ``degrade(t, noise)`` is D(x0, t, noise) of this
    batch's images (through the SVD factor cache when training has one). ``generator`` is the
    stream every random draw must come from (the training stream, or validation's own), and
    ``training`` is False for the held-out validation loss (no learning from it: no
    ``time_sampler.observe``, no state change). :meth:`drop_labels` applies the recipe's
    ``train.label_dropout`` (classifier-free guidance training), drawing from ``generator``.
    """

    x0: Tensor
    y: Tensor | None
    index: Tensor | None
    net: Callable[[Tensor, Tensor, Tensor | None], Tensor]
    degrade: Callable[[Tensor, Tensor | None], Tensor]
    generator: torch.Generator
    training: bool
    label_dropout: float = 0.0
    null_label: int | None = None

    def drop_labels(self) -> Tensor | None:
        """``y`` with each label replaced by the null label with probability
        ``label_dropout`` (one uniform draw per label from ``generator``; y unchanged, and
        nothing drawn, without labels or dropout)."""
        from corediff.maths.noise import rand

        if self.y is None or self.label_dropout <= 0:
            return self.y
        drop = rand(self.y.shape, self.generator, self.y.device) < self.label_dropout
        return torch.where(drop, self.null_label, self.y)


@dataclass
class ObjectiveLosses:
    """What an objective returns: ``per_sample`` losses [B] (float32, already weighted; the
    engine minimises their mean) and ``logs``, scalar tensors to report (averaged over each
    metrics row and sent to the trackers as ``train/<name>``; kept on the device, no host
    sync)."""

    per_sample: Tensor
    logs: dict[str, Tensor] = field(default_factory=dict)


class Objective(Component):
    """The training objective: what one batch's loss is (``[diffusion.objective]``, default
    ``denoising``, DDPM's Algorithm 1 generalised). The engine owns everything else —
    data, DDP, gradient accumulation, the optimizer, the EMA of the weights, checkpoints — and
    calls :meth:`losses` once per micro-batch, then :meth:`after_step` after each optimizer
    step.

    Built with the recipe's ``degradation``, ``parameterization``, ``loss_weighting``,
    ``time_sampler`` and the ``model`` (its initial weights: copy it for a target network;
    never call it for losses, use ``batch.net``, which carries DDP and autocast).

    Contract:
      * ``needs_teacher``: when True the recipe must name ``teacher`` (a run directory or
        checkpoint); the engine loads it with :func:`corediff.load` before training, frozen
        (no gradients), in eval mode, on the training device, and sets :attr:`teacher` to
        that :class:`~corediff.pipeline.Pipeline` (its own degradation, parameterization and
        sampler settings; EMA weights in ``teacher.model``). It is not saved with the
        student; its path and checkpoint digest are recorded, so a resume uses the same one.
      * :meth:`modules`: extra networks the objective owns (an EMA target network); the
        engine moves them to the training device, and :meth:`extra_state` (by default their
        weights, as ``"<name>.<parameter>"``) is saved with every checkpoint and restored on
        resume, after construction. Override ``extra_state``/``load_extra_state`` (keeping
        the modules' entries) for other state, e.g. a curriculum position; state must be
        tensors and restore exactly.
      * :meth:`losses` draws randomness only from ``batch.generator``; with
        ``batch.training`` False it changes no state.
    """

    kind = "objective"
    needs_teacher: ClassVar[bool] = False

    def __init__(
        self, config: ComponentConfig | None = None, *, degradation: Degradation,
        parameterization: Parameterization, loss_weighting: LossWeighting,
        time_sampler: TimeSampler, model: nn.Module,
    ) -> None:
        super().__init__(config)
        self.degradation, self.parameterization = degradation, parameterization
        self.loss_weighting, self.time_sampler = loss_weighting, time_sampler
        self.teacher: Any = None

    @classmethod
    def check_recipe(
        cls, config: ComponentConfig, others: Mapping[str, tuple[type, ComponentConfig]]
    ) -> list[str]:
        teacher = getattr(config, "teacher", None)
        if cls.needs_teacher and teacher is None:
            return ["needs a teacher: set teacher = \"<run directory or checkpoint>\""]
        if not cls.needs_teacher and teacher is not None:
            return [f"takes no teacher (got teacher = {teacher!r}); remove the key"]
        return []

    def modules(self) -> dict[str, nn.Module]:
        """Extra networks this objective owns, by name (default: none)."""
        return {}

    def extra_state(self) -> dict[str, Tensor]:
        return {f"{name}.{key}": value for name, module in self.modules().items()
                for key, value in module.state_dict().items()}

    def load_extra_state(self, state: Mapping[str, Tensor]) -> None:
        for name, module in self.modules().items():
            prefix = f"{name}."
            module.load_state_dict({key[len(prefix):]: value for key, value in state.items()
                                    if key.startswith(prefix)})

    @abstractmethod
    def losses(self, batch: ObjectiveBatch) -> ObjectiveLosses:
        """The batch's per-sample losses (and what to log)."""

    def after_step(self, model: nn.Module, step: int) -> None:  # noqa: B027 - optional hook
        """Called after optimizer step ``step`` (counted from 1) and the EMA update, with the
        trained network (unwrapped); e.g. an EMA target network follows it here."""
