"""Importing a diffusers pipeline folder as a corediff run (``corediff import diffusers``).

A diffusers pipeline folder (``save_pretrained``'s layout: ``model_index.json``,
``unet/config.json`` with its weights, ``scheduler/scheduler_config.json``) holding a
``UNet2DModel`` and a DDPM, DDIM, PNDM, Euler, DPM-Solver (multistep) or UniPC scheduler
becomes a run directory that ``corediff sample``, ``corediff eval`` and ``corediff.load``
open:

* **schedule** (from the scheduler config, completed with the scheduler class's defaults):
  ``beta_schedule`` "linear" → ``linear`` (its ends scaled by T/1000, since corediff's linear
  scales them by 1000/T), "scaled_linear" → ``scaled_linear``, "squaredcos_cap_v2" →
  ``cosine``; ``trained_betas`` or any other ``beta_schedule`` → ``betas`` (β from diffusers'
  own scheduler class); ``rescale_betas_zero_snr`` → ``rescale_zero_terminal_snr`` (ᾱ_T = 0
  exactly, where diffusers' Euler uses 2⁻²⁴);
* **parameterization** from ``prediction_type``: epsilon → ``eps``, sample → ``x0``,
  v_prediction → ``v``; ``variance_type`` "learned_range" → ``variance = "learned_range"``;
* **sampler**, a default to override with ``--set diffusion.sampler.…``: DDPM → ``ddpm`` on
  all T steps (its ``variance_type``), DDIM and PNDM → ``ddim``, 50 "trailing" steps (corediff
  has no PLMS), Euler → ``euler`` 50 steps, DPM-Solver → ``dpmpp_2m`` 20 steps (``sde`` for
  "sde-dpmsolver++"), UniPC → ``unipc`` 20 steps; Karras σ and the timestep spacing of the
  solvers follow the config; ``clip_sample`` → ``clip_x0`` (only a range of 1 exists; with
  it corediff's DDIM recomputes ε̂ from the clipped x̂0, diffusers' ``use_clipped_model_output``);
* **model** ``diffusers_unet2d`` with the UNet's config (``timestep_offset = -1``: diffusers'
  timestep k is corediff's step k + 1) and its weights (``diffusion_pytorch_model.safetensors``,
  or a ``.bin`` read with ``torch.load(weights_only=True)``), stored as both the raw and the
  EMA weights;
* **data**: ``image_folder`` at ``--data-root`` (default ``data/images``; only ``corediff
  eval`` reads it, e.g. ``--set data.root=...``), of the UNet's size and channels.

The checkpoints ``last`` and ``best`` (the same) hold the state a trainer has before its
first step (step 0, fresh AdamW moments, seeded random states) plus ``"imported"``: where the
weights came from. No training history is invented. Refused in one sentence: another model
class or scheduler class, thresholding, a clip range other than 1, learned (unbounded)
variance, a class-conditional UNet unless ``--num-classes N`` says its N + 1-th class row is
the null label, a non-square or latent (not 1 or 3 channels) UNet.

A Hugging Face repo id (``google/ddpm-cifar10-32``) is downloaded with
``huggingface_hub.snapshot_download`` (its cache; only the model index, the UNet and the
scheduler).
"""

from __future__ import annotations

import inspect
import json
import math
import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from corediff import __version__
from corediff.errors import ConfigError

#: Scheduler classes → the corediff sampler written (type, extra config).
SCHEDULERS = {
    "DDPMScheduler": "ddpm", "DDIMScheduler": "ddim", "PNDMScheduler": "ddim",
    "EulerDiscreteScheduler": "euler", "DPMSolverMultistepScheduler": "dpmpp_2m",
    "UniPCMultistepScheduler": "unipc",
}
PREDICTIONS = {"epsilon": "eps", "sample": "x0", "v_prediction": "v"}
NAMED_SCHEDULES = {"linear": "linear", "scaled_linear": "scaled_linear",
                   "squaredcos_cap_v2": "cosine"}
