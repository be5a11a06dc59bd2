"""Hostile input, round two (issue 18): every case is one clear error and nothing already
written is lost.

Each CLI case prepares a scratch folder (a copy of one tiny trained run, a copy of one tiny
trained study cell, files of its own), runs the real CLI in-process and asserts exit code 2,
one message block starting ``corediff: error: ``, no traceback, the expected words, and that
every file that existed before has the same bytes after. Each Python API case asserts a
corediff error that is also a ``ValueError``/``TypeError`` and names the argument.

"Read-only" places are made immutable (``chattr +i``) when the tests run as root, whom file
modes do not stop.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

import corediff
from corediff.cli import main
from corediff.errors import CorediffError

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "recipes" / "quickstart.toml"
STUDY = ROOT / "tests" / "data" / "study"
TINY = [
    "train.steps=4", "train.batch_size=8", "train.checkpoint_every=2", "train.log_every=2",
    "data.image_size=8", "sample.n=2", "sample.batch_size=2", "diffusion.sampler.steps=3",
    "run.device='cpu'",
]
HUGE = "9" * 5000  #: beyond Python's 4300-digit limit on int() of a decimal string
AS_ROOT = os.geteuid() == 0


def sets(overrides: list[str]) -> list[str]:
    return [arg for item in overrides for arg in ("--set", item)]


# -- shared, trained once per module ------------------------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("hostile") / "run"
    assert main(["train", str(QUICKSTART), "--run-dir", str(run), *sets(TINY)]) == 0
    return run


@pytest.fixture(scope="module")
def study_out(tmp_path_factory) -> Path:
    """A study output folder holding one trained cell (weighting=simple, seed 0) of
    tests/data/study/tiny.toml."""
    from corediff.studies import runner
    from corediff.studies.config import load_study

    out = tmp_path_factory.mktemp("hostile_study") / "out"
    study = load_study(STUDY / "tiny.toml")
    runner.train_cell(study, study.cells()[0], 0, out)
    return out


@pytest.fixture(scope="module")
def pipeline(trained):
    return corediff.load(trained, which="last")


# -- what a case works in -----------------------------------------------------------------------
@dataclass
class Env:
    """A case's scratch folder: ``run`` (a copy of the trained run), ``study`` (a copy of the
    trained study output), ``files`` (anything else the case makes)."""

    root: Path

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def study(self) -> Path:
        return self.root / "study"

    @property
    def files(self) -> Path:
        return self.root / "files"

    def file(self, name: str, data: bytes | str) -> Path:
        path = self.files / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return path


IMMUTABLE: list[Path] = []


def read_only(path: Path) -> None:
    """Make ``path`` unwritable: its mode, and for root (whom modes do not stop) the
    immutable attribute (undone after the case)."""
    path.chmod(stat.S_IMODE(path.stat().st_mode) & ~0o222)
    if AS_ROOT:
        subprocess.run(["chattr", "+i", str(path)], check=True)
        IMMUTABLE.append(path)


def writable_again() -> None:
    while IMMUTABLE:
        path = IMMUTABLE.pop()
        subprocess.run(["chattr", "-i", str(path)], check=False)
        path.chmod(stat.S_IMODE(path.stat().st_mode) | 0o200)


def last(env: Env) -> Path:
    return env.run / "checkpoints" / "last"


def edit_json(path: Path, change: Callable[[Any], Any]) -> None:
    """Rewrite a JSON file with ``change(data)`` (its return value, when not None)."""
    data = json.loads(path.read_text())
    replaced = change(data)
    path.write_text(json.dumps(data if replaced is None else replaced))


def rehash(env: Env, name: str) -> None:
    """Record the current SHA-256 of a weight file in state.json (a "consistent" edit)."""
    digest = hashlib.sha256((last(env) / name).read_bytes()).hexdigest()
    edit_json(last(env) / "state.json", lambda meta: meta["sha256"].__setitem__(name, digest))


def png(path: Path, width: int, height: int, mode: str = "RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (width, height), 128).save(path)
    return path


def folder_recipe(env: Env, images: Path, extra: str = "") -> Path:
    """A tiny image_folder recipe over ``images``."""
    text = (STUDY / "base.toml").read_text().replace(
        '[data]\ntype = "digits"\nimage_size = 8\nclass_labels = false',
        f'[data]\ntype = "image_folder"\nroot = "{images}"\nimage_size = 8\nchannels = 1\n'
        f'hflip = false\n{extra}')
    return env.file("folder.toml", text)


# -- the cases ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    id: str
    argv: Callable[[Env], list[str]]  #: prepares the case's files, returns the command
    expect: str  #: in the error message
    needs: tuple[str, ...] = ()  #: "run", "study": copies made before argv is called
    noisy: bool = False  #: the command prints progress before it fails


def study(env: Env, text: str, *extra: str) -> list[str]:
    path = env.file("study.toml", text)
    shutil.copy(STUDY / "base.toml", env.files / "base.toml")
    return ["study", str(path), "--out", str(env.files / "out"), "--dry-run", *extra]


TINY_STUDY = (STUDY / "tiny.toml").read_text()


def axes(table: str) -> str:
    """tiny.toml with its [axes.weighting] table replaced by ``table``."""
    start = TINY_STUDY.index("[axes.weighting]")
    end = TINY_STUDY.index("[[samplers]]")
    questions = TINY_STUDY.index("[[questions]]")
    return TINY_STUDY[:start] + table + "\n" + TINY_STUDY[end:questions]


def samplers(name: str) -> str:
    return TINY_STUDY.replace('name = "ddim5"', f'name = "{name}"').split("[[questions]]")[0]


def study_cases() -> list[Case]:
    plain = "must be plain"
    found = [
        Case("study-axis-traversal", lambda env: study(
            env, axes('[axes."../../../../../x"]\na = []')), plain),
        Case("study-axis-absolute", lambda env: study(env, axes('[axes."/tmp/x"]\na = []')),
             plain),
        Case("study-level-traversal", lambda env: study(
            env, axes('[axes.weighting]\n"../../x" = []')), plain),
        Case("study-level-absolute", lambda env: study(
            env, axes('[axes.weighting]\n"/etc" = []')), plain),
        Case("study-cell-traversal", lambda env: study(
            env, axes('[[cells]]\nname = "../../x"\nset = []')), "'../../x' is not allowed"),
        Case("study-cell-absolute", lambda env: study(
            env, axes('[[cells]]\nname = "/tmp/x"\nset = []')), "'/tmp/x' is not allowed"),
        Case("study-sampler-traversal", lambda env: study(env, samplers("../x")),
             "[samplers.0] name: '../x' is not allowed"),
        Case("study-sampler-absolute", lambda env: study(env, samplers("/x")),
             "[samplers.0] name: '/x' is not allowed"),
        Case("study-name-dotdot", lambda env: study(
            env, TINY_STUDY.replace('name = "tiny"', 'name = ".."')), "name"),
        Case("study-nul-byte", lambda env: study(
            env, TINY_STUDY.replace("A 2 × 2", "A \0 2")), "study.toml"),
        Case("study-nul-escape-in-recipe", lambda env: study(
            env, TINY_STUDY.replace('"base.toml"', '"base\\u0000.toml"')), "NUL"),
        Case("study-huge-seed", lambda env: study(
            env, TINY_STUDY.replace("seeds = [0, 1]", f"seeds = [{HUGE}]")), "4300"),
        Case("study-huge-n", lambda env: study(
            env, TINY_STUDY.replace("n = 16", f"n = {HUGE}")), "4300"),
        Case("study-not-utf8", lambda env: study(
            env, TINY_STUDY.encode().replace(b"tiny", b"\xff\xfe").decode("latin-1")),
            "study.toml"),
        Case("study-jobs-zero", lambda env: study(env, TINY_STUDY, "--jobs", "0"), "--jobs"),
        Case("study-launcher-slurm-without-srun", lambda env: [
            *study(env, TINY_STUDY)[:-1], "--launcher", "slurm"], "slurm"),
        Case("study-report-under-a-file", lambda env: [
            *study(env, TINY_STUDY)[:-1], "--report", str(env.file("f", "x") / "report")],
            "--report"),
        Case("study-out-under-a-file", lambda env: [
            "study", *study(env, TINY_STUDY)[1:2], "--out", str(env.file("f", "x") / "o")],
            "--out"),
        Case("study-report-read-only", lambda env: [
            *study(env, TINY_STUDY)[:-1], "--report", str(ro_folder(env, "ro") / "report")],
            "--report"),
    ]
    return found


def ro_folder(env: Env, name: str) -> Path:
    folder = env.files / name
    folder.mkdir(parents=True, exist_ok=True)
    read_only(folder)
    return folder


def sample(env: Env, *extra: str) -> list[str]:
    return ["sample", str(env.run), "--n", "2", *extra]


def resume(env: Env, *overrides: str) -> list[str]:
    return ["train", str(QUICKSTART), "--resume", "--run-dir", str(env.run),
            *sets([*TINY, *overrides])]


def evaluate(env: Env, *extra: str) -> list[str]:
    return ["eval", str(env.run), "--n", "2", *extra]


def degrade(env: Env, image: Path, *extra: str) -> list[str]:
    return ["degrade", str(QUICKSTART), "--image", str(image), *extra]


def grey(env: Env, name: str = "x.png") -> Path:
    return png(env.files / name, 8, 8, "L")


def unwritable_cases() -> list[Case]:
    ro = "read-only"
    return [
        Case("sample-out-in-read-only-folder", lambda env: sample(
            env, "--out", str(ro_folder(env, "ro") / "grid.png")), ro, ("run",)),
        Case("sample-out-read-only-file", lambda env: sample(
            env, "--out", str(read_only_file(env, "grid.png"))), ro, ("run",)),
        Case("sample-individual-in-read-only-folder", lambda env: sample(
            env, "--individual", "--out", str(ro_folder(env, "ro") / "each")), ro, ("run",)),
        Case("sample-into-read-only-run", lambda env: (read_only(env.run), sample(env))[1],
             ro, ("run",)),
        Case("eval-out-in-read-only-folder", lambda env: evaluate(
            env, "--out", str(ro_folder(env, "ro") / "e.json")), ro, ("run",)),
        Case("eval-into-read-only-run", lambda env: (read_only(env.run), evaluate(env))[1],
             ro, ("run",)),
        Case("degrade-out-in-read-only-folder", lambda env: degrade(
            env, grey(env), "--out", str(ro_folder(env, "ro") / "s.png")), ro),
        Case("degrade-beside-read-only-image", lambda env: degrade(
            env, (png(ro_path(env) / "x.png", 8, 8, "L"), read_only(ro_path(env)),
                  ro_path(env) / "x.png")[2]), ro),
        Case("bench-out-read-only", lambda env: [
            "bench", "--quick", "--out", str(ro_folder(env, "ro") / "bench")], ro),
        Case("bench-out-is-a-file", lambda env: [
            "bench", "--quick", "--out", str(env.file("bench", "x"))], "is not a folder"),
        Case("recipe-schema-out-read-only-file", lambda env: [
            "recipe", "schema", "--out", str(read_only_file(env, "schema.json"))], ro),
        Case("recipe-schema-out-in-read-only-folder", lambda env: [
            "recipe", "schema", "--out", str(ro_folder(env, "ro") / "schema.json")], ro),
        Case("recipe-schema-out-is-a-folder", lambda env: [
            "recipe", "schema", "--out", str(env.files)], "is a folder"),
        Case("study-out-read-only", lambda env: [
            *study(env, TINY_STUDY)[:3], str(ro_folder(env, "ro") / "out")], ro),
        Case("train-run-dir-in-read-only-folder", lambda env: [
            "train", str(QUICKSTART), "--run-dir", str(ro_folder(env, "ro") / "run"),
            *sets(TINY)], ro),
        Case("train-run-dir-under-a-file", lambda env: [
            "train", str(QUICKSTART), "--run-dir", str(env.file("f", "x") / "run"),
            *sets(TINY)], "is not a folder"),
        Case("resume-read-only-lock-file", lambda env: (
            (env.run / ".lock").touch(), read_only(env.run / ".lock"),
            resume(env, "train.steps=6"))[2], ".lock", ("run",), noisy=True),
        Case("resume-read-only-metrics", lambda env: (
            read_only(env.run / "metrics.csv"), resume(env, "train.steps=6"))[1],
            "metrics.csv", ("run",), noisy=True),
        Case("eval-read-only-digits-cache", lambda env: (
            os.environ.__setitem__("COREDIFF_CACHE", str(ro_folder(env, "cache"))),
            evaluate(env))[1], "COREDIFF_CACHE", ("run",), noisy=True),
    ]


def ro_path(env: Env) -> Path:
    (env.files / "ro").mkdir(exist_ok=True)
    return env.files / "ro"


def read_only_file(env: Env, name: str) -> Path:
    path = env.file(name, b"kept")
    read_only(path)
    return path


def prepared(env: Env, *images: tuple[str, int, int]) -> Path:
    """An image folder of ``(name, width, height)`` greyscale PNGs, prepared; returns its
    recipe."""
    for name, width, height in images:
        png(env.files / "images" / name, width, height, "L")
    recipe = folder_recipe(env, env.files / "images")
    assert main(["data", "prepare", str(recipe)]) == 0
    return recipe


def cache_folder(env: Env) -> Path:
    return next((env.files / "images" / ".corediff_cache").iterdir())


def edit_index(change: Callable[[np.ndarray], np.ndarray]) -> Callable[[Env], list[str]]:
    def argv(env: Env) -> list[str]:
        recipe = prepared(env, ("a.png", 8, 8), ("b.png", 8, 12))
        path = cache_folder(env) / "index.npy"
        np.save(path, change(np.load(path)))
        return train_new(env, recipe)
    return argv


def edit_manifest(change: Callable[[dict], Any]) -> Callable[[Env], list[str]]:
    def argv(env: Env) -> list[str]:
        recipe = prepared(env, ("a.png", 8, 8), ("b.png", 8, 12))
        edit_json(cache_folder(env) / "manifest.json", change)
        return train_new(env, recipe)
    return argv


def train_new(env: Env, recipe: Path, *extra: str) -> list[str]:
    return ["train", str(recipe), "--run-dir", str(env.files / "new-run"), *extra]


def negative(index: np.ndarray) -> np.ndarray:
    index[1, 1] = -8
    return index


def zero_width(index: np.ndarray) -> np.ndarray:
    index[1, 2] = 0
    return index


def strip(env: Env, width: int = 1, height: int = 100_000) -> Path:
    return png(env.files / "images" / "strip.png", width, height, "L")


def data_cases() -> list[Case]:
    unusable = "rerun `corediff data prepare`"
    return [
        Case("cache-index-negative-height", edit_index(negative), unusable),
        Case("cache-index-zero-width", edit_index(zero_width), unusable),
        Case("cache-index-not-int", edit_index(lambda index: index.astype(np.float32)),
             unusable),
        Case("cache-index-wrong-columns", edit_index(lambda index: index[:, :2]), unusable),
        Case("cache-manifest-without-sources-hash", edit_manifest(
            lambda manifest: manifest.__delitem__("sources_sha256")), unusable),
        Case("cache-manifest-settings-not-a-table", edit_manifest(
            lambda manifest: manifest.__setitem__("settings", [1])), unusable),
        Case("cache-manifest-count-string", edit_manifest(
            lambda manifest: manifest.__setitem__("count", "2")), unusable),
        Case("cache-manifest-not-an-object", edit_manifest(lambda manifest: [manifest]),
             unusable),
        Case("prepare-nul-in-cache-dir", lambda env: [
            "data", "prepare", str(folder_recipe(env, env.files)),
            "--set", 'data.cache_dir="a\\u0000b"'], "NUL"),
        Case("prepare-nul-in-root", lambda env: [
            "data", "prepare", str(folder_recipe(env, env.files / "a\\u0000b"))], "NUL"),
        Case("prepare-thin-strip", lambda env: (strip(env), [
            "data", "prepare", str(folder_recipe(env, env.files / "images"))])[1],
             "none of the 1 images", noisy=True),
        Case("train-thin-strip", lambda env: (strip(env), train_new(
            env, folder_recipe(env, env.files / "images")))[1], "no image under data.root",
            noisy=True),
        Case("degrade-thin-strip", lambda env: degrade(env, strip(env)), "aspect ratio"),
        Case("degrade-wide-strip", lambda env: degrade(env, strip(env, 100_000, 1)),
             "aspect ratio"),
        Case("restore-thin-strip", lambda env: sample(env, "--restore", str(strip(env))),
             "aspect ratio", ("run",)),
    ]


def huge_recipe(env: Env, key: str, value: str) -> Path:
    text = QUICKSTART.read_text()
    return env.file("huge.toml", text + f"\n[extra_{key}]\nx = {value}\n")


def state_text(change: Callable[[str], str]) -> Callable[[Env], None]:
    def apply(env: Env) -> None:
        path = last(env) / "state.json"
        path.write_text(change(path.read_text()))
    return apply


def nan_weights(env: Env) -> None:
    for name in ("ema.safetensors", "model.safetensors"):
        tensors = load_file(last(env) / name)
        first = next(iter(tensors))
        tensors[first] = torch.full_like(tensors[first], float("nan"))
        save_file(tensors, last(env) / name)
        rehash(env, name)


def wrong_optimizer_shape(env: Env) -> None:
    tensors = load_file(last(env) / "state.safetensors")
    name = next(key for key in tensors if key.endswith("exp_avg"))
    tensors[name] = torch.zeros(tensors[name].numel() + 3)
    save_file(tensors, last(env) / "state.safetensors")
    rehash(env, "state.safetensors")


def then(apply: Callable[[Env], Any], argv: Callable[[Env], list[str]]
         ) -> Callable[[Env], list[str]]:
    """Apply ``apply`` to the case's files, then build the command."""
    return lambda env: (apply(env), argv(env))[1]


