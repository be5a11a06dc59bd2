"""``corediff sample --format pt`` (a torch file that ``weights_only=True`` loads, equal to the
Python API's samples) and ``corediff eval --reference FILE.npz`` (samples scored against a
reference batch in the ADM layout, here made from the real digits of the test split)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import corediff
from corediff.cli import main
from corediff.evaluation.digits_metric import DigitsMetric, digits_images
from corediff.evaluation.frechet import frechet_distance_of
from corediff.evaluation.reference import load_reference

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
    "sample": {"n": 4, "batch_size": 8},
    "run": {"device": "cpu"},
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    path = tmp_path_factory.mktemp("pt") / "run"
    corediff.train(corediff.parse_recipe(RECIPE), run_dir=path)
    return path


def _as_adm(images: torch.Tensor) -> np.ndarray:
    return ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(
        0, 2, 3, 1).numpy()


def test_pt_holds_the_samples_and_labels_as_plain_tensors(run, tmp_path, capsys):
    out = tmp_path / "samples.pt"
    assert main(["sample", str(run), "--format", "pt", "--n", "12", "--seed", "3",
                 "--out", str(out)]) == 0
    assert f"samples: {out}" in capsys.readouterr().out
    data = torch.load(out, weights_only=True)
    assert sorted(data) == ["images", "labels"]
    assert data["images"].dtype == torch.float32 and data["images"].shape == (12, 1, 8, 8)
    assert data["labels"].tolist() == [i % 10 for i in range(12)]
    torch.testing.assert_close(data["images"], corediff.load(run).sample(12, seed=3))
    default = run / "generated" / "ddim_seed0.pt"
    assert main(["sample", str(run), "--format", "pt", "--n", "2"]) == 0 and default.is_file()
    assert main(["sample", str(run), "--format", "pt", "--trajectory"]) == 2
    assert "--format pt writes one array file" in capsys.readouterr().err


def test_eval_scores_samples_against_a_reference_of_real_digits(run, tmp_path):
    real, _ = digits_images("test", 8)
    reference = tmp_path / "reference.npz"
    np.savez(reference, _as_adm(real), np.zeros(len(real), dtype=np.int64))
    report_file = tmp_path / "eval.json"
    assert main(["eval", str(run), "--n", "64", "--reference", str(reference),
                 "--out", str(report_file)]) == 0
    report = json.loads(report_file.read_text())
    scored = report["reference"]
    assert scored["file"] == str(reference) and scored["n"] == len(real)
    # the reference is the held-out split the built-in metric uses, quantised to uint8:
    # the two FDs of the same samples agree up to that quantisation
    print(f"FD vs reference npz {scored['digits_fd']:.3f}, vs built-in test split "
          f"{report['digits']['fd']:.3f}")
    assert scored["digits_fd"] == pytest.approx(report["digits"]["fd"], rel=0.02)
    # and the reference scored against itself is at 0, against a shifted copy it is not
    metric = DigitsMetric(8)
    images = load_reference(reference, 1)
    assert torch.equal(images, torch.from_numpy(_as_adm(real)).permute(0, 3, 1, 2) / 127.5 - 1)
    features = metric.embed(images)[0]
    assert frechet_distance_of(features, features) < 1e-6
    assert frechet_distance_of(features, metric.embed(images.roll(2, -1))[0]) > 1


@pytest.mark.parametrize(("arrays", "phrase"), [
    ({"arr_1": np.zeros((4, 8, 8, 1), np.uint8)}, "it holds no arr_0"),
    ({"arr_0": np.zeros((4, 8, 8, 1), np.float32)}, "arr_0 is float32, not uint8"),
    ({"arr_0": np.zeros((4, 8, 8, 3), np.uint8)}, "arr_0 has shape (4, 8, 8, 3), not [N, H, W, 1]"),
    ({"arr_0": np.zeros((4, 8, 8), np.uint8)}, "arr_0 has shape (4, 8, 8)"),
    ({"arr_0": np.zeros((1, 8, 8, 1), np.uint8)}, "holds 1 image(s)"),
    (None, "File is not a zip file"),
], ids=["no_arr_0", "float", "rgb", "3d", "one_image", "not_npz"])
def test_malformed_reference_exits_2_in_one_sentence(run, tmp_path, capsys, arrays, phrase):
    path = tmp_path / "bad.npz"
    if arrays is None:
        path.write_bytes(b"not an npz at all")
    else:
        np.savez(path, **arrays)
    assert main(["eval", str(run), "--n", "2", "--reference", str(path),
                 "--out", str(tmp_path / "e.json")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and phrase in lines[0] and "ADM layout" in lines[0], lines
    assert not (tmp_path / "e.json").exists()
