"""The ``corediff`` command line: the argparse parser and :func:`main`.

Each command is implemented in its own module of :mod:`corediff.commands`, imported only when
the command runs: heavy modules (torch, plugins) are imported only by the command that needs
them, so ``--help`` and ``plugins list`` start fast. Every user error is a
:class:`~corediff.errors.CorediffError`: printed as one block, exit code 2, no traceback
unless ``--traceback``; so is an operating-system error on a file the command needed (named
in one sentence), and an argument holding a NUL character is refused before any work.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable, Sequence
from importlib import import_module

from corediff import __version__
from corediff.errors import CorediffError
from corediff.kinds import BY_NAME as KIND_NAMES
from corediff.limits import MAX_SAMPLES, MAX_SEED, MAX_STEPS

EPILOG = """examples:
  corediff run recipes/quickstart.toml            train on embedded digits, then sample
  corediff run recipes/svd_afhq.toml --set data.root=~/afhq/train
  corediff sample runs/quickstart --n 16 --set diffusion.sampler.steps=20
  corediff sample runs/quickstart --set diffusion.sampler.type=dpmpp_2m --set sample.precision=bf16
  corediff run recipes/flow_digits.toml           flow matching (edm_digits.toml: EDM)
  corediff data fetch afhq                        download AFHQ into data/afhq/{train,test}
  corediff data prepare recipes/svd_afhq.toml --set data.root=~/afhq/train
  corediff import diffusers google/ddpm-cifar10-32 --run-dir runs/ddpm_cifar10
  corediff export runs/mine --to diffusers exported/mine   a DDPMPipeline/DDIMPipeline folder
  corediff bench --out bench                      check and measure this machine (GPU report)
  corediff plugins list
  corediff recipe show recipes/quickstart.toml
