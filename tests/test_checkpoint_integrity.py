"""Checkpoint integrity: each weight file's SHA-256 is recorded at save time and verified at
load time; checkpoints of corediff 0.1 (no digests) still load; a failed save (a full disk)
keeps the previous checkpoint byte for byte and leaves no temporary directory."""

from __future__ import annotations

import errno
import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError

from corediff.cli import main
from corediff.engine import checkpoint
from corediff.errors import TrainingError

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "recipes" / "quickstart.toml"
TINY = [
    "train.steps=4", "train.batch_size=8", "train.checkpoint_every=2", "train.log_every=2",
    "data.image_size=8", "sample.n=2", "sample.batch_size=2", "diffusion.sampler.steps=3",
    "run.device='cpu'",
]
WEIGHT_FILES = ("model.safetensors", "ema.safetensors", "state.safetensors")


def sets(overrides: list[str]) -> list[str]:
    return [arg for item in overrides for arg in ("--set", item)]


def train_args(run: Path, *extra: str) -> list[str]:
    return ["train", str(QUICKSTART), "--run-dir", str(run), *sets([*TINY, *extra])]


def sample_args(run: Path) -> list[str]:
    return ["sample", str(run), "--n", "2", "--out", str(run.parent / "samples.png")]


def files(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("integrity") / "run"
    assert main(train_args(run)) == 0
    return run


@pytest.fixture
def run(trained, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    return copy


def test_sha256_of_each_weight_file_is_recorded(trained):
    for name in ("last", "best"):
        folder = trained / "checkpoints" / name
        recorded = json.loads((folder / "state.json").read_text())["sha256"]
        assert recorded == {file: hashlib.sha256((folder / file).read_bytes()).hexdigest()
                            for file in WEIGHT_FILES}
    assert "sha256" not in checkpoint.load_state(trained / "checkpoints" / "last")


@pytest.mark.parametrize("name", WEIGHT_FILES)
def test_flipped_bit_is_reported_by_sample(run, name, capsys):
    path = run / "checkpoints" / "last" / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    capsys.readouterr()
    raw = ["--set", "sample.use_ema=false"] if name == "model.safetensors" else []
    assert main([*sample_args(run), *raw]) == 2
    err = capsys.readouterr().err
    assert err == (f"corediff: error: checkpoint '{run / 'checkpoints' / 'last'}': {name} does "
                   "not match its recorded SHA-256 (corrupted?)\n")
    assert not (run.parent / "samples.png").exists()


def test_flipped_bit_is_reported_by_resume(run, capsys):
    path = run / "checkpoints" / "last" / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x80
    path.write_bytes(bytes(data))
    before = files(run / "checkpoints" / "last")
    capsys.readouterr()
    assert main([*train_args(run, "train.steps=6"), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "model.safetensors does not match its recorded SHA-256 (corrupted?)" in err
    assert files(run / "checkpoints" / "last") == before


def test_each_file_is_hashed_once_per_load(run, monkeypatch):
    hashed: list[str] = []
    real = checkpoint.sha256

    def counting(folder: Path, name: str) -> str:
        hashed.append(name)
        return real(folder, name)

    monkeypatch.setattr(checkpoint, "sha256", counting)
    from corediff.engine.loading import load_model, open_checkpoint

    load_model(open_checkpoint(run), use_ema=True)
    assert sorted(hashed) == ["ema.safetensors", "state.safetensors"]


def test_checkpoint_of_corediff_0_1_without_digests_still_loads(run, capsys):
    for name in ("last", "best"):
        path = run / "checkpoints" / name / "state.json"
        meta = json.loads(path.read_text())
        del meta["sha256"]
        path.write_text(json.dumps(meta, indent=1))
    assert main(sample_args(run)) == 0, capsys.readouterr().err
    assert (run.parent / "samples.png").is_file()
    # resuming it works too, and the new checkpoint records its digests
    assert main([*train_args(run, "train.steps=6"), "--resume"]) == 0, capsys.readouterr().err
    state = checkpoint.load_state(run / "checkpoints" / "last")
    assert state["step"] == 6
    meta = json.loads((run / "checkpoints" / "last" / "state.json").read_text())
    assert set(meta["sha256"]) == set(WEIGHT_FILES)


@pytest.mark.parametrize("failing", ["save_file", "save_model"])
def test_disk_full_while_saving_keeps_the_previous_checkpoint(run, failing, monkeypatch, capsys):
    checkpoints = run / "checkpoints"
    before = {name: files(checkpoints / name) for name in ("last", "best")}

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint, failing, full)
    capsys.readouterr()
    assert main([*train_args(run, "train.steps=6"), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("corediff: error:") == 1
    message = err[err.index("corediff: error:"):]  # after the progress bar
    assert any(message.startswith(f"corediff: error: could not write checkpoint "  # best/
                                  f"'{checkpoints / name}': No space left on device")
               for name in ("last", "best"))  # is written first when the score improved
    assert message.endswith("the previous checkpoint is kept\n") and message.count("\n") == 1
    assert sorted(path.name for path in checkpoints.iterdir()) == ["best", "last"]
    assert {name: files(checkpoints / name) for name in ("last", "best")} == before
    monkeypatch.undo()
    # the kept checkpoint resumes
    assert main([*train_args(run, "train.steps=6"), "--resume"]) == 0, capsys.readouterr().err
    assert checkpoint.load_state(checkpoints / "last")["step"] == 6


def test_disk_full_as_safetensors_reports_it(tmp_path, monkeypatch):
    """safetensors' own writer reports a full disk as a SafetensorError, not an OSError."""
    model = torch.nn.Linear(3, 2)
    target = tmp_path / "last"
    checkpoint.save(target, model=model, ema=model, state={"step": 1}, recipe_toml="")
    before = files(target)

    def full(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device "
                              "(os error 28)")

    monkeypatch.setattr(checkpoint, "save_file", full)
    with pytest.raises(TrainingError) as raised:
        checkpoint.save(target, model=model, ema=model, state={"step": 2}, recipe_toml="")
    assert str(raised.value) == (
        f"could not write checkpoint '{target}': No space left on device (free some space, "
        "then continue with --resume); the previous checkpoint is kept")
    assert files(target) == before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["last"]


def test_failed_first_save_says_no_checkpoint_existed(tmp_path, monkeypatch):
    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(checkpoint, "save_model", denied)
    model = torch.nn.Linear(3, 2)
    with pytest.raises(TrainingError, match="Permission denied; no previous checkpoint existed"):
        checkpoint.save(tmp_path / "last", model=model, ema=model, state={}, recipe_toml="")
    assert list(tmp_path.iterdir()) == []