#: UNet2DModel config keys the data decides (as in the diffusers_unet2d model plugin).
FROM_DATA = ("sample_size", "in_channels", "out_channels", "num_class_embeds")
REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
DEFAULT_DATA_ROOT = "data/images"


def _refuse(message: str) -> ConfigError:
    return ConfigError(message)


# -- finding and reading the folder ------------------------------------------------------------
def resolve_source(source: str, revision: str | None = None) -> Path:
    """A local pipeline folder, or a Hugging Face repo id downloaded (model index, UNet and
    scheduler only) with ``huggingface_hub.snapshot_download`` into its cache."""
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise _refuse(f"'{source}' is not a folder (a diffusers pipeline folder holds "
                          "model_index.json, unet/ and scheduler/)")
        return path
    if not REPO_ID.fullmatch(source):
        raise _refuse(f"'{source}' is neither a folder nor a Hugging Face repo id "
                      "(owner/name)")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise _refuse("downloading from the Hugging Face Hub needs huggingface_hub: pip "
                      "install huggingface_hub") from None
    try:
        return Path(snapshot_download(
            source, revision=revision,
            allow_patterns=["model_index.json", "unet/*", "scheduler/*"]))
    except Exception as exc:  # network, authentication, unknown repo: one sentence
        raise _refuse(f"could not download '{source}' from the Hugging Face Hub: "
                      f"{' '.join(str(exc).split())[:300]}") from None


