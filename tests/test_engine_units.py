"""Engine pieces against closed forms: atomic writes, state packing, LR schedule."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from corediff.engine import checkpoint
from corediff.engine.trainer import lr_factor


def test_atomic_write_failure_keeps_old_file(tmp_path):
    target = tmp_path / "weights.bin"
    target.write_bytes(b"old complete content")

    def half_then_crash(tmp):
        tmp.write_bytes(b"new but only ha")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        checkpoint.atomic_write(target, half_then_crash)
    assert target.read_bytes() == b"old complete content"
    assert list(tmp_path.iterdir()) == [target]  # no temporary file left behind

    checkpoint.atomic_write_text(target, "new")
    assert target.read_text() == "new"


def test_atomic_dir_failure_keeps_old_checkpoint(tmp_path):
    model = torch.nn.Linear(3, 2)
    target = tmp_path / "last"
    checkpoint.save(target, model=model, ema=model, state={"step": 1}, recipe_toml="")
    before = {p.name: p.read_bytes() for p in target.iterdir()}

    def crash(tmp):
        (tmp / "model.safetensors").write_bytes(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        checkpoint.atomic_dir(target, crash)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]
    # a crash between the two renames leaves only '.last.old': find() falls back to it
    target.rename(tmp_path / ".last.old")
    assert checkpoint.find(target) == tmp_path / ".last.old"
    assert checkpoint.load_state(checkpoint.find(target))["step"] == 1


def test_pack_roundtrip_restores_optimizer_and_rng(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(torch.randn(8, 4)).square().mean().backward()
    optimizer.step()
    random.seed(3)
    np.random.seed(3)
    state = {"optimizer": optimizer.state_dict(), "numpy": np.random.get_state(),
             "python": random.getstate(), "x": 1.5}
    checkpoint.save(tmp_path / "c", model=model, ema=model, state=state, recipe_toml="")
    loaded = checkpoint.load_state(tmp_path / "c")
    assert loaded["x"] == 1.5
    restored = torch.optim.AdamW(model.parameters(), lr=1e-2)
    opt_state = loaded["optimizer"]
    opt_state["state"] = {int(k): v for k, v in opt_state["state"].items()}
    restored.load_state_dict(opt_state)
    for p in model.parameters():
        for key in ("exp_avg", "exp_avg_sq", "step"):
            torch.testing.assert_close(restored.state[p][key], optimizer.state[p][key])
    expected = np.random.rand(3)
    np.random.set_state(tuple(loaded["numpy"]))
    np.testing.assert_array_equal(np.random.rand(3), expected)
    expected = random.random()
    version, internal, gauss = loaded["python"]
    random.setstate((version, tuple(internal), gauss))
    assert random.random() == expected


def test_lr_factor_warmup_then_cosine():
    warmup, total, floor = 10, 110, 0.1
    assert lr_factor(0, warmup, total, floor) == pytest.approx(0.1)
    assert lr_factor(9, warmup, total, floor) == pytest.approx(1.0)
    for step in (10, 35, 60, 85, 110):
        progress = (step - warmup) / (total - warmup)
        expected = floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
        assert lr_factor(step, warmup, total, floor) == pytest.approx(expected)
    assert lr_factor(500, warmup, total, floor) == pytest.approx(floor)


def test_sampler_type_override_keeps_only_keys_the_new_sampler_has():
    from corediff.recipe import apply_overrides

    stored = {"diffusion": {"sampler": {"type": "ddim", "steps": 50, "eta": 0.0,
                                        "clip_x0": True, "spacing": "trailing"},
                            "prior": {"type": "normal", "scale": 1.0}}}
    new = apply_overrides(stored, ["diffusion.sampler.type='ddpm'", "diffusion.prior.scale=0.8"])
    assert new["diffusion"]["sampler"] == {"type": "ddpm", "steps": 50, "clip_x0": True,
                                           "spacing": "trailing"}
    assert new["diffusion"]["prior"] == {"type": "normal", "scale": 0.8}
    assert stored["diffusion"]["sampler"]["eta"] == 0.0  # the input is not modified
