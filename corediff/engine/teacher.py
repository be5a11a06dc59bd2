"""The teacher a distillation objective learns from: a corediff run or checkpoint
(``[diffusion.objective] teacher``), loaded as :func:`corediff.load` loads it (its own
recipe, sampler settings included; EMA weights unless its ``[sample] use_ema`` is false),
frozen, in eval mode, on the training device. The student's checkpoints hold only a record
of it — the checkpoint directory and the SHA-256 of the weight file used — so a resume loads
that same checkpoint again and refuses one whose weights have changed since.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from corediff.engine import checkpoint
from corediff.engine.loading import open_and_load
from corediff.errors import ConfigError, CorediffError, TrainingError


def load_teacher(source: str, device: torch.device, record: dict[str, Any] | None = None
                 ) -> tuple[Any, dict[str, Any]]:
    """(the teacher pipeline, its record) from ``source``; with ``record`` (what a checkpoint
    of the student stored), from the checkpoint it names, which must still hold the same
    weights."""
    where = source if record is None else record["checkpoint"]
    try:  # on the CPU first: the teacher's recipe may name a device this machine lacks
        loaded, model = open_and_load(where, "best", ["run.device='cpu'"])
    except CorediffError as exc:
        raise ConfigError(f"[diffusion.objective] teacher = '{where}' cannot be loaded: "
                          f"{' '.join(str(exc).split())}") from None
    weights = "ema" if loaded.pipeline.recipe.sample.use_ema else "model"
    digest = checkpoint.sha256(loaded.path, f"{weights}.safetensors")
    if record is not None and digest != record["sha256"]:
        raise TrainingError(
            f"[diffusion.objective] teacher: the checkpoint '{where}' this run was trained "
            f"from has changed ({weights}.safetensors SHA-256 {record['sha256'][:12]}… is now "
            f"{digest[:12]}…); resume needs the same teacher, or start a new run")
    model.requires_grad_(False).eval().to(device)
    return loaded.pipeline, {"source": source, "checkpoint": str(Path(loaded.path).resolve()),
                             "weights": weights, "sha256": digest}
