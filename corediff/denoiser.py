"""The network as a sampler sees it: ``denoise(x_t, t) -> Prediction``.

A :class:`Denoiser` wraps a network, the parameterization that interprets its output and,
for class-conditional generation, the labels and a :class:`~corediff.interfaces.Guidance`.
At a step where the guidance is active it runs the network once on the doubled batch
``[x, x]`` with labels ``[y, ∅]`` (∅ = the null label ``num_classes``) and lets the guidance
combine the two halves; elsewhere it runs the conditional network alone. It counts network
evaluations, which is how samplers report ``nfe``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from corediff.interfaces import Guidance, Parameterization, Prediction, steps_like

#: A network called with labels: ``network(x_t, t, y) -> output`` (y may be None).
LabelledNetwork = Callable[[Tensor, Tensor, Tensor | None], Tensor]


class Denoiser:
    """``denoise(x_t, t) -> Prediction`` for a network, optionally guided.

    Args:
        network: ``network(x_t, t)`` or, when ``labels`` is given or ``labelled`` is true,
            ``network(x_t, t, y)`` (a :class:`~corediff.interfaces.Model`).
        parameterization: turns the network output into a Prediction.
        guidance: combines conditional and unconditional outputs (None: no guidance).
        labels: class labels [B] of the samples (None: unconditional).
        null_label: the label of the unconditional output (the model's ``num_classes``).
    """

    def __init__(
        self,
        network: Callable[..., Tensor],
        parameterization: Parameterization,
        *,
        guidance: Guidance | None = None,
        labels: Tensor | None = None,
        null_label: int | None = None,
        labelled: bool = False,
    ) -> None:
        if labels is not None and guidance is not None and null_label is None:
            raise ValueError("guided sampling needs the model's null label (num_classes)")
        self.network = network
        self.parameterization = parameterization
        self.guidance = guidance
        self.labels = labels
        self.null_label = null_label
        self.labelled = labelled or labels is not None
        self.evaluations = 0

    def start(self) -> None:
        """Begin a sampling run: the guidance's per-run state starts empty
        (:meth:`~corediff.interfaces.Guidance.start`)."""
        if self.guidance is not None:
            self.guidance.start()

    def output(self, x: Tensor, t: Tensor, y: Tensor | None) -> Tensor:
        """One network evaluation (counted), on the input and time value the
        parameterization conditions it with (:meth:`Parameterization.condition`)."""
        self.evaluations += 1
        x_in, t_in = self.parameterization.condition(x, t)
        return self.network(x_in, t_in, y) if self.labelled else self.network(x_in, t_in)

    def __call__(self, x: Tensor, t: int | float) -> Prediction:
        t_batch = steps_like(t, x)
        y = self.labels
        if y is None or self.guidance is None or not self.guidance.active(t):
            return self.parameterization.predict(self.output(x, t_batch, y), x, t_batch)
        null = torch.full_like(y, self.null_label)
        both = self.output(x.repeat(2, 1, 1, 1), t_batch.repeat(2), torch.cat([y, null]))
        cond, uncond = both.chunk(2)
        return self.guidance.combine(cond, uncond, x, t_batch)
