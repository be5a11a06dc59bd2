"""``corediff sample --format npz``: the samples as the ADM evaluation suite reads them
(``arr_0`` uint8 NHWC, ``arr_1`` labels), equal to the Python API's samples quantised."""

from __future__ import annotations

import numpy as np
import torch

import corediff
from corediff.cli import main

RECIPE = {
    "data": {"type": "digits", "image_size": 8},
    "model": {"type": "unet", "preset": "tiny", "num_res_blocks": 1,
              "attention_resolutions": []},
    "diffusion": {
        "schedule": {"type": "cosine", "steps": 20}, "degradation": {"type": "gaussian"},
        "parameterization": {"type": "eps"}, "loss_weighting": {"type": "simple"},
        "sampler": {"type": "ddim", "steps": 3}, "prior": {"type": "normal"},
    },
    "train": {"steps": 2, "batch_size": 4},
    "sample": {"n": 4, "batch_size": 5},
    "run": {"device": "cpu"},
}


def test_npz_holds_uint8_nhwc_samples_and_labels(tmp_path, capsys):
    run = tmp_path / "run"
    corediff.train(corediff.parse_recipe(RECIPE), run_dir=run)
    out = tmp_path / "samples.npz"
    assert main(["sample", str(run), "--format", "npz", "--n", "12", "--seed", "3",
                 "--out", str(out)]) == 0
    assert f"samples: {out}" in capsys.readouterr().out
    with np.load(out) as arrays:
        assert sorted(arrays.files) == ["arr_0", "arr_1"]
        pixels, labels = arrays["arr_0"], arrays["arr_1"]
    assert pixels.dtype == np.uint8 and pixels.shape == (12, 8, 8, 1)
    assert labels.tolist() == [i % 10 for i in range(12)]
    images = corediff.load(run).sample(12, seed=3)  # [-1, 1], NCHW
    expected = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1)
    assert np.array_equal(pixels, expected.numpy())
    default = run / "generated" / "ddim_seed0.npz"
    assert main(["sample", str(run), "--format", "npz", "--n", "2"]) == 0 and default.is_file()


def test_npz_refuses_individual_files(tmp_path, capsys):
    run = tmp_path / "run"
    corediff.train(corediff.parse_recipe(RECIPE), run_dir=run)
    assert main(["sample", str(run), "--format", "npz", "--individual"]) == 2
    err = capsys.readouterr().err
    assert "--format npz writes one array file" in err and "Traceback" not in err
