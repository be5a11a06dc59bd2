"""The component interfaces every plugin implements.

Time is discrete first: a schedule has ``steps`` = T and every time-dependent quantity is a
table indexed by the step t in {0, ..., T}, where t = 0 is the clean image and
``D(x0, 0) = x0`` for every degradation. Gaussian diffusion (DDPM/DDIM) and deterministic
"cold" degradations (blur, SVD rank truncation) both fit this contract: the schedule gives
the table (ᾱ_t, a blur width, a rank), the degradation applies it, the parameterization
turns a network output into x̂0, the sampler walks t from T down to 0.

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
from typing import ClassVar

import torch
from torch import Tensor, nn

from corediff.config import ComponentConfig

#: A denoising network seen by samplers: ``model(x_t, t) -> output`` with t the original
#: step indices (a LongTensor of shape [B]).
DenoiseFn = Callable[[Tensor, Tensor], Tensor]


class Component(ABC):  # noqa: B024 - each kind adds its abstract methods
    """Base of every plugin class.

    Class attributes a plugin sets:
      * ``Config``: its config class (``type: Literal["name"]``).
      * ``provides``: capabilities it offers, e.g. ``{"gaussian", "snr"}``.
      * ``requires``: capabilities it needs of other kinds, e.g.
        ``{"degradation": {"gaussian"}}``.
    """

    kind: ClassVar[str] = ""
    Config: ClassVar[type[ComponentConfig]] = ComponentConfig
    provides: ClassVar[frozenset[str]] = frozenset()
    requires: ClassVar[Mapping[str, frozenset[str]]] = {}

    def __init__(self, config: ComponentConfig | None = None) -> None:
        self.config = config if config is not None else type(self).Config()

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

    @abstractmethod
    def degrade(self, x0: Tensor, t: Tensor, noise: Tensor | None = None) -> Tensor:
        """D(x0, t) for a batch x0 [B, C, H, W] and steps t [B] (LongTensor).

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


class LossWeighting(Component):
    """Per-sample weight λ(t) of the training loss, plus the element-wise loss type."""

    kind = "loss_weighting"

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

    @abstractmethod
    def weight(self, t: Tensor) -> Tensor:
        """Weights [B] (float) for steps t, on the parameterization's own loss."""

    def per_element(self, output: Tensor, target: Tensor) -> Tensor:
        """Element-wise loss: ``loss_type`` "l2" (default) or "l1"."""
        loss_type = getattr(self.config, "loss_type", "l2")
        diff = output - target
        return diff.abs() if loss_type == "l1" else diff.square()


@dataclass
class TrajectoryStep:
    """One step of a sampling run: the state x_t at step t and the x̂0 predicted there."""

    t: int
    x_t: Tensor
    x0_hat: Tensor


@dataclass
class SampleResult:
    """What a sampler returns: the final sample, the first x̂0 (Cold Diffusion's "direct
    reconstruction") and, when asked for, the trajectory."""

    sample: Tensor
    direct: Tensor
    trajectory: list[TrajectoryStep] = field(default_factory=list)


class Sampler(Component):
    """Walks from x at step ``start`` (default T) down to step 0."""

    kind = "sampler"

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

    @abstractmethod
    def timesteps(self, start: int | None = None) -> list[int]:
        """The visited steps, descending, in original indices (first = start or T)."""

    @abstractmethod
    def sample(
        self,
        model: DenoiseFn,
        x: Tensor,
        *,
        start: int | None = None,
        generator: torch.Generator | None = None,
        trajectory: bool = False,
    ) -> SampleResult:
        """Run the reverse process from x at step ``start`` (default T)."""


class Prior(Component):
    """Where unconditional generation starts: x at step ``start_step(T)``."""

    kind = "prior"

    def __init__(self, config: ComponentConfig | None = None, *, degradation: Degradation) -> None:
        super().__init__(config)
        self.degradation = degradation

    def start_step(self) -> int:
        """The step the prior's samples live at (default T)."""
        return self.degradation.steps

    @abstractmethod
    def sample(
        self, shape: tuple[int, ...], *, generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
    ) -> Tensor:
        """Starting points of the given shape [B, C, H, W]."""


class Model(nn.Module, Component):
    """The denoising network ``forward(x_t, t, y=None)``."""

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

    @abstractmethod
    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """Output [B, out_channels, H, W] for input [B, in_channels, H, W] at steps t."""


class Dataset(torch.utils.data.Dataset, Component):
    """Training images: ``__getitem__`` returns (image [C, H, W] in [-1, 1], label int);
    label is -1 when the dataset has no classes."""

    kind = "dataset"

    channels: int
    image_size: int
    num_classes: int | None = None

    def __init__(self, config: ComponentConfig | None = None) -> None:
        Component.__init__(self, config)

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def __getitem__(self, index: int) -> tuple[Tensor, int]: ...


#: The base class of each kind, by kind name (the registries check plugins against it).
BASES: dict[str, type[Component]] = {
    base.kind: base
    for base in (Schedule, Degradation, Parameterization, LossWeighting, Sampler, Prior, Model,
                 Dataset)
}
