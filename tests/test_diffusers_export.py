"""``corediff export RUN --to diffusers DIR``: the folder it writes is opened by diffusers'
own ``DDPMPipeline`` / ``DDIMPipeline.from_pretrained`` and samples what corediff samples
from the same generator seed (both draw x_T, then one normal tensor per stochastic step, from
one CPU generator in that order).

Two round trips: (1) a random tiny UNet2DModel pipeline imported with ``corediff import
diffusers`` and exported back (timestep_offset -1: the weights pass through unchanged);
(2) a diffusers_unet2d run corediff trained for a few steps on digits (timestep_offset 0:
the +1 step shift is folded into the time MLP's first weight). Tolerance, outputs in [0, 1]:
DDPM 1e-4 over all steps (diffusers keeps ᾱ and the posterior in float32, corediff in
float64), DDIM 1e-5. The measured gaps are printed (pytest -s).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")

from diffusers import (  # noqa: E402
    DDIMPipeline,
    DDIMScheduler,
    DDPMPipeline,
    DDPMScheduler,
    UNet2DModel,
)

import corediff  # noqa: E402
from corediff.cli import main  # noqa: E402

T = 100
UNET = {"sample_size": 8, "block_out_channels": (32, 64), "layers_per_block": 1,
        "down_block_types": ("DownBlock2D", "AttnDownBlock2D"),
        "up_block_types": ("AttnUpBlock2D", "UpBlock2D"), "norm_num_groups": 8,
        "attention_head_dim": None}
TRAINED = {
    "data": {"type": "digits", "image_size": 8, "class_labels": False},
    "model": {"type": "diffusers_unet2d"},
    "diffusion": {
        "schedule": {"type": "linear", "steps": T}, "degradation": {"type": "gaussian"},
        "parameterization": {"type": "eps"}, "loss_weighting": {"type": "simple"},
        "sampler": {"type": "ddpm", "clip_x0": True}, "prior": {"type": "normal"},
    },
    "train": {"steps": 3, "batch_size": 8},
    "sample": {"n": 2, "batch_size": 2},
    "run": {"device": "cpu"},
}


def _unit(images: torch.Tensor) -> np.ndarray:
    """corediff's [-1, 1] NCHW as the pipelines' output_type='np': [0, 1] NHWC."""
    return (images / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()


def _ddpm_gap(run: Path, folder: Path, steps: int = T, spacing: str = "trailing") -> float:
    pipe = DDPMPipeline.from_pretrained(folder)
    pipe.scheduler = DDPMScheduler.from_config(pipe.scheduler.config, timestep_spacing=spacing)
    theirs = pipe(batch_size=2, generator=torch.Generator().manual_seed(3),
                  num_inference_steps=steps, output_type="np").images
    ours = _unit(corediff.load(run, which="last", overrides=[
        f"diffusion.sampler.steps={steps}", f"diffusion.sampler.spacing='{spacing}'"]
    ).sample(2, seed=3))
    assert theirs.std() > 0.05
    return float(np.abs(ours - theirs).max())


def _ddim_gap(run: Path, folder: Path, spacing: str, eta: float) -> float:
    ours = corediff.load(run, which="last", overrides=[
        "diffusion.sampler.type='ddim'", f"diffusion.sampler.eta={eta}",
        "diffusion.sampler.steps=10", f"diffusion.sampler.spacing='{spacing}'"])
    pipe = DDIMPipeline.from_pretrained(folder)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, timestep_spacing=spacing)
    theirs = pipe(batch_size=2, generator=torch.Generator().manual_seed(3), eta=eta,
                  num_inference_steps=10, output_type="np",
                  use_clipped_model_output=True).images
    return float(np.abs(_unit(ours.sample(2, seed=3)) - theirs).max())


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(original pipeline folder, imported run, exported folder)."""
    root = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    DDPMPipeline(unet=UNet2DModel(**UNET), scheduler=DDPMScheduler(
        num_train_timesteps=T, beta_schedule="squaredcos_cap_v2")).save_pretrained(
        root / "pipeline")
    assert main(["import", "diffusers", str(root / "pipeline"), "--run-dir",
                 str(root / "run")]) == 0
    assert main(["export", str(root / "run"), "--to", "diffusers", str(root / "out")]) == 0
    return root / "pipeline", root / "run", root / "out"


def test_imported_then_exported_pipeline_is_the_original(imported) -> None:
    original, run, out = imported
    config = json.loads((out / "scheduler" / "scheduler_config.json").read_text())
    assert config["_class_name"] == "DDPMScheduler"
    assert config["beta_schedule"] == "squaredcos_cap_v2" and config["trained_betas"] is None
    assert config["prediction_type"] == "epsilon" and config["clip_sample"]
    assert json.loads((out / "model_index.json").read_text())["_class_name"] == "DDPMPipeline"
    mine = UNet2DModel.from_pretrained(out / "unet").state_dict()
    theirs = UNet2DModel.from_pretrained(original / "unet").state_dict()
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs)  # offset -1: nothing folded
    gap = _ddpm_gap(run, out)
    print(f"imported+exported, DDPMPipeline {T} steps: max abs difference {gap:.2e}")
    assert gap < 1e-4


