"""Per-image factor cache for degradations with the optional factor protocol (e.g. ``svd``).

A degradation offering ``decompose(x0) -> factors``, ``flip_factors(factors)`` and
``degrade_from_factors(factors, t, noise=None)`` (see :class:`corediff.interfaces.Degradation`)
lets training decompose each dataset image once and serve every later step from stored
factors: for SVD the decomposition is ~99 % of a degradation's cost.

Every x_t comes from ``degrade_from_factors`` applied to the factors of the image in a
*canonical orientation* (itself or its horizontal mirror, chosen from its pixels alone,
flipped back with ``flip_factors``), rounded to the storage dtype whether just computed or
read back, so the result does not depend on what the cache holds: a cold cache (after a
resume) gives the same bits as a warm one.

Memory is bounded (:func:`plan`, ``train.factor_cache``): the factors live on the training
device, in host memory gathered per batch with non-blocking copies, or nowhere; at
most ``capacity`` images are stored (indices below it), the others are decomposed at every
step. The cache serves datasets whose items are fixed up to a mirror
(:meth:`corediff.interfaces.Dataset.fixed_items`); a per-image fingerprint on the device (an
exact integer checksum) catches a dataset that breaks this, read by :meth:`FactorCache.check`
at checkpoints.

Host syncs: none in :meth:`FactorCache.degrade` with device placement (which rows to
decompose is known on the host, from the loader's CPU indices); with host placement, storing
an image's factors the first time it is seen copies them to the host (first epoch only).
Host→device copies per step once every image is stored: the batch's indices (one
non-blocking copy, pinned by a CUDA data loader), and with host placement the batch's
factors (pinned, non-blocking); tests/test_host_copies.py counts them on the ``meta`` device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from corediff.errors import TrainingError

#: The methods a degradation needs for the cache (duck typed; the core imports no plugin).
PROTOCOL = ("decompose", "flip_factors", "degrade_from_factors")
#: Storage dtypes of ``train.factor_dtype`` (bfloat16's 8-bit mantissa gives RMS errors of
#: 1.6e-3, above the 1e-3 bar, so it is not offered).
DTYPES = {"float32": torch.float32, "float16": torch.float16}
GIB = 2**30


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


def supports(degradation: Any) -> bool:
    """Whether ``degradation`` offers the factor protocol."""
    return all(callable(getattr(degradation, name, None)) for name in PROTOCOL)


def bytes_per_image(degradation: Any, shape: tuple[int, int, int], dtype: torch.dtype) -> int:
    """Stored bytes per image of ``shape`` (C, H, W): its factors in ``dtype`` plus an 8-byte
    fingerprint (from one decomposition of a blank image)."""
    parts = _parts(degradation.decompose(torch.zeros((1, *shape))))
    size = torch.empty((), dtype=dtype).element_size()
    return sum(part[0].numel() for part in parts) * size + 8


@dataclass(frozen=True)
class Plan:
    """Where the factors go (``placement`` None: no cache), how many images fit, and the
    one-line notice saying so."""

    placement: Literal["device", "host"] | None
    capacity: int
    notice: str


def plan(
    mode: Literal["auto", "device", "host", "off"], *, images: int, per_image: int,
    device_gib: float, host_gib: float,
) -> Plan:
    """Choose the placement for ``images`` images of ``per_image`` bytes under the budgets.

    "auto": the device when every image fits in ``device_gib``, else host memory for as many
    as fit in ``host_gib`` (none fit: no cache). "device" / "host": that placement, for as
    many images as its budget holds. "off": no cache.
    """
    need = images * per_image
    if mode == "off":
        return Plan(None, 0, "factor cache: off (train.factor_cache)")
    if mode == "auto":
        mode = "device" if need <= device_gib * GIB else "host"
    budget = device_gib if mode == "device" else host_gib
    capacity = min(images, int(budget * GIB // per_image))
    if capacity == 0:
        return Plan(None, 0, f"factor cache: off, one image's factors ({_size(per_image)}) "
                    f"exceed the {mode} budget of {budget:g} GiB")
    held = f"{capacity} of {images} images" if capacity < images else f"all {images} images"
    rest = "; the others are decomposed at every step" if capacity < images else ""
    return Plan(mode, capacity, f"factor cache: {mode} memory, {held}, "
                f"{_size(capacity * per_image)} of {_size(need)}{rest}")


def _size(count: int) -> str:
    """Bytes as MiB below a GiB, else GiB."""
    return f"{count / 2**20:.3g} MiB" if count < GIB else f"{count / GIB:.3g} GiB"


class FactorCache:
    """Factors of training images by dataset index (those below ``capacity``), filled lazily
    (one process) or up front by :meth:`fill`, each DDP rank decomposing its share.

    ``placement`` "device" keeps them on ``device``, "host" in CPU memory gathered per batch
    straight into one of two staging buffers (pinned when ``device`` is CUDA: the pinned
    memory is two batches' factors, not the whole cache); ``dtype`` is the storage dtype (None: as
    decomposed; float16 halves the memory, see tests/test_factor_cache.py for its error).
    For ``svd`` on C×H×W images the factors take C·(H·K + K + K·W) values with
    K = min(H, W), e.g. 3×64×64 in float32: 97 KiB per image (AFHQ's 14,630 training images:
    1.4 GB); at 512×512: 6 MiB per image.
    """

    def __init__(
        self, degradation: Any, size: int, *, capacity: int | None = None,
        placement: Literal["device", "host"] = "device", device: torch.device | str = "cpu",
        dtype: torch.dtype | None = None,
    ) -> None:
        self.degradation, self.size, self.dtype = degradation, size, dtype
        self.placement = placement
        self.capacity = size if capacity is None else min(size, capacity)
        self.device = torch.device(device)
        self.storage_device = self.device if placement == "device" else torch.device("cpu")
        self.pin = placement == "host" and self.device.type == "cuda"
        self.parts: list[Tensor] = []
        self.filled = np.zeros(self.capacity, dtype=bool)  # host-side: no sync to read
        self.fingerprints: Tensor | None = None
        self.mismatch = torch.zeros((), dtype=torch.bool, device=self.device)
        self._kind: type = Tensor
        self._weights: Tensor | None = None
        self.decomposed = 0  # images decomposed so far (stored or not)
        self._ring: list[list[Any]] = [[None, None], [None, None]]  # [buffers, copy event]
        self._turn = 0

    supports = staticmethod(supports)

    @property
    def nbytes(self) -> int:
        """Bytes held by the stored factors and fingerprints."""
        held = [*self.parts] + ([self.fingerprints] if self.fingerprints is not None else [])
        return sum(part.numel() * part.element_size() for part in held)

    def degrade(self, x0: Tensor, index: Tensor, t: Tensor, noise: Tensor | None = None) -> Tensor:
        """D(x0, t, noise) for a batch x0 [B, C, H, W] of dataset images ``index`` [B] (a CPU
        tensor, as the data loader gives it)."""
        rows = index.cpu().numpy()
        on_device = index.to(self.device, non_blocking=True)  # the step's one index copy
        held = on_device < self.capacity
        canon, flip = canonical(x0)
        stored = rows < self.capacity
        slots = np.where(stored, rows, 0)
        fresh = np.flatnonzero(~stored | ~self.filled[slots])
        device_slots = torch.where(held, on_device, 0)
        parts = self._gather(slots, device_slots) if self.parts else None
        if len(fresh):
            positions = torch.from_numpy(fresh).to(x0.device, non_blocking=True)
            factors = self.degradation.decompose(canon.index_select(0, positions))
            new = [p if self.dtype is None else p.to(self.dtype) for p in _parts(factors)]
            self.decomposed += len(fresh)
            if not self.parts:
                self._kind = type(factors)
                self._allocate(canon, new)
                parts = [p.new_zeros((len(rows), *p.shape[1:])) for p in new]
            for part, values in zip(parts, new, strict=True):
                part.index_copy_(0, positions, values)
            self._store(rows, fresh, stored, canon, positions, new)
        if len(fresh):  # rows decomposed in this step are not compared with stored ones
            held = held.index_fill(0, positions, False)
        self._check_fingerprints(canon, device_slots, held)
        compute = x0.dtype if x0.dtype == torch.float64 else torch.float32
        parts = [part.to(compute) for part in parts]
        flipped = _parts(self.degradation.flip_factors(_build(self._kind, parts)))
        parts = [torch.where(flip.view(-1, *(1,) * (p.dim() - 1)), f, p)
                 for p, f in zip(parts, flipped, strict=True)]
        x_t = self.degradation.degrade_from_factors(_build(self._kind, parts), t, noise)
        return torch.where((t == 0).view(-1, *(1,) * (x0.dim() - 1)), x0, x_t.to(x0.dtype))

    def fill(self, dataset: Any, rank: int, world_size: int, batch: int = 64) -> None:
        """Decompose every image below ``capacity`` once over ``world_size`` DDP ranks
        (torch.distributed initialised): in rounds of ``batch`` images per rank, rank r
        decomposes the r-th block of each round and all ranks all-gather the factors and
        fingerprints, so each rank ends with every image's factors (the same bits) having
        decomposed 1/world_size of them; before, each rank decomposed the whole dataset.
        ``dataset[i]`` gives (image, label); its items are fixed up to a mirror (stored in
        canonical orientation, as :meth:`degrade` stores them). Call on every rank."""
        import torch.distributed as dist

        shape = dataset[0][0].shape
        for first in range(0, self.capacity, batch * world_size):
            own = range(first + rank * batch, min(first + (rank + 1) * batch, self.capacity))
            x = torch.zeros((batch, *shape))  # padded: every rank sends equal blocks
            if len(own):
                x[:len(own)] = torch.stack([dataset[i][0] for i in own])
            canon = canonical(x.to(self.device))[0]
            factors = self.degradation.decompose(canon)
            new = [p if self.dtype is None else p.to(self.dtype) for p in _parts(factors)]
            self.decomposed += len(own)
            if not self.parts:
                self._kind = type(factors)
                self._allocate(canon, new)
            blocks = [*new, self._fingerprint(canon)]
            gathered = []
            for block in blocks:
                pieces = [torch.empty_like(block) for _ in range(world_size)]
                dist.all_gather(pieces, block.contiguous())
                gathered.append(torch.cat(pieces))
            rows = np.arange(first, first + batch * world_size)
            keep = np.flatnonzero(rows < self.capacity)
            slots = torch.from_numpy(rows[keep])
            for part, values in zip([*self.parts, self.fingerprints], gathered, strict=True):
                index = torch.from_numpy(keep).to(values.device)
                part.index_copy_(0, slots.to(part.device),
                                 values.index_select(0, index).to(part.device))
            self.filled[rows[keep]] = True

    def check(self) -> None:
        """Raise when a stored image came back different (one host sync: call it at
        checkpoints)."""
        if bool(self.mismatch):
            raise TrainingError(
                "the factor cache found a dataset item that changed between epochs (random "
                "crops or augmentation other than a mirror), but the dataset declares fixed "
                "items (Dataset.fixed_items); set train.factor_cache = 'off' or fix the dataset")

    # -- internals ------------------------------------------------------------------------------
    def _gather(self, slots: np.ndarray, device_slots: Tensor) -> list[Tensor]:
        if self.storage_device == self.device:
            return [part.index_select(0, device_slots) for part in self.parts]
        index = torch.from_numpy(slots)
        moved = [torch.index_select(part, 0, index, out=buffer).to(self.device, non_blocking=True)
                 for part, buffer in zip(self.parts, self._staging(len(slots)), strict=True)]
        if self.pin:  # the buffers are free again once the device has read them
            self._ring[self._turn][1] = torch.cuda.Event()
            self._ring[self._turn][1].record()
        return moved

    def _staging(self, rows: int) -> list[Tensor]:
        """Host buffers for ``rows`` images' factors, the two sets used in turn: a set is
        reused when its last copy to the device is done (queried, never waited for; a set
        still in flight is replaced), so a step neither pins memory afresh nor copies twice."""
        self._turn ^= 1
        buffers, copied = self._ring[self._turn]
        if buffers is None or len(buffers[0]) < rows or (copied is not None and not copied.query()):
            pinned = {"pin_memory": True} if self.pin else {}
            buffers = [torch.empty((rows, *p.shape[1:]), dtype=p.dtype, **pinned)
                       for p in self.parts]
        self._ring[self._turn] = [buffers, None]
        return [buffer[:rows] for buffer in buffers]

    def _allocate(self, canon: Tensor, fresh: list[Tensor]) -> None:
        self.parts = [torch.empty((self.capacity, *p.shape[1:]), dtype=p.dtype,
                                  device=self.storage_device) for p in fresh]
        self.fingerprints = torch.zeros(self.capacity, dtype=torch.int64, device=self.device)
        generator = torch.Generator().manual_seed(0)
        self._weights = torch.randint(1, 256, (canon[0].numel(),), generator=generator
                                      ).to(self.device)

    def _fingerprint(self, images: Tensor) -> Tensor:
        """Σ w_i · bits(x_i) over the float32 pixels' bit patterns, in exact int64 arithmetic
        (< 2^39 per term), so it does not depend on the batch or the summation order."""
        bits = images.float().flatten(1).view(torch.int32).long()
        return (bits * self._weights).sum(1)

    def _store(self, rows: np.ndarray, fresh: np.ndarray, stored: np.ndarray, canon: Tensor,
               positions: Tensor, new: list[Tensor]) -> None:
        """Store the fresh rows below capacity (the first row of each index)."""
        keep = fresh[stored[fresh]]
        if not len(keep):
            return
        slots, first = np.unique(rows[keep], return_index=True)
        chosen = np.searchsorted(fresh, keep[first])  # their places among the fresh rows
        target = torch.from_numpy(slots).to(self.storage_device, non_blocking=True)
        pick = torch.from_numpy(chosen).to(canon.device, non_blocking=True)
        for part, values in zip(self.parts, new, strict=True):
            part.index_copy_(0, target, values.index_select(0, pick).to(self.storage_device))
        self.fingerprints.index_copy_(
            0, target.to(self.device, non_blocking=True),
            self._fingerprint(canon.index_select(0, positions.index_select(0, pick))))
        self.filled[slots] = True

    def _check_fingerprints(self, canon: Tensor, slots: Tensor, held: Tensor) -> None:
        """Flag a mismatch when a row held in the cache (``held`` [B] on the device, rows
        stored before this step) has another fingerprint than the one stored at its slot."""
        if self._weights is None:
            return
        seen = self._fingerprint(canon)
        self.mismatch |= ((seen != self.fingerprints.index_select(0, slots)) & held).any()