def number_cases() -> list[Case]:
    digits = "4300 digits"
    return [
        Case("recipe-huge-int-validate", lambda env: [
            "recipe", "validate", str(env.file("r.toml", QUICKSTART.read_text().replace(
                "[train]", f"[train]\nsteps = {HUGE}")))], digits),
        Case("recipe-huge-int-train", lambda env: train_new(env, env.file(
            "r.toml", QUICKSTART.read_text().replace("[train]", f"[train]\nseed = -{HUGE}"))),
            digits),
        Case("override-huge-int", lambda env: [
            "recipe", "validate", str(QUICKSTART), "--set", f"train.steps={HUGE}"], digits),
        Case("override-huge-int-in-array", lambda env: [
            "recipe", "validate", str(QUICKSTART), "--set", f"train.x=[1, {HUGE}]"], digits),
        Case("override-huge-int-sample", lambda env: sample(
            env, "--set", f"diffusion.sampler.steps={HUGE}"), digits, ("run",)),
        Case("checkpoint-huge-step", then(state_text(
            lambda text: text.replace('"step": 4', f'"step": {HUGE}', 1)), sample),
            "state.json", ("run",)),
        Case("checkpoint-huge-step-resume", then(state_text(
            lambda text: text.replace('"step": 4', f'"step": {HUGE}', 1)), resume),
            "state.json", ("run",)),
        Case("checkpoint-huge-rng", then(lambda env: edit_json(  # the rank's own, read first
            last(env) / "state.json", lambda meta: meta["ranks"][0]["python"].__setitem__(
                1, [2 ** 200] * 625)), resume), "rng", ("run",)),
        Case("checkpoint-rng-wrong-version", then(lambda env: edit_json(
            last(env) / "state.json", lambda meta: meta["ranks"][0]["python"].__setitem__(
                0, 99)), resume), "rng", ("run",)),
        Case("lr-1e308", lambda env: [
            "recipe", "validate", str(QUICKSTART), "--set", "train.lr=1e308"], "train] lr"),
        Case("lr-1e308-train", lambda env: train_new(
            env, QUICKSTART, "--set", "train.lr=1e308"), "train] lr"),
        Case("lr-inf", lambda env: [
            "recipe", "validate", str(QUICKSTART), "--set", "train.lr=inf"], "train] lr"),
        Case("factor-cache-gib-1e308", lambda env: [
            "recipe", "validate", str(QUICKSTART), "--set",
            "train.factor_cache_host_gib=1e308"], "factor_cache_host_gib"),
        Case("max-minutes-1e308", lambda env: [
            "recipe", "validate", str(QUICKSTART), "--set", "train.max_minutes=1e308"],
            "max_minutes"),
        Case("eval-nan-weights", then(nan_weights, evaluate), "not finite", ("run",)),
        Case("sample-nan-weights", then(nan_weights, sample), "not finite", ("run",)),
    ]