def _read_json(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise _refuse(f"{what} '{path}' is missing; not a diffusers pipeline folder with a "
                      "UNet2DModel and a scheduler")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise _refuse(f"{what} '{path}' is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise _refuse(f"{what} '{path}' is not a JSON object")
    return data


def read_folder(folder: Path) -> tuple[dict[str, Any], dict[str, Any], str]:
    """(UNet config, scheduler config, scheduler class name) of a pipeline folder; another
    model or scheduler class is refused in one sentence."""
    index = folder / "model_index.json"
    if index.is_file():
        entries = _read_json(index, "model index")
        for key in ("unet", "scheduler"):
            if not isinstance(entries.get(key), list):
                raise _refuse(f"model index '{index}' has no '{key}' entry; corediff imports "
                              "pipelines of a UNet2DModel and a scheduler")
    unet = _read_json(folder / "unet" / "config.json", "UNet config")
    model_class = unet.get("_class_name", "UNet2DModel")
    if model_class != "UNet2DModel":
        raise _refuse(f"model class '{model_class}' is not supported: corediff imports "
                      "diffusers' UNet2DModel only")
    scheduler = _read_json(folder / "scheduler" / "scheduler_config.json", "scheduler config")
    name = scheduler.get("_class_name")
    if name not in SCHEDULERS:
        raise _refuse(f"scheduler class '{name}' is not supported: corediff imports "
                      f"{', '.join(SCHEDULERS)}")
    return unet, scheduler, name


def scheduler_config(name: str, raw: dict[str, Any]) -> dict[str, Any]:
    """The scheduler config completed with its class's defaults (diffusers' from_config)."""
    import diffusers

    scheduler = getattr(diffusers, name).from_config(raw)
    return {k: v for k, v in scheduler.config.items() if not k.startswith("_")}


# -- the recipe ----------------------------------------------------------------------------------
def schedule_table(name: str, config: dict[str, Any]) -> dict[str, Any]:
    """[diffusion.schedule] for a completed scheduler config."""
    steps = int(config["num_train_timesteps"])
    rescale = bool(config.get("rescale_betas_zero_snr", False))
    if config.get("trained_betas") is not None:
        betas = [float(b) for b in np.asarray(config["trained_betas"], dtype=np.float64)]
        if len(betas) != steps:
            raise _refuse(f"trained_betas holds {len(betas)} values but num_train_timesteps "
                          f"is {steps}")
        return {"type": "betas", "betas": betas, "rescale_zero_terminal_snr": rescale}
    kind = config["beta_schedule"]
    table: dict[str, Any] = {"steps": steps, "rescale_zero_terminal_snr": rescale}
    if kind == "linear":  # corediff's linear scales its ends by 1000 / T
        return {"type": "linear", **table, "beta_start": config["beta_start"] * steps / 1000,
                "beta_end": config["beta_end"] * steps / 1000}
    if kind == "scaled_linear":
        return {"type": "scaled_linear", **table, "beta_start": config["beta_start"],
                "beta_end": config["beta_end"]}
    if kind == "squaredcos_cap_v2":
        return {"type": "cosine", **table}
    import diffusers  # any other beta_schedule: β as diffusers' own class computes them

    plain = {**config, "rescale_betas_zero_snr": False} if "rescale_betas_zero_snr" in config \
        else config
    try:
        scheduler = getattr(diffusers, name).from_config(plain)
    except (NotImplementedError, ValueError) as exc:
        raise _refuse(f"beta_schedule '{kind}' is not supported: {exc}") from None
    betas = scheduler.betas.double().tolist()
    return {"type": "betas", "betas": betas, "rescale_zero_terminal_snr": rescale}


def sampler_table(name: str, config: dict[str, Any]) -> dict[str, Any]:
    """[diffusion.sampler]: the default sampler standing for the scheduler (see the module
    docstring); refuses what corediff cannot do the same way."""
    if config.get("thresholding"):
        raise _refuse("thresholding (dynamic thresholding of x̂0) is not supported; set "
                      "thresholding to false in the scheduler config to import without it")
    clip = bool(config.get("clip_sample", False))
    if clip and float(config.get("clip_sample_range", 1.0)) != 1.0:
        raise _refuse(f"clip_sample_range {config['clip_sample_range']} is not supported: "
                      "corediff clamps x̂0 to [-1, 1] only")
    if config.get("use_flow_sigmas"):
        raise _refuse(f"{name} with use_flow_sigmas (a flow-matching model) is not supported")
    kind = SCHEDULERS[name]
    if kind == "ddpm":
        variance = str(config.get("variance_type", "fixed_small"))
        table: dict[str, Any] = {"type": "ddpm", "clip_x0": clip, "variance": (
            "fixed_large" if variance.startswith("fixed_large") else "fixed_small")}
        return table
    if kind == "ddim":
        return {"type": "ddim", "steps": 50, "spacing": "trailing", "clip_x0": clip}
    spacing = config.get("timestep_spacing", "linspace")
    table = {"type": kind, "steps": 50 if kind == "euler" else 20,
             "sigmas": "karras" if config.get("use_karras_sigmas") else "schedule",
             "spacing": spacing if spacing in ("linspace", "leading", "trailing") else "linspace"}
    if kind == "dpmpp_2m" and config.get("algorithm_type") == "sde-dpmsolver++":
        table["sde"] = True
    return table


def parameterization_table(config: dict[str, Any]) -> dict[str, Any]:
    prediction = config.get("prediction_type", "epsilon")
    if prediction not in PREDICTIONS:
        raise _refuse(f"prediction_type '{prediction}' is not supported: corediff imports "
                      f"{', '.join(PREDICTIONS)}")
    table: dict[str, Any] = {"type": PREDICTIONS[prediction]}
    variance = config.get("variance_type")
    if variance == "learned":
        raise _refuse("variance_type 'learned' (an unbounded log variance) is not supported; "
                      "corediff's learned variance is 'learned_range'")
    if variance == "learned_range":
        table["variance"] = "learned_range"
    return table


def model_table(unet: dict[str, Any], num_classes: int | None) -> tuple[dict[str, Any], dict]:
    """([model] table, data spec) from the UNet's config.json; refuses what corediff's
    null-label contract or image data cannot hold."""
    from diffusers import UNet2DModel

    signature = inspect.signature(UNet2DModel.__init__).parameters
    size = unet.get("sample_size")
    if isinstance(size, list | tuple):
        if len(size) != 2 or size[0] != size[1]:
            raise _refuse(f"the UNet's sample_size {size} is not square; corediff's images are")
        size = size[0]
    if not isinstance(size, int) or size < 1:
        raise _refuse(f"the UNet's sample_size {size!r} is not a positive integer")
    channels = unet.get("in_channels", signature["in_channels"].default)
    if channels not in (1, 3):
        raise _refuse(f"the UNet takes {channels} channels; corediff imports image-space "
                      "models of 1 or 3 channels (a latent model needs its autoencoder)")
    if unet.get("class_embed_type") is not None:
        raise _refuse(f"class_embed_type '{unet['class_embed_type']}' is not supported; "
                      "corediff's class labels use the UNet's own class embedding")
    embeds = unet.get("num_class_embeds")
    if embeds is None and num_classes is not None:
        raise _refuse(f"--num-classes {num_classes} was given but the UNet is unconditional "
                      "(no num_class_embeds)")
    if embeds is not None and num_classes is None:
        raise _refuse(f"the UNet is class-conditional with {embeds} class rows and corediff "
                      "needs the last to be the null label; if it is, pass --num-classes "
                      f"{embeds - 1}, else it cannot be imported")
    if embeds is not None and embeds != num_classes + 1:
        raise _refuse(f"--num-classes {num_classes} needs {num_classes + 1} class rows (the "
                      f"last: the null label) but the UNet has {embeds}")
    keys = {k: v for k, v in unet.items() if not k.startswith("_") and k not in FROM_DATA
            and k in signature}
    table = {"type": "diffusers_unet2d", "timestep_offset": -1,
             "unet": {k: v for k, v in keys.items() if v is not None},
             "unet_none": sorted(k for k, v in keys.items()
                                 if v is None and signature[k].default is not None)}
    spec = {"channels": channels, "image_size": size, "num_classes": num_classes}
    return table, spec


def build_recipe(unet: dict[str, Any], scheduler: dict[str, Any], name: str, *,
                 run_name: str, num_classes: int | None = None,
                 data_root: str = DEFAULT_DATA_ROOT) -> tuple[dict[str, Any], dict]:
    """(recipe data, data spec) for a pipeline's UNet and completed scheduler configs."""
    model, spec = model_table(unet, num_classes)
    parameterization = parameterization_table(scheduler)
    out_channels = unet.get("out_channels", 3)
    expected = spec["channels"] * (2 if parameterization.get("variance") else 1)
    if out_channels != expected:
        raise _refuse(f"the UNet outputs {out_channels} channels; a model of "
                      f"{spec['channels']} channels with variance_type "
                      f"{scheduler.get('variance_type')!r} outputs {expected}")
    recipe = {
        "data": {"type": "image_folder", "root": data_root, "image_size": spec["image_size"],
                 "channels": spec["channels"], "class_labels": num_classes is not None,
                 "hflip": False},
        "model": model,
        "diffusion": {
            "schedule": schedule_table(name, scheduler),
            "degradation": {"type": "gaussian"},
            "parameterization": parameterization,
            "loss_weighting": {"type": "simple"},
            "sampler": sampler_table(name, scheduler),
            "prior": {"type": "normal"},
        },
        "sample": {"n": 16, "batch_size": 16},
        "run": {"name": run_name},
    }
    return recipe, spec


# -- weights and the checkpoint's state ----------------------------------------------------------
def read_weights(unet_dir: Path) -> dict[str, torch.Tensor]:
    """The UNet's state dict: safetensors, or a .bin read without unpickling code."""
    safe = unet_dir / "diffusion_pytorch_model.safetensors"
    if safe.is_file():
        from safetensors.torch import load_file

        return load_file(str(safe))
    binary = unet_dir / "diffusion_pytorch_model.bin"
    if binary.is_file():
        return torch.load(binary, map_location="cpu", weights_only=True)
    raise _refuse(f"'{unet_dir}' holds no diffusion_pytorch_model.safetensors (or .bin); "
                  "sharded or variant weights are not supported")


def imported_state(pipeline: Any, seed: int, provenance: dict[str, Any]) -> dict[str, Any]:
    """The state a trainer has before its first step (step 0, fresh optimizer and seeded
    random states, what :meth:`corediff.engine.trainer.Trainer.state` writes) and where the
    weights came from; nothing is claimed about how they were trained."""
    recipe, spec = pipeline.recipe, pipeline.data_spec
    optimizer = torch.optim.AdamW(pipeline.model.parameters(), lr=recipe.train.lr,
                                  weight_decay=recipe.train.weight_decay)
    lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    generator = torch.Generator().manual_seed(seed)
    return {
        "step": 0, "smoothed": None, "best": math.inf, "train_seconds": 0.0, "pending": [],
        "corediff_version": __version__, "val_loss": None, "val_history": [],
        "world_size": 1,
        "data_spec": {"channels": spec.channels, "image_size": spec.image_size,
                      "num_classes": spec.num_classes},
        "optimizer": optimizer.state_dict(),
        "scheduler": {k: v for k, v in lr_scheduler.state_dict().items() if k != "lr_lambdas"},
        "scaler": torch.amp.GradScaler("cpu", enabled=False).state_dict(),
        "ranks": [{"generator": generator.get_state(), "torch": generator.get_state()}],
        "rng": {"numpy": np.random.RandomState(seed).get_state(),
                "python": random.Random(seed).getstate(), "cuda": []},
        "extra": {k: c.extra_state() for k, c in pipeline.components().items()},
        "imported": provenance,
    }


def import_pipeline(source: str, run_dir: str | Path, *, num_classes: int | None = None,
                    data_root: str = DEFAULT_DATA_ROOT, revision: str | None = None) -> Path:
    """Write the run directory ``run_dir`` for a diffusers pipeline folder or repo id
    (see the module docstring); returns it. Written beside it under a temporary name and
    renamed into place, so an interrupted import leaves no run."""
    from corediff.builder import DataSpec, build
    from corediff.engine import checkpoint
    from corediff.engine.rundir import RunDir
    from corediff.paths import check_folder
    from corediff.recipe import parse_recipe, recipe_to_toml

    target = Path(run_dir).expanduser()
    if os.path.lexists(target) and not (target.is_dir() and not any(target.iterdir())):
        raise _refuse(f"--run-dir '{target}' exists and is not an empty folder; give a new one")
    check_folder("--run-dir", target.parent)
    folder = resolve_source(source, revision)
    unet, raw_scheduler, name = read_folder(folder)
    config = scheduler_config(name, raw_scheduler)
    run_name = re.sub(r"[^A-Za-z0-9._-]", "_", target.resolve().name)[:100] or "imported"
    data, spec = build_recipe(unet, config, name, run_name=run_name, num_classes=num_classes,
                              data_root=data_root)
    data["run"]["root"] = str(target.resolve().parent)
    recipe = parse_recipe(data, source=f"the recipe imported from '{source}'")
    pipeline = build(recipe, data_spec=DataSpec(**spec))
    weights = read_weights(folder / "unet")
    try:
        pipeline.model.net.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        raise _refuse(f"the UNet weights of '{source}' do not fit its config.json: "
                      f"{' '.join(str(exc).split())[:300]}") from None
    provenance = {"from": "diffusers", "source": source, "revision": revision,
                  "scheduler": name, "model": "UNet2DModel",
                  "diffusers_version": unet.get("_diffusers_version")}
    state = imported_state(pipeline, recipe.run.seed, provenance)
    text = recipe_to_toml(recipe)
    def populate(folder: Path) -> None:
        run = RunDir(folder)
        checkpoint.atomic_write_text(run.recipe, text)
        checkpoint.save(run.checkpoint("last"), model=pipeline.model, ema=pipeline.model,
                        state=state, recipe_toml=text)
        checkpoint.copy(run.checkpoint("last"), run.checkpoint("best"))  # the only one

    checkpoint.atomic_dir(target, populate)  # a temporary folder swapped in when complete
    return target
