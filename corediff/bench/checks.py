"""The checks of ``corediff bench``: does this machine run corediff's GPU paths (CUDA, bf16
autocast, channels_last, torch.compile, DDP, a training step without host syncs)?"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import torch

import corediff
from corediff.bench.common import (
    DDP_RECIPE,
    QUICKSTART,
    SVD_RECIPE,
    Settings,
    Skipped,
    no_cuda,
    sync,
    timed,
    tiny_inputs,
    tiny_unet,
)


def check_cuda(settings: Settings) -> dict[str, Any]:
    """CUDA is available: device name and count, torch and CUDA versions."""
    if not torch.cuda.is_available():
        raise Skipped("no CUDA")
    return {"device": torch.cuda.get_device_name(0), "count": torch.cuda.device_count(),
            "torch": torch.__version__, "cuda": torch.version.cuda,
            "capability": ".".join(map(str, torch.cuda.get_device_capability(0)))}


def check_bf16(settings: Settings) -> dict[str, Any]:
    """A bf16-autocast forward and backward of the tiny U-Net: bf16 output, finite gradients."""
    model, (x, t) = tiny_unet(settings.device), tiny_inputs(settings.device)
    with torch.autocast(settings.device.type, dtype=torch.bfloat16):
        out = model(x, t)
    out.float().square().mean().backward()
    if out.dtype != torch.bfloat16:
        raise RuntimeError(f"autocast gave {out.dtype}, not bfloat16")
    if not all(p.grad is not None and p.grad.isfinite().all() for p in model.parameters()):
        raise RuntimeError("a gradient is missing or not finite")
    return {"output_dtype": str(out.dtype)}


def check_channels_last(settings: Settings) -> dict[str, Any]:
    """One training step (forward, backward, AdamW) in channels_last memory format: its loss
    matches the contiguous model's."""
    losses = []
    for layout in (torch.contiguous_format, torch.channels_last):
        torch.manual_seed(0)
        model = tiny_unet(settings.device).to(memory_format=layout)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        x, t = tiny_inputs(settings.device)
        for _ in range(2):
            loss = model(x.contiguous(memory_format=layout), t).square().mean()
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    difference = abs(losses[1] - losses[0]) / max(abs(losses[0]), 1e-12)
    if not difference < 1e-2:
        raise RuntimeError(f"loss {losses[1]:.6g} in channels_last vs {losses[0]:.6g}")
    return {"relative_loss_difference": difference}


def check_compile(settings: Settings) -> dict[str, Any]:
    """torch.compile: the tiny U-Net's compiled forward gives the eager output, and the real
    training step (Trainer with ``train.compile``, bf16 on CUDA) is timed compiled, its first
    step (the compilation) apart, beside the same step eager."""
    from corediff.bench.measures import training_trainer

    if not settings.compile:
        raise Skipped("--no-compile")
    if not settings.cuda and not settings.compile_on_cpu:
        raise no_cuda()
    model, (x, t) = tiny_unet(settings.device).eval(), tiny_inputs(settings.device)
    with torch.no_grad():
        compiled = torch.compile(model)(x, t)
        eager = model(x, t)
    difference = (compiled - eager).abs().max().item()
    if not difference <= 1e-2 * max(1.0, eager.abs().max().item()):
        raise RuntimeError(f"compiled output differs from eager by {difference:.3g}")
    out: dict[str, Any] = {"max_abs_difference": difference}
    for name, flag in (("compiled", True), ("eager", False)):
        trainer = training_trainer("unet", "tiny", image_size=16, batch=settings.batch_size,
                                   device=settings.device, dtype=settings.dtype,
                                   workdir=settings.workdir, compile=flag)
        data = trainer.batches()
        start = time.perf_counter()
        trainer.train_step(data)
        sync(settings.device)
        if flag:
            out["compile_s"] = time.perf_counter() - start
        out[f"{name}_step_ms"] = 1e3 * timed(lambda t=trainer, d=data: t.train_step(d),
                                             settings.device, settings.steps)
    return out


