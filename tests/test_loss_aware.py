"""The loss-aware time sampler against a literal transcription of improved-diffusion's
LossSecondMomentResampler (its sequential per-loss update in NumPy), and its exact resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import corediff
from corediff.cli import main
from corediff.engine import checkpoint
from corediff.engine.rundir import read_metrics

QUICKSTART = Path(__file__).resolve().parents[1] / "recipes" / "quickstart.toml"


class Reference:
    """improved_diffusion/resample.py, LossSecondMomentResampler, transcribed (t from 0)."""

    def __init__(self, steps: int, history: int = 10, uniform_prob: float = 0.001) -> None:
        self.history, self.uniform_prob = history, uniform_prob
        self.loss_history = np.zeros([steps, history], dtype=np.float64)
        self.loss_counts = np.zeros([steps], dtype=int)

    def weights(self) -> np.ndarray:
        if not (self.loss_counts == self.history).all():
            return np.ones([len(self.loss_counts)], dtype=np.float64)
        weights = np.sqrt(np.mean(self.loss_history ** 2, axis=-1))
        weights /= np.sum(weights)
        weights *= 1 - self.uniform_prob
        weights += self.uniform_prob / len(weights)
        return weights

    def update_with_all_losses(self, ts: list[int], losses: list[float]) -> None:
        for t, loss in zip(ts, losses, strict=True):
            if self.loss_counts[t] == self.history:
                self.loss_history[t, :-1] = self.loss_history[t, 1:]
                self.loss_history[t, -1] = loss
            else:
                self.loss_history[t, self.loss_counts[t]] = loss
                self.loss_counts[t] += 1


def make(steps: int = 6, **config) -> corediff.Pipeline:
    schedule = corediff.create("schedule", "cosine", steps=steps)
    degradation = corediff.create("degradation", "gaussian", schedule=schedule)
    return corediff.create("time_sampler", "loss_aware", degradation=degradation, **config)


def test_probabilities_follow_improved_diffusion() -> None:
    sampler, reference = make(history=4), Reference(6, history=4)
    generator = np.random.default_rng(0)
    for batch in range(30):
        # batches with repeated steps, some repeated more often than the history
        t = generator.integers(0, 6, size=12) if batch % 3 else np.full(9, batch % 6)
        losses = generator.random(len(t)) * (1 + t)
        reference.update_with_all_losses(t.tolist(), losses.tolist())
        sampler.observe(torch.from_numpy(t + 1), torch.from_numpy(losses))
        expected = reference.weights() / reference.weights().sum()
        np.testing.assert_allclose(sampler.probabilities().numpy(), expected, rtol=1e-12)
    assert not np.allclose(expected, 1 / 6)  # warmed up: no longer uniform


def test_draws_follow_p_with_unbiased_weights() -> None:
    sampler = make(steps=4, history=2)
    sampler.observe(torch.tensor([1, 1, 2, 2, 3, 3, 4, 4]),
                    torch.tensor([1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0], dtype=torch.float64))
    p = sampler.probabilities()
    t, weight = sampler.sample(200_000, torch.Generator().manual_seed(1), "cpu")
    frequency = torch.bincount(t - 1, minlength=4).double() / len(t)
    torch.testing.assert_close(frequency, p, atol=3e-3, rtol=0)
    torch.testing.assert_close(weight, 1 / (4 * p[t - 1]))
    assert abs(float(weight.mean()) - 1) < 0.01  # E_p[1/(T·p)] = 1


def test_state_round_trips() -> None:
    sampler, twin = make(), make()
    sampler.observe(torch.tensor([1, 2, 2]), torch.tensor([0.5, 0.2, 0.1], dtype=torch.float64))
    twin.load_extra_state(sampler.extra_state())
    draws = [s.sample(8, torch.Generator().manual_seed(2), "cpu") for s in (sampler, twin)]
    assert torch.equal(draws[0][0], draws[1][0]) and torch.equal(draws[0][1], draws[1][1])


def test_continuous_degradations_are_refused() -> None:
    with pytest.raises(corediff.CorediffError, match="loss_aware walks the integer steps"):
        corediff.load_recipe(QUICKSTART, overrides=[
            "diffusion.time_sampler.type='loss_aware'", "diffusion.schedule={type='flow'}",
            "diffusion.degradation={type='flow'}", "diffusion.parameterization={type='velocity'}",
            "diffusion.loss_weighting={type='simple'}", "diffusion.sampler={type='flow_euler'}"])


def test_training_resumes_exactly_with_its_history(tmp_path: Path) -> None:
    """6 + 6 resumed steps equal 12 straight ones (losses and weights), with the sampler's
    history past its warm-up (T = 4 steps, 2 losses each)."""
    common = ["diffusion.schedule.steps=4", "diffusion.sampler.steps=4",
              "diffusion.time_sampler={type='loss_aware', history=2}", "train.batch_size=8",
              "train.log_every=2", "train.checkpoint_every=6", "train.warmup_steps=1",
              "train.min_lr_ratio=1.0",  # a constant lr: 6 steps of a 12-step run = 6 of 6
              "model.base_channels=8", "data.image_size=8", "run.device='cpu'"]

    def train(run: Path, steps: int, *extra: str) -> None:
        sets = [a for o in [*common, f"train.steps={steps}"] for a in ("--set", o)]
        assert main(["train", str(QUICKSTART), "--run-dir", str(run), *sets, *extra]) == 0

    train(tmp_path / "straight", 12)
    train(tmp_path / "resumed", 6)
    train(tmp_path / "resumed", 12, "--resume")
    rows = [read_metrics(tmp_path / name / "metrics.csv") for name in ("straight", "resumed")]
    assert [r["loss"] for r in rows[0]] == [r["loss"] for r in rows[1]]
    for name in ("model", "ema"):
        assert (tmp_path / "straight/checkpoints/last" / f"{name}.safetensors").read_bytes() == (
            tmp_path / "resumed/checkpoints/last" / f"{name}.safetensors").read_bytes()
    state = checkpoint.load_state(tmp_path / "resumed" / "checkpoints" / "last")
    assert int(state["extra"]["time_sampler"]["counts"].min()) >= 2
