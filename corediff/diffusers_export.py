"""Exporting a corediff run as a diffusers pipeline folder (``corediff export RUN --to
diffusers DIR``), the reverse of :mod:`corediff.diffusers_import`.

A run of the discrete Gaussian (VP) process whose model is ``diffusers_unet2d`` becomes
``save_pretrained``'s layout — ``model_index.json``, ``unet/`` (config and safetensors
weights, the EMA weights unless ``[sample] use_ema`` is false) and
``scheduler/scheduler_config.json`` — so that ``DDPMPipeline.from_pretrained(DIR)`` (or
``DDIMPipeline``) samples what ``corediff sample`` samples from the same noise:

* **scheduler class**: ``DDPMScheduler`` (a ``DDPMPipeline`` folder) when the run's sampler is
  ``ddpm``, else ``DDIMScheduler`` (a ``DDIMPipeline`` folder); the run's sampler spacing
  becomes ``timestep_spacing`` ("trailing" or "linspace"; "leading" only when it keeps
  every step, since corediff then visits T first and diffusers does not; improved-diffusion's
  strings have no diffusers form; both refused), ``steps_offset = 0``,
  ``set_alpha_to_one = True`` (corediff's last step lands on ᾱ_0 = 1). diffusers' DDIM
  steps from timestep t to t − T/N whatever the spacing, so ``DDIMPipeline`` equals
  corediff's DDIM for "trailing" with N dividing T; ``DDPMScheduler`` follows any grid;
* **schedule**: ``linear`` → ``beta_schedule = "linear"`` (ends scaled by 1000/T, as corediff
  does), ``scaled_linear`` → "scaled_linear", ``cosine`` → "squaredcos_cap_v2" when
  diffusers' ᾱ then agrees with corediff's within 5e-6, any other schedule (or a named one that
  does not agree) → ``trained_betas``; ``rescale_zero_terminal_snr`` →
  ``rescale_betas_zero_snr``;
* **parameterization** → ``prediction_type`` (eps → epsilon, x0 → sample, v →
  v_prediction); ``variance = "learned_range"`` → ``variance_type = "learned_range"``, else
  the DDPM sampler's fixed_small / fixed_large; the sampler's ``clip_x0`` → ``clip_sample``
  (range 1; for DDIM call the pipeline with ``use_clipped_model_output=True``, which is what
  corediff's DDIM does when it clips);
* **time**: diffusers' timestep k is corediff's step k + 1. The model's ``timestep_offset``
  (0 for a network corediff trained, -1 for one it imported) is folded into the weights: the
  sinusoidal embedding of t + δ is a fixed rotation of the embedding of t (sin(w(t+δ)) =
  sin(wt)cos(wδ) + cos(wt)sin(wδ), per frequency w), so the time MLP's first weight W becomes
  W·R(δ) and the UNet keeps diffusers' own config; checked after writing on a few timesteps.

Refused in one sentence: a degradation other than Gaussian noise (blur, SVD, EDM, flow), a
parameterization diffusers has no ``prediction_type`` for, another model (corediff's own
``unet`` has no weight-for-weight diffusers equivalent), a class-conditional run (diffusers'
DDPM/DDIM pipelines are unconditional), a prior other than a unit normal at T, a Fourier or
learned time embedding with a timestep offset, and a non-empty DIR. The folder is written
beside DIR under a temporary name and renamed into place.

Pushing the folder to the Hugging Face Hub (not done by corediff):
``huggingface_hub.HfApi().upload_folder(repo_id="me/my-ddpm", folder_path=DIR)`` after
``huggingface-cli login`` (or ``DDPMPipeline.from_pretrained(DIR).push_to_hub("me/my-ddpm")``).
"""

from __future__ import annotations

import copy
import json
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from corediff import __version__
from corediff.engine import checkpoint
from corediff.errors import ConfigError

PREDICTIONS = {"eps": "epsilon", "x0": "sample", "v": "v_prediction"}
NAMED = {"linear": "linear", "scaled_linear": "scaled_linear", "cosine": "squaredcos_cap_v2"}
SPACINGS = ("leading", "trailing", "linspace")
#: How far diffusers' float32 ᾱ may be from corediff's for a named beta_schedule to be used.
ALPHA_BAR_TOLERANCE = 5e-6