def run_file_cases() -> list[Case]:
    def make_dir(name: str) -> Callable[[Env], None]:
        return lambda env: (env.run / name).unlink(missing_ok=True) or (env.run / name).mkdir()

    def loop(env: Env) -> Path:
        (env.files / "loop").symlink_to(env.files / "loop")
        return env.files / "loop"

    return [
        Case("resume-log-is-a-folder", then(make_dir("resume_log.jsonl"), lambda env: resume(
            env, "train.steps=6")), "resume_log.jsonl", ("run",), noisy=True),
        Case("run-recipe-is-a-folder", then(make_dir("recipe.toml"), lambda env: resume(
            env, "train.steps=6")), "recipe.toml", ("run",), noisy=True),
        Case("optimizer-state-wrong-shape", then(wrong_optimizer_shape, lambda env: resume(
            env, "train.steps=6")), "optimizer state", ("run",), noisy=True),
        Case("data-spec-extra-field", then(lambda env: edit_json(
            last(env) / "state.json", lambda meta: meta["data_spec"].__setitem__("depth", 3)),
            sample), "data_spec.depth", ("run",)),
        Case("data-spec-extra-field-resume", then(lambda env: edit_json(
            last(env) / "state.json", lambda meta: meta["data_spec"].__setitem__("depth", 3)),
            resume), "data_spec.depth", ("run",)),
        Case("checkpoint-recipe-deep-arrays-resume", then(lambda env: (
            last(env) / "recipe.toml").write_text("a = " + "[" * 10_000), resume), "nested",
            ("run",), noisy=True),
        Case("run-dir-symlink-loop", lambda env: [
            "train", str(QUICKSTART), "--run-dir", str(loop(env)), *sets(TINY)], "loop"),
        Case("run-dir-nul", lambda env: [
            "train", str(QUICKSTART), "--run-dir", "runs/a\0b", *sets(TINY)], "NUL"),
        Case("sample-source-nul", lambda env: ["sample", "runs/a\0b"], "NUL"),
        Case("recipe-path-nul", lambda env: ["recipe", "validate", "a\0b.toml"], "NUL"),
    ]