def check_ddp(settings: Settings) -> dict[str, Any]:
    """``python -m torch.distributed.run --standalone --nproc_per_node N -m corediff train``
    of a tiny recipe: N = number of GPUs (NCCL; on one GPU one process, which opens no process
    group, so an NCCL all_reduce over a group of one is checked apart), or 2 CPU processes
    under gloo with ``ddp_on_cpu``; else "not checked". The last checkpoint must record N."""
    from corediff.engine import checkpoint

    if settings.cuda:
        n, backend = torch.cuda.device_count(), "nccl"
        if n == 1:  # torchrun with one process opens no process group: NCCL checked here
            backend = f"nccl (world size 1: all_reduce {nccl_world_of_one(settings)}; " \
                      "training as one process)"
    elif settings.ddp_on_cpu:
        n, backend = 2, "gloo"
    else:
        raise Skipped("not checked: no CUDA (--ddp-on-cpu runs 2 gloo processes)")
    folder = Path(tempfile.mkdtemp(prefix="ddp_", dir=settings.workdir))
    recipe = folder / "recipe.toml"
    recipe.write_text(DDP_RECIPE.format(device=settings.device.type))
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
         str(n), "-m", "corediff", "train", str(recipe), "--run-dir", str(folder / "run")],
        env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
        timeout=600,
    )
    if done.returncode != 0:
        lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        ours = [line for line in lines if line.startswith("corediff:")]  # corediff's error
        errors = [line for line in lines if "Error" in line and "ChildFailed" not in line]
        first = (ours or errors[-1:] or lines[-1:] or ["no output"])[0]
        raise RuntimeError(f"exit {done.returncode}: {first}")
    state = checkpoint.load_state(folder / "run" / "checkpoints" / "last")
    if state["world_size"] != n or state["step"] != 6:
        raise RuntimeError(f"checkpoint records world size {state['world_size']}, "
                           f"step {state['step']} (expected {n}, 6)")
    return {"processes": n, "backend": backend}


def nccl_world_of_one(settings: Settings) -> str:
    """An NCCL process group of this process alone: all_reduce of a tensor on the device,
    the group destroyed after; "ok" or raises."""
    import torch.distributed as dist

    store = dist.FileStore(str(Path(tempfile.mkdtemp(dir=settings.workdir)) / "store"), 1)
    dist.init_process_group("nccl", store=store, rank=0, world_size=1,
                            device_id=settings.device)
    try:
        value = torch.full((4,), 3.0, device=settings.device)
        dist.all_reduce(value)
        if value.tolist() != [3.0] * 4:
            raise RuntimeError(f"NCCL all_reduce over one rank gave {value.tolist()}")
    finally:
        dist.destroy_process_group()
    return "ok"


def check_no_host_sync(settings: Settings) -> dict[str, Any]:
    """Trainer.train_step under ``torch.cuda.set_sync_debug_mode("error")`` for the
    quickstart recipe (Gaussian) and studies/recipes/svd_digits16.toml (SVD, factor cache on
    the device, then in host memory), bf16, tiny U-Net: four batches are trained once
    (filling the cache), then replayed with the check on; any host sync raises, reported
    with its corediff line."""
    if not settings.cuda:
        raise no_cuda()
    import itertools

    from corediff.engine.distributed import Context
    from corediff.engine.rundir import RunDir
    from corediff.engine.trainer import Trainer

    root = Path(corediff.__file__).resolve().parents[1]
    for name, path, extra in (("gaussian", QUICKSTART, []), ("svd", SVD_RECIPE, []),
                              ("svd_host", SVD_RECIPE, ["train.factor_cache='host'"])):
        recipe = corediff.load_recipe(path, [
            f"run.device='{settings.device}'", "train.batch_size=16", "model.preset='tiny'",
            "train.precision='bf16'", *extra])
        trainer = Trainer(corediff.build(recipe), RunDir(tempfile.mkdtemp(
            dir=settings.workdir)), Context(settings.device))
        trainer.fit_components()
        trainer.net.train()
        batches = list(itertools.islice(trainer.batches(), 4))
        replay = iter(batches + batches)
        for _ in batches:
            trainer.train_step(replay)
        sync(settings.device)
        torch.cuda.set_sync_debug_mode("error")
        try:
            for _ in batches:
                trainer.train_step(replay)
        except RuntimeError as exc:
            frames = [f for f in traceback.extract_tb(exc.__traceback__)
                      if Path(f.filename).resolve().parts[len(root.parts):][:1] in
                      (("corediff",), ("corediff_plugins",))]
            where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"
            raise RuntimeError(f"{name}: host sync at {where} "
                               f"({str(exc).splitlines()[0]})") from exc
        finally:
            torch.cuda.set_sync_debug_mode(0)
    return {"recipes": "gaussian, svd, svd_host", "steps_checked": 12}


