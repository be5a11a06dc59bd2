"""The schema of a training checkpoint's ``state.json`` (what :meth:`Trainer.state` writes).

:func:`corediff.engine.checkpoint.load_state` validates a training checkpoint's JSON against
:class:`TrainingState` before anything is restored from it, so a hand-edited, truncated or
foreign file is one line naming the field, never a ``KeyError`` deep inside the trainer.
The keys the trainer and the loader use are strict (types, bounds, presence); other keys are
allowed (a later corediff may add some). Tensors sit in ``state.safetensors``; here each is a
reference ``{"__tensor__": key}`` (NumPy arrays: ``{"__ndarray__": key, "dtype": ...}``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr

from corediff.kinds import DIFFUSION_KINDS

#: The file names whose SHA-256 a checkpoint records (key ``"sha256"`` of state.json).
WEIGHT_FILES = ("model.safetensors", "ema.safetensors", "state.safetensors")

Count = Annotated[StrictInt, Field(ge=0)]
Positive = Annotated[StrictInt, Field(ge=1)]
Number = StrictFloat | StrictInt
Sha256 = Annotated[StrictStr, Field(pattern=r"^[0-9a-f]{64}$")]


class _Open(BaseModel):
    """Unknown keys are kept (permissive), known ones are checked strictly."""

    model_config = ConfigDict(extra="allow")


class TensorRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tensor: StrictStr = Field(alias="__tensor__")


class ArrayRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    array: StrictStr = Field(alias="__ndarray__")
    dtype: StrictStr


class DataSpecState(BaseModel):
    model_config = ConfigDict(extra="forbid")  # every field becomes an argument of DataSpec
    channels: Positive
    image_size: Positive
    num_classes: Positive | None


class OptimizerState(_Open):
    state: dict[Annotated[StrictStr, Field(pattern=r"^\d+$")], dict[str, Any]]
    param_groups: list[dict[str, Any]]


class SchedulerState(_Open):
    last_epoch: StrictInt
    base_lrs: list[Number]


class RankState(_Open):
    generator: TensorRef
    torch: TensorRef
    numpy: tuple[StrictStr, ArrayRef, StrictInt, StrictInt, Number] | None = None  # 0.3 on
    python: tuple[StrictInt, Annotated[list[StrictInt], Field(min_length=1)],
                  Number | None] | None = None


class RngState(_Open):
    numpy: tuple[StrictStr, ArrayRef, StrictInt, StrictInt, Number]
    python: tuple[StrictInt, Annotated[list[StrictInt], Field(min_length=1)], Number | None]
    cuda: list[TensorRef]


DiffusionKind = Literal[DIFFUSION_KINDS]  # type: ignore[valid-type]


class TrainingState(_Open):
    """state.json of a checkpoint written by the trainer (corediff 0.1 and later)."""

    step: Count
    world_size: Positive
    corediff_version: StrictStr
    smoothed: Number | None
    best: Number
    pending: list[tuple[Number, Number]]
    data_spec: DataSpecState
    optimizer: OptimizerState
    scheduler: SchedulerState
    scaler: dict[str, Any]
    ranks: Annotated[list[RankState], Field(min_length=1)]
    rng: RngState
    # older checkpoints lack kinds added since (e.g. "guidance"): any subset is accepted
    extra: dict[DiffusionKind, dict[str, Any]]
    sha256: dict[Literal[WEIGHT_FILES], Sha256] | None = None  # type: ignore[valid-type]
