"""The run directory: resolved recipe, metrics.csv, optional TensorBoard, checkpoints, samples.

    <run>/recipe.toml            the recipe as trained (defaults and overrides resolved)
    <run>/metrics.csv            step, loss, lr, grad_norm, images_per_s
    <run>/tb/                    TensorBoard events (only when tensorboard is installed)
    <run>/checkpoints/{last,best}/
    <run>/samples/step_XXXXXXX.png and <run>/samples.png
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from corediff.engine import safe_files
from corediff.engine.checkpoint import atomic_write_text
from corediff.errors import TrainingError

COLUMNS = ("step", "loss", "lr", "grad_norm", "images_per_s")


class RunDir:
    """Paths inside one run directory."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()

    @property
    def recipe(self) -> Path:
        return self.root / "recipe.toml"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.csv"

    def checkpoint(self, name: str) -> Path:
        return self.root / "checkpoints" / name

    def sample_grid(self, step: int | None = None) -> Path:
        if step is None:
            return self.root / "samples.png"
        return self.root / "samples" / f"step_{step:07d}.png"


class MetricsLog:
    """Appends rows to metrics.csv (and TensorBoard when importable)."""

    def __init__(self, run: RunDir, resume_step: int | None) -> None:
        self.path = run.metrics
        safe_files.check(self.path)
        if resume_step is None or not self.path.exists():
            atomic_write_text(self.path, ",".join(COLUMNS) + "\n")
        else:  # repair: drop malformed rows and those a killed run wrote after its checkpoint
            try:
                rows = read_metrics(self.path)
            except OSError as exc:
                raise TrainingError(f"metrics file '{self.path}' cannot be read: "
                                    f"{exc.strerror or exc}") from None
            kept = [r for r in rows if int(r["step"]) <= resume_step]
            lines = [",".join(COLUMNS)] + [",".join(r[c] for c in COLUMNS) for r in kept]
            atomic_write_text(self.path, "\n".join(lines) + "\n")
        self.writer = None
        if importlib.util.find_spec("tensorboard") is not None:
            from torch.utils.tensorboard import SummaryWriter

            tb = safe_files.ensure_dir(run.root / "tb")
            self.writer = SummaryWriter(str(tb), purge_step=resume_step)

    def write(self, row: dict[str, Any]) -> None:
        with safe_files.open_append(self.path) as handle:
            handle.write(",".join(_format(row[c]) for c in COLUMNS) + "\n")
        if self.writer is not None:
            for key in COLUMNS[1:]:
                self.writer.add_scalar(f"train/{key}", row[key], row["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _format(value: Any) -> str:
    return str(value) if isinstance(value, int) else f"{value:.8g}"


def read_metrics(path: str | Path) -> list[dict[str, str]]:
    """The well-formed rows of a metrics.csv, as {column: text}. Anything else is dropped,
    never an error: a last line without its newline (half written when a run was killed),
    a row with missing or extra fields, a step that is not a non-negative integer, a value
    that is not a number, undecodable bytes."""
    data = Path(path).read_bytes()
    lines = data.decode("utf-8", errors="replace").split("\n")
    lines.pop()  # the text after the last newline: empty, or a half-written row
    rows = []
    for line in lines:  # the values are numbers: no quoting to undo
        fields = line.rstrip("\r").split(",")
        if len(fields) != len(COLUMNS) or fields == list(COLUMNS):
            continue
        row = dict(zip(COLUMNS, (field.strip() for field in fields), strict=True))
        if not row["step"].isdigit() or not row["step"].isascii():
            continue
        try:
            [float(row[column]) for column in COLUMNS[1:]]
        except ValueError:
            continue
        rows.append(row)
    return rows
