"""Evaluation: Fréchet distance and KID against direct formulas, the digits metric's ranking,
restoration metrics against closed forms, Inception helpers, and `corediff eval` end to end."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from torchvision.transforms.functional import gaussian_blur

from corediff.cli import main
from corediff.errors import CorediffError
from corediff.evaluation import inception
from corediff.evaluation.digits_metric import DigitsMetric, digits_images
from corediff.evaluation.frechet import frechet_distance_of, gaussian_stats, kernel_distance
from corediff.evaluation.restoration import psnr, rmse, ssim


@pytest.fixture(scope="module", autouse=True)
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private COREDIFF_CACHE: the digits classifier is trained once for this module."""
    path = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("COREDIFF_CACHE", str(path))
        yield path


def _scipy_frechet(a: np.ndarray, b: np.ndarray) -> float:
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def test_frechet_distance_matches_scipy_sqrtm() -> None:
    generator = torch.Generator().manual_seed(0)
    d = 24
    mix = torch.randn(d, d, generator=generator, dtype=torch.float64)
    a = torch.randn(400, d, generator=generator, dtype=torch.float64) @ mix
    b = 0.7 * torch.randn(300, d, generator=generator, dtype=torch.float64) @ mix.T + 0.5
    ours = frechet_distance_of(a, b)
    assert ours == pytest.approx(_scipy_frechet(a.numpy(), b.numpy()), rel=1e-6)
    assert ours > 1


def test_frechet_distance_of_identical_sets_is_zero() -> None:
    features = torch.randn(200, 32, generator=torch.Generator().manual_seed(1))
    scale = gaussian_stats(features)[1].trace().item()
    assert abs(frechet_distance_of(features, features.clone())) < 1e-9 * scale