def output_cases() -> list[Case]:
    return [
        Case("sample-out-is-a-folder", lambda env: sample(env, "--out", str(env.files)),
             "is a folder", ("run",)),
        Case("sample-individual-out-is-a-file", lambda env: sample(
            env, "--individual", "--out", str(env.file("x.png", "kept"))), "is not a folder",
            ("run",)),
        Case("sample-individual-out-is-a-system-file", lambda env: sample(
            env, "--individual", "--out", "/etc/passwd"), "is not a folder", ("run",)),
        Case("restore-out-is-a-folder", lambda env: sample(
            env, "--restore", str(grey(env)), "--out", str(env.files)), "is a folder",
            ("run",)),
        Case("degrade-out-is-a-folder", lambda env: degrade(
            env, grey(env), "--out", str(env.files)), "is a folder"),
        Case("eval-out-is-a-folder", lambda env: evaluate(env, "--out", str(env.files)),
             "is a folder", ("run",)),
        Case("eval-out-under-a-file", lambda env: evaluate(
            env, "--out", str(env.file("f", "x") / "e.json")), "is not a folder", ("run",)),
    ]


def study_run(env: Env) -> Path:
    return env.study / "weighting-simple" / "seed0"


def in_study(change: Callable[[Path], Any], *, finished: bool = True
             ) -> Callable[[Env], list[str]]:
    """Apply ``change`` to the trained cell's run folder (``finished``: its study.json says
    training finished, so the study goes on to evaluate it; else it resumes training)."""
    def argv(env: Env) -> list[str]:
        change(study_run(env))
        if not finished:  # as train_cell writes it when it starts a run
            record = study_run(env) / "study.json"
            fingerprint = json.loads(record.read_text())["fingerprint"]
            record.write_text(json.dumps({"fingerprint": fingerprint}) + "\n")
        return ["study", str(STUDY / "tiny.toml"), "--out", str(env.study), "--only",
                "weighting=simple,sampler=ddim5"]
    return argv


