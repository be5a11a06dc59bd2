"""``corediff import diffusers``: a randomly initialised tiny UNet2DModel saved with
``DDPMPipeline.save_pretrained`` and imported samples what diffusers' own DDPMPipeline and
DDIMPipeline sample from the same generator seed (the same x_T and per-step noise: both draw
x_T, then one normal tensor per stochastic step, from one CPU generator in that order).

Tolerance, outputs in [0, 1]: DDPM on all 200 steps 1e-4 (measured 2.8e-5: diffusers keeps ᾱ
and the posterior in float32, corediff in float64, and 200 noisy steps carry the rounding);
DDIM 50 steps 1e-5 (measured 6.6e-7 at η = 0, 1.3e-6 at η = 1). diffusers' DDIM runs with
``use_clipped_model_output=True``: corediff's DDIM with clip_x0 recomputes ε̂ from the
clipped x̂0 (improved-diffusion's rule). The schedules are compared with diffusers' ᾱ for
every beta_schedule the importer maps. No network: the hub path is exercised offline only.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import (
    DDIMPipeline,
    DDIMScheduler,
    DDPMPipeline,
    DDPMScheduler,
    UNet2DModel,
)

import corediff
from corediff.cli import main
from corediff.diffusers_import import build_recipe, schedule_table, scheduler_config
from corediff.recipe import parse_recipe

T = 200
UNET = {"sample_size": 8, "block_out_channels": (32, 64), "layers_per_block": 1,
        "down_block_types": ("DownBlock2D", "AttnDownBlock2D"),
        "up_block_types": ("AttnUpBlock2D", "UpBlock2D"), "norm_num_groups": 8,
        "attention_head_dim": None}  # None: one head per block, as google/ddpm-* configs


def save_pipeline(folder: Path, scheduler=None, **unet) -> Path:
    torch.manual_seed(0)
    model = UNet2DModel(**{**UNET, **unet})
    DDPMPipeline(unet=model, scheduler=scheduler or DDPMScheduler(num_train_timesteps=T)
                 ).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("diffusers")
    folder = save_pipeline(root / "pipeline")
    run = root / "run"
    assert main(["import", "diffusers", str(folder), "--run-dir", str(run)]) == 0
    return folder, run


def _unit(images: torch.Tensor) -> np.ndarray:
    """corediff's [-1, 1] NCHW as the pipelines' output_type='np': [0, 1] NHWC."""
    return (images / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()


def test_imported_run_samples_like_ddpm_and_ddim_pipelines(imported) -> None:
    folder, run = imported
    unet = UNet2DModel.from_pretrained(folder / "unet")
    pipeline = corediff.load(run)
    assert pipeline.sampler.config.type == "ddpm" and pipeline.sampler.config.clip_x0
    ddpm = DDPMPipeline(unet=unet, scheduler=DDPMScheduler.from_pretrained(folder / "scheduler"))
    theirs = ddpm(batch_size=2, generator=torch.Generator().manual_seed(3),
                  num_inference_steps=T, output_type="np").images
    ours = _unit(pipeline.sample(2, seed=3))
    gap = np.abs(ours - theirs).max()
    print(f"DDPM {T} steps: max abs difference {gap:.2e}")
    assert gap < 1e-4 and theirs.std() > 0.1
    for eta in (0.0, 1.0):
        ddim = corediff.load(run, overrides=["diffusion.sampler.type='ddim'",
                                             f"diffusion.sampler.eta={eta}",
                                             "diffusion.sampler.steps=50"])
        scheduler = DDIMScheduler.from_pretrained(folder / "scheduler",
                                                  timestep_spacing="trailing")
        theirs = DDIMPipeline(unet=unet, scheduler=scheduler)(
            batch_size=2, generator=torch.Generator().manual_seed(3), eta=eta,
            num_inference_steps=50, output_type="np", use_clipped_model_output=True).images
        gap = np.abs(_unit(ddim.sample(2, seed=3)) - theirs).max()
        print(f"DDIM 50 steps, eta {eta}: max abs difference {gap:.2e}")
        assert gap < 1e-5


def test_run_directory_is_a_step_zero_checkpoint_with_provenance(imported) -> None:
    folder, run = imported
    state = json.loads((run / "checkpoints" / "last" / "state.json").read_text())
    assert state["step"] == 0 and state["optimizer"]["state"] == {}
    assert state["imported"]["source"] == str(folder)
    assert state["imported"]["scheduler"] == "DDPMScheduler"
    assert (run / "checkpoints" / "best" / "state.json").is_file()


@pytest.mark.parametrize("config", [
    {"beta_schedule": "linear"},
    {"beta_schedule": "linear", "num_train_timesteps": 200, "beta_end": 0.03},
    {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012},
    {"beta_schedule": "squaredcos_cap_v2"},
    {"beta_schedule": "sigmoid"},
    {"trained_betas": np.linspace(2e-4, 0.03, 300).tolist(), "num_train_timesteps": 300},
    {"beta_schedule": "scaled_linear", "rescale_betas_zero_snr": True,
     "prediction_type": "v_prediction"},
], ids=["linear", "linear_T200", "scaled_linear", "cosine", "sigmoid", "trained_betas",
        "zero_snr"])
def test_schedule_matches_diffusers_alphas_cumprod(config) -> None:
    scheduler = DDPMScheduler(**config)
    table = schedule_table("DDPMScheduler", scheduler_config("DDPMScheduler", config))
    alpha_bar = corediff.create("schedule", table.pop("type"), **table).values()
    assert alpha_bar[0] == 1 and len(alpha_bar) == scheduler.config.num_train_timesteps + 1
    torch.testing.assert_close(alpha_bar[1:], scheduler.alphas_cumprod.double(),
                               rtol=0, atol=2e-6)


@pytest.mark.parametrize(("scheduler", "extra", "sampler", "parameterization"), [
    ("DDIMScheduler", {"prediction_type": "v_prediction", "clip_sample": False}, "ddim", "v"),
    ("PNDMScheduler", {"prediction_type": "sample"}, "ddim", "x0"),
    ("EulerDiscreteScheduler", {"use_karras_sigmas": True}, "euler", "eps"),
    ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}, "dpmpp_2m", "eps"),
    ("UniPCMultistepScheduler", {"timestep_spacing": "trailing"}, "unipc", "eps"),
    ("DDPMScheduler", {"variance_type": "learned_range"}, "ddpm", "eps"),
])
def test_each_scheduler_becomes_a_recipe(scheduler, extra, sampler, parameterization) -> None:
    config = scheduler_config(scheduler, extra)
    learned = extra.get("variance_type") == "learned_range"
    unet = {**UNET, "in_channels": 3, "out_channels": 6 if learned else 3}
    data, _ = build_recipe(unet, config, scheduler, run_name="x")
    recipe = parse_recipe(data)
    assert recipe.diffusion.sampler.type == sampler
    assert recipe.diffusion.parameterization.type == parameterization
    if scheduler == "EulerDiscreteScheduler":
        assert recipe.diffusion.sampler.sigmas == "karras"
    if scheduler == "DPMSolverMultistepScheduler":
        assert recipe.diffusion.sampler.sde
    if learned:
        assert recipe.diffusion.parameterization.variance == "learned_range"


def test_class_conditional_unet_keeps_its_null_row(tmp_path, capsys) -> None:
    folder = save_pipeline(tmp_path / "pipeline", num_class_embeds=3)
    _refused(["import", "diffusers", str(folder), "--run-dir", str(tmp_path / "no")],
             "if it is, pass --num-classes 2", capsys)
    _refused(["import", "diffusers", str(folder), "--run-dir", str(tmp_path / "no"),
              "--num-classes", "3"], "needs 4 class rows", capsys)
    run = tmp_path / "run"
    assert main(["import", "diffusers", str(folder), "--run-dir", str(run),
                 "--num-classes", "2"]) == 0
    pipeline = corediff.load(run, overrides=["diffusion.guidance={type='cfg', scale=2.0}",
                                             "diffusion.sampler.type='ddim'",
                                             "diffusion.sampler.steps=4"])
    unet = UNet2DModel.from_pretrained(folder / "unet").eval()
    x, t = torch.randn(3, 3, 8, 8), torch.tensor([5, 50, 200])
    with torch.no_grad():
        for y in (torch.tensor([0, 1, 0]), None):
            rows = torch.full((3,), 2) if y is None else y  # None: the null row, 2
            torch.testing.assert_close(pipeline.model(x, t, y),
                                       unet(x, t - 1, class_labels=rows).sample)
    assert pipeline.sample(2, labels=1, seed=0).shape == (2, 3, 8, 8)


def _refused(argv: list[str], phrase: str, capsys, env: dict | None = None) -> None:
    """Exit 2 with one line holding ``phrase`` (in a fresh process when ``env`` is given)."""
    if env is None:
        code, err = main(argv), capsys.readouterr().err
    else:
        result = subprocess.run([sys.executable, "-m", "corediff", *argv],
                                capture_output=True, text=True, env=env)
        code, err = result.returncode, result.stderr
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and phrase in lines[0], err


def _edit(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, **changes}))


def test_unsupported_folders_are_refused_in_one_sentence(imported, tmp_path, capsys) -> None:
    folder, run = imported
    bad = tmp_path / "bad"
    cases = [
        ("scheduler/scheduler_config.json", {"_class_name": "LMSDiscreteScheduler"},
         "scheduler class 'LMSDiscreteScheduler' is not supported"),
        ("unet/config.json", {"_class_name": "UNet2DConditionModel"},
         "model class 'UNet2DConditionModel' is not supported"),
        ("scheduler/scheduler_config.json", {"thresholding": True}, "thresholding"),
        ("scheduler/scheduler_config.json", {"clip_sample_range": 2.0}, "clip_sample_range"),
        ("scheduler/scheduler_config.json", {"prediction_type": "flow_prediction"},
         "prediction_type 'flow_prediction'"),
    ]
    for file, change, phrase in cases:
        shutil.rmtree(bad, ignore_errors=True)
        shutil.copytree(folder, bad)
        _edit(bad / file, **change)
        _refused(["import", "diffusers", str(bad), "--run-dir", str(tmp_path / "r")], phrase,
                 capsys)
        assert not (tmp_path / "r").exists()
    _refused(["import", "diffusers", str(folder), "--run-dir", str(run)],
             "exists and is not an empty folder", capsys)
    _refused(["import", "diffusers", str(tmp_path / "nothing" / "here"), "--run-dir",
              str(tmp_path / "r")], "neither a folder nor a Hugging Face repo id", capsys)
    # a repo id goes to huggingface_hub.snapshot_download: offline with an empty cache here
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    _refused(["import", "diffusers", "someone/some-ddpm", "--run-dir", str(tmp_path / "r")],
             "could not download 'someone/some-ddpm'", capsys, env=env)
    assert not (tmp_path / "r").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".r.")]


def test_sample_npz_and_eval_open_the_imported_run(imported, tmp_path) -> None:
    _, run = imported
    images = tmp_path / "images"
    images.mkdir()
    from PIL import Image

    for i in range(4):
        pixels = np.random.default_rng(i).integers(0, 256, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(images / f"{i}.png")
    fast = ["--set", "diffusion.sampler.type='ddim'", "--set", "diffusion.sampler.steps=3"]
    out = tmp_path / "s.npz"
    assert main(["sample", str(run), "--n", "2", "--format", "npz", "--out", str(out),
                 *fast]) == 0
    assert np.load(out)["arr_0"].shape == (2, 8, 8, 3)
    report = tmp_path / "eval.json"
    assert main(["eval", str(run), "--n", "2", "--out", str(report), *fast,
                 "--set", f"data.root='{images}'"]) == 0
    assert "memorization" in json.loads(report.read_text())