def test_trained_run_exports_and_diffusers_samples_the_same(tmp_path, capsys) -> None:
    run = tmp_path / "run"
    corediff.train(corediff.parse_recipe(TRAINED), run_dir=run)
    out = tmp_path / "out"
    assert main(["export", str(run), "--to", "diffusers", str(out)]) == 0
    assert "DDPMPipeline" in capsys.readouterr().out
    config = json.loads((out / "scheduler" / "scheduler_config.json").read_text())
    assert config["beta_schedule"] == "linear" and config["num_train_timesteps"] == T
    assert config["beta_end"] == pytest.approx(0.02 * 1000 / T)
    gap = _ddpm_gap(run, out)
    print(f"trained+exported, DDPMPipeline {T} steps: max abs difference {gap:.2e}")
    assert gap < 1e-4
    gap = _ddpm_gap(run, out, 10, "linspace")
    print(f"trained+exported, DDPMPipeline 10 steps linspace: max abs difference {gap:.2e}")
    assert gap < 1e-4
    for eta in (0.0, 1.0):  # diffusers' DDIM steps to t - T/N: trailing, N dividing T
        gap = _ddim_gap(run, out, "trailing", eta)
        print(f"trained+exported, DDIMPipeline 10 steps trailing eta {eta}: max abs "
              f"difference {gap:.2e}")
        assert gap < 1e-5


def test_v_prediction_trained_betas_and_zero_snr_reach_the_scheduler(tmp_path) -> None:
    recipe = json.loads(json.dumps(TRAINED))
    recipe["diffusion"]["schedule"] = {"type": "sigmoid", "steps": T,
                                       "rescale_zero_terminal_snr": True}
    recipe["diffusion"]["parameterization"] = {"type": "v"}
    recipe["diffusion"]["sampler"] = {"type": "ddim", "steps": 10}
    recipe["train"]["steps"] = 1
    run = tmp_path / "run"
    corediff.train(corediff.parse_recipe(recipe), run_dir=run)
    out = tmp_path / "out"
    assert main(["export", str(run), "--to", "diffusers", str(out)]) == 0
    scheduler = DDIMScheduler.from_pretrained(out / "scheduler")
    assert scheduler.config.prediction_type == "v_prediction"
    assert scheduler.config.rescale_betas_zero_snr and scheduler.config.trained_betas
    alpha_bar = corediff.load(run, which="last").schedule.values()[1:]
    torch.testing.assert_close(scheduler.alphas_cumprod.double(), alpha_bar, rtol=0, atol=5e-6)
    gap = _ddim_gap(run, out, "trailing", 0.0)
    print(f"v, sigmoid zero-SNR, DDIMPipeline 10 steps: max abs difference {gap:.2e}")
    assert gap < 1e-5


def _refused(argv: list[str], phrase: str, capsys) -> None:
    code, err = main(argv), capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and phrase in lines[0], err


def test_what_diffusers_cannot_express_is_refused_in_one_sentence(imported, tmp_path,
                                                                   capsys) -> None:
    _, run, out = imported
    target = tmp_path / "new"
    cases = [
        (["--set", "diffusion.parameterization.type='x0'", "--set",
          "diffusion.sampler.spacing='ddim5'", "--set", "diffusion.sampler.steps=5"],
         "sampler spacing 'ddim5' has no diffusers timestep_spacing"),
        (["--set", "diffusion.prior.scale=0.8"], "prior 'normal' (scale 0.8)"),
        (["--set", "diffusion.sampler.spacing='leading'", "--set", "diffusion.sampler.steps=10"],
         "visits step T first and then its 'leading' grid"),
    ]
    for extra, phrase in cases:
        _refused(["export", str(run), "--to", "diffusers", str(target), *extra], phrase, capsys)
    _refused(["export", str(run), "--to", "diffusers", str(out)],
             "exists and is not an empty folder", capsys)
    # corediff's own U-Net, and a flow run, in runs of one step
    for recipe, phrase in (
        ({"model": {"type": "unet", "preset": "tiny", "num_res_blocks": 1,
                    "attention_resolutions": []}},
         "model 'unet' has no diffusers equivalent"),
        ({"diffusion": {"schedule": {"type": "flow"}, "degradation": {"type": "flow"},
                        "parameterization": {"type": "velocity"},
                        "sampler": {"type": "flow_euler", "steps": 2}}},
         "degradation 'flow' cannot be exported"),
    ):
        data = json.loads(json.dumps(TRAINED))
        for key, value in recipe.items():
            data[key] = {**data[key], **value} if key == "diffusion" else value
        data["train"]["steps"] = 1
        run_dir = tmp_path / phrase.split("'")[1]
        corediff.train(corediff.parse_recipe(data), run_dir=run_dir)
        capsys.readouterr()  # the training progress bar
        _refused(["export", str(run_dir), "--to", "diffusers", str(target)], phrase, capsys)
    assert not target.exists() and not list(tmp_path.glob(".new.*"))
