"""The training step never waits for the device: no ``.item()``, ``.tolist()``, ``nonzero``,
``unique`` or tensor-to-Python conversion between checkpoints (on a GPU each would stall the
queue of kernels). The places that must sync are the log/checkpoint boundaries
(:meth:`Trainer.check`, :meth:`Trainer.save`) and, with a host-placed factor cache, storing an
image's factors the first time it is seen. ``corediff bench`` runs the same step on CUDA
under ``torch.cuda.set_sync_debug_mode("error")``.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import pytest
import torch

import corediff
from corediff.engine.distributed import Context
from corediff.engine.rundir import RunDir
from corediff.engine.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
SYNCS = {  # (owner, attribute): what would make the host wait for a CUDA device
    (torch.Tensor, "item"), (torch.Tensor, "tolist"), (torch.Tensor, "nonzero"),
    (torch.Tensor, "unique"), (torch.Tensor, "__bool__"), (torch.Tensor, "__int__"),
    (torch.Tensor, "__float__"), (torch, "nonzero"), (torch, "unique"),
}

#: AdamW reads its step counters with ``.item()``: torch keeps ``state["step"]`` on the host
#: (unless capturable or fused), so that read never waits for the device.
HOST_SIDE = (str(Path(torch.optim.__file__).parent / "optimizer.py"),)

RECIPES = {
    "gaussian": (ROOT / "recipes" / "quickstart.toml", []),
    "svd_cached": (ROOT / "studies" / "recipes" / "svd_digits16.toml", []),
    "svd_host_fp16": (ROOT / "studies" / "recipes" / "svd_digits16.toml",
                      ["train.factor_cache='host'", "train.factor_dtype='float16'"]),
    "loss_aware": (ROOT / "recipes" / "quickstart.toml",
                   ["diffusion.schedule.steps=20", "diffusion.sampler.steps=5",
                    "diffusion.time_sampler={type='loss_aware', history=2}"]),
}


@pytest.mark.parametrize("name", list(RECIPES))
def test_training_steps_make_no_host_sync(name: str, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    path, extra = RECIPES[name]
    recipe = corediff.load_recipe(path, overrides=[
        "train.batch_size=8", "train.precision='fp32'", "model.preset='tiny'",
        "data.split='test'", *extra])
    pipeline = corediff.build(recipe)
    trainer = Trainer(pipeline, RunDir(tmp_path), Context(torch.device("cpu")))
    trainer.fit_components()
    batches = list(itertools.islice(trainer.batches(), 4))  # the loader's host-side work
    epoch = iter(batches + batches)  # the second pass: every factor is cached
    for _ in range(len(batches)):
        trainer.train_step(epoch)
    calls: list[str] = []
    for owner, attribute in SYNCS:
        original = getattr(owner, attribute)

        def spy(*args, _original=original, _name=attribute, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            if caller not in HOST_SIDE:
                calls.append(f"{_name} from {caller}")
            return _original(*args, **kwargs)

        monkeypatch.setattr(owner, attribute, spy)
    losses = [trainer.train_step(epoch) for _ in range(len(batches))]
    monkeypatch.undo()
    assert calls == [], f"host syncs in the training step: {sorted(set(calls))}"
    assert all(torch.isfinite(loss) for loss, _, _ in losses)
    if trainer.factor_cache is not None:
        assert trainer.factor_cache.decomposed == len({int(i) for b in batches for i in b[0]})
    assert (trainer.factor_cache is None) == (name in {"gaussian", "loss_aware"})
