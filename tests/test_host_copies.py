"""Host→device copies in hot paths, seen on this CPU (issue 20): a copy from the host makes
a CUDA host wait for its queue, but ``.to("cpu")`` on a CPU is a no-op, so the steps run on
PyTorch's ``meta`` device (no data, ``.item()`` raises) under a dispatch-level spy that
counts every op taking a CPU tensor and giving a tensor elsewhere."""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from corediff_plugins.degradations.svd import SVDConfig, SVDDegradation, SVDFactors
from corediff_plugins.schedules.rank_energy import RankEnergyConfig, RankEnergySchedule
from corediff_plugins.schedules.rank_linear import RankLinearConfig, RankLinearSchedule

META = torch.device("meta")


class HostToDevice(TorchDispatchMode):
    """Records each op that reads a host (CPU) tensor and returns a tensor on another
    device: a host→device copy."""

    def __init__(self) -> None:
        super().__init__()
        self.copies: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = [a for a in tree_flatten((args, kwargs or {}))[0] if isinstance(a, torch.Tensor)]
        outputs = [o for o in tree_flatten(out)[0] if isinstance(o, torch.Tensor)]
        if any(a.device.type == "cpu" and a.dim() > 0 for a in inputs) and any(
                o.device.type != "cpu" for o in outputs):
            self.copies.append(str(func))
        return out


def _factors(batch: int = 4, size: int = 8) -> SVDFactors:
    return SVDFactors(torch.empty(batch, 1, size, size, device=META),
                      torch.empty(batch, 1, size, device=META),
                      torch.empty(batch, 1, size, size, device=META))


def test_the_spy_sees_a_host_to_device_copy() -> None:
    with HostToDevice() as spy:
        torch.arange(5).to(META)
        torch.empty(3, device=META) + 1
    assert len(spy.copies) == 1


def test_svd_steps_copy_the_rank_table_once() -> None:
    degradation = SVDDegradation(SVDConfig(), schedule=RankLinearSchedule(
        RankLinearConfig(steps=20)))
    factors = _factors()
    t = torch.zeros(4, dtype=torch.long, device=META)
    with HostToDevice() as spy:
        for _ in range(5):
            degradation.degrade_from_factors(factors, t)
    assert len(spy.copies) == 1, spy.copies  # the first step builds the table on the device


def test_a_refitted_schedule_gets_a_new_table() -> None:
    schedule = RankEnergySchedule(RankEnergyConfig(steps=10))
    degradation = SVDDegradation(SVDConfig(), schedule=schedule)
    schedule.load_extra_state({"error_curve": torch.linspace(1, 0, 9, dtype=torch.float64)})
    first = degradation.ranks(8).clone()
    schedule.load_extra_state({"error_curve": torch.linspace(1, 0, 9, dtype=torch.float64) ** 3})
    assert not torch.equal(first, degradation.ranks(8))
