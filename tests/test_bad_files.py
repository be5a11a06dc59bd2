"""Every bad file is one clear error (exit 2, no traceback) and nothing already written is
lost: corrupted checkpoint files, hostile state.json and recipe.toml, FIFOs and other
non-files where a file should be, hostile recipes, decompression bombs, a torn metrics.csv.

One tiny run is trained per module; each case corrupts a copy of it and runs the real CLI
in-process. A watchdog opens every FIFO of a case for writing after a while, so a regression
that blocks on one fails the test instead of hanging the suite.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from corediff.cli import main
from corediff.engine.rundir import read_metrics

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "recipes" / "quickstart.toml"
TINY = [
    "train.steps=4", "train.batch_size=8", "train.checkpoint_every=2", "train.log_every=2",
    "data.image_size=8", "sample.n=2", "sample.batch_size=2", "diffusion.sampler.steps=3",
    "run.device='cpu'",
]
WEIGHTS = ("model", "ema", "state")
FIFO_TIMEOUT = 20.0


def sets(overrides: list[str]) -> list[str]:
    return [arg for item in overrides for arg in ("--set", item)]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("bad_files") / "run"
    assert main(["train", str(QUICKSTART), "--run-dir", str(run_dir), *sets(TINY)]) == 0
    return run_dir


# -- what a case does to its copy of the run ----------------------------------------------------
def last(run: Path) -> Path:
    return run / "checkpoints" / "last"


def weight_file(run: Path, which: str) -> Path:
    return last(run) / f"{which}.safetensors"


def truncate(which: str) -> Callable[[Path], None]:
    def apply(run: Path) -> None:
        path = weight_file(run, which)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return apply


def zero_bytes(which: str) -> Callable[[Path], None]:
    return lambda run: weight_file(run, which).write_bytes(b"")


def random_bytes(which: str) -> Callable[[Path], None]:
    def apply(run: Path) -> None:
        generator = torch.Generator().manual_seed(len(which))
        data = torch.randint(0, 256, (4096,), dtype=torch.uint8, generator=generator)
        weight_file(run, which).write_bytes(data.numpy().tobytes())
    return apply


def flip_bit(which: str) -> Callable[[Path], None]:
    def apply(run: Path) -> None:
        path = weight_file(run, which)
        data = bytearray(path.read_bytes())
        data[-7] ^= 0x10  # inside the last tensor's data, past the header
        path.write_bytes(bytes(data))
    return apply


def foreign(which: str) -> Callable[[Path], None]:
    return lambda run: save_file({"other.weight": torch.zeros(3, 3)}, weight_file(run, which))


def wrong_shape(which: str) -> Callable[[Path], None]:
    def apply(run: Path) -> None:
        path = weight_file(run, which)
        tensors = load_file(path)
        name = max(tensors, key=lambda key: tensors[key].numel())
        tensors[name] = torch.zeros(tensors[name].numel() + 1, dtype=tensors[name].dtype)
        save_file(tensors, path)
    return apply


def edit_state(change: Callable[[dict], object]) -> Callable[[Path], None]:
    """Apply ``change`` to state.json (its return value, when not None, replaces it)."""
    def apply(run: Path) -> None:
        path = last(run) / "state.json"
        meta = json.loads(path.read_text())
        replaced = change(meta)
        path.write_text(json.dumps(meta if replaced is None else replaced))
    return apply


def without_sha256(then: Callable[[Path], None]) -> Callable[[Path], None]:
    """As a corediff 0.1 checkpoint (no recorded digests), then ``then``."""
    def apply(run: Path) -> None:
        edit_state(lambda meta: meta.__delitem__("sha256"))(run)
        then(run)
    return apply


def write(relative: str, data: bytes) -> Callable[[Path], None]:
    return lambda run: (run / relative).write_bytes(data)


def remove(relative: str) -> Callable[[Path], None]:
    return lambda run: (run / relative).unlink()


def fifo(relative: str) -> Callable[[Path], None]:
    def apply(run: Path) -> None:
        (run / relative).unlink()
        os.mkfifo(run / relative)
    return apply


def directory(relative: str) -> Callable[[Path], None]:
    def apply(run: Path) -> None:
        (run / relative).unlink()
        (run / relative).mkdir()
    return apply


def symlink(relative: str, to: str) -> Callable[[Path], None]:
    def apply(run: Path) -> None:
        (run / relative).unlink()
        (run / relative).symlink_to(to)
    return apply


def deep(opening: str, depth: int = 10_000) -> bytes:
    return ("a = " + opening * depth).encode()


def png_header(width: int, height: int) -> bytes:
    """A small PNG file claiming width × height: its header, and a few bytes of pixel data
    (the rest missing)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(
            ">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(bytes(64))) + chunk(b"IEND", b""))


# -- the commands -------------------------------------------------------------------------------
def sample(run: Path, out: Path) -> list[str]:
    return ["sample", str(run), "--n", "2", "--out", str(out / "samples.png")]


def resume(run: Path, out: Path) -> list[str]:
    return ["train", str(QUICKSTART), "--resume", "--run-dir", str(run), *sets(TINY)]


def validate(name: str) -> Callable[[Path, Path], list[str]]:
    return lambda run, out: ["recipe", "validate", str(out / name)]


def degrade(name: str) -> Callable[[Path, Path], list[str]]:
    return lambda run, out: ["degrade", str(QUICKSTART), "--image", str(out / name),
                             "--out", str(out / "strip.png")]


def restore(name: str) -> Callable[[Path, Path], list[str]]:
    return lambda run, out: [*sample(run, out), "--restore", str(out / name)]


@dataclass(frozen=True)
class Case:
    id: str
    corrupt: Callable[[Path], None]  #: applied to the copy of the run
    command: Callable[[Path, Path], list[str]]  #: (run copy, scratch dir) -> argv
    expect: str  #: in the error message
    scratch: Callable[[Path], None] | None = None  #: prepares files in the scratch dir
    bomb: bool = False  #: lower PIL's MAX_IMAGE_PIXELS for this case


def cases() -> list[Case]:
    found: list[Case] = []
    corruptions = {
        "truncated": truncate, "zero_bytes": zero_bytes, "random_bytes": random_bytes,
        "flipped_bit": flip_bit, "foreign_tensors": foreign, "wrong_shape": wrong_shape,
    }
    for which in WEIGHTS:
        name = f"{which}.safetensors"
        for label, corrupt in corruptions.items():
            expect = "is empty" if label == "zero_bytes" else "does not match its recorded SHA-256"
            # sample reads ema and state; --resume reads all three
            command = resume if which == "model" else sample
            found.append(Case(f"{name}-{label}", corrupt(which), command, f"{name} {expect}"))
            if label in ("flipped_bit", "zero_bytes"):
                found.append(Case(f"{name}-{label}-resume", corrupt(which), resume,
                                  f"{name} {expect}"))
    # corediff 0.1 checkpoints (no digests): the loaders' own checks still catch these
    v01 = {
        ("model", "truncated", "is not a readable safetensors file"),
        ("model", "foreign_tensors", "model weights do not fit the recipe's model"),
        ("model", "wrong_shape", "model weights do not fit the recipe's model"),
        ("ema", "zero_bytes", "is not a readable safetensors file"),
        ("ema", "random_bytes", "is not a readable safetensors file"),
        ("ema", "foreign_tensors", "ema weights do not fit the recipe's model"),
        ("state", "truncated", "is not a readable safetensors file"),
        ("state", "random_bytes", "is not a readable safetensors file"),
        ("state", "foreign_tensors", "which state.safetensors lacks"),
    }
    for which, label, expect in sorted(v01):
        command = resume if which == "model" else sample
        found.append(Case(f"v0.1-{which}.safetensors-{label}",
                          without_sha256(corruptions[label](which)), command, expect))

    # state.json
    def set_key(path: str, value: object) -> Callable[[dict], None]:
        *parents, key = path.split(".")

        def change(meta: dict) -> None:
            table = meta
            for part in parents:
                table = table[part]
            table[key] = value
        return change

    def drop_key(path: str) -> Callable[[dict], None]:
        *parents, key = path.split(".")

        def change(meta: dict) -> None:
            table = meta
            for part in parents:
                table = table[part]
            del table[key]
        return change

    state_json = [
        ("negative_step", set_key("step", -1), "step: Input should be greater than or equal"),
        ("step_as_string", set_key("step", "4"), "step: Input should be a valid integer"),
        ("step_as_float", set_key("step", 4.5), "step: Input should be a valid integer"),
        ("step_null", set_key("step", None), "step: Input should be a valid integer"),
        ("world_size_zero", set_key("world_size", 0), "world_size: Input should be greater"),
        ("data_spec_not_object", set_key("data_spec", [1, 8, 10]), "data_spec: Input should"),
        ("channels_zero", set_key("data_spec.channels", 0), "data_spec.channels"),
        ("channels_string", set_key("data_spec.channels", "1"), "data_spec.channels"),
        ("image_size_negative", set_key("data_spec.image_size", -8), "data_spec.image_size"),
        ("num_classes_zero", set_key("data_spec.num_classes", 0), "data_spec.num_classes"),
        ("unknown_extra_kind", set_key("extra.teleporter", {}), "extra.teleporter"),
        ("extra_not_object", set_key("extra.sampler", [1]), "extra.sampler"),
        ("ranks_not_list", set_key("ranks", {"0": 1}), "ranks: Input should be a valid list"),
        ("ranks_empty", set_key("ranks", []), "ranks: List should have at least 1 item"),
        ("rng_python_wrong", set_key("rng.python", "seed"), "rng.python"),
        ("tensor_reference_dangling", set_key("ranks", [
            {"generator": {"__tensor__": ".nowhere"}, "torch": {"__tensor__": ".nowhere"}}]),
         "refers to tensor '.nowhere', which state.safetensors lacks"),
        ("sha256_not_hex", lambda meta: meta["sha256"].update({"ema.safetensors": "xyz"}),
         "sha256.ema.safetensors: String should match pattern"),
        ("sha256_incomplete", lambda meta: meta["sha256"].__delitem__("state.safetensors"),
         "expected a hex SHA-256 digest for each of"),
        ("list_instead_of_object", lambda meta: [meta], "expected a JSON object, got an array"),
        ("number_instead_of_object", lambda meta: 4, "expected a JSON object, got a number"),
    ]
    state_json += [(f"missing_{key.replace('.', '_')}", drop_key(key), f"{key}: required key")
                   for key in ("step", "world_size", "data_spec", "data_spec.channels",
                               "data_spec.num_classes", "ranks", "rng", "extra", "optimizer",
                               "scheduler", "corediff_version")]
    for label, change, expect in state_json:
        found.append(Case(f"state.json-{label}", edit_state(change), sample, expect))
    for label, change, expect in state_json[:3] + state_json[-3:]:
        found.append(Case(f"state.json-{label}-resume", edit_state(change), resume, expect))
    raw_state = [
        ("invalid_json", b'{"step": 4, "world_size": ', "state.json is not valid JSON"),
        ("empty", b"", "state.json is not valid JSON"),
        ("not_utf8", b'{"step": "\xff\xfe"}', "state.json is not UTF-8 text"),
        ("deeply_nested", b"[" * 100_000, "state.json is not valid JSON: nested too deeply"),
    ]
    for label, data, expect in raw_state:
        for command in (sample, resume):
            suffix = "-resume" if command is resume else ""
            found.append(Case(f"state.json-{label}{suffix}",
                              write("checkpoints/last/state.json", data), command, expect))

    # recipe.toml inside the checkpoint (sample rebuilds the pipeline from it)
    stored = "checkpoints/last/recipe.toml"
    found += [
        Case("recipe.toml-missing", remove(stored), sample, "recipe.toml is missing"),
        Case("recipe.toml-garbage", write(stored, b"[data\ntype = = 3"), sample,
             "TOML syntax error"),
        Case("recipe.toml-not_utf8", write(stored, b"\xff\xfe\x00[data]"), sample,
             "is not UTF-8 text"),
        Case("recipe.toml-deep", write(stored, deep("[")), sample, "nested more than"),
        Case("recipe.toml-huge_integer", write(stored, b"[train]\nsteps = " + b"9" * 5000),
             sample, "an integer has more than 4300 digits"),
        Case("recipe.toml-binary", write(stored, bytes(range(256)) * 4), sample,
             "recipe.toml is not UTF-8 text"),
        Case("recipe.toml-binary-resume", write(stored, bytes(range(256)) * 4), resume,
             "recipe.toml is not UTF-8 text"),
        Case("recipe.toml-huge_integer-resume", write(
            stored, b"[train]\nsteps = " + b"9" * 5000), resume,
             "an integer has more than 4300 digits"),
        Case("recipe.toml-directory", directory(stored), sample,
             "recipe.toml is a directory, not a regular file"),
    ]

    # FIFOs, directories, devices and dangling links where a checkpoint file should be
    for relative in ("state.json", "model.safetensors", "ema.safetensors", "state.safetensors",
                     "recipe.toml"):
        for command in (sample, resume):
            suffix = "-resume" if command is resume else ""
            found.append(Case(f"fifo-{relative}{suffix}", fifo(f"checkpoints/last/{relative}"),
                              command, f"{relative} is a FIFO, not a regular file"))
    found += [
        Case("directory-model.safetensors", directory("checkpoints/last/model.safetensors"),
             resume, "model.safetensors is a directory, not a regular file"),
        Case("directory-state.json", directory("checkpoints/last/state.json"), sample,
             "state.json is a directory, not a regular file"),
        Case("dangling-ema.safetensors", symlink("checkpoints/last/ema.safetensors", "nowhere"),
             sample, "ema.safetensors is a symbolic link to nowhere"),
        Case("device-state.safetensors", symlink("checkpoints/last/state.safetensors",
                                                 os.devnull), sample,
             "state.safetensors is a character device, not a regular file"),
    ]

    # hostile recipes
    def scratch_file(name: str, data: bytes) -> Callable[[Path], None]:
        return lambda out: (out / name).write_bytes(data)

    recipes = [
        ("binary", scratch_file("r.toml", bytes(range(256)) * 4), "is not UTF-8 text"),
        ("not_utf8", scratch_file("r.toml", "[data]\ntype = 'é'".encode("latin-1")),
         "is not UTF-8 text"),
        ("nul_bytes", scratch_file("r.toml", b"[data]\x00\x00"), "is not UTF-8 text"),
        ("deep_arrays", scratch_file("r.toml", deep("[")), "nested more than 64 levels"),
        ("deep_tables", scratch_file("r.toml", deep("{a = ", 300) + b"1" + b"}" * 300),
         "nested more than"),
        ("moderately_deep", scratch_file("r.toml", deep("[", 200) + b"]" * 200),
         "nested more than 64 levels"),
        ("directory", lambda out: (out / "r.toml").mkdir(), "is a directory"),
        ("fifo", lambda out: os.mkfifo(out / "r.toml"), "is a FIFO"),
        ("device", lambda out: (out / "r.toml").symlink_to(os.devnull), "not a regular file"),
    ]
    for label, prepare, expect in recipes:
        found.append(Case(f"recipe-{label}", lambda run: None, validate("r.toml"), expect,
                          scratch=prepare))
        if label in ("binary", "deep_arrays", "fifo"):
            found.append(Case(f"recipe-{label}-train", lambda run: None, lambda run, out: [
                "train", str(out / "r.toml"), "--run-dir", str(out / "new-run")], expect,
                scratch=prepare))

    # images: decompression bombs and non-files
    def bomb_png(out: Path) -> None:
        Image.new("RGB", (64, 64), (200, 30, 30)).save(out / "bomb.png")

    found += [
        Case("image-bomb-degrade", lambda run: None, degrade("bomb.png"),
             "refused as a possible decompression bomb", scratch=bomb_png, bomb=True),
        Case("image-bomb-restore", lambda run: None, restore("bomb.png"),
             "refused as a possible decompression bomb", scratch=bomb_png, bomb=True),
        Case("image-huge-header-degrade", lambda run: None, degrade("huge.png"),
             "refused as a possible decompression bomb",
             scratch=scratch_file("huge.png", png_header(200_000, 200_000))),
        Case("image-fifo-degrade", lambda run: None, degrade("fifo.png"), "is a FIFO",
             scratch=lambda out: os.mkfifo(out / "fifo.png")),
        Case("image-garbage-restore", lambda run: None, restore("x.png"),
             "cannot be read as an image", scratch=scratch_file("x.png", b"not a png")),
    ]
    return found


CASES = cases()


# -- checking that nothing was lost -------------------------------------------------------------
def snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root`` -> a digest of its bytes (regular files), its link target
    or its file type; never opens anything but a regular file. (``.lock``: the run lock.)"""
    found = {}
    for path in sorted(root.rglob("*")):
        relative = str(path.relative_to(root))
        if relative == ".lock":
            continue
        mode = path.lstat().st_mode
        if stat.S_ISLNK(mode):
            found[relative] = f"link to {os.readlink(path)}"
        elif stat.S_ISREG(mode):
            found[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            found[relative] = f"mode {stat.S_IFMT(mode):o}"
    return found


#: Run by the watchdog in its own process (a reader blocked on a FIFO may hold the GIL).
RELEASE = """
import os, sys, time
time.sleep(float(sys.argv[1]))
for _ in range(5):
    for path in sys.argv[3:]:
        try:  # succeeds only while a reader waits on the FIFO, which it then releases
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            continue
        open(sys.argv[2], "w").close()
    time.sleep(1)
"""


class FifoWatchdog:
    """While a case runs, a separate process waits ``timeout`` seconds, then opens each FIFO
    of the case for writing (and closes it), which releases a reader blocked on it; ``fired``
    tells the test it had to. (A thread or SIGALRM could not: a reader blocked inside a
    native library may hold the GIL or retry the interrupted open.)"""

    def __init__(self, *folders: Path, timeout: float = FIFO_TIMEOUT) -> None:
        self.fifos = [str(path) for folder in folders for path in sorted(folder.rglob("*"))
                      if stat.S_ISFIFO(path.lstat().st_mode)]
        self.marker = folders[0].parent / "watchdog-fired"
        self.timeout = timeout
        self.process: subprocess.Popen | None = None

    @property
    def fired(self) -> bool:
        return self.marker.exists()

    def __enter__(self) -> FifoWatchdog:
        if self.fifos:
            self.process = subprocess.Popen([sys.executable, "-c", RELEASE, str(self.timeout),
                                             str(self.marker), *self.fifos])
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()


def test_enough_generated_cases():
    assert len(CASES) >= 40
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_file_is_one_clear_error(case, trained, tmp_path, capsys, monkeypatch):
    run, out = tmp_path / "run", tmp_path / "scratch"
    shutil.copytree(trained, run, symlinks=True)
    out.mkdir()
    case.corrupt(run)
    if case.scratch is not None:
        case.scratch(out)
    if case.bomb:
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    before = snapshot(run)
    capsys.readouterr()
    with FifoWatchdog(run, out) as watchdog:
        code = main(case.command(run, out))
    err = capsys.readouterr().err
    assert not watchdog.fired, "the command blocked on a FIFO"
    assert code == 2, err
    assert err.startswith("corediff: error: "), err
    assert err.count("corediff: error:") == 1 and err.count("\n") == 1, err  # one line
    assert "Traceback" not in err
    assert case.expect in err
    assert snapshot(run) == before  # nothing written was changed or lost


def test_truncated_metrics_are_repaired_on_resume(trained, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    metrics = run / "metrics.csv"
    good = read_metrics(metrics)
    assert [row["step"] for row in good] == ["2", "4"]
    lines = metrics.read_bytes().splitlines()
    metrics.write_bytes(b"\n".join([
        lines[0], lines[1], b"3,0.5", b"garbage \x00\x01\xff\xfe", b"4,a,b,c,d", lines[2],
        b"7,0.1,0.001,0.5,100.0",  # after the checkpoint's step: dropped
        b"8,0.1,0.0",  # a half-written last line (no newline)
    ]))
    code = main(["train", str(QUICKSTART), "--resume", "--run-dir", str(run),
                 *sets([*TINY, "train.steps=6"])])
    assert code == 0, capsys.readouterr().err
    rows = read_metrics(metrics)
    assert [row["step"] for row in rows] == ["2", "4", "6"]
    assert rows[:2] == good
    assert metrics.read_text().splitlines()[0] == "step,loss,lr,grad_norm,images_per_s"


def test_read_metrics_never_fails_on_garbage(tmp_path):
    path = tmp_path / "metrics.csv"
    generator = torch.Generator().manual_seed(0)
    path.write_bytes(torch.randint(0, 256, (5000,), dtype=torch.uint8,
                                   generator=generator).numpy().tobytes())
    assert read_metrics(path) == []
    path.write_bytes(b"step,loss,lr,grad_norm,images_per_s\n1,2,3,4,5\n-1,2,3,4,5\n1,2,x,4,5\n")
    assert read_metrics(path) == [dict(step="1", loss="2", lr="3", grad_norm="4",
                                       images_per_s="5")]


def test_image_folder_skips_a_decompression_bomb(tmp_path, monkeypatch):
    from corediff_plugins.datasets.image_folder import ImageFolderConfig, ImageFolderDataset

    Image.new("RGB", (16, 16), (0, 0, 0)).save(tmp_path / "a_small.png")
    Image.new("RGB", (40, 40), (255, 0, 0)).save(tmp_path / "b_bomb.png")
    Image.new("RGB", (16, 16), (0, 0, 255)).save(tmp_path / "c_small.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 40×40 = 1600 pixels: a "bomb"
    dataset = ImageFolderDataset(ImageFolderConfig(root=str(tmp_path), image_size=8,
                                                   hflip=False))
    with pytest.warns(UserWarning, match="skipping unreadable image .*b_bomb.png"):
        image, _ = dataset[1]
    assert dataset.skipped == 1
    torch.testing.assert_close(image, dataset[2][0])  # replaced by the next readable one
    assert dataset.scan() == 1
