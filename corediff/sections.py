"""The recipe's own (non-plugin) sections: training, sampling and run settings."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, PositiveInt, ValidationInfo, field_validator

from corediff.config import BatchSize, Seed, StrictModel
from corediff.limits import MAX_GIB, MAX_MINUTES, MAX_SAMPLES, MAX_TRAIN_STEPS

#: A plain run name: no path separators, no '..', not empty, at most 100 characters.
RUN_NAME = r"^[A-Za-z0-9._-]{1,100}$"


class TrainConfig(StrictModel):
    """[train]: optimisation, EMA, precision and checkpointing."""

    steps: int = Field(1000, gt=0, le=MAX_TRAIN_STEPS, description="Optimiser steps to train for.")
    max_minutes: Annotated[float, Field(gt=0, le=MAX_MINUTES)] | None = Field(
        None, description="Wall-clock budget of training in minutes, over every session of a "
        "resumed run (None: none): training stops at the first step past it, saves 'last' and "
        "records the steps done; the LR schedule still spans train.steps.",
    )
    batch_size: BatchSize = Field(64, description="Images per step (per process under DDP).")
    grad_accum: PositiveInt = Field(1, description="Micro-batches accumulated per optimiser step.")
    lr: float = Field(2e-4, gt=0, le=1, description="Peak learning rate (AdamW), at most 1.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    warmup_steps: int = Field(100, ge=0, description="Linear LR warm-up steps, then cosine decay.")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="Final LR as a fraction of lr.")
    grad_clip: float = Field(1.0, ge=0, description="Max gradient norm (0 disables clipping).")
    ema_decay: float = Field(0.995, ge=0, lt=1, description="EMA decay of the weights.")
    ema_warmup: bool = Field(True, description="Ramp the EMA decay up during early steps.")
    precision: Literal["fp32", "tf32", "bf16", "fp16"] = Field(
        "fp32", description="Autocast precision (fp16 uses a gradient scaler); tf32: fp32 "
        "with TensorFloat-32 matmuls and convolutions on CUDA (the CPU ignores it)."
    )
    compile: bool = Field(False, description="Wrap the model in torch.compile.")
    num_workers: int = Field(
        0, ge=0, description="DataLoader worker processes (kept alive across epochs). Each "
        "item's random augmentation is seeded from (run.seed, rank, epoch, index), so results "
        "do not depend on the worker count and a resume is bit-exact.",
    )
    prefetch_factor: PositiveInt = Field(
        2, le=64, description="Batches each loader worker prepares ahead (with num_workers > 0).",
    )
    factor_cache: Literal["auto", "device", "host", "off"] = Field(
        "auto",
        description="Where a factor degradation (svd) keeps each training image's factors: "
        "'auto' on the device when they all fit factor_cache_device_gib, else in host "
        "memory up to factor_cache_host_gib; 'device' / 'host' there up to its budget (images "
        "beyond it are decomposed at every step); 'off' decomposes every step.",
    )
    factor_cache_device_gib: float = Field(
        4.0, gt=0, le=MAX_GIB, description="Device memory the factor cache may use, GiB.")
    factor_cache_host_gib: float = Field(
        16.0, gt=0, le=MAX_GIB, description="Host memory the factor cache may use, GiB.")
    factor_dtype: Literal["float32", "float16"] = Field(
        "float32", description="Storage dtype of cached factors (float16: half the memory, "
        "reconstruction RMS error 2e-4, at most 1.1e-3; computed in float32 either way).",
    )
    collective_timeout_s: float = Field(
        1800.0, ge=10, le=86_400,
        description="Seconds a DDP rank waits in a collective before it fails (torchrun runs "
        "only; NCCL's default is 600). It must cover rank 0 sampling a grid (sample_every) "
        "while the other ranks wait; a failure at a log row or checkpoint reaches every rank "
        "at once, one elsewhere (a step) after this long at most.",
    )
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
        0.98, ge=0, lt=1,
        description="EMA factor of the smoothed training loss (picks 'best' when best_by = "
        "'train_loss').",
    )
    val_fraction: float = Field(
        0.0, ge=0, lt=0.5,
        description="Fraction of the dataset held out of training (a split fixed by run.seed); "
        "its loss under the EMA weights is recorded at every checkpoint (0: none).",
    )
    best_by: Literal["train_loss", "val_loss"] = Field(
        "train_loss",
        description="What picks the 'best' checkpoint: the smoothed training loss or the "
        "held-out validation loss (needs val_fraction > 0).",
    )

    @field_validator("best_by")
    @classmethod
    def _val_loss_needs_held_out_images(cls, best_by: str, info: ValidationInfo) -> str:
        # a field validator (val_fraction is validated first) so the error names the key
        if best_by == "val_loss" and info.data.get("val_fraction", 1) == 0:
            raise ValueError("'val_loss' needs held-out images: set val_fraction > 0 (e.g. 0.1)")
        return best_by


class SampleConfig(StrictModel):
    """[sample]: what `corediff run` / `corediff sample` generate after training."""

    n: int = Field(64, gt=0, le=MAX_SAMPLES, description="Number of samples.")
    batch_size: BatchSize = Field(64, description="Samples generated per batch.")
    seed: Seed = Field(0, description="Seed of the sampling noise.")
    use_ema: bool = Field(True, description="Sample with the EMA weights.")
    precision: Literal["fp32", "tf32", "bf16"] = Field(
        "fp32", description="Network precision while sampling: fp32; tf32 (TensorFloat-32 "
        "matmuls and convolutions on CUDA, fp32 elsewhere); bf16 autocast. The sampler's own "
        "arithmetic stays in float32/float64.",
    )
    compile: bool = Field(False, description="torch.compile the network for sampling.")
    label: int | None = Field(
        None, ge=0, description="Class label to generate (None: all classes in turn)."
    )


class RunConfig(StrictModel):
    """[run]: where results go and what executes them."""

    name: str = Field(
        "run", pattern=RUN_NAME, description="Run name, a plain name (letters, digits, '.', '_', "
        "'-'; at most 100 characters); the run directory is <root>/<name>.",
    )
    root: str = Field(
        "runs", min_length=1, description="Directory that holds run directories (not a system "
        "directory); checked, with the run directory, before training starts.",
    )
    device: str = Field(
        "auto", pattern=r"^(auto|cpu|cuda(:\d{1,2})?)$",
        description="'auto' (CUDA when present), 'cpu', 'cuda' or 'cuda:N'.",
    )
    seed: Seed = Field(0, description="Seed of initialisation, data order and noise.")
    tags: dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")],
               Annotated[str, Field(max_length=200)]] | None = Field(
        None, description="Labels the [[log]] experiment trackers attach to the run (e.g. "
        "study, cell), besides its name and seed; they do not change training.",
    )

    @field_validator("name")
    @classmethod
    def _plain_name(cls, name: str) -> str:
        if name in {".", ".."}:
            raise ValueError("must be a plain name, not '.' or '..'; use --run-dir for paths")
        return name
