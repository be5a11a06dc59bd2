"""Configuration bases shared by every component kind.

Each plugin declares one Pydantic config class derived from :class:`ComponentConfig`; its
``type`` field is ``Literal["<entry-point name>"]``. Configs are strict: unknown keys are
refused and instances are frozen, so a recipe is a value that can be hashed, compared and
written back to TOML unchanged.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class StrictModel(BaseModel):
    """A frozen Pydantic model that refuses unknown keys."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class ComponentConfig(StrictModel):
    """Base of every plugin's config: ``type`` names the plugin in its registry."""

    type: str = Field(description="Registered plugin name (the entry-point name).")