def check_exportable(pipeline: Any) -> None:
    """Refuse, in one sentence, a run diffusers' DDPM/DDIM pipelines cannot express."""
    diffusion = pipeline.recipe.diffusion
    kind = diffusion.degradation.type
    if kind != "gaussian":
        raise ConfigError(
            f"the run's degradation '{kind}' cannot be exported to diffusers: its DDPM/DDIM "
            "pipelines express only the discrete Gaussian (VP) process, not blur, SVD, EDM or "
            "flow degradations")
    if not hasattr(pipeline.schedule, "betas"):
        raise ConfigError(f"the run's schedule '{diffusion.schedule.type}' defines no β_1..β_T, "
                          "which a diffusers scheduler needs")
    parameterization = diffusion.parameterization.type
    if parameterization not in PREDICTIONS:
        raise ConfigError(
            f"parameterization '{parameterization}' has no diffusers prediction_type; "
            f"exportable: {', '.join(PREDICTIONS)}")
    model = pipeline.recipe.model.type
    if model != "diffusers_unet2d":
        raise ConfigError(
            f"model '{model}' has no diffusers equivalent weight for weight; corediff exports "
            "runs whose [model] type is 'diffusers_unet2d' (diffusers' UNet2DModel)")
    if pipeline.data_spec.num_classes is not None:
        raise ConfigError("a class-conditional run cannot be exported: diffusers' DDPMPipeline "
                          "and DDIMPipeline are unconditional")
    prior = diffusion.prior
    if prior.type != "normal" or prior.scale != 1.0:
        raise ConfigError(f"prior '{prior.type}' (scale {getattr(prior, 'scale', '-')}) cannot "
                          "be exported: diffusers' pipelines start from a unit normal at T")
    spacing = getattr(diffusion.sampler, "spacing", "trailing")
    if spacing not in SPACINGS:
        raise ConfigError(
            f"sampler spacing '{spacing}' has no diffusers timestep_spacing; export with "
            "--set diffusion.sampler.spacing='trailing' (or 'linspace')")
    timesteps = getattr(pipeline.sampler, "timesteps", None)
    if timesteps is not None and timesteps(pipeline.prior.start_step()) != timesteps(None):
        raise ConfigError(
            f"the run's sampler visits step T first and then its '{spacing}' grid, which no "
            "diffusers timestep_spacing does; export with --set "
            "diffusion.sampler.spacing='trailing' (or 'linspace')")


# -- the scheduler -------------------------------------------------------------------------------
def _betas(schedule: Any, rescaled: bool) -> list[float]:
    """β_1..β_T of the schedule before the zero-terminal-SNR rescale (which diffusers
    applies itself) — or after it when ``rescaled``."""
    if not rescaled:
        return [float(b) for b in schedule.betas().double()]
    alpha_bar = schedule.values().double()
    return [float(b) for b in (1 - alpha_bar[1:] / alpha_bar[:-1])]


def schedule_config(pipeline: Any) -> dict[str, Any]:
    """The scheduler config keys for the run's schedule (named beta_schedule when diffusers
    reproduces ᾱ, else trained_betas)."""
    config = pipeline.recipe.diffusion.schedule
    steps = int(pipeline.schedule.steps)
    rescale = bool(getattr(config, "rescale_zero_terminal_snr", False))
    base = {"num_train_timesteps": steps, "rescale_betas_zero_snr": rescale}
    named = NAMED.get(config.type)
    if named == "linear":
        base |= {"beta_schedule": "linear", "beta_start": config.beta_start * 1000 / steps,
                 "beta_end": config.beta_end * 1000 / steps}
    elif named == "scaled_linear":
        base |= {"beta_schedule": "scaled_linear", "beta_start": config.beta_start,
                 "beta_end": config.beta_end}
    elif named:
        base |= {"beta_schedule": named}
    target = pipeline.schedule.values().double()[1:]
    if named and _agrees(base, target):
        return base
    return {"num_train_timesteps": steps, "rescale_betas_zero_snr": rescale,
            "trained_betas": _betas(pipeline.schedule, rescaled=False)}


def _agrees(config: dict[str, Any], alpha_bar: torch.Tensor) -> bool:
    from diffusers import DDPMScheduler

    try:
        theirs = DDPMScheduler(**config).alphas_cumprod.double()
    except (ValueError, NotImplementedError):
        return False
    return theirs.shape == alpha_bar.shape and bool(
        (theirs - alpha_bar).abs().max() <= ALPHA_BAR_TOLERANCE)


def scheduler_for(pipeline: Any) -> tuple[Any, str]:
    """(the diffusers scheduler, the pipeline class name) standing for the run's sampler."""
    import diffusers

    diffusion = pipeline.recipe.diffusion
    sampler = diffusion.sampler
    keys: dict[str, Any] = {
        **schedule_config(pipeline),
        "prediction_type": PREDICTIONS[diffusion.parameterization.type],
        "clip_sample": bool(getattr(sampler, "clip_x0", False)), "clip_sample_range": 1.0,
        "thresholding": False, "steps_offset": 0,
        "timestep_spacing": getattr(sampler, "spacing", "trailing"),
    }
    learned = getattr(diffusion.parameterization, "variance", "fixed") == "learned_range"
    if sampler.type == "ddpm":
        keys["variance_type"] = "learned_range" if learned else sampler.variance
        return diffusers.DDPMScheduler(**keys), "DDPMPipeline"
    return diffusers.DDIMScheduler(**keys, set_alpha_to_one=True), "DDIMPipeline"