def study_folder_cases() -> list[Case]:
    def state(data: bytes) -> Callable[[Path], None]:
        return lambda run: (run / "checkpoints" / "last" / "state.json").write_bytes(data)

    return [
        Case(f"study-state.json-{label}{'' if finished else '-resume'}",
             in_study(state(data), finished=finished), "state.json", ("study",), noisy=True)
        for label, data in (("invalid", b'{"step": '), ("an-array", b"[1, 2]"),
                            ("step-a-string", b'{"step": "4"}'))
        for finished in (True, False)
    ]


CASES: list[Case] = [*study_cases(), *unwritable_cases(), *data_cases(), *number_cases(),
                     *run_file_cases(), *output_cases(), *study_folder_cases()]


# -- checking that nothing was lost -------------------------------------------------------------
def snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root`` -> a digest of its bytes (regular files), its link target
    or its file type; never opens anything but a regular file (``.lock``: the run lock)."""
    found = {}
    for path in sorted(root.rglob("*")):
        relative = str(path.relative_to(root))
        if path.name == ".lock":
            continue
        mode = path.lstat().st_mode
        if stat.S_ISLNK(mode):
            found[relative] = f"link to {os.readlink(path)}"
        elif stat.S_ISREG(mode):
            found[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
        else:
            found[relative] = f"mode {stat.S_IFMT(mode):o}"
    return found


def test_enough_generated_cases():
    assert len(CASES) >= 60
    assert len({case.id for case in CASES}) == len(CASES)


#: Cases whose fix belongs to a file another change is editing (corediff/engine/checkpoint.py:
#: state.json's reader must catch the ValueError of an integer beyond 4300 digits).
PARAMS = [pytest.param(case, id=case.id) for case in CASES]


@pytest.mark.parametrize("case", PARAMS)
def test_hostile_input_is_one_clear_error(case, request, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COREDIFF_CACHE", os.environ.get("COREDIFF_CACHE", "~/.cache/corediff"))
    env = Env(tmp_path)
    env.files.mkdir()
    if "run" in case.needs:
        shutil.copytree(request.getfixturevalue("trained"), env.run, symlinks=True)
    if "study" in case.needs:
        shutil.copytree(request.getfixturevalue("study_out"), env.study, symlinks=True)
    try:
        argv = case.argv(env)
        before = snapshot(tmp_path)
        capsys.readouterr()
        code = main(argv)
        err = capsys.readouterr().err
        after = snapshot(tmp_path)
    finally:
        writable_again()
    block = err[err.find("corediff: error: "):] if case.noisy else err
    assert code == 2, err
    assert block.startswith("corediff: error: "), err
    assert err.count("corediff: error:") == 1, err
    assert "Traceback" not in err
    assert case.expect in block, err
    assert {path: after.get(path) for path in before} == before  # nothing lost or changed


# -- the Python API -----------------------------------------------------------------------------
@dataclass(frozen=True)
class ApiCase:
    id: str
    call: Callable[[Any, Path], Any]  #: (the loaded pipeline, the trained run) -> anything
    error: type  #: ValueError or TypeError
    expect: str  #: the argument's name (and what is allowed), in the message


def images(shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.zeros(shape, dtype=dtype)


API_CASES = [
    ApiCase("sample-n-zero", lambda p, run: p.sample(0), ValueError, "n = 0 is outside 1.."),
    ApiCase("sample-n-negative", lambda p, run: p.sample(-3), ValueError, "n = -3"),
    ApiCase("sample-n-float", lambda p, run: p.sample(2.5), TypeError, "n must be an integer"),
    ApiCase("sample-n-string", lambda p, run: p.sample("4"), TypeError, "n must be an integer"),
    ApiCase("sample-n-none", lambda p, run: p.sample(None), TypeError, "n must be an integer"),
    ApiCase("sample-n-huge", lambda p, run: p.sample(10**7), ValueError, "n = 10000000"),
    ApiCase("sample-labels-out-of-range", lambda p, run: p.sample(
        2, labels=torch.tensor([11, 0])), ValueError, "labels must be classes 0..9"),
    ApiCase("sample-labels-negative", lambda p, run: p.sample(
        2, labels=torch.tensor([-1, 0])), ValueError, "labels must be classes"),
    ApiCase("sample-labels-mis-sized", lambda p, run: p.sample(
        2, labels=torch.tensor([1, 2, 3])), ValueError, "labels must have shape [2]"),
    ApiCase("sample-labels-float", lambda p, run: p.sample(
        2, labels=torch.tensor([1.0, 2.0])), TypeError, "labels must be an integer tensor"),
    ApiCase("sample-label-int-out-of-range", lambda p, run: p.sample(2, labels=10), ValueError,
            "label = 10 is not a class"),
    ApiCase("sample-labels-string", lambda p, run: p.sample(2, labels="3"), TypeError,
            "labels must be None, an int"),
    ApiCase("sample-steps-zero", lambda p, run: p.sample(2, steps=0), ValueError,
            "steps = 0 is outside 1.."),
    ApiCase("sample-steps-negative", lambda p, run: p.sample(2, steps=-5), ValueError,
            "steps = -5"),
    ApiCase("sample-steps-huge", lambda p, run: p.sample(2, steps=10**12), ValueError,
            "steps = 1000000000000 is outside"),
    ApiCase("sample-steps-float", lambda p, run: p.sample(2, steps=2.5), TypeError,
            "steps must be an integer"),
    ApiCase("sample-seed-huge", lambda p, run: p.sample(2, seed=2**70), ValueError,
            "seed = (an integer of about 22 digits) is outside 0..4294967295"),
    ApiCase("sample-seed-beyond-4300-digits", lambda p, run: p.sample(2, seed=10**5000),
            ValueError, "seed = (an integer of about 5001 digits)"),
    ApiCase("sample-seed-negative", lambda p, run: p.sample(2, seed=-1), ValueError, "seed"),
    ApiCase("sample-seed-string", lambda p, run: p.sample(2, seed="0"), TypeError,
            "seed must be an integer"),
    ApiCase("sample-unknown-keyword", lambda p, run: p.sample(2, stepz=3), TypeError,
            "unknown keyword argument 'stepz'. Did you mean 'steps'?"),
    ApiCase("generate-unknown-keyword", lambda p, run: p.generate(2, colour=1), TypeError,
            "unknown keyword argument 'colour'"),
    ApiCase("sample-batch-size-zero", lambda p, run: p.sample(2, batch_size=0), ValueError,
            "batch_size = 0"),
    ApiCase("sample-precision-unknown", lambda p, run: p.sample(2, precision="fp8"),
            ValueError, "precision must be"),
    ApiCase("restore-wrong-channels", lambda p, run: p.restore(images((2, 3, 8, 8)), 10),
            ValueError, "images must have shape [B, 1, 8, 8]"),
    ApiCase("restore-wrong-size", lambda p, run: p.restore(images((2, 1, 16, 16)), 10),
            ValueError, "images must have shape [B, 1, 8, 8]"),
    ApiCase("restore-three-dimensions", lambda p, run: p.restore(images((1, 8, 8)), 10),
            ValueError, "images must have shape"),
    ApiCase("restore-not-a-tensor", lambda p, run: p.restore([[0.0]], 10), TypeError,
            "images must be a float tensor"),
    ApiCase("restore-integer-images", lambda p, run: p.restore(
        images((2, 1, 8, 8), torch.uint8), 10), TypeError, "images must be a float tensor"),
    ApiCase("restore-t-zero", lambda p, run: p.restore(images((2, 1, 8, 8)), 0), ValueError,
            "t must be in 1..1000"),
    ApiCase("restore-t-string", lambda p, run: p.restore(images((2, 1, 8, 8)), "5"),
            TypeError, "t must be a number"),
    ApiCase("restore-labels-mis-sized", lambda p, run: p.restore(
        images((2, 1, 8, 8)), 10, labels=torch.tensor([1])), ValueError,
        "labels must have shape [2]"),
    ApiCase("train-42", lambda p, run: corediff.train(42), TypeError,
            "recipe must be a path to a TOML recipe, a Recipe or a Pipeline, not int"),
    ApiCase("train-none", lambda p, run: corediff.train(None), TypeError, "recipe must be"),
    ApiCase("train-run-dir-nul", lambda p, run: corediff.train(QUICKSTART, run_dir="a\0b"),
            ValueError, "run_dir 'a\\x00b' contains a NUL"),
    ApiCase("load-42", lambda p, run: corediff.load(42), TypeError,
            "source must be a path (str or pathlib.Path), not int"),
    ApiCase("load-nul", lambda p, run: corediff.load("runs/a\0b"), ValueError,
            "source 'runs/a\\x00b' contains a NUL"),
    ApiCase("load-which-unknown", lambda p, run: corediff.load(run, which="middle"),
            ValueError, "which must be 'best' or 'last'"),
    ApiCase("load-overrides-one-string", lambda p, run: corediff.load(
        run, overrides="train.steps=3"), TypeError, "overrides must be a list"),
]


def test_enough_api_cases():
    assert len(API_CASES) >= 21
    assert len({case.id for case in API_CASES}) == len(API_CASES)


@pytest.mark.parametrize("case", API_CASES, ids=[case.id for case in API_CASES])
def test_python_api_refuses_in_one_sentence(case, pipeline, trained):
    before = snapshot(trained)
    with pytest.raises(CorediffError) as caught:
        case.call(pipeline, trained)
    assert isinstance(caught.value, case.error)
    message = str(caught.value)
    assert case.expect in message
    assert "\n" not in message and len(message) < 300
    assert snapshot(trained) == before


# -- corrupt files that are not errors: they are made again --------------------------------------
@pytest.mark.parametrize("text", ['{"fingerprint": ', "[1, 2]", '{"fingerprint": 7}',
                                  '{"fingerprint": null, "train_seconds": "x"}', "\x00\xff"])
def test_corrupt_study_records_are_redone_not_a_traceback(text, study_out, tmp_path, capsys):
    """A corrupt or wrong-typed study.json / eval_*.json in a study folder is stale: the dry
    run says it will be made again, and nothing is changed."""
    out = tmp_path / "study"
    shutil.copytree(study_out, out)
    run = out / "weighting-simple" / "seed0"
    for name in ("study.json", "eval_ddim5.json"):
        (run / name).write_bytes(text.encode("latin-1"))
    before = snapshot(out)
    code = main(["study", str(STUDY / "tiny.toml"), "--out", str(out), "--dry-run"])
    captured = capsys.readouterr()
    assert code == 0 and "Traceback" not in captured.err, captured.err
    lines = captured.out.splitlines()
    assert "weighting=simple seed 0: train again (settings changed)" in lines[0]
    assert "ddim5: evaluate" in lines[1]
    assert snapshot(out) == before


def test_force_resume_across_a_changed_component_starts_it_afresh(trained, tmp_path, capsys):
    """--force across a changed time sampler: the new one starts afresh (its stored state
    belongs to the old type), training goes on."""
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    code = main(["train", str(QUICKSTART), "--resume", "--force", "--run-dir", str(run),
                 *sets([*TINY, "train.steps=6", "diffusion.time_sampler.type='loss_aware'"])])
    assert code == 0, capsys.readouterr().err
    assert json.loads((last(Env(tmp_path)) / "state.json").read_text())["step"] == 6


def test_a_thin_strip_among_images_is_skipped_by_prepare(tmp_path, capsys):
    """A 1×100000 image is refused by its header (no allocation): prepare records it
    unreadable, with a warning, and caches the others."""
    env = Env(tmp_path)
    png(env.files / "images" / "a.png", 8, 8, "L")
    strip(env)
    with pytest.warns(UserWarning, match="aspect ratio 1×100000 is beyond 1:32"):
        code = main(["data", "prepare", str(folder_recipe(env, env.files / "images"))])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "2 images (0.0 MiB, 1 unreadable)" in captured.out
