"""Weights & Biases (the ``wandb`` package): scalars, sample grids as ``wandb.Image``, the
resolved recipe as the run's config, the tags as run tags.

``mode = "offline"`` (the default) needs no account and no network: the run is written to
``<run>/trackers/wandb/offline-run-*`` and uploaded later with ``wandb sync``; ``"online"``
streams it (after ``wandb login``); None lets ``WANDB_MODE`` decide. The tracker run's id
is kept in the run directory, so a resumed corediff run continues the same wandb run
(``resume="allow"``; offline sessions of one id are merged by ``wandb sync``).
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field

from corediff.config import ComponentConfig
from corediff.interfaces import Logger


class WandbConfig(ComponentConfig):
    type: Literal["wandb"] = "wandb"
    project: str = Field("corediff", min_length=1, max_length=128,
                         description="The W&B project the run belongs to.")
    entity: str | None = Field(None, min_length=1,
                               description="The W&B user or team (None: your default).")
    mode: Literal["offline", "online"] | None = Field(
        "offline", description="'offline' (no account or network; upload with wandb sync), "
        "'online', or None to follow the WANDB_MODE environment variable.")


class WandbLogger(Logger):
    """One wandb run per corediff run, reopened by id when the run is resumed."""

    Config = WandbConfig
    packages = {"wandb": "wandb"}

    def start(self, recipe: Mapping[str, Any], *, tags: Mapping[str, str], step: int,
              resume: Mapping[str, Any] | None) -> dict[str, Any]:
        import wandb

        run_id = resume["id"] if resume else "".join(
            secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
        folder = self.run_dir / "wandb_dir"
        folder.mkdir(parents=True, exist_ok=True)
        extra = {"mode": self.config.mode} if self.config.mode is not None else {}
        self.run = wandb.init(
            project=self.config.project, entity=self.config.entity, dir=str(folder),
            id=run_id, resume="allow", config=dict(recipe), allow_val_change=True,
            name=str(recipe.get("run", {}).get("name", run_id)),
            tags=[f"{k}={v}"[:64] for k, v in tags.items()],
            settings=wandb.Settings(console="off", silent=True, x_disable_stats=True,
                                    save_code=False),
            **extra,
        )
        return {"id": run_id, "project": self.config.project}

    def log_scalars(self, values: Mapping[str, float], step: int) -> None:
        self.run.log(dict(values), step=step)

    def log_image(self, name: str, image: Any, step: int) -> None:
        import wandb

        self.run.log({name: wandb.Image(image)}, step=step)

    def close(self) -> None:
        run = getattr(self, "run", None)
        if run is not None:
            run.finish()
            self.run = None
