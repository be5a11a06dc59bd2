"""`corediff bench`: the quick CPU run end to end through main(), and the full run on CUDA."""

from __future__ import annotations

import json

import pytest
import torch

from corediff import bench
from corediff.cli import main

CUDA_ONLY = ("cuda", "compile", "ddp", "no_host_sync")
SPEEDS = ("data_loader", "sampling", *(f"train_{k}_{p}" for k, p in bench.QUICK_MODELS))


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
                                  "svd_share", "data_loader", "sampling", "peak_memory"]
    if not torch.cuda.is_available():
        assert all(checks[name]["result"] == "skipped: no CUDA" for name in CUDA_ONLY)
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
        assert "\n| ddp | skipped: no CUDA |" in markdown
    assert markdown in printed


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
