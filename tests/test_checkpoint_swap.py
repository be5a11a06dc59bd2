"""A reader loading ``last`` while a writer swaps it (issue 23, item 6): another process swaps
two different checkpoints into ``last`` as fast as it can while this one loads it; a read
that saw a swap is run again, so no load fails — with retries off, some do ("does not match
its recorded SHA-256 (corrupted?)", or a file gone mid-read). A real corruption is still
reported at once."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from corediff.cli import main
from corediff.engine import checkpoint, loading
from corediff.errors import CorediffError, TrainingError

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "train.steps=2", "train.batch_size=4", "train.checkpoint_every=2", "train.log_every=2",
    "data.image_size=8", "sample.n=2", "sample.batch_size=2", "diffusion.sampler.steps=3",
    "run.device='cpu'",
]
SWAPS = 2000  #: swaps the writer makes (it stops earlier when the reader is done)
PAUSE = 0.02  #: seconds between swaps (a trainer saves every few seconds at most)
SECONDS = 8.0  #: how long the fixed code reads (about 100 loads)
OLD_SECONDS = 30.0  #: the most the old code reads, waiting for its first failure (~2 s)

WRITER = """
import json, shutil, sys, time
from pathlib import Path
from corediff.engine import checkpoint
a, b, last, stop, swaps = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), \\
    Path(sys.argv[4]), int(sys.argv[5])


def populate(source, step):
    def fill(tmp):
        for file in source.iterdir():
            shutil.copyfile(file, tmp / file.name)
        meta = json.loads((source / "state.json").read_text())
        (tmp / "state.json").write_text(json.dumps({**meta, "step": step}))
    return fill


for i in range(swaps):  # like a trainer: every swap a new step, the weights alternating
    if stop.exists():
        break
    checkpoint._writing(last, populate(a if i % 2 else b, 100 + i))
    time.sleep(float(sys.argv[6]))
print("swaps", i + 1)
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A tiny trained run, plus ``versions/a`` (its ``last``) and ``versions/b`` (the same
    with other weights, its digests recorded): two checkpoints to swap between."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run = tmp_path_factory.mktemp("swap") / "run"
        args = ["train", str(ROOT / "recipes" / "quickstart.toml"), "--run-dir", str(run)]
        assert main([*args, *[a for o in TINY for a in ("--set", o)]]) == 0
    finally:
        torch.set_num_threads(threads)
    a, b = run / "versions" / "a", run / "versions" / "b"
    shutil.copytree(run / "checkpoints" / "last", a)
    shutil.copytree(a, b)
    for name in ("model.safetensors", "ema.safetensors"):
        tensors = load_file(str(b / name))
        save_file({k: v + 1 if v.is_floating_point() else v for k, v in tensors.items()},
                  str(b / name))
    meta = json.loads((b / "state.json").read_text())
    meta["sha256"] = {name: checkpoint.sha256(b, name) for name in meta["sha256"]}
    (b / "state.json").write_text(json.dumps(meta))
    return run


def _reads_during_swaps(run: Path, seconds: float, first_error: bool = False
                        ) -> tuple[int, int, list[str]]:
    """Load ``last`` for ``seconds`` (or until the first error) while another process swaps
    it: (loads, swaps made, load errors)."""
    stop = run / "stop"
    stop.unlink(missing_ok=True)
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(run / "versions" / "a"), str(run / "versions" / "b"),
         str(run / "checkpoints" / "last"), str(stop), str(SWAPS), str(PAUSE)],
        stdout=subprocess.PIPE, text=True)
    loads, errors, end = 0, [], time.monotonic() + seconds
    try:
        while writer.poll() is None and time.monotonic() < end and not (first_error and errors):
            try:
                loading.open_and_load(run, "last")
            except CorediffError as exc:
                errors.append(str(exc))
            loads += 1
    finally:
        stop.touch()
        out, _ = writer.communicate(timeout=60)
    return loads, int(out.split()[-1]), errors


def test_no_false_corruption_while_last_is_swapped(run, monkeypatch):
    monkeypatch.setattr(loading, "SWAP_RETRIES", 0)  # the code before the fix
    old_loads, old_swaps, old_errors = _reads_during_swaps(run, OLD_SECONDS, first_error=True)
    monkeypatch.setattr(loading, "SWAP_RETRIES", 3)
    loads, swaps, errors = _reads_during_swaps(run, SECONDS)
    print(f"without retries: {len(old_errors)}/{old_loads} loads failed ({old_swaps} swaps); "
          f"with retries: {len(errors)}/{loads} ({swaps} swaps)")
    assert old_errors, "the writer never caught a reader mid-read: the test proves nothing"
    assert loads >= 20 and swaps >= 20
    assert errors == [], errors[:3]


def test_real_corruption_is_still_reported(run, tmp_path, monkeypatch):
    copy = tmp_path / "run"
    shutil.copytree(run / "checkpoints", copy / "checkpoints")
    weights = copy / "checkpoints" / "last" / "ema.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    reads = []
    monkeypatch.setattr(loading, "_open", lambda *a, _o=loading._open: reads.append(1) or _o(*a))
    with pytest.raises(TrainingError, match="ema.safetensors does not match its recorded SHA-256"):
        loading.open_and_load(copy, "last")
    assert len(reads) == 1  # not retried: the checkpoint did not change
