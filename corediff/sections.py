"""The recipe's own (non-plugin) sections: training, sampling and run settings."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveFloat, PositiveInt

from corediff.config import StrictModel


class TrainConfig(StrictModel):
    """[train]: optimisation, EMA, precision and checkpointing."""

    steps: PositiveInt = Field(1000, description="Optimiser steps to train for.")
    batch_size: PositiveInt = Field(64, description="Images per step (per process under DDP).")
    grad_accum: PositiveInt = Field(1, description="Micro-batches accumulated per optimiser step.")
    lr: PositiveFloat = Field(2e-4, description="Peak learning rate (AdamW).")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    warmup_steps: int = Field(100, ge=0, description="Linear LR warm-up steps, then cosine decay.")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="Final LR as a fraction of lr.")
    grad_clip: float = Field(1.0, ge=0, description="Max gradient norm (0 disables clipping).")
    ema_decay: float = Field(0.995, ge=0, lt=1, description="EMA decay of the weights.")
    ema_warmup: bool = Field(True, description="Ramp the EMA decay up during early steps.")
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="Autocast precision (fp16 uses a gradient scaler)."
    )
    compile: bool = Field(False, description="Wrap the model in torch.compile.")
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes.")
    log_every: PositiveInt = Field(10, description="Steps between metrics rows.")
    sample_every: int = Field(
        0, ge=0, description="Steps between EMA sample grids in <run>/samples (0: none)."
    )
    checkpoint_every: PositiveInt = Field(100, description="Steps between checkpoints.")
    label_dropout: float = Field(
        0.0, ge=0, lt=1,
        description="Probability of replacing a class label by the null label during training "
        "(classifier-free guidance; 0.1 is usual).",
    )
    loss_smoothing: float = Field(
        0.98, ge=0, lt=1, description="EMA factor of the loss that picks the 'best' checkpoint."
    )


class SampleConfig(StrictModel):
    """[sample]: what `corediff run` / `corediff sample` generate after training."""

    n: PositiveInt = Field(64, description="Number of samples.")
    batch_size: PositiveInt = Field(64, description="Samples generated per batch.")
    seed: int = Field(0, description="Seed of the sampling noise.")
    use_ema: bool = Field(True, description="Sample with the EMA weights.")
    label: int | None = Field(None, description="Class label to generate (None: all classes).")


class RunConfig(StrictModel):
    """[run]: where results go and what executes them."""

    name: str = Field("run", description="Run name; the run directory is <root>/<name>.")
    root: str = Field("runs", description="Directory that holds run directories.")
    device: str = Field("auto", description="'auto' (CUDA when present), 'cpu', 'cuda', 'cuda:1'.")
    seed: int = Field(0, description="Seed of initialisation, data order and noise.")
