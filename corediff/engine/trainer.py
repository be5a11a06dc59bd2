"""The training loop: any recipe's components, and its objective.

Per micro-batch the recipe's [diffusion.objective] (:class:`corediff.interfaces.Objective`;
``denoising`` by default, DDPM's Algorithm 1 generalised) turns (x0, y) into per-sample
losses; the Trainer minimises their mean and holds none of the method's maths, only
AdamW with linear warm-up then cosine decay, EMA of the weights (timm's ModelEmaV3),
gradient clipping and accumulation, autocast (bf16 or fp16 with a GradScaler), DDP under
torchrun. The host reads losses only every ``log_every``/``checkpoint_every`` steps; a
non-finite loss then stops the run before any checkpoint can store it. A degradation with
the factor protocol (``svd``) decomposes each training image once: the batches carry their
dataset indices and a :class:`~corediff.engine.factor_cache.FactorCache` serves D(x0, t).
With ``val_fraction`` > 0 a seeded split holds images out of training; each checkpoint then
records their loss under the EMA weights (:meth:`Trainer.validation_loss`), which picks
``best`` when ``best_by = "val_loss"``.
"""

from __future__ import annotations

import contextlib
import math
import random
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from timm.utils import ModelEmaV3
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Subset
from tqdm import tqdm

from corediff import __version__
from corediff.builder import build, instantiate
from corediff.engine import checkpoint, factor_cache
from corediff.engine.distributed import (
    Context,
    any_across,
    gather,
    mean_across,
    shared_failure,
)
from corediff.engine.factor_cache import FactorCache
from corediff.engine.guard import (
    RunLock,
    check_location,
    check_run_files,
    claim,
    remove_leftovers,
)
from corediff.engine.resume import check_resume, log_resume
from corediff.engine.rundir import MetricsLog, RunDir
from corediff.engine.sampling import grid_columns, sample_share, save_grid
from corediff.engine.signals import GracefulStop, ignore_in_worker
from corediff.engine.teacher import load_teacher
from corediff.engine.tracking import Trackers
from corediff.errors import Interrupted, TrainingError
from corediff.interfaces import ObjectiveBatch
from corediff.paths import check_writable
from corediff.pipeline import Pipeline, tf32
from corediff.recipe import Recipe, parse_recipe, read_toml, recipe_to_dict, recipe_to_toml

FIT_IMAGES = 512
#: Offset of run.seed for the validation generator, away from the training streams (seed +
#: 1000·rank).
VALIDATION_SEED_OFFSET = 999_983
AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def lr_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warm-up to 1 over ``warmup`` steps, then cosine decay to ``min_ratio``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class _ResumableDataSampler(DistributedSampler):
    """DistributedSampler whose next epoch can start ``skip`` indices in (resume mid-epoch);
    it yields (epoch, index), so that loader workers, persistent or not, know the epoch."""

    skip = 0

    def __iter__(self) -> Iterator[tuple[int, int]]:
        indices = list(super().__iter__())[self.skip:]
        self.skip = 0
        return iter([(self.epoch, index) for index in indices])


def item_seed(seed: int, rank: int, epoch: int, index: int) -> int:
    """The seed of one item's random augmentations: a hash of (run seed, rank, epoch,
    index), so they depend on none of worker count, worker seeds or resume point."""
    return int(np.random.SeedSequence([seed, rank, epoch, index]).generate_state(
        1, np.uint64)[0])


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Python's, NumPy's and torch's CPU generators seeded with ``seed`` inside, restored
    after (what a dataset's augmentations draw from)."""
    python, numpy = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed % 2**32)
        try:
            yield
        finally:
            random.setstate(python)
            np.random.set_state(numpy)


class _Indexed(torch.utils.data.Dataset):
    """A dataset's items with their index: (index, image, label), each item drawn under
    :func:`item_seed` of (``seed``, ``rank``, epoch, index); keys are (epoch, index) pairs or
    plain indices (epoch 0). For a ``Subset`` the index is the item's index in the full
    dataset (what the factor cache is keyed by)."""

    def __init__(self, dataset: torch.utils.data.Dataset, seed: int, rank: int = 0) -> None:
        self.dataset, self.seed, self.rank = dataset, seed, rank

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: int | tuple[int, int]) -> tuple[int, Tensor, int]:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        with _seeded(item_seed(self.seed, self.rank, epoch, index)):
            image, label = self.dataset[index]
        if isinstance(self.dataset, Subset):
            index = self.dataset.indices[index]
        return index, image, label


def fit_images(pipeline: Pipeline, train_set: Any = None) -> Tensor:
    """Up to FIT_IMAGES training images (a subset fixed by run.seed) that the non-network
    components calibrate on: of ``train_set``, or of the recipe's dataset less the
    ``val_fraction`` split."""
    recipe = pipeline.recipe
    if train_set is None:
        dataset = instantiate("dataset", recipe.data)
        indices, _ = split_indices(len(dataset), recipe.train.val_fraction, recipe.run.seed)
        train_set = Subset(dataset, indices)
    pick = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(
        recipe.run.seed))[:FIT_IMAGES]
    images, _ = next(iter(DataLoader(Subset(train_set, pick.tolist()), batch_size=FIT_IMAGES)))
    return images