# -- the UNet ------------------------------------------------------------------------------------
def shift_time_embedding(net: Any, delta: int) -> None:
    """Make ``net(x, k)`` compute what ``net(x, k + delta)`` computed, by rotating the
    sinusoidal embedding inside the time MLP's first linear layer (see the module docstring)."""
    if delta == 0:
        return
    config = net.config
    if config.time_embedding_type != "positional":
        raise ConfigError(
            f"a '{config.time_embedding_type}' time embedding cannot absorb the timestep offset "
            f"{delta} (only the sinusoidal 'positional' one can); not exportable")
    dim = config.block_out_channels[0]
    half = dim // 2
    # the frequencies exactly as diffusers' get_timestep_embedding computes them (float32)
    exponent = -math.log(10000) * torch.arange(half, dtype=torch.float32)
    freqs = torch.exp(exponent / (half - config.freq_shift)).double()
    cos, sin = torch.cos(freqs * delta), torch.sin(freqs * delta)
    first = torch.arange(half)
    sin_at, cos_at = (first + half, first) if config.flip_sin_to_cos else (first, first + half)
    rotation = torch.eye(dim, dtype=torch.float64)  # an odd dim's zero pad stays as it is
    rotation[sin_at, sin_at], rotation[sin_at, cos_at] = cos, sin
    rotation[cos_at, cos_at], rotation[cos_at, sin_at] = cos, -sin
    weight = net.time_embedding.linear_1.weight
    with torch.no_grad():
        weight.copy_((weight.double() @ rotation).to(weight.dtype))


def exported_unet(pipeline: Any) -> Any:
    """A float32 copy of the run's UNet2DModel whose timestep k is corediff's step k + 1."""
    model = pipeline.model
    net = copy.deepcopy(model.net).float().cpu().eval()
    shift_time_embedding(net, 1 + model.config.timestep_offset)
    return net


def self_check(pipeline: Any, unet: Any) -> float:
    """Largest |UNet(x, k) − corediff model(x, k + 1)| over a few timesteps k, relative to
    the output's scale (float32 rounding: about 1e-6)."""
    steps = int(pipeline.schedule.steps)
    spec = pipeline.data_spec
    x = torch.randn(3, spec.channels, spec.image_size, spec.image_size,
                    generator=torch.Generator().manual_seed(0))
    k = torch.tensor([0, steps // 2, steps - 1])
    model = copy.deepcopy(pipeline.model).float().cpu().eval()
    with torch.no_grad():
        theirs = unet(x, k).sample
        ours = model(x, k + 1)
    return float((theirs - ours).abs().max() / ours.abs().max().clamp_min(1e-12))


# -- writing -------------------------------------------------------------------------------------
def model_card(source: str, pipeline_class: str, recipe: Any) -> str:
    diffusion = recipe.diffusion
    return (
        f"---\nlibrary_name: diffusers\ntags:\n- corediff\n- unconditional-image-generation\n"
        f"---\n# {recipe.run.name}\n\nExported by corediff {__version__} from `{source}` "
        f"(schedule {diffusion.schedule.type}, parameterization "
        f"{diffusion.parameterization.type}, sampler {diffusion.sampler.type}).\n\n"
        f"```python\nfrom diffusers import {pipeline_class}\n\n"
        f"pipe = {pipeline_class}.from_pretrained(\"<this folder or repo>\")\n"
        f"images = pipe(batch_size=4).images\n```\n")


def export_run(source: str | Path, out: str | Path, *, which: str = "last",
               overrides: Iterable[str] = ()) -> tuple[Path, str, float]:
    """Write the diffusers pipeline folder ``out`` for a run directory or checkpoint
    ``source``; returns (folder, pipeline class, self-check gap)."""
    import corediff
    from corediff.paths import check_folder

    target = Path(out).expanduser()
    if os.path.lexists(target) and not (target.is_dir() and not any(target.iterdir())):
        raise ConfigError(f"'{target}' exists and is not an empty folder; give a new one")
    check_folder("DIR", target.parent)
    pipeline = corediff.load(source, which=which, overrides=list(overrides))
    check_exportable(pipeline)
    scheduler, pipeline_class = scheduler_for(pipeline)
    unet = exported_unet(pipeline)
    gap = self_check(pipeline, unet)
    if not gap < 1e-3:
        raise ConfigError(f"the exported UNet disagrees with the run's model (relative gap "
                          f"{gap:.2g}); not written")
    import diffusers

    def populate(folder: Path) -> None:
        getattr(diffusers, pipeline_class)(unet=unet, scheduler=scheduler).save_pretrained(folder)
        (folder / "README.md").write_text(model_card(str(source), pipeline_class,
                                                     pipeline.recipe), encoding="utf-8")
        (folder / "corediff_export.json").write_text(json.dumps(
            {"source": str(source), "checkpoint": which, "corediff_version": __version__,
             "self_check_relative_gap": gap}, indent=2), encoding="utf-8")

    checkpoint.atomic_dir(target, populate)  # a temporary folder swapped in when complete
    return target, pipeline_class, gap
