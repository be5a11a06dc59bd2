"""Checkpoints that are never half-written and never unpickle anything.

A checkpoint is a directory: ``model.safetensors`` and ``ema.safetensors`` (weights),
``state.safetensors`` (every other tensor: optimizer moments, RNG states, component extra
state) and ``state.json`` (scalars, with ``{"__tensor__": key}`` where a tensor sat), plus
``recipe.toml``. It is written to a temporary sibling directory, fsynced, then swapped in by
``os.replace``; the previous checkpoint stays as ``.<name>.old`` until the swap is done, so a
crash at any point leaves one complete checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import Tensor, nn

from corediff.errors import TrainingError

TENSOR, ARRAY = "__tensor__", "__ndarray__"


def _fsync(path: Path) -> None:
    """Flush a file or directory to disk (directories: where the OS allows it)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Run ``write(tmp)`` on a temporary file beside ``path``, then rename it over ``path``.

    If ``write`` fails, ``path`` keeps its old content and the temporary file is removed.
    """
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the user's usual mode
    try:
        write(tmp)
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_dir(target: Path, populate: Callable[[Path], None]) -> None:
    """Fill a fresh temporary directory with ``populate`` and swap it in as ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp makes 0700
    old = target.with_name(f".{target.name}.old")
    try:
        populate(tmp)
        for file in tmp.iterdir():
            _fsync(file)
        _fsync(tmp)
        if target.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
        os.replace(tmp, target)
        _fsync(target.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)


def find(target: Path) -> Path | None:
    """``target``, or the previous checkpoint a crash mid-swap left as ``.<name>.old``."""
    for path in (target, target.with_name(f".{target.name}.old")):
        if (path / "state.json").is_file():
            return path
    return None


# -- nested state <-> (JSON, tensors) -------------------------------------------------------
def pack(tree: Any, tensors: dict[str, Tensor], prefix: str = "") -> Any:
    """JSON-ready copy of ``tree``; each tensor or array moves into ``tensors``."""
    if isinstance(tree, Tensor):
        tensors[prefix] = tree.detach().cpu().contiguous()
        return {TENSOR: prefix}
    if isinstance(tree, np.ndarray):
        unsigned = tree.dtype.kind == "u"
        tensors[prefix] = torch.from_numpy(tree.astype(np.int64) if unsigned else tree)
        return {ARRAY: prefix, "dtype": str(tree.dtype)}
    if isinstance(tree, dict):
        return {str(key): pack(value, tensors, f"{prefix}.{key}") for key, value in tree.items()}
    if isinstance(tree, list | tuple):
        return [pack(value, tensors, f"{prefix}.{i}") for i, value in enumerate(tree)]
    return tree


def unpack(tree: Any, tensors: dict[str, Tensor]) -> Any:
    """Inverse of :func:`pack` (tuples come back as lists)."""
    if isinstance(tree, dict):
        if TENSOR in tree:
            return tensors[tree[TENSOR]]
        if ARRAY in tree:
            return tensors[tree[ARRAY]].numpy().astype(tree["dtype"])
        return {key: unpack(value, tensors) for key, value in tree.items()}
    if isinstance(tree, list):
        return [unpack(value, tensors) for value in tree]
    return tree


# -- checkpoint directories -------------------------------------------------------------------
def save(
    target: Path, *, model: nn.Module, ema: nn.Module, state: dict[str, Any], recipe_toml: str
) -> None:
    """Write a checkpoint directory atomically (see the module docstring)."""

    def populate(tmp: Path) -> None:
        save_model(model, str(tmp / "model.safetensors"))
        save_model(ema, str(tmp / "ema.safetensors"))
        tensors: dict[str, Tensor] = {}
        meta = pack(state, tensors)
        save_file(tensors, str(tmp / "state.safetensors"))
        (tmp / "state.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
        (tmp / "recipe.toml").write_text(recipe_toml, encoding="utf-8")

    atomic_dir(target, populate)


def copy(source: Path, target: Path) -> None:
    """Atomically replace ``target`` by a copy of checkpoint ``source``."""
    atomic_dir(target, lambda tmp: [shutil.copy2(f, tmp / f.name) for f in source.iterdir()])


def load_state(path: Path) -> dict[str, Any]:
    """The scalars and tensors a checkpoint holds besides its weights."""
    try:
        meta = json.loads((path / "state.json").read_text(encoding="utf-8"))
        return unpack(meta, load_file(str(path / "state.safetensors")))
    except (OSError, ValueError, KeyError) as exc:
        raise TrainingError(f"checkpoint '{path}' is unreadable: {exc}") from None


def load_weights(module: nn.Module, path: Path, which: str = "model") -> None:
    """Load ``<which>.safetensors`` into ``module`` (strict: every weight must match)."""
    try:
        load_model(module, str(path / f"{which}.safetensors"), strict=True)
    except (OSError, RuntimeError, KeyError) as exc:
        raise TrainingError(
            f"checkpoint '{path}': {which} weights do not fit the recipe's model "
            f"(was [model] changed?): {str(exc).splitlines()[0]}"
        ) from None
