"""Per-image factor cache for degradations with the optional factor protocol (e.g. ``svd``).

A degradation offering ``decompose(x0) -> factors``, ``flip_factors(factors)`` and
``degrade_from_factors(factors, t, noise=None)`` (see :class:`corediff.interfaces.Degradation`)
lets training decompose each dataset image once and serve every later step from stored
factors: for SVD the decomposition is ~99 % of a degradation's cost.

Every x_t comes from ``degrade_from_factors`` applied to the factors of the image in a
*canonical orientation* (itself or its horizontal mirror, chosen from its pixels alone,
flipped back with ``flip_factors``), so the result does not depend on what the cache holds:
a cold cache (after a resume) gives the same bits as a warm one, whichever orientation a
randomly mirrored image was first seen in.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

#: The methods a degradation needs for the cache (duck typed; the core imports no plugin).
PROTOCOL = ("decompose", "flip_factors", "degrade_from_factors")


def _parts(factors: Any) -> tuple[Tensor, ...]:
    return (factors,) if isinstance(factors, Tensor) else tuple(factors)


def _build(kind: type, parts: list[Tensor] | tuple[Tensor, ...]) -> Any:
    """Factors of type ``kind`` (a tensor or a (named) tuple of tensors) from ``parts``."""
    if issubclass(kind, Tensor):
        return parts[0]
    if hasattr(kind, "_make"):
        return kind._make(parts)
    return kind(parts)


def canonical(x: Tensor) -> tuple[Tensor, Tensor]:
    """(canonical images, mirrored mask [B]): each row of x [B, ..., W] or its horizontal
    mirror, whichever is smaller at the first element (row-major) where the two differ.

    A row and its mirror get the same canonical image (comparisons only, so exactly), and
    exactly one of them is marked mirrored unless the row is left-right symmetric.
    """
    mirrored = x.flip(-1)
    differs = (x != mirrored).flatten(1)
    first = differs.to(torch.uint8).argmax(1, keepdim=True)  # first differing element
    smaller = (x < mirrored).flatten(1).gather(1, first).squeeze(1)
    flip = differs.any(1) & ~smaller
    shape = (-1,) + (1,) * (x.dim() - 1)
    return torch.where(flip.view(shape), mirrored, x), flip


class FactorCache:
    """Factors of every training image by dataset index, filled lazily during training.

    Holds, in tensors preallocated on the first call (on the images' device), each index's
    canonical image as first seen, its factors and a ``filled`` mask. Memory per image: the
    image plus its factors; for ``svd`` on C×H×W float32 images that is
    4·C·(H·W + H·K + K + K·W) bytes with K = min(H, W), e.g. 3×64×64: 49 KiB + 97 KiB
    = 146 KiB per image (AFHQ's 14,630 training images: ~2.1 GB).

    A row whose image differs from the stored one (random crops, augmentation) is decomposed
    afresh, without being stored, so the result is always D(x0, t) of the image given.
    """

    def __init__(self, degradation: Any, size: int) -> None:
        self.degradation, self.size = degradation, size
        self.images: Tensor | None = None
        self.parts: list[Tensor] = []
        self.filled: Tensor | None = None
        self._kind: type = Tensor
        self.decomposed = 0  # images decomposed so far (stored or not)

    @staticmethod
    def supports(degradation: Any) -> bool:
        """Whether ``degradation`` offers the factor protocol."""
        return all(callable(getattr(degradation, name, None)) for name in PROTOCOL)

    def degrade(self, x0: Tensor, index: Tensor, t: Tensor, noise: Tensor | None = None) -> Tensor:
        """D(x0, t, noise) for a batch x0 [B, C, H, W] of dataset images ``index`` [B]."""
        index = index.to(x0.device, torch.long)
        canon, flip = canonical(x0)
        if self.images is None:
            need = torch.ones_like(flip)
        else:
            same = (self.images.index_select(0, index) == canon).flatten(1).all(1)
            need = ~self.filled[index] | ~same
        rows = need.nonzero().squeeze(1)
        fresh = self.degradation.decompose(canon.index_select(0, rows)) if len(rows) else None
        if fresh is not None:
            self.decomposed += len(rows)
            if self.images is None:
                self._allocate(canon, fresh)
            self._store(index.index_select(0, rows), canon.index_select(0, rows), _parts(fresh))
        parts = [part.index_select(0, index) for part in self.parts]
        if fresh is not None:
            for part, new in zip(parts, _parts(fresh), strict=True):
                part.index_copy_(0, rows, new)
        mirrored = flip.nonzero().squeeze(1)
        if len(mirrored):
            subset = _build(self._kind, [part.index_select(0, mirrored) for part in parts])
            flipped = _parts(self.degradation.flip_factors(subset))
            for part, new in zip(parts, flipped, strict=True):
                part.index_copy_(0, mirrored, new)
        x_t = self.degradation.degrade_from_factors(_build(self._kind, parts), t, noise)
        return torch.where((t == 0).view(-1, *(1,) * (x0.dim() - 1)), x0, x_t.to(x0.dtype))

    def _allocate(self, canon: Tensor, fresh: Any) -> None:
        self.images = canon.new_empty((self.size, *canon.shape[1:]))
        self.parts = [p.new_empty((self.size, *p.shape[1:])) for p in _parts(fresh)]
        self.filled = torch.zeros(self.size, dtype=torch.bool, device=canon.device)
        self._kind = type(fresh)

    def _store(self, index: Tensor, images: Tensor, parts: tuple[Tensor, ...]) -> None:
        """Store the rows whose index is not filled yet (the first row of each index)."""
        new = (~self.filled[index]).nonzero().squeeze(1)
        if not len(new):
            return
        unique, inverse = torch.unique(index[new], return_inverse=True)
        positions = torch.arange(len(new), device=index.device)
        first = torch.full((len(unique),), len(new), device=index.device).scatter_reduce(
            0, inverse, positions, "amin")
        keep = new[first]
        slots = index[keep]
        self.images.index_copy_(0, slots, images[keep])
        for part, values in zip(self.parts, parts, strict=True):
            part.index_copy_(0, slots, values[keep])
        self.filled[slots] = True
