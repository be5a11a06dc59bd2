"""Configuration bases shared by every component kind.

Each plugin declares one Pydantic config class derived from :class:`ComponentConfig`; its
``type`` field is ``Literal["<entry-point name>"]``. Configs are strict: unknown keys are
refused and instances are frozen, so a recipe is a value that can be hashed, compared and
written back to TOML unchanged.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from corediff.limits import MAX_BATCH, MAX_IMAGE_SIZE, MAX_SEED, MAX_STEPS


class StrictModel(BaseModel):
    """A frozen Pydantic model that refuses unknown keys and infinite or NaN floats."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False
    )


#: T or a sampling step count: 1..MAX_STEPS.
StepCount = Annotated[int, Field(gt=0, le=MAX_STEPS)]
#: The side of square images: 1..MAX_IMAGE_SIZE pixels.
ImageSize = Annotated[int, Field(gt=0, le=MAX_IMAGE_SIZE)]
#: Images per batch: 1..MAX_BATCH.
BatchSize = Annotated[int, Field(gt=0, le=MAX_BATCH)]
#: A random seed: 0..2³²−1 (what every generator accepts).
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]


TYPE_DESCRIPTION = "Registered plugin name (the entry-point name); selects the plugin."


class ComponentConfig(StrictModel):
    """Base of every plugin's config: ``type`` names the plugin in its registry.

    A plugin redeclares ``type: Literal["<name>"] = "<name>"``; its description is filled in
    here so the JSON Schema and ``corediff plugins show`` describe it too.
    """

    type: str = Field(description=TYPE_DESCRIPTION)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        field = cls.model_fields.get("type")
        if field is not None and not field.description:
            field.description = TYPE_DESCRIPTION
            cls.model_rebuild(force=True)


class LossWeightingConfig(ComponentConfig):
    """Config base of loss weightings: the element-wise loss ``LossWeighting.per_element``
    applies."""

    loss_type: Literal["l2", "l1"] = Field("l2", description="Element-wise loss: l2 or l1.")


class ObjectiveConfig(ComponentConfig):
    """Config base of training objectives: the teacher run a distillation objective learns
    from (see :class:`corediff.interfaces.Objective`)."""

    teacher: str | None = Field(
        None, description="A corediff run directory or checkpoint the objective distils "
        "(only for objectives that need a teacher).")
