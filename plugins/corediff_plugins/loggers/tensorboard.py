"""TensorBoard (the ``tensorboard`` package, written through ``torch.utils.tensorboard``):
scalars, sample grids as images, the resolved recipe as text and as hyper-parameters (the
HParams plugin's session summary).

Event files go to ``<run>/trackers/tensorboard/<start time>`` (``tensorboard --logdir runs``
finds every run); a resumed run writes to the same folder with ``purge_step`` = checkpoint step +
1, so TensorBoard drops what a killed session logged after that checkpoint and shows one
continuous run.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from corediff.config import ComponentConfig
from corediff.interfaces import Logger
from corediff_plugins.loggers.flat import flatten, recipe_toml


class TensorBoardConfig(ComponentConfig):
    type: Literal["tensorboard"] = "tensorboard"
    log_dir: str | None = Field(
        None, min_length=1,
        description="Folder holding a run's event folder (None: <run>/trackers/tensorboard).")


class TensorBoardLogger(Logger):
    """One SummaryWriter per training session, on the run's event folder."""

    Config = TensorBoardConfig
    packages = {"tensorboard": "tensorboard"}

    def start(self, recipe: Mapping[str, Any], *, tags: Mapping[str, str], step: int,
              resume: Mapping[str, Any] | None) -> dict[str, Any]:
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        if resume is not None:
            folder = Path(resume["log_dir"])
        else:  # a folder per new run: an overwritten run's events never mix with the new ones
            root = Path(self.config.log_dir or self.run_dir / "tensorboard")
            folder = root / time.strftime("%Y%m%d-%H%M%S")
            folder = folder.with_name(f"{folder.name}-{secrets.token_hex(2)}") \
                if folder.exists() else folder
        # a resumed session drops events a killed one wrote after the checkpoint at `step`
        purge = step + 1 if resume is not None else None
        self.writer = SummaryWriter(str(folder), purge_step=purge)
        self.writer.add_text("config/recipe", "```toml\n" + recipe_toml(recipe) + "```", step)
        if tags:
            self.writer.add_text("config/tags", ", ".join(f"{k}={v}" for k, v in tags.items()),
                                 step)
        if resume is None:
            params = {**flatten(recipe), **{f"tags.{k}": v for k, v in tags.items()}}
            for summary in hparams(params, {}):
                self.writer.file_writer.add_summary(summary)
        return {"log_dir": str(folder)}

    def log_scalars(self, values: Mapping[str, float], step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)

    def log_image(self, name: str, image: Any, step: int) -> None:
        self.writer.add_image(name, image, step, dataformats="HWC")

    def close(self) -> None:
        writer = getattr(self, "writer", None)
        if writer is not None:
            writer.close()