def split_indices(size: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(training indices, held-out indices), each ascending, of a dataset of ``size`` items:
    max(1, round(fraction·size)) items drawn by ``torch.randperm`` under a generator seeded
    with ``seed`` are held out (none when fraction = 0), so the seed fixes the split."""
    if fraction == 0:
        return list(range(size)), []
    count = max(1, round(fraction * size))
    if count >= size:
        raise TrainingError(f"train.val_fraction = {fraction} holds out {count} of the "
                            f"{size} images, leaving none to train on")
    held_out = torch.randperm(size, generator=torch.Generator().manual_seed(seed))[:count]
    train = torch.ones(size, dtype=torch.bool)
    train[held_out] = False
    return train.nonzero().flatten().tolist(), sorted(held_out.tolist())


Batch = tuple[Tensor, Tensor, Tensor | None]  # (dataset indices, x0, y)
Step = tuple[Tensor, Tensor, dict[str, Tensor]]  # (loss, gradient norm, objective logs)


def channels_last(device: torch.device) -> bool:
    """Whether the model and its batches use the channels_last memory format (on CUDA)."""
    return device.type == "cuda"


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (before building a pipeline, so
    the network's initial weights follow the recipe's seed)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Trainer:
    """Trains a built pipeline (its recipe's [train] and [run] settings) into a run
    directory; ``train()`` runs to ``train.steps``."""

    def __init__(self, pipeline: Pipeline, run: RunDir, context: Context) -> None:
        if pipeline.dataset is None:
            raise TrainingError("a pipeline built without its dataset (data_spec=...) cannot train")
        self.pipeline, self.run, self.context = pipeline, run, context
        self.recipe = recipe = pipeline.recipe
        cfg, seed = recipe.train, recipe.run.seed
        #: the CPU random state every rank shares (None: one process), for fit_components
        self.shared_rng = torch.get_rng_state() if context.distributed else None
        if context.distributed:  # same initial weights everywhere, distinct dropout masks
            torch.manual_seed(seed + 1000 * context.rank)
        dataset = self.pipeline.dataset
        if len(dataset) == 0:
            raise TrainingError(f"dataset '{recipe.data.type}' is empty")
        device = context.device
        self.model = self.pipeline.model.to(device)
        if channels_last(device):
            self.model = self.model.to(memory_format=torch.channels_last)
        for module in pipeline.objective.modules().values():  # e.g. a target network
            module.to(device, memory_format=torch.channels_last if channels_last(device)
                      else torch.preserve_format)
        self.teacher: dict[str, Any] | None = None  # the record of the objective's teacher
        if pipeline.objective.needs_teacher:
            pipeline.objective.teacher, self.teacher = load_teacher(
                pipeline.objective.config.teacher, device)
        self.ema = ModelEmaV3(self.model, decay=cfg.ema_decay, use_warmup=cfg.ema_warmup)
        self.net: nn.Module = self.model
        if context.distributed:
            ids = [device.index] if device.type == "cuda" else None
            self.net = DistributedDataParallel(self.model, device_ids=ids)
        if cfg.compile:
            self.net = torch.compile(self.net)
        if device.type == "cuda":  # the batches' shapes are fixed: let cuDNN pick its kernels
            torch.backends.cudnn.benchmark = True
        self.optimizer = torch.optim.AdamW(  # fused on CUDA: one kernel for every parameter
            self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
            **({"fused": True} if device.type == "cuda" else {}))
        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda s: lr_factor(s, cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio),
        )
        self.scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")
        self.generator = torch.Generator(device).manual_seed(seed + 1000 * context.rank)
        train_indices, held_out = split_indices(len(dataset), cfg.val_fraction, seed)
        self.train_set = Subset(dataset, train_indices) if held_out else dataset
        self.val_loader = DataLoader(  # the held-out images in a fixed order
            _Indexed(Subset(dataset, held_out), seed + VALIDATION_SEED_OFFSET),
            batch_size=cfg.batch_size,
            num_workers=cfg.num_workers, generator=torch.Generator(),
            worker_init_fn=ignore_in_worker,
        ) if held_out else None
        self.val_history: list[tuple[int, float]] = []  # (step, validation loss)
        self.data_sampler = _ResumableDataSampler(
            self.train_set, num_replicas=context.world_size, rank=context.rank, shuffle=True,
            seed=seed,
        )
        self.loader_generator = torch.Generator()
        self.factor_cache = self._factor_cache()
        workers = {"persistent_workers": True, "prefetch_factor": cfg.prefetch_factor} \
            if cfg.num_workers > 0 else {}
        self.loader = DataLoader(
            _Indexed(self.train_set, seed, context.rank), batch_size=cfg.batch_size,
            sampler=self.data_sampler,
            num_workers=cfg.num_workers, generator=self.loader_generator,
            drop_last=len(self.data_sampler) >= cfg.batch_size,
            pin_memory=device.type == "cuda", worker_init_fn=ignore_in_worker, **workers,
        )
        self.step = 0
        self.smoothed: float | None = None
        self.best = math.inf
        self.seconds = 0.0  # training wall time of earlier sessions (train.max_minutes)
        self.started = time.perf_counter()
        self.pending: list[tuple[float, float]] = []  # (loss, grad_norm) since the last row
        self.pending_logs: dict[str, list[float]] = {}  # the objective's logs since then
        self.trackers = Trackers()  # the recipe's [[log]] loggers, opened by train() on rank 0

    def _factor_cache(self) -> FactorCache | None:
        """The SVD-style factor cache the recipe's [train] factor_cache settings allow, with a
        one-line notice of where it lives (None: the degradation has no factors, the dataset's
        items change between epochs, or nothing fits the budget)."""
        cfg, degradation = self.recipe.train, self.pipeline.degradation
        dataset = self.pipeline.dataset
        if not factor_cache.supports(degradation):
            return None
        if not type(dataset).fixed_items(dataset.config):
            chosen = factor_cache.Plan(None, 0, "factor cache: off, the dataset's items change "
                                       "between epochs (random crops or augmentation)")
        else:
            spec, dtype = self.pipeline.data_spec, factor_cache.DTYPES[cfg.factor_dtype]
            per_image = factor_cache.bytes_per_image(
                degradation, (spec.channels, spec.image_size, spec.image_size), dtype)
            chosen = factor_cache.plan(
                cfg.factor_cache, images=len(dataset), per_image=per_image,
                device_gib=cfg.factor_cache_device_gib, host_gib=cfg.factor_cache_host_gib)
        if self.context.is_main:
            tqdm.write(f"corediff: {chosen.notice}", file=sys.stderr)
        if chosen.placement is None:
            return None
        return FactorCache(degradation, len(dataset), capacity=chosen.capacity,
                           placement=chosen.placement, device=self.context.device,
                           dtype=factor_cache.DTYPES[cfg.factor_dtype])

    # -- state ---------------------------------------------------------------------------------
    def fit_components(self) -> None:
        """Calibrate the non-network components on up to FIT_IMAGES training images (never
        held-out ones). Under DDP every rank draws any random crops from the CPU random
        state all ranks shared before their per-rank reseed, so all fit the same curves."""
        with torch.random.fork_rng(devices=[], enabled=self.shared_rng is not None):
            if self.shared_rng is not None:
                torch.set_rng_state(self.shared_rng)
            images = fit_images(self.pipeline, self.train_set)
            for component in self.pipeline.components().values():
                component.fit(images)

    def rank_states(self) -> list[dict[str, Tensor]]:
        """Every rank's own random states, in rank order (a collective: call on all ranks)."""
        return gather({"generator": self.generator.get_state(), "torch": torch.get_rng_state(),
                       "cuda": own_cuda_rng_state(self.context.device),
                       "numpy": np.random.get_state(), "python": random.getstate()},
                      self.context)

    def state(self, per_rank: list[dict[str, Tensor]] | None = None) -> dict[str, Any]:
        """Everything a resumed run needs besides the weights; ``per_rank``: the ranks' random
        states (default: gathered here from every rank, so call on all ranks)."""
        spec = self.pipeline.data_spec
        per_rank = self.rank_states() if per_rank is None else per_rank
        return {
            "step": self.step, "smoothed": self.smoothed, "best": self.best,
            "train_seconds": self.elapsed(),
            "pending": self.pending, "pending_logs": self.pending_logs,
            "corediff_version": __version__,
            "val_loss": self.val_history[-1][1] if self.val_history else None,
            "val_history": self.val_history,
            "world_size": self.context.world_size,
            "data_spec": {"channels": spec.channels, "image_size": spec.image_size,
                          "num_classes": spec.num_classes},
            # the LR scheduler's key stays "scheduler": existing checkpoints must resume
            "optimizer": self.optimizer.state_dict(), "scheduler": _lr_scheduler_state(self),
            "scaler": self.scaler.state_dict(), "ranks": per_rank,
            "rng": {"numpy": np.random.get_state(), "python": random.getstate(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
            "extra": {k: c.extra_state() for k, c in self.pipeline.components().items()},
            **({"teacher": self.teacher} if self.teacher is not None else {}),
        }

    def load(self, path: Path, stored: dict[str, Any] | None = None) -> None:
        """Continue from the checkpoint at ``path``; ``stored``: the recipe it was trained
        with (:func:`_stored_recipe`), whose component types say which stored component
        states still apply (a type changed with ``--force`` starts afresh)."""
        state = checkpoint.load_state(path)
        checkpoint.load_weights(self.model, path, "model")
        checkpoint.load_weights(self.ema.module, path, "ema")
        optimizer = state["optimizer"]
        optimizer["state"] = {int(k): v for k, v in optimizer["state"].items()}
        self.optimizer.load_state_dict(optimizer)
        self._check_optimizer(path)
        self._moments_like_params()
        self.lr_scheduler.load_state_dict({**state["scheduler"], "lr_lambdas": [None]})
        self.apply_lr()
        self.scaler.load_state_dict(state["scaler"])
        mine = state["ranks"][self.context.rank] \
            if len(state["ranks"]) == self.context.world_size else None
        if mine is not None:
            self.generator.set_state(mine["generator"])
            torch.set_rng_state(mine["torch"])
        else:  # resumed on another number of processes: fresh per-rank streams
            self.generator.manual_seed(self.recipe.run.seed + 1000 * self.context.rank + self.step)
        self._load_extra(path, state["extra"], (stored or {}).get("diffusion", {}))
        teacher = state.get("teacher")  # the same teacher as before, unless it was changed
        if self.teacher is not None and teacher is not None and teacher["source"] == \
                self.teacher["source"] and teacher != self.teacher:
            self.pipeline.objective.teacher, self.teacher = load_teacher(
                teacher["source"], self.context.device, teacher)
        rng = state["rng"]
        own = mine if mine is not None and "numpy" in mine else rng  # corediff < 0.3: rank 0's
        try:
            np.random.set_state(tuple(own["numpy"]))
            version, internal, gauss = own["python"]
            random.setstate((version, tuple(internal), gauss))
        except (ValueError, TypeError, OverflowError) as exc:
            raise TrainingError(f"checkpoint '{path}': state.json rng cannot be restored: "
                                f"{exc}") from None
        self._load_cuda_rng(mine, rng["cuda"])
        self.step, self.smoothed, self.best = state["step"], state["smoothed"], state["best"]
        self.seconds = state.get("train_seconds", 0.0)
        self.pending = [tuple(p) for p in state["pending"]]
        self.pending_logs = state.get("pending_logs", {})
        self.val_history = [(step, loss) for step, loss in state.get("val_history", [])]

    def _load_cuda_rng(self, mine: dict[str, Any] | None, rank0_all: list[Tensor]) -> None:
        """Restore this rank's own CUDA generator (``mine``: its stored per-rank entry). A
        checkpoint without per-rank CUDA states (corediff < 0.3) holds only rank 0's, for
        every device: rank 0 restores those, other ranks keep their fresh per-rank seed."""
        if not torch.cuda.is_available():
            return
        own = mine.get("cuda") if mine is not None else None
        if isinstance(own, Tensor) and own.numel():
            torch.cuda.set_rng_state(own, _cuda_index(self.context.device))
        elif own is None and mine is not None and self.context.rank == 0:
            for index, cuda_state in enumerate(rank0_all[:torch.cuda.device_count()]):
                torch.cuda.set_rng_state(cuda_state, index)

    def _check_optimizer(self, path: Path) -> None:
        """Refuse optimizer state whose tensors do not fit the parameters they belong to."""
        for group in self.optimizer.param_groups:
            for param in group["params"]:
                for name, value in self.optimizer.state.get(param, {}).items():
                    if torch.is_tensor(value) and value.dim() and value.shape != param.shape:
                        raise TrainingError(
                            f"checkpoint '{path}': state.safetensors holds optimizer state "
                            f"'{name}' of shape {tuple(value.shape)} for a parameter of "
                            f"shape {tuple(param.shape)}")

    def _moments_like_params(self) -> None:
        """Give each loaded optimizer tensor its parameter's memory format: the checkpoint
        holds them contiguous (NCHW), and NCHW moments beside channels_last parameters take
        AdamW off its foreach fast path (values are unchanged, so a resume stays exact)."""
        for group in self.optimizer.param_groups:
            for param in group["params"]:
                state = self.optimizer.state.get(param, {})
                for name, value in state.items():
                    if (torch.is_tensor(value) and value.shape == param.shape
                            and value.stride() != param.stride()):
                        state[name] = torch.empty_like(param, dtype=value.dtype).copy_(value)

    def _load_extra(self, path: Path, extra: dict[str, Any], stored: dict[str, Any]) -> None:
        """Restore each component's stored state, when its type is the stored one."""
        for kind, component in self.pipeline.components().items():
            if kind not in extra or stored.get(kind, {}).get(
                    "type", component.config.type) != component.config.type:
                continue
            try:
                component.load_extra_state(extra[kind])
            except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as exc:
                raise TrainingError(
                    f"checkpoint '{path}': the stored state of its {kind} "
                    f"'{component.config.type}' cannot be restored: "
                    f"{' '.join(str(exc).split())[:300]}") from None

    def apply_lr(self) -> None:
        """Make the recipe's lr and its schedule the ones in force (a resumed run may change
        them): lr = train.lr · factor(step), as LambdaLR computes it."""
        cfg = self.recipe.train
        self.lr_scheduler.base_lrs = [cfg.lr] * len(self.optimizer.param_groups)
        factor = lr_factor(self.lr_scheduler.last_epoch, cfg.warmup_steps, cfg.steps,
                           cfg.min_lr_ratio)
        for group in self.optimizer.param_groups:
            group["initial_lr"], group["lr"] = cfg.lr, cfg.lr * factor

    def save(self) -> None:
        """Write ``last`` and, when its score is the lowest so far, ``best`` first (so a crash
        between the two leaves ``best`` ahead, which the next start copies to ``last``; call on
        every rank; rank 0 writes). The score is the smoothed training loss, or with ``best_by =
        "val_loss"`` the validation loss, computed here whenever images are held out and
        recorded with its history in the state. A failure on any rank (a check, a write) is
        raised on every rank when they meet at the end."""
        per_rank = self.rank_states()  # the one collective, while every rank is here
        with shared_failure(self.context):
            self.write_checkpoint(per_rank)

    def write_checkpoint(self, per_rank: list[dict[str, Tensor]]) -> None:
        """:meth:`save`'s work on this rank alone (no collective): check, validate, score,
        and on rank 0 write."""
        self.check_finite()
        if self.factor_cache is not None:
            self.factor_cache.check()
        if self.val_loader is not None:
            self.val_history.append((self.step, self.validation_loss()))
            self.trackers.scalars({"val_loss": self.val_history[-1][1]}, self.step, "eval/")
        by_val = self.recipe.train.best_by == "val_loss"
        score = self.val_history[-1][1] if by_val else self.smoothed
        improved = score is not None and score <= self.best
        if improved:
            self.best = score
        state = self.state(per_rank)
        if not self.context.is_main:
            return
        # best/ first: last/'s state.json records the new best score only once best/ holds it
        first = self.run.checkpoint("best" if improved else "last")
        checkpoint.save(first, model=self.model, ema=self.ema.module, state=state,
                        recipe_toml=recipe_to_toml(self.recipe))
        if improved:
            checkpoint.copy(first, self.run.checkpoint("last"))

    def check_finite(self) -> None:
        """Refuse to checkpoint NaN/inf weights or optimizer state: one reduction over every
        tensor, one host sync, on the checkpoint path only. (AdamW keeps its step counters
        on the CPU, the rest lives on the device: each tensor's verdict moves to the
        device before they are stacked.)"""
        device = self.context.device
        tensors = [*self.model.parameters(), *self.ema.module.parameters()]
        tensors += [value for group in self.optimizer.state.values() for value in group.values()
                    if isinstance(value, Tensor) and value.is_floating_point()]
        finite = [t.detach().isfinite().all().to(device, non_blocking=True) for t in tensors]
        if bool(torch.stack(finite).all()):
            return
        where = self.run.checkpoint("last")
        kept = (f"'last' ({where}) and 'best' are kept as they were" if checkpoint.find(where)
                else "no checkpoint had been written yet")
        raise TrainingError(
            f"training stopped at step {self.step}: the weights or the optimizer state hold "
            f"NaN or inf, so they were not saved; {kept}. Try a lower train.lr, "
            "train.grad_clip > 0 or precision = 'fp32'."
        )

    # -- training ------------------------------------------------------------------------------
    def batches(self) -> Iterator[Batch]:
        """Endless (dataset indices, x0, y), x0 and y on the device; epoch e's order is fixed
        by (seed, e), so a resumed run sees the same batches as an uninterrupted one."""
        cfg, device = self.recipe.train, self.context.device
        epoch, skip = divmod(self.step * cfg.grad_accum, len(self.loader))
        conditional = self.pipeline.data_spec.num_classes is not None
        while True:
            self.data_sampler.set_epoch(epoch)
            self.data_sampler.skip = skip * cfg.batch_size
            self.loader_generator.manual_seed(self.recipe.run.seed * 100_003 + epoch)
            for index, x0, y in self.loader:
                x0 = x0.to(device, non_blocking=True)
                if channels_last(device):
                    x0 = x0.contiguous(memory_format=torch.channels_last)
                yield index, x0, y.to(device, non_blocking=True) if conditional else None
            epoch, skip = epoch + 1, 0

    def loss(
        self, x0: Tensor, y: Tensor | None, index: Tensor | None = None, *,
        net: nn.Module | None = None, generator: torch.Generator | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The batch's training objective (the recipe's [diffusion.objective]): the mean of
        its per-sample losses, and its logs, with every random draw from ``generator``
        (default: the training stream; another one: a validation batch) and the output of
        ``net`` (default: the trained network) under the recipe's autocast."""
        p, cfg = self.pipeline, self.recipe.train
        net = self.net if net is None else net
        dtype = AUTOCAST.get(cfg.precision)

        def call(x: Tensor, time: Tensor, labels: Tensor | None) -> Tensor:
            with torch.autocast(x0.device.type, dtype=dtype, enabled=dtype is not None):
                return net(x, time, labels).float()

        def degrade(t: Tensor, noise: Tensor | None) -> Tensor:
            if self.factor_cache is not None and index is not None:
                return self.factor_cache.degrade(x0, index, t, noise)
            return p.degradation.degrade(x0, t, noise)

        out = p.objective.losses(ObjectiveBatch(
            x0, y, index, call, degrade, self.generator if generator is None else generator,
            training=generator is None, label_dropout=cfg.label_dropout,
            null_label=p.data_spec.num_classes))
        return out.per_sample.mean(), out.logs

    @torch.no_grad()
    def validation_loss(self) -> float:
        """The training objective (:meth:`loss`) of the EMA weights averaged over every
        held-out image, in batches. t, the noise and the dropped labels come from a generator
        seeded afresh from run.seed at each call, and so do a dataset's random augmentations
        (crop, flip: in a forked CPU random state, and in loader workers seeded from the
        loader's re-seeded generator), so every evaluation scores the same draws, values
        compare across checkpoints and training's random streams are left as they were.
        One host sync."""
        assert self.val_loader is not None, "no held-out images (train.val_fraction = 0)"
        device, seed = self.context.device, self.recipe.run.seed + VALIDATION_SEED_OFFSET
        generator = torch.Generator(device).manual_seed(seed)
        self.val_loader.generator.manual_seed(seed)
        conditional = self.pipeline.data_spec.num_classes is not None
        total = torch.zeros((), dtype=torch.float64, device=device)
        with torch.random.fork_rng(devices=[]):  # forks and seeds the CPU generator only:
            torch.default_generator.manual_seed(seed)  # torch.manual_seed would reseed CUDA's
            for index, x0, y in self.val_loader:
                x0 = x0.to(device)
                y = y.to(device) if conditional else None
                loss, _ = self.loss(x0, y, index, net=self.ema.module, generator=generator)
                total += loss.double() * x0.shape[0]
        return total.item() / len(self.val_loader.dataset)

    def train_step(self, data: Iterator[Batch]) -> Step:
        """One optimizer step over ``train.grad_accum`` micro-batches: (mean loss, gradient
        norm, the objective's logs averaged over the micro-batches), on the device."""
        cfg = self.recipe.train
        total = torch.zeros((), device=self.context.device)
        logs: dict[str, Tensor] = {}
        for micro in range(cfg.grad_accum):
            index, x0, y = next(data)
            syncing = micro == cfg.grad_accum - 1 or not self.context.distributed
            with tf32(cfg.precision == "tf32"), (
                    contextlib.nullcontext() if syncing else self.net.no_sync()):
                loss, micro_logs = self.loss(x0, y, index)
                self.scaler.scale(loss / cfg.grad_accum).backward()
            total += loss.detach() / cfg.grad_accum
            for name, value in micro_logs.items():
                logs[name] = logs.get(name, 0) + value.detach().float() / cfg.grad_accum
        self.scaler.unscale_(self.optimizer)
        grad_norm = nn.utils.clip_grad_norm_(
            self.model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else math.inf
        )
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.lr_scheduler.step()
        self.step += 1
        self.ema.update(self.model, step=self.step)
        self.pipeline.objective.after_step(self.model, self.step)
        return total, grad_norm, logs

    def elapsed(self) -> float:
        """Seconds of training so far, over every session of the run."""
        return self.seconds + time.perf_counter() - self.started

    def out_of_time(self) -> bool:
        """Whether ``train.max_minutes`` of training (over every session) are spent."""
        minutes = self.recipe.train.max_minutes
        return minutes is not None and self.elapsed() >= 60 * minutes

    def train(self) -> None:
        cfg, ctx = self.recipe.train, self.context
        self.started = time.perf_counter()
        metrics = MetricsLog(self.run, self.step or None) if ctx.is_main else None
        with shared_failure(ctx):  # a tracker rank 0 cannot open stops every rank
            if ctx.is_main:
                self.trackers = Trackers.open(self.recipe, self.run.root, step=self.step)
        if self.factor_cache is not None and ctx.distributed:  # each rank decomposes 1/N
            self.factor_cache.fill(self.pipeline.dataset, ctx.rank, ctx.world_size)
        data = self.batches()
        window: list[Step] = []
        clock, images = time.perf_counter(), 0
        bar = tqdm(total=cfg.steps, initial=self.step, disable=not ctx.is_main, unit="step",
                   dynamic_ncols=True)
        self.net.train()
        with GracefulStop() as stop, contextlib.closing(bar), contextlib.closing(self.trackers):
            spent = cfg.max_minutes is not None and any_across(self.out_of_time(), ctx)
            while self.step < cfg.steps and not spent:
                window.append(self.train_step(data))
                images += cfg.batch_size * cfg.grad_accum * ctx.world_size
                bar.update(1)
                done = self.step == cfg.steps
                row, save = self.step % cfg.log_every == 0, self.step % cfg.checkpoint_every == 0
                # one process stops after any step; DDP ranks agree at boundaries (no extra sync)
                if (row or save or done or not ctx.distributed) and any_across(stop.requested, ctx):
                    self.interrupt(window, stop.signum or signal.SIGTERM)
                if (row or save or not ctx.distributed) and not done and (
                        cfg.max_minutes is not None and any_across(self.out_of_time(), ctx)):
                    done = spent = True  # ranks agree on the budget at boundaries
                    tqdm.write(f"corediff: train.max_minutes = {cfg.max_minutes} reached at "
                               f"step {self.step} of {cfg.steps}", file=sys.stderr)
                if not (row or save or done):
                    continue
                self.check(window)
                window = []
                if (row or done) and self.pending:
                    speed = images / (time.perf_counter() - clock)
                    with shared_failure(ctx):  # rank 0's failed write stops every rank
                        self.write_row(metrics, speed)
                    bar.set_postfix(loss=f"{self.smoothed:.4g}", img_s=f"{speed:.0f}")
                    clock, images = time.perf_counter(), 0
                if save or done:
                    self.save()
                if cfg.sample_every and self.step % cfg.sample_every == 0:
                    self.sample_grid(self.run.sample_grid(self.step), across=True)
        if metrics is not None:
            metrics.close()

    def write_row(self, metrics: MetricsLog | None, images_per_s: float) -> None:
        """Write the pending losses' row to metrics.csv (rank 0) and the trackers."""
        values = self.row(images_per_s)
        if metrics is not None:
            metrics.write(values)
        self.trackers.scalars({k: v for k, v in values.items() if k != "step"}, self.step,
                              prefix="train/")

    def interrupt(self, window: list[Step], signum: int) -> None:
        """Save ``last`` at the current step (losses of the window included) and stop."""
        if window:
            self.check(window)
        self.save()
        name = signal.Signals(signum).name
        raise Interrupted(
            f"stopped by {name} at step {self.step} of {self.recipe.train.steps}; 'last' is "
            f"saved in {self.run.checkpoint('last')}. Continue with: corediff train RECIPE "
            f"--resume --run-dir {self.run.root}", signum,
        )

    def check(self, window: list[Step]) -> None:
        """Read the window's losses (one host sync), stop on a non-finite one, smooth them."""
        losses = mean_across(torch.stack([loss for loss, _, _ in window]), self.context).tolist()
        norms = torch.stack([norm for _, norm, _ in window]).tolist()
        logged = [(name, value) for _, _, logs in window for name, value in logs.items()]
        values = torch.stack([value for _, value in logged]).tolist() if logged else []
        for (name, _), value in zip(logged, values, strict=True):
            self.pending_logs.setdefault(name, []).append(value)
        first = self.step - len(window) + 1
        for offset, loss in enumerate(losses):
            if not math.isfinite(loss):
                where = self.run.checkpoint("last")
                kept = f"the last good checkpoint is kept in {where}" if checkpoint.find(
                    where) else "no checkpoint had been written yet"
                raise TrainingError(
                    f"training stopped: the loss is {loss} at step {first + offset}; {kept}. "
                    "Try a lower train.lr, train.grad_clip > 0 or precision = 'fp32'."
                )
        s = self.recipe.train.loss_smoothing
        for loss, norm in zip(losses, norms, strict=True):
            self.smoothed = loss if self.smoothed is None else s * self.smoothed + (1 - s) * loss
            self.pending.append((loss, norm))

    def row(self, images_per_s: float) -> dict[str, Any]:
        """The pending steps' metrics row: mean loss and gradient norm, and the mean of each
        objective log (for the trackers; metrics.csv keeps its columns)."""
        losses, norms = zip(*self.pending, strict=True)
        logs = {name: sum(values) / len(values) for name, values in self.pending_logs.items()}
        self.pending, self.pending_logs = [], {}
        return {"step": self.step, "loss": sum(losses) / len(losses),
                "lr": self.lr_scheduler.get_last_lr()[0], "grad_norm": sum(norms) / len(norms),
                "images_per_s": images_per_s, **logs}

    def sample_grid(self, path: Path, *, across: bool = False) -> None:
        """A grid of [sample] n images from the EMA weights with the [sample] settings.
        ``across`` (call on every rank): under DDP each rank samples its share of the
        batches (:func:`~corediff.engine.sampling.sample_share`), in batches of at most
        ⌈n / world size⌉ so that every rank has one even when n fits in one batch, and rank 0
        writes the grid one process writes with that batch size; a failure on any rank stops
        every rank."""
        cfg, ctx = self.recipe.sample, self.context
        model = (self.ema.module if cfg.use_ema else self.model).eval()
        if across and ctx.distributed:
            batch_size = min(cfg.batch_size, -(-cfg.n // ctx.world_size))
            with shared_failure(ctx):
                mine = sample_share(self.pipeline, cfg.n, labels=cfg.label, seed=cfg.seed,
                                    model=model, rank=ctx.rank, world_size=ctx.world_size,
                                    batch_size=batch_size)
            shares = sorted(pair for share in gather(mine, ctx) for pair in share)
            images = torch.cat([images for _, images in shares])
        else:
            images = self.pipeline.sample(cfg.n, labels=cfg.label, seed=cfg.seed, model=model)
        with shared_failure(ctx) if across else contextlib.nullcontext():
            if ctx.is_main or not across:
                save_grid(images, path, nrow=grid_columns(self.pipeline, cfg.n))
                self.trackers.image_file("samples", path, self.step)
        self.model.train()


def _cuda_index(device: torch.device) -> int:
    """The CUDA device index this process uses."""
    if device.type == "cuda" and device.index is not None:
        return device.index
    return torch.cuda.current_device()


def own_cuda_rng_state(device: torch.device) -> Tensor:
    """This process's own CUDA generator state (its device's; empty without CUDA)."""
    if not torch.cuda.is_available():
        return torch.empty(0, dtype=torch.uint8)
    return torch.cuda.get_rng_state(_cuda_index(device))


def _lr_scheduler_state(trainer: Trainer) -> dict[str, Any]:
    return {k: v for k, v in trainer.lr_scheduler.state_dict().items() if k != "lr_lambdas"}


def run_training(
    recipe: Recipe | Pipeline, run: RunDir, context: Context, *, resume: bool,
    overwrite: bool = False, force: bool = False,
) -> Trainer:
    """Train a recipe (built here, after seeding) or an already built pipeline into a run
    directory, from scratch or from its last checkpoint.

    Rank 0 checks the location, holds the run directory's lock for the whole run, removes
    what a crash left, and refuses to overwrite an existing run (``overwrite`` starts over);
    ``resume`` checks the new recipe against the checkpoint's (``force`` accepts a change of
    objective) and logs what changed in ``resume_log.jsonl``; without a checkpoint yet (a run
    stopped before its first one, a study's cell not started) it starts from step 0.
    """
    with contextlib.ExitStack() as held:
        found = _prepare(run, context, held, resume=resume, overwrite=overwrite)
        if isinstance(recipe, Pipeline):
            pipeline = recipe
        else:
            seed_everything(recipe.run.seed)
            pipeline = build(recipe)
        recipe = pipeline.recipe
        trainer = Trainer(pipeline, run, context)
        if found is not None:
            stored = _stored_recipe(found)
            changed = check_resume(stored, recipe_to_dict(recipe), force=force, where=str(found))
            trainer.load(found, stored)
        else:
            trainer.fit_components()
        with shared_failure(context):  # rank 0's failed write stops every rank
            if context.is_main and (found is None or changed):
                if found is not None:
                    log_resume(run, trainer.step, changed, force)
                checkpoint.atomic_write_text(run.recipe, recipe_to_toml(recipe))
        trainer.train()
    return trainer


def _prepare(
    run: RunDir, context: Context, held: contextlib.ExitStack, *, resume: bool, overwrite: bool,
) -> Path | None:
    """The checkpoint to resume from (None for a new run), after rank 0 has checked, locked
    (the lock entered on ``held``), cleaned and claimed the directory; a refusal there stops
    every rank with rank 0's message."""
    if resume and overwrite:
        raise TrainingError("--resume and --overwrite contradict each other; pick one")
    with shared_failure(context):
        if context.is_main:
            check_location(run)
            check_writable(run.root, ("recipe.toml", "metrics.csv", "resume_log.jsonl", ".lock"))
            held.enter_context(RunLock(run))
            check_run_files(run)
            remove_leftovers(run)
            if not resume:
                claim(run, overwrite=overwrite)
            elif notice := checkpoint.reconcile(run.checkpoint("last"), run.checkpoint("best")):
                tqdm.write(f"corediff: {notice}", file=sys.stderr)  # only a run that goes on
    last = run.checkpoint("last")
    found = checkpoint.find(last)
    if resume and found is None and context.is_main:  # stopped before its first checkpoint
        tqdm.write(f"corediff: --resume: no checkpoint in '{last}' yet; starting from step 0",
                   file=sys.stderr)
    return found


def _stored_recipe(path: Path) -> dict[str, Any]:
    """The recipe a checkpoint was trained with, resolved as a new recipe is (defaults filled
    in, corediff 0.1 keys upgraded), as plain data."""
    source = path / "recipe.toml"
    data = read_toml(source, f"checkpoint '{path}': recipe.toml")
    return recipe_to_dict(parse_recipe(data, source=str(source)))
