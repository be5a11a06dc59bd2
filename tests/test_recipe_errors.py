"""Malformed recipes: each gives one clear block naming file, table and key, and exit 2."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import corediff
from corediff.cli import main

BASE = """\
[data]
type = "digits"

[model]
type = "unet"
preset = "tiny"

[diffusion.schedule]
type = "linear"
steps = 100

[diffusion.degradation]
type = "gaussian"

[diffusion.parameterization]
type = "eps"

[diffusion.loss_weighting]
type = "simple"

[diffusion.sampler]
type = "ddim"
steps = 10

[diffusion.prior]
type = "normal"

[train]
steps = 10
"""


def edit(old: str, new: str) -> str:
    assert old in BASE, old
    return BASE.replace(old, new, 1)


def drop_table(header: str) -> str:
    return re.sub(rf"\[{re.escape(header)}\]\n(?:[^\[\n].*\n)*\n?", "", BASE)


#: (id, recipe text, overrides, expected text in the error)
CASES = [
    ("toml-syntax", "[data\ntype = 1\n", [], "TOML syntax error: Expected ']' at the end of a "
     "table declaration (at line 1, column 6)"),
    ("toml-duplicate-key", BASE + "steps = 11\n", [], "TOML syntax error: Cannot overwrite a value "
     "(at line 30, column 11)"),
    ("toml-bad-value", edit('preset = "tiny"', "preset = tiny"), [], "TOML syntax error"),
    ("unknown-top-table", edit("[train]", "[trian]"), [],
     "trian: unknown table. Did you mean 'train'?"),
    ("unknown-top-key", "seed = 1\n" + BASE, [],
     "seed: unknown key. Allowed: data, diffusion, log, model, run, sample, train."),
    ("unknown-train-key", BASE + "stepz = 3\n", [],
     "[train] stepz: unknown key. Did you mean 'steps'?"),
    ("train-steps-type", BASE.replace("[train]\nsteps = 10", '[train]\nsteps = "ten"'), [],
     "[train] steps: Input should be a valid integer"),
    ("train-steps-negative", BASE.replace("[train]\nsteps = 10", "[train]\nsteps = -1"), [],
     "[train] steps: Input should be greater than 0 (got -1)"),
    ("train-lr-zero", BASE + "lr = 0.0\n", [], "[train] lr: Input should be greater than 0"),
    ("train-precision", BASE + 'precision = "fp8"\n', [],
     "[train] precision: Input should be 'fp32', 'tf32', 'bf16' or 'fp16'"),
    ("train-not-table", "train = 5\n" + BASE.replace("[train]\nsteps = 10\n", ""), [],
     "train: Input should be a valid dictionary or instance of TrainConfig"),
    ("missing-sampler", drop_table("diffusion.sampler"), [],
     "[diffusion] sampler: required table is missing"),
    ("missing-data", drop_table("data"), [], "data: required table is missing"),
    ("missing-model", drop_table("model"), [], "model: required table is missing"),
    ("missing-prior", drop_table("diffusion.prior"), [],
     "[diffusion] prior: required table is missing"),
    ("unknown-diffusion-table", BASE + '[diffusion.solver]\ntype = "x"\n', [],
     "[diffusion] solver: unknown table. Did you mean"),
    ("unknown-sampler", edit('type = "ddim"', 'type = "ddimm"'), [],
     "[diffusion.sampler] type: unknown sampler 'ddimm'. Did you mean 'ddim'? Available: "),
    ("unknown-degradation", edit('type = "gaussian"', 'type = "gausian"'), [],
     "[diffusion.degradation] type: unknown degradation 'gausian'. Did you mean 'gaussian'?"),
    ("unknown-model", edit('type = "unet"', 'type = "unnet"'), [],
     "[model] type: unknown model 'unnet'. Did you mean 'unet'?"),
    ("unknown-dataset", edit('type = "digits"', 'type = "digit"'), [],
     "[data] type: unknown dataset 'digit'. Did you mean 'digits'?"),
    ("import-path-refused", edit('type = "ddim"', 'type = "os.system:call"'), [],
     "[diffusion.sampler] type: unknown sampler 'os.system:call'"),
    ("sampler-missing-type", edit('type = "ddim"\n', ""), [],
     "[diffusion.sampler] type: missing or not a string; name a registered sampler: "),
    ("sampler-type-int", edit('type = "ddim"', "type = 3"), [],
     "[diffusion.sampler] type: missing or not a string"),
    ("sampler-unknown-key", edit("steps = 10\n\n[diffusion.prior]",
                                 "stesp = 10\n\n[diffusion.prior]"), [],
     "[diffusion.sampler] stesp: unknown key. Did you mean 'steps'?"),
    ("sampler-steps-type", edit("steps = 10\n\n[diffusion.prior]",
                                'steps = "many"\n\n[diffusion.prior]'), [],
     "[diffusion.sampler] steps: "),
    ("sampler-eta-type", edit("steps = 10\n\n[diffusion.prior]",
                              'steps = 10\neta = "high"\n\n[diffusion.prior]'), [],
     "[diffusion.sampler] eta: Input should be a valid number"),
    ("schedule-steps-zero", edit("steps = 100", "steps = 0"), [],
     "[diffusion.schedule] steps: Input should be greater than 0"),
    ("model-preset", edit('preset = "tiny"', 'preset = "huge"'), [], "[model] preset: "),
    ("data-unknown-key", edit('type = "digits"', 'type = "digits"\nsizee = 16'), [],
     "[data] sizee: unknown key."),
    ("weighting-loss-type", edit('type = "simple"', 'type = "simple"\nloss_type = "l3"'), [],
     "[diffusion.loss_weighting] loss_type: Input should be 'l2' or 'l1'"),
    ("data-not-table", BASE.replace('[data]\ntype = "digits"\n', "data = 3\n"), [],
     "data: Input should be a valid dictionary or instance of ComponentConfig"),
    ("ddim-needs-gaussian",
     edit('type = "gaussian"', 'type = "blur"').replace('type = "linear"',
                                                        'type = "blur_incremental"')
     .replace('type = "eps"', 'type = "x0"'), [],
     "sampler 'ddim' [diffusion.sampler] needs a degradation that provides 'gaussian_family', but "
     "degradation 'blur' [diffusion.degradation] provides"),
    ("min-snr-needs-snr",
     edit('type = "gaussian"', 'type = "blur"').replace('type = "linear"',
                                                        'type = "blur_incremental"')
     .replace('type = "eps"', 'type = "x0"').replace('type = "ddim"', 'type = "cold_improved"')
     .replace('type = "simple"', 'type = "min_snr"').replace('type = "normal"',
                                                              'type = "constant"'), [],
     "loss_weighting 'min_snr' [diffusion.loss_weighting] needs a degradation that provides "
     "'snr', but degradation 'blur'"),
    ("schedule-mismatch", edit('type = "linear"', 'type = "blur_incremental"'), [],
     "degradation 'gaussian' [diffusion.degradation] needs a schedule that provides "
     "'alpha_bar', but schedule 'blur_incremental'"),
    ("override-no-equals", BASE, ["train.steps"], "--set 'train.steps': expected KEY=VALUE"),
    ("override-empty-part", BASE, ["train..steps=3"], "expected KEY=VALUE with a dotted key"),
    ("override-unknown-key", BASE, ["train.stepz=3"],
     "[train] stepz: unknown key. Did you mean 'steps'?"),
    ("override-bad-type", BASE, ["train.steps=abc"],
     "[train] steps: Input should be a valid integer, unable to parse string as an integer "
     "(got 'abc')"),
    ("override-into-value", BASE, ["train.steps.x=1"],
     "--set 'train.steps.x=1': 'train.steps' is a value, not a table"),
    ("override-unknown-plugin", BASE, ["diffusion.sampler.type=ddpn"],
     "[diffusion.sampler] type: unknown sampler 'ddpn'. Did you mean 'ddpm'?"),
    ("override-incompatible", BASE, ["diffusion.degradation.type=svd"],
     "needs a schedule that provides 'rank'"),
    ("sample-n-zero", BASE + "[sample]\nn = 0\n", [], "[sample] n: Input should be greater"),
]


@pytest.mark.parametrize(("text", "overrides", "expected"),
                         [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_malformed_recipe_gives_one_clear_block_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture, text: str, overrides: list[str],
    expected: str,
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    argv = ["recipe", "validate", str(path)]
    for override in overrides:
        argv += ["--set", override]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "Traceback" not in captured.err
    assert captured.err.startswith("corediff: error: ")
    if "--set" not in expected or "KEY=VALUE" not in expected:
        assert str(path) in captured.err or "--set" in captured.err
    assert expected in captured.err, captured.err


def test_there_are_at_least_30_cases() -> None:
    assert len(CASES) >= 30


def test_all_problems_are_reported_at_once(tmp_path: Path) -> None:
    path = tmp_path / "many.toml"
    path.write_text(BASE + "stepz = 1\nlr = -1.0\n")
    with pytest.raises(corediff.ConfigError) as info:
        corediff.load_recipe(path)
    text = str(info.value)
    assert text.splitlines()[0] == f"{path}: invalid recipe"
    assert "[train] stepz: unknown key" in text and "[train] lr: Input should be" in text


def test_missing_file_is_a_clear_error(capsys: pytest.CaptureFixture) -> None:
    assert main(["recipe", "validate", "no/such/recipe.toml"]) == 2
    assert "recipe file 'no/such/recipe.toml' not found" in capsys.readouterr().err


def test_traceback_flag_shows_the_traceback(tmp_path: Path, capsys) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[data\n")
    assert main(["--traceback", "recipe", "validate", str(path)]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_overriding_a_component_type_keeps_only_keys_the_new_plugin_has(tmp_path: Path) -> None:
    path = tmp_path / "ok.toml"
    path.write_text(BASE.replace("steps = 10\n\n[diffusion.prior]",
                                 "steps = 10\neta = 0.5\n\n[diffusion.prior]"))
    recipe = corediff.load_recipe(
        path, ["diffusion.sampler.steps=20", "diffusion.sampler.type=ddpm"]
    )
    assert recipe.diffusion.sampler.type == "ddpm" and recipe.diffusion.sampler.steps == 20
    same = corediff.load_recipe(path, ["diffusion.sampler.type=ddim"])
    assert same.diffusion.sampler.eta == 0.5  # same type: the table is kept
