"""Configuration bases shared by every component kind.

Each plugin declares one Pydantic config class derived from :class:`ComponentConfig`; its
``type`` field is ``Literal["<entry-point name>"]``. Configs are strict: unknown keys are
refused and instances are frozen, so a recipe is a value that can be hashed, compared and
written back to TOML unchanged.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class StrictModel(BaseModel):
    """A frozen Pydantic model that refuses unknown keys."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


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