def test_kid_matches_unbiased_mmd_formula_and_separates_distributions() -> None:
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(40, 5, generator=generator, dtype=torch.float64)
    y = torch.randn(40, 5, generator=generator, dtype=torch.float64) + 0.3

    def k(a: np.ndarray, b: np.ndarray) -> float:
        return float((a @ b / 5 + 1) ** 3)

    m = 40  # one subset of the whole sets: a permutation, so the estimate is exact
    xn, yn = x.numpy(), y.numpy()
    xx = sum(k(xn[i], xn[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(yn[i], yn[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(xn[i], yn[j]) for i in range(m) for j in range(m)) / m**2
    kid, _ = kernel_distance(x, y, subsets=3, subset_size=m)
    assert kid == pytest.approx(xx + yy - 2 * xy, rel=1e-9)
    same = torch.randn(200, 5, generator=generator, dtype=torch.float64)
    other = torch.randn(200, 5, generator=generator, dtype=torch.float64)
    assert abs(kernel_distance(same, other, subset_size=100)[0]) < 0.2 * kernel_distance(
        same, other + 1.0, subset_size=100)[0]


def test_digits_metric_ranks_real_below_blurred_below_noise() -> None:
    metric = DigitsMetric(16)
    real, _ = digits_images("train", 16)
    real = real[torch.randperm(len(real), generator=torch.Generator().manual_seed(0))[:297]]
    noise = torch.randn(real.shape, generator=torch.Generator().manual_seed(1)).clamp(-1, 1)
    blurred = gaussian_blur(real, kernel_size=9, sigma=2.0)
    scores = {name: metric(x) for name, x in
              (("real", real), ("blurred", blurred), ("noise", noise))}
    assert scores["real"]["fd"] * 5 < scores["blurred"]["fd"] < scores["noise"]["fd"]
    assert scores["real"]["confidence"] > 0.9 > scores["noise"]["confidence"]
    histogram = scores["real"]["class_histogram"]
    assert sum(histogram) == 297 and min(histogram) > 15  # every digit is recognised
    share = torch.tensor(histogram, dtype=torch.float64) / 297
    assert scores["real"]["class_entropy"] == pytest.approx(float(-(share * share.log2()).sum()))
    collapsed = metric(real[:1].repeat(50, 1, 1, 1))["class_entropy"]
    assert collapsed == 0.0 and 3.2 < scores["real"]["class_entropy"] <= 3.33
    held_out, labels = digits_images("test", 16)
    assert metric(held_out, labels)["label_accuracy"] > 0.9


def test_psnr_rmse_of_a_known_error() -> None:
    reference = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(3)) * 2 - 1
    offset = torch.tensor([0.1, 0.2, 0.5]).view(3, 1, 1, 1)
    x = reference + offset
    expected = 10 * torch.log10(4.0 / offset.flatten().double() ** 2)
    torch.testing.assert_close(psnr(x, reference), expected)
    torch.testing.assert_close(rmse(x, reference), offset.flatten().double())


def test_ssim_identical_is_one_and_constant_images_match_closed_form() -> None:
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(4)) * 2 - 1
    torch.testing.assert_close(ssim(x, x), torch.ones(2, dtype=torch.float64))
    a, b = 0.3, -0.4  # constant images: only the luminance term remains
    c1 = (0.01 * 2) ** 2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    got = ssim(torch.full((1, 1, 12, 12), a), torch.full((1, 1, 12, 12), b))
    assert got.item() == pytest.approx(expected, rel=1e-6)
    noisy = x + 0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(5))
    assert (ssim(noisy, x) < 0.9).all()


def test_inception_weights_missing_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COREDIFF_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(CorediffError) as info:
        inception.load_inception()
    message = str(info.value)
    assert inception.WEIGHTS_FILE in message or "torch-fidelity" in message
    if "torch-fidelity" not in message:
        assert str(tmp_path / "cache" / inception.WEIGHTS_FILE) in message


def test_inception_score_and_precision_recall_closed_forms() -> None:
    k = 8
    logits = torch.eye(k).repeat(10, 1) * 50  # confident and balanced: IS = number of classes
    score, _ = inception.inception_score(logits, splits=2)
    assert score == pytest.approx(k, rel=1e-6)
    assert inception.inception_score(torch.zeros(40, k), splits=2)[0] == pytest.approx(1.0)
    real = torch.randn(100, 4, generator=torch.Generator().manual_seed(6))
    assert inception.precision_recall(real, real.clone()) == (1.0, 1.0)
    assert inception.precision_recall(real, real + 100) == (0.0, 0.0)


TINY_RECIPE = """
[data]
type = "digits"
image_size = 8
split = "train"
class_labels = false

[model]
type = "unet"
preset = "tiny"
attention_resolutions = []

[diffusion.schedule]
{schedule}

[diffusion.degradation]
{degradation}

[diffusion.parameterization]
type = "{parameterization}"

[diffusion.loss_weighting]
type = "simple"

[diffusion.sampler]
{sampler}

[diffusion.prior]
{prior}

[train]
steps = 3
batch_size = 16
warmup_steps = 1
log_every = 3
checkpoint_every = 3

[run]
device = "cpu"
"""

METHODS = {
    "gaussian": dict(schedule='type = "linear"\nsteps = 50', degradation='type = "gaussian"',
                     parameterization="eps", sampler='type = "ddpm"', prior='type = "normal"'),
    "svd": dict(schedule='type = "rank_linear"\nsteps = 8', degradation='type = "svd"',
                parameterization="residual", sampler='type = "cold_improved"',
                prior='type = "partial"\nstart = 0.5'),
}


@pytest.mark.parametrize("method", sorted(METHODS))
def test_eval_command_prints_metrics_and_writes_json(
    method: str, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(TINY_RECIPE.format(**METHODS[method]), encoding="utf-8")
    run_dir = tmp_path / "run"
    assert main(["train", str(recipe), "--run-dir", str(run_dir)]) == 0
    override = 'diffusion.sampler={type="ddim", steps=5}' if method == "gaussian" else (
        "diffusion.sampler.steps=2")
    assert main(["eval", str(run_dir), "--n", "12", "--set", override]) == 0
    out = capsys.readouterr().out
    assert "fd:" in out and "confidence:" in out
    report = json.loads((run_dir / "eval.json").read_text(encoding="utf-8"))
    assert report["n"] == 12 and report["step"] == 3
    assert sum(report["digits"]["class_histogram"]) == 12
    assert math.isfinite(report["digits"]["fd"])
    if method == "gaussian":
        assert report["sampler"]["type"] == "ddim" and report["nfe"] == 5
        assert "restoration" not in report
    else:
        restoration = report["restoration"]
        assert restoration["start_step"] == 4
        assert set(restoration) == {"start_step", "degraded", "direct", "sampled"}
        assert restoration["degraded"]["rmse"] > 0 and restoration["degraded"]["ssim"] < 1
    custom = tmp_path / "custom.json"
    assert main(["eval", str(run_dir / "checkpoints" / "last"), "--n", "4", "--out",
                 str(custom)]) == 0
    assert json.loads(custom.read_text(encoding="utf-8"))["n"] == 4


def test_eval_command_refuses_a_missing_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["eval", str(tmp_path / "nowhere")]) == 2
    assert "neither a run directory" in capsys.readouterr().err
