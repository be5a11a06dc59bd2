"""Inception-based sample-quality metrics for image runs: FID, KID, IS, precision/recall.

Features come from torch-fidelity's port of the TensorFlow FID Inception-v3 (2048-d pool
features and the 1008-way "unbiased" logits), whose weights are read from a local file only:
``weights-inception-2015-12-05-6726825d.pth`` in ``$COREDIFF_CACHE`` (default
``~/.cache/corediff``) or in torch's hub cache (``~/.cache/torch/hub/checkpoints``), where
torch-fidelity itself keeps it. The metrics:

* FID (Heusel et al. 2017) and KID (Bińkowski et al. 2018): see :mod:`.frechet`;
* IS (Salimans et al. 2016): exp E_x KL(p(y|x) ‖ p(y)), mean and std over 10 splits;
* precision and recall (Kynkäänniemi et al. 2019, Sec. 3): the share of generated features
  inside the k-NN ball (k = 3) of some real feature, and vice versa.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import Tensor

from corediff.errors import CorediffError
from corediff.evaluation.digits_metric import cache_dir
from corediff.evaluation.frechet import frechet_distance_of, kernel_distance

WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + WEIGHTS_FILE
)
BATCH = 64


def weights_candidates() -> list[Path]:
    """Where the Inception weights file is looked for, in order."""
    return [cache_dir() / WEIGHTS_FILE, Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILE]


def load_inception() -> torch.nn.Module:
    """The FID Inception-v3 from a local weights file; CorediffError saying what to get."""
    if importlib.util.find_spec("torch_fidelity") is None:
        raise CorediffError(
            "Inception metrics need torch-fidelity: pip install 'torch-fidelity>=0.3'"
        )
    found = next((path for path in weights_candidates() if path.is_file()), None)
    if found is None:
        where = " or ".join(str(path) for path in weights_candidates())
        raise CorediffError(
            f"Inception weights not found: download {WEIGHTS_URL} and save it as {where}"
        )
    torch.load(found, map_location="cpu", weights_only=True)  # refuse anything but tensors
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    return FeatureExtractorInceptionV3(
        "inception-v3-compat", ["2048", "logits_unbiased"],
        feature_extractor_weights_path=str(found),
    )


@torch.no_grad()
def inception_features(
    network: torch.nn.Module, images: Tensor, device: torch.device | str = "cpu"
) -> tuple[Tensor, Tensor]:
    """(pool features [N, 2048], logits [N, 1008]) of images [N, C, H, W] in [-1, 1]."""
    network = network.to(device)
    pool, logits = [], []
    for chunk in images.split(BATCH):
        pixels = ((chunk.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        if pixels.shape[1] == 1:
            pixels = pixels.expand(-1, 3, -1, -1)
        features, chunk_logits = network(pixels.to(device))
        pool.append(features.double().cpu())
        logits.append(chunk_logits.double().cpu())
    return torch.cat(pool), torch.cat(logits)


def inception_score(logits: Tensor, splits: int = 10) -> tuple[float, float]:
    """IS mean and std over ``splits`` consecutive splits of logits [N, K]."""
    scores = []
    for part in logits.double().chunk(splits):
        log_p = part.log_softmax(-1)
        log_marginal = log_p.logsumexp(0) - torch.log(torch.tensor(float(part.shape[0])))
        kl = (log_p.exp() * (log_p - log_marginal)).sum(-1).mean()
        scores.append(kl.exp())
    values = torch.stack(scores)
    return float(values.mean()), float(values.std()) if len(scores) > 1 else 0.0


def precision_recall(real: Tensor, fake: Tensor, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall of feature sets real [N, D] and fake [M, D]."""
    real, fake = real.double(), fake.double()

    def covered(manifold: Tensor, probes: Tensor) -> float:
        radii = torch.cdist(manifold, manifold).kthvalue(k + 1, dim=1).values  # self is 0
        inside = torch.cdist(probes, manifold) <= radii[None]
        return float(inside.any(1).double().mean())

    return covered(real, fake), covered(fake, real)


def inception_metrics(
    generated: Tensor, real: Tensor, device: torch.device | str = "cpu"
) -> dict[str, float]:
    """FID, KID (mean, std), IS (mean, std), precision and recall of generated vs real."""
    network = load_inception()
    fake_pool, fake_logits = inception_features(network, generated, device)
    real_pool, _ = inception_features(network, real, device)
    kid, kid_std = kernel_distance(fake_pool, real_pool)
    score, score_std = inception_score(fake_logits)
    precision, recall = precision_recall(real_pool, fake_pool)
    return {
        "fid": frechet_distance_of(fake_pool, real_pool), "kid": kid, "kid_std": kid_std,
        "is": score, "is_std": score_std, "precision": precision, "recall": recall,
    }
