"""`corediff bench`: the quick CPU run end to end through main(), and the full run on CUDA."""

from __future__ import annotations

import json

import pytest
import torch

from corediff import bench
from corediff.cli import main

CUDA_ONLY = ("cuda", "compile", "ddp", "no_host_sync")
SPEEDS = ("data_loader", "sampling", "svd_sampling",
          *(f"train_{k}_{p}" for k, p in bench.QUICK_MODELS))


def test_quick_cpu_bench_reports_every_check_and_measurement(tmp_path, capsys):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model gains nothing from more on a shared CPU
    try:
        code = main(["bench", "--quick", "--device", "cpu", "--out", str(tmp_path)])
    finally:
        torch.set_num_threads(threads)
    printed = capsys.readouterr().out
    assert code == 0
    report = json.loads((tmp_path / "report.json").read_text())
    checks, measurements = report["checks"], report["measurements"]
    assert list(checks) == list(bench.CHECKS)
    assert list(measurements) == [*(f"train_{k}_{p}" for k, p in bench.QUICK_MODELS),
                                  "svd_share", "data_loader", "sampling", "svd_sampling",
                                  "peak_memory"]
    if not torch.cuda.is_available():
        assert all(checks[name]["result"] == "skipped: no CUDA" for name in CUDA_ONLY
                   if name != "ddp")
        assert checks["ddp"]["result"].startswith("skipped: not checked: no CUDA")
    assert checks["bf16_autocast"]["result"] == checks["channels_last"]["result"] == "ok"
    assert all(entry["result"] == "ok" for entry in measurements.values())
    for name in SPEEDS:
        speed = measurements[name]["images_per_s"]
        assert isinstance(speed, float) and speed > 0, name
    assert 0 < measurements["train_unet_tiny"]["mfu"] < 1
    svd = measurements["svd_share"]
    assert 0 < svd["share"] < 1 and 0 < svd["cached_share"] < 1
    assert measurements["peak_memory"]["max_rss_mib"] > 0
    markdown = (tmp_path / "report.md").read_text()
    assert "| check | result | figures | seconds |\n| --- | --- | --- | --- |" in markdown
    assert "\n| measurement | result | figures | seconds |\n" in markdown
    assert "\n| train_unet_tiny | ok | images_per_s " in markdown
    if not torch.cuda.is_available():
        assert "\n| ddp | skipped: not checked: no CUDA" in markdown
    assert markdown in printed


@pytest.mark.parametrize("name, model", [
    ("NVIDIA H100 80GB HBM3", "H100 SXM"), ("NVIDIA H100 PCIe", "H100 PCIe"),
    ("NVIDIA H100 NVL", "H100 NVL"), ("NVIDIA H200", "H200 SXM"), ("NVIDIA H200 NVL", "H200 NVL"),
    ("NVIDIA A100-SXM4-80GB", "A100"), ("NVIDIA A100 80GB PCIe", "A100"),
    ("NVIDIA L40S", "L40S"), ("NVIDIA L40", "L40"), ("NVIDIA L4", "L4"),
    ("NVIDIA GeForce RTX 4090", "GeForce RTX 4090"),
    ("NVIDIA GeForce RTX 3090", "GeForce RTX 3090"),
    ("NVIDIA A10G", "A10G"), ("Tesla T4", None),
])
def test_peaks_are_looked_up_by_gpu_model(name, model, monkeypatch):
    from corediff.bench.common import gpu_peaks
    from corediff.bench.measures import peak_flops

    found = gpu_peaks(name)
    assert (found and found[0]) == model
    if found:
        assert abs(found[1] / found[2] - 2) < 0.03  # dense bf16 is twice dense TF32
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
        peak, source = peak_flops(torch.device("cuda"), torch.bfloat16)
        assert peak == found[1] and source == f"table: {model} ({name})"
    pcie, sxm = gpu_peaks("NVIDIA H100 PCIe"), gpu_peaks("NVIDIA H100 80GB HBM3")
    assert pcie[1] < sxm[1]  # before: PCIe and NVL were given SXM's peak


def test_train_throughput_times_the_real_trainer_step(monkeypatch):
    from corediff.engine.trainer import Trainer

    calls, step = [], Trainer.train_step
    monkeypatch.setattr(Trainer, "train_step", lambda self, data: calls.append(
        self.ema is not None) or step(self, data))
    result = bench.train_throughput("unet", "tiny", image_size=8, batch=2, steps=2,
                                    device=torch.device("cpu"), dtype=torch.float32)
    assert len(calls) == 5  # warm-up, counted FLOPs, timed warm-up, 2 timed
    assert result.images_per_s > 0 and result.flops_per_step > 0


def test_a_failing_check_reports_the_first_line_of_its_error():
    def broken(settings: bench.Settings) -> None:
        raise ValueError("first line\nsecond line")

    entry = bench.entry(broken, bench.Settings(torch.device("cpu")))
    assert entry["result"] == "failed: ValueError: first line"
    assert bench.failed({"checks": {"x": entry}, "measurements": {}}) == ["x"]


@pytest.mark.cuda
def test_full_bench_on_cuda_passes_every_check(tmp_path):
    code = main(["bench", "--device", "cuda", "--out", str(tmp_path)])
    report = json.loads((tmp_path / "report.json").read_text())
    results = {name: entry["result"] for name, entry in report["checks"].items()}
    assert results == dict.fromkeys(bench.CHECKS, "ok")
    assert all(e["result"] == "ok" for e in report["measurements"].values())
    assert code == 0