"""


def _add_set(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a recipe value (TOML syntax), e.g. --set train.steps=10; repeatable",
    )


def _bounded(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an integer in low..high."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is outside {low}..{high}")
        return value

    return parse


def _handler(target: str) -> Callable[[argparse.Namespace], int]:
    """The command ``"module:function"`` (a module of :mod:`corediff.commands`), imported
    only when it runs."""

    def run(args: argparse.Namespace) -> int:
        module, _, name = target.partition(":")
        return getattr(import_module(module), name)(args)

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="corediff",
        description="Compose, train and sample diffusion methods from swappable plugins.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"corediff {__version__}")
    parser.add_argument(
        "--traceback", action="store_true", help="show the Python traceback of an error"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    for name, help_text in (
        ("run", "train a recipe, then sample from it"),
        ("train", "train a recipe (no sampling at the end)"),
    ):
        cmd = commands.add_parser(name, help=help_text, description=help_text)
        cmd.add_argument("recipe", help="path to a TOML recipe")
        _add_set(cmd)
        cmd.add_argument("--resume", action="store_true",
                         help="continue from the run directory's last checkpoint (the recipe "
                         "may change only steps, logging, cadence, lr and its schedule, "
                         "sampling and [run])")
        cmd.add_argument("--force", action="store_true",
                         help="with --resume: accept a recipe that changes the objective")
        cmd.add_argument("--overwrite", action="store_true",
                         help="start over in a run directory that holds a run (its "
                         "checkpoints, metrics and samples are deleted)")
        cmd.add_argument("--run-dir", help="run directory (default: <run.root>/<run.name>)")
        cmd.set_defaults(func=_handler(f"corediff.commands.train:{name}"))

    sample = commands.add_parser(
        "sample", help="generate images from a trained run or checkpoint",
        description="Generate images; any compatible sampler and step count can be chosen "
        "with --set diffusion.sampler.type=... / --set diffusion.sampler.steps=...",
    )
    sample.add_argument("source", metavar="RUN_DIR_OR_CHECKPOINT")
    _add_set(sample)
    sample.add_argument("--n", type=_bounded(1, MAX_SAMPLES),
                        help="number of samples (default: [sample] n)")
    sample.add_argument("--seed", type=_bounded(0, MAX_SEED),
                        help="sampling seed (default: [sample] seed)")
    sample.add_argument("--checkpoint", choices=("best", "last"), default="last",
                        help="which checkpoint of a run directory (default: last)")
    sample.add_argument("--out", help="output PNG (grid), .npz/.pt (--format) or directory "
                        "(--individual)")
    sample.add_argument("--individual", action="store_true", help="one PNG per sample")
    sample.add_argument("--format", choices=("png", "npz", "pt"), default="png",
                        help="png: a grid (default); npz: every sample as uint8 NHWC 'arr_0' "
                        "(+ labels 'arr_1' when conditional), the ADM evaluation suite's "
                        "layout; pt: a torch file {'images': float32 NCHW in [-1, 1], "
                        "'labels'} that torch.load(..., weights_only=True) reads")
    sample.add_argument("--trajectory", action="store_true",
                        help="also write a strip of x_t and x̂0 along the sampling steps")
    sample.add_argument("--restore", metavar="IMAGE_OR_DIR",
                        help="conditional restoration: degrade these real images (up to --n) "
                        "and sample back; writes rows of original, degraded, direct x̂0, sampled")
    sample.add_argument("--restore-step", type=_bounded(1, MAX_STEPS), metavar="T",
                        help="step to degrade to for --restore (default: the prior's start step)")
    sample.set_defaults(func=_handler("corediff.commands.sample:main"))

    degrade = commands.add_parser(
        "degrade", help="preview a recipe's degradation D(x0, t) on an image",
        description="Write a PNG strip of D(x0, t) across t (and, for svd, the error-versus-"
        "rank table) so a degradation can be seen before training.",
    )
    degrade.add_argument("recipe", help="path to a TOML recipe")
    degrade.add_argument("--image", required=True, help="an image file")
    degrade.add_argument("--n", type=_bounded(1, 1000), default=8,
                         help="number of steps shown (default 8)")
    degrade.add_argument("--out", help="output PNG (default: <image stem>_degraded.png)")
    _add_set(degrade)
    degrade.set_defaults(func=_handler("corediff.commands.degrade:main"))

    evaluate = commands.add_parser(
        "eval", help="generate samples from a run and report quality metrics",
        description="Generate N samples with the chosen sampler and step count and report "
        "metrics (digits: Fréchet distance in a digits classifier's feature space; images: "
        "FID/KID/IS/precision-recall when Inception weights are available; cold degradations: "
        "PSNR/SSIM/RMSE restoration metrics). Prints them and writes JSON into the run dir.",
    )
    evaluate.add_argument("source", metavar="RUN_DIR_OR_CHECKPOINT")
    _add_set(evaluate)
    evaluate.add_argument("--n", type=_bounded(2, MAX_SAMPLES), default=500,
                          help="samples to generate (default 500)")
    evaluate.add_argument("--seed", type=_bounded(0, MAX_SEED), default=0,
                          help="sampling seed (default 0)")
    evaluate.add_argument("--checkpoint", choices=("best", "last"), default="last")
    evaluate.add_argument("--reference", metavar="FILE.npz",
                          help="also score the samples against this reference batch (ADM "
                          "layout: arr_0 uint8 NHWC): digits FD for digits, Inception "
                          "FID/KID when available")
    evaluate.add_argument("--out", help="JSON output (default: <run dir>/eval.json)")
    evaluate.set_defaults(func=_handler("corediff.commands.evaluate:main"))

    study = commands.add_parser(
        "study", help="run a declarative study: cells x seeds x samplers, mean ± 95%% CI",
        description="Train every cell of a study file once per seed (finished runs with the "
        "same fingerprint are reused, interrupted ones resumed, changed ones set aside in "
        "stale/ and trained again), evaluate each with every sampler, score real data as the "
        "floor, and write RESULTS.md (mean ± 95%% CI over seeds; each question answered by "
        "paired differences over seeds, Holm-adjusted), results.csv, sample grids and plots.",
    )
    study.add_argument("study", help="path to a study TOML file")
    study.add_argument("--out", help="where the runs go (default: runs/studies/<name>)")
    study.add_argument("--report", help="where RESULTS.md and plots go (default: --out)")
    study.add_argument("--launcher", choices=("local", "submitit-local", "slurm"),
                       default="local", help="local: one cell after another (default); "
                       "submitit-local: parallel local processes; slurm: one job per cell")
    study.add_argument("--jobs", type=int, default=1, metavar="N",
                       help="cells run at once by local and submitit-local, each with 1/N of "
                       "the CPU threads (default 1)")
    study.add_argument("--only", metavar="SELECTOR",
                       help="run only the (cell, sampler) rows matching key=value[,key=value], "
                       "e.g. cell=base or sampler=alg2_zeros")
    study.add_argument("--dry-run", action="store_true",
                       help="list the cells x seeds x samplers, what is reused and what runs, "
                       "and the estimated cost; run nothing")
    study.set_defaults(func=_handler("corediff.commands.study:main"))

    imports = commands.add_parser("import", help="turn a checkpoint of another library "
                                  "into a corediff run directory")
    import_cmds = imports.add_subparsers(dest="import_command", metavar="FORMAT", required=True)
    from_diffusers = import_cmds.add_parser(
        "diffusers", help="a diffusers pipeline folder or Hub repo id (UNet2DModel + scheduler)",
        description="Write a run directory from a diffusers pipeline folder (a UNet2DModel with "
        "a DDPM, DDIM, PNDM, Euler, DPM-Solver or UniPC scheduler): schedule, parameterization, "
        "clipping and weights; sample it with `corediff sample DIR`, any sampler with --set.",
    )
    from_diffusers.add_argument("source", metavar="PATH_OR_REPO",
                                help="pipeline folder, or a Hugging Face repo id (downloaded "
                                "with huggingface_hub)")
    from_diffusers.add_argument("--run-dir", required=True, help="the new run directory")
    from_diffusers.add_argument("--num-classes", type=_bounded(1, 100_000), metavar="N",
                                help="class-conditional UNet: its N + 1 class rows, the last "
                                "being the null label")
    from_diffusers.add_argument("--data-root", default="data/images",
                                help="image folder `corediff eval` compares with (default "
                                "data/images; or --set data.root=... later)")
    from_diffusers.add_argument("--revision", help="Hub revision (branch, tag or commit)")
    from_diffusers.set_defaults(func=_handler("corediff.commands.import_:diffusers"))

    export = commands.add_parser(
        "export", help="write a run as another library's checkpoint (a diffusers pipeline)",
        description="Write a Gaussian run whose model is diffusers_unet2d as a diffusers "
        "pipeline folder (UNet2DModel + DDPM or DDIM scheduler config): "
        "DDPMPipeline.from_pretrained(DIR) / DDIMPipeline samples what corediff samples on the "
        "same noise. Push it with huggingface_hub.HfApi().upload_folder.",
    )
    export.add_argument("source", metavar="RUN_DIR_OR_CHECKPOINT")
    export.add_argument("--to", required=True, choices=("diffusers",), help="the format")
    export.add_argument("out", metavar="DIR", help="the new folder (must not exist, or be empty)")
    export.add_argument("--checkpoint", choices=("best", "last"), default="last",
                        help="which checkpoint of a run directory (default: last)")
    _add_set(export)
    export.set_defaults(func=_handler("corediff.commands.export:main"))

    data = commands.add_parser("data", help="download a dataset, or prepare a recipe's data "
                               "for fast loading")
    data_cmds = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    fetch = data_cmds.add_parser(
        "fetch", help="download a public dataset (afhq) into the folders recipes expect",
        description="Download a dataset archive from its published link (AFHQ: the StarGAN v2 "
        "repository's) with a progress bar, resuming a partial download; verify it, extract "
        "it safely into ROOT/<split>/<class>/ (nothing is left half-extracted) and check the "
        "published class folders and image counts.",
    )
    fetch.add_argument("name", help="the dataset: afhq")
    fetch.add_argument("--root", help="where it goes (default: data/<name>)")
    fetch.add_argument("--version", help="afhq: v1 (train/val) or v2 (train/test, default)")
    fetch.add_argument("--url", help="download the same archive from this mirror")
    fetch.set_defaults(func=_handler("corediff.commands.data:fetch"))
    prepare = data_cmds.add_parser(
        "prepare", help="decode and resize the recipe's images once into a uint8 cache",
        description="Write the dataset's prepared cache (decoded, resized uint8 images, "
        "memory-mapped at training time); a dataset that reads no files is refused.",
    )
    prepare.add_argument("recipe", help="path to a TOML recipe")
    _add_set(prepare)
    prepare.set_defaults(func=_handler("corediff.commands.data:prepare"))

    bench = commands.add_parser(
        "bench", help="check and measure this machine (CUDA, bf16, compile, DDP, speed)",
        description="Check CUDA, bf16 autocast, channels_last, torch.compile, DDP and a "
        "sync-free training step, then measure the real training step's images/s and MFU "
        "per model (peaks per GPU model), the SVD share of a step, data loading, sampling "
        "(Gaussian and SVD cold) and peak memory. Writes report.json and report.md; what "
        "cannot run here is marked skipped or not checked.",
    )
    bench.add_argument("--out", default="bench", help="output folder (default: bench)")
    bench.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    bench.add_argument("--quick", action="store_true",
                       help="tiny sizes (16×16, batch 4, tiny presets): seconds on a CPU")
    bench.add_argument("--image-size", type=_bounded(8, 1024),
                       help="measured image side (default 64; 16 with --quick)")
    bench.add_argument("--batch", type=_bounded(1, 4096),
                       help="measured batch size (default 32; 4 with --quick)")
    bench.add_argument("--no-compile", action="store_true", help="skip the torch.compile check")
    bench.add_argument("--compile-on-cpu", action="store_true",
                       help="run the torch.compile check on a CPU too (slow)")
    bench.add_argument("--ddp-on-cpu", action="store_true",
                       help="run the DDP check on a CPU too (2 processes under gloo)")
    bench.set_defaults(func=_handler("corediff.commands.bench:main"))

    plugins = commands.add_parser("plugins", help="list or check installed plugins")
    plugin_cmds = plugins.add_subparsers(dest="plugins_command", metavar="ACTION", required=True)
    listing = plugin_cmds.add_parser("list", help="list plugins (imports none of them)")
    listing.add_argument("--kind", choices=list(KIND_NAMES), help="only this kind")
    listing.set_defaults(func=_handler("corediff.commands.plugins:listing"))
    show = plugin_cmds.add_parser(
        "show", help="describe one plugin: origin, capabilities, requirements, config fields")
    show.add_argument("name", help="plugin name (its recipe type), e.g. ddim")
    show.add_argument("--kind", choices=list(KIND_NAMES), help="only this kind")
    show.set_defaults(func=_handler("corediff.commands.plugins:show"))
    check = plugin_cmds.add_parser("check", help="load every plugin and report failures")
    check.set_defaults(func=_handler("corediff.commands.plugins:check"))

    recipe = commands.add_parser("recipe", help="validate, show or describe recipes")
    recipe_cmds = recipe.add_subparsers(dest="recipe_command", metavar="ACTION", required=True)
    validate = recipe_cmds.add_parser("validate", help="check a recipe; exit 2 when invalid")
    validate.add_argument("recipe")
    _add_set(validate)
    validate.set_defaults(func=_handler("corediff.commands.recipe:validate"))
    show = recipe_cmds.add_parser("show", help="print the resolved recipe with defaults")
    show.add_argument("recipe")
    _add_set(show)
    show.set_defaults(func=_handler("corediff.commands.recipe:show"))
    schema = recipe_cmds.add_parser(
        "schema", help="write the JSON Schema of recipes (for editor completion)"
    )
    schema.add_argument("--out", help="output file (default: stdout)")
    schema.set_defaults(func=_handler("corediff.commands.recipe:schema"))
    return parser


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse any argument holding a NUL character (no path or name may hold one)."""
    from corediff.paths import check_text

    for name, value in vars(args).items():
        flag = "--set" if name == "overrides" else f"--{name.replace('_', '-')}"
        for text in value if isinstance(value, list) else [value]:
            if isinstance(text, str):
                check_text(flag, text)


def os_error(exc: OSError) -> str:
    """An operating-system error as one sentence naming its file(s)."""
    reason = exc.strerror or str(exc)
    if exc.filename is None:
        return f"the operating system refused: {reason}"
    other = f" (or '{exc.filename2}')" if exc.filename2 is not None else ""
    return f"'{exc.filename}'{other} cannot be used: {reason}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        check_arguments(args)
        return args.func(args)
    except CorediffError as exc:
        if args.traceback:
            traceback.print_exc()
        code = getattr(exc, "exit_code", 2)
        print(f"corediff: {'error: ' if code == 2 else ''}{exc}", file=sys.stderr)
        return code
    except KeyboardInterrupt:
        print("corediff: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and closed early
        sys.stderr.close()
        return 0
    except OSError as exc:  # a file or folder the command needed: one sentence naming it
        if args.traceback:
            traceback.print_exc()
        print(f"corediff: error: {os_error(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
