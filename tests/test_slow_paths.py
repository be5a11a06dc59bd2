"""Slow paths a GPU would take, caught on the CPU: SDPA's q/k/v layout, and AdamW's moment
layout after a resume with a channels_last model."""

from __future__ import annotations

from pathlib import Path

import torch
from einops import rearrange

import corediff
from corediff.engine import checkpoint
from corediff.engine import trainer as trainer_module
from corediff.engine.distributed import Context
from corediff.engine.rundir import RunDir
from corediff.engine.trainer import Trainer
from corediff_plugins.models.unet import AttentionBlock, UNet, UNetConfig

ROOT = Path(__file__).resolve().parents[1]


def test_unet_attention_gives_sdpa_contiguous_qkv(monkeypatch):
    torch.manual_seed(0)
    model = UNet(UNetConfig(preset="tiny", base_channels=8, attention_resolutions=[8, 4]),
                 in_channels=1, out_channels=1, image_size=8)
    for p in model.parameters():  # the zero-initialised output projections hide attention
        p.data.add_(0.05 * torch.randn_like(p))
    sdpa, seen = torch.nn.functional.scaled_dot_product_attention, []

    def spy(q, k, v, *args, **kwargs):
        seen.append((q.is_contiguous(), k.is_contiguous(), v.is_contiguous()))
        return sdpa(q, k, v, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([3, 7])
    new = model(x, t)
    assert seen and all(all(flags) for flags in seen), seen

    def old_forward(self, x, emb=None):  # the layout before: strided views into qkv
        h, w = x.shape[-2:]
        qkv = self.qkv(self.norm(x).flatten(2))
        q, k, v = rearrange(qkv, "b (three n d) l -> three b n l d", three=3, n=self.num_heads)
        out = sdpa(q, k, v)
        out = self.proj(rearrange(out, "b n l d -> b (n d) l"))
        return x + rearrange(out, "b c (h w) -> b c h w", h=h, w=w)

    monkeypatch.setattr(AttentionBlock, "forward", old_forward)
    torch.testing.assert_close(new, model(x, t), atol=1e-6, rtol=0)


def _trainer(run: Path) -> Trainer:
    recipe = corediff.load_recipe(ROOT / "recipes" / "quickstart.toml", overrides=[
        "data.image_size=8", "model.preset='tiny'", "train.batch_size=4",
        "train.num_workers=0", "train.warmup_steps=1", "run.device='cpu'"])
    trainer = Trainer(corediff.build(recipe), RunDir(run), Context(torch.device("cpu")))
    trainer.fit_components()
    return trainer


def test_resumed_adamw_moments_take_their_parameters_memory_format(tmp_path, monkeypatch):
    monkeypatch.setattr(trainer_module, "channels_last", lambda device: True)
    first = _trainer(tmp_path / "run")
    assert any(p.dim() == 4 and not p.is_contiguous() for p in first.model.parameters())
    data = first.batches()
    for _ in range(3):
        first.train_step(data)
    first.save()
    resumed = _trainer(tmp_path / "resumed")
    resumed.load(checkpoint.find(tmp_path / "run" / "checkpoints" / "last"))
    checked = 0
    for param, trained in zip(resumed.model.parameters(), first.model.parameters(),
                                  strict=True):
        state = resumed.optimizer.state[param]
        for name in ("exp_avg", "exp_avg_sq"):
            assert state[name].stride() == param.stride(), (name, param.shape)
            assert torch.equal(state[name], first.optimizer.state[trained][name])
            checked += param.dim() == 4 and not param.is_contiguous()
    assert checked
    first.train_step(data)  # and the next step is the uninterrupted run's, bit for bit
    resumed.train_step(resumed.batches())
    for param, trained in zip(resumed.model.parameters(), first.model.parameters(),
                              strict=True):
        assert torch.equal(param, trained)


def test_tf32_precision_enables_tensorfloat32_inside_the_step_only(tmp_path, monkeypatch):
    recipe = corediff.load_recipe(ROOT / "recipes" / "quickstart.toml", overrides=[
        "data.image_size=8", "model.preset='tiny'", "train.batch_size=4",
        "train.precision='tf32'", "run.device='cpu'"])
    trainer = Trainer(corediff.build(recipe), RunDir(tmp_path), Context(torch.device("cpu")))
    trainer.fit_components()
    seen, loss = [], Trainer.loss

    def spy(self, *args, **kwargs):
        seen.append((torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32))
        return loss(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "loss", spy)
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        trainer.train_step(trainer.batches())
        after = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
    assert seen == [(True, True)] and after == (False, False)  # restored after the step
