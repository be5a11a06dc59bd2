"""Every metric name an evaluation report (``corediff eval``, ``corediff study``) can hold, as
dotted paths into the report; a study's metric names are checked against them."""

from __future__ import annotations

_IMAGE = ("psnr", "ssim", "rmse")

#: Dotted metric names, by family (the first part): see corediff.evaluation.report.
METRICS = (
    "digits.fd", "digits.confidence", "digits.class_entropy", "digits.label_accuracy",
    "inception.fid", "inception.kid", "inception.kid_std", "inception.is", "inception.is_std",
    "inception.precision", "inception.recall",
    "memorization.mean_distance", "memorization.min_distance", "memorization.fraction_close",
    "memorization.threshold", "memorization.held_out_mean_distance",
    "memorization.copy_share", "memorization.copy_threshold",
    "restoration.start_step",
    *(f"restoration.{kind}.{name}" for kind in ("degraded", "direct", "sampled")
      for name in _IMAGE),
    "nfe", "sampling_seconds",
    # recorded by a study for each trained cell × seed
    "train_seconds", "train_steps",
)

#: Metrics that are never negative (their plots start at zero).
NON_NEGATIVE = frozenset(m for m in METRICS if not m.endswith(("kid", "is_std")))
