"""Checkpoints that are never half-written and never unpickle anything.

A checkpoint is a directory: ``model.safetensors`` and ``ema.safetensors`` (weights),
``state.safetensors`` (every other tensor: optimizer moments, RNG states, component extra
state) and ``state.json`` (scalars, with ``{"__tensor__": key}`` where a tensor sat), plus
``recipe.toml``. It is written to a temporary sibling directory, fsynced, then swapped in by
``os.replace``; the previous checkpoint stays as ``.<name>.old`` until the swap is done, so a
crash at any point leaves one complete checkpoint; a write that fails (a full disk) removes
its temporary directory and leaves the previous checkpoint as it was.

Every bad file is one :class:`~corediff.errors.TrainingError` naming the checkpoint and the
file: ``state.json`` records the SHA-256 of each weight file (key ``"sha256"``), verified
before the file is loaded, so a flipped bit is reported rather than sampled from (checkpoints
of corediff 0.1 have no such key and load unverified); a training checkpoint's state.json is
validated against :class:`corediff.engine.state.TrainingState`; and nothing but a regular
file is ever opened (a FIFO in place of a checkpoint file would block a reader forever).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import Tensor, nn

from corediff.engine import safe_files
from corediff.engine.state import WEIGHT_FILES, TrainingState
from corediff.errors import TrainingError

TENSOR, ARRAY = "__tensor__", "__ndarray__"
SHA256 = "sha256"  #: state.json key: {weight file name: hex digest}
CHUNK = 1 << 20  #: bytes read at a time when hashing
CHECKPOINT_FILES = ("state.json", *WEIGHT_FILES, "recipe.toml")  #: what a checkpoint holds


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
    """Run ``write(tmp)`` on a temporary file beside ``path``, then rename it over ``path``
    (a link or special file at ``path`` is refused, never written through).

    If ``write`` fails, ``path`` keeps its old content and the temporary file is removed.
    """
    path = Path(path)
    safe_files.check(path)
    fd, tmp_name = tempfile.mkstemp(prefix=safe_files.temp_prefix(path.name), suffix=".tmp",
                                    dir=path.parent)
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
    old = target.with_name(f".{target.name}.old")
    safe_files.ensure_dir(target.parent)
    for path in (target, old):
        safe_files.check(path, "dir")
    tmp = Path(tempfile.mkdtemp(prefix=safe_files.temp_prefix(target.name), suffix=".tmp",
                                dir=target.parent))
    os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp makes 0700
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
    """``target``, or the previous checkpoint a crash mid-swap left as ``.<name>.old``: a
    directory whose ``state.json`` is a regular file. A checkpoint file that is something
    else (a FIFO, a directory, a device, a link to nowhere) is an error naming it, not "no
    checkpoint": nothing would be read from it (a FIFO blocks its reader), and a new run must
    not replace a checkpoint it could not read."""
    for path in (target, target.with_name(f".{target.name}.old")):
        state = path / "state.json"
        if not os.path.lexists(state):
            continue
        for name in CHECKPOINT_FILES:
            file = path / name
            if os.path.lexists(file) and not file.is_file():
                raise _error(path, f"{name} is {_what(file)}, not a regular file")
        return path
    return None


# -- reading checkpoint files safely --------------------------------------------------------
def _error(checkpoint: Path, message: str) -> TrainingError:
    return TrainingError(f"checkpoint '{checkpoint}': {message}")


def _one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's message on one line (collapsed whitespace), at most ``limit`` chars."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _what(path: Path, mode: int | None = None) -> str:
    """What a path that is not a regular file is, in words."""
    if mode is None:
        try:
            mode = os.stat(path).st_mode
        except FileNotFoundError:
            return "a symbolic link to nowhere" if os.path.islink(path) else "missing"
        except OSError as exc:
            return f"unreadable ({exc.strerror or exc})"
    for test, words in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
                        (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                        (stat.S_ISSOCK, "a socket"), (stat.S_ISREG, "a regular file")):
        if test(mode):
            return words
    return "not a regular file"


def _open_regular(checkpoint: Path, name: str) -> int:
    """A read-only descriptor of ``checkpoint/name``, which must be a regular file. Opened
    non-blocking, so a FIFO there is refused at once instead of waiting for a writer."""
    path = checkpoint / name
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise _error(checkpoint, f"{name} is {_what(path)}") from None
    except OSError as exc:
        raise _error(checkpoint, f"{name} cannot be read: {exc.strerror or exc}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise _error(checkpoint, f"{name} is {_what(path, mode)}, not a regular file")
    return fd


def _check_regular(checkpoint: Path, name: str) -> None:
    os.close(_open_regular(checkpoint, name))


def _read_bytes(checkpoint: Path, name: str) -> bytes:
    with os.fdopen(_open_regular(checkpoint, name), "rb") as handle:
        try:
            return handle.read()
        except OSError as exc:
            raise _error(checkpoint, f"{name} cannot be read: {exc.strerror or exc}") from None


def sha256(checkpoint: Path, name: str) -> str:
    """Hex SHA-256 of the regular file ``checkpoint/name``, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    with os.fdopen(_open_regular(checkpoint, name), "rb", buffering=0) as handle:
        try:
            while size := handle.readinto(buffer):
                digest.update(view[:size])
        except OSError as exc:
            raise _error(checkpoint, f"{name} cannot be read: {exc.strerror or exc}") from None
    return digest.hexdigest()


def _read_meta(path: Path) -> Any:
    """state.json, parsed (any JSON value)."""
    raw = _read_bytes(path, "state.json")
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise _error(path, "state.json is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise _error(path, f"state.json is not valid JSON: {exc}") from None
    except ValueError:  # an integer beyond Python's 4300-digit conversion limit
        raise _error(path, "state.json holds an integer too long to read (over 4300 "
                     "digits)") from None
    except RecursionError:
        raise _error(path, "state.json is not valid JSON: nested too deeply") from None


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
             int: "a number", float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def validate_state(meta: Any, path: Path) -> TrainingState:
    """Check a training checkpoint's state.json (parsed) against :class:`TrainingState`;
    the first problem is one line naming the field."""
    if not isinstance(meta, dict):
        raise _error(path, f"state.json is invalid: expected a JSON object, got {_json_type(meta)}")
    try:
        return TrainingState.model_validate(meta)
    except ValidationError as exc:
        problems = exc.errors()
        first = problems[0]
        where = ".".join(str(part) for part in first["loc"] if part != "[key]") or "(top level)"
        if first["type"] == "missing":
            reason = "required key is missing"
        else:
            got = repr(first.get("input"))
            got = got if len(got) <= 60 else got[:59] + "…"
            reason = f"{first['msg']} (got {got})"
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise _error(path, f"state.json is invalid: {where}: {reason}{more}") from None


def _recorded(meta: Any, path: Path) -> dict[str, str] | None:
    """The SHA-256 digests state.json records, or None for a checkpoint without them
    (written by corediff 0.1)."""
    if not isinstance(meta, dict) or SHA256 not in meta:
        return None
    digests = meta[SHA256]
    if not (isinstance(digests, dict) and all(
            isinstance(digests.get(name), str) and re.fullmatch(r"[0-9a-f]{64}", digests[name])
            for name in WEIGHT_FILES)):
        raise _error(path, f"state.json is invalid: {SHA256}: expected a hex SHA-256 digest "
                     f"for each of {', '.join(WEIGHT_FILES)}")
    return digests


def _verify(path: Path, name: str, digests: dict[str, str] | None) -> None:
    """``path/name`` is a regular file and, when digests are recorded, matches its own."""
    if digests is None:
        _check_regular(path, name)
        return
    if sha256(path, name) != digests[name]:
        try:
            empty = os.stat(path / name).st_size == 0
        except OSError:
            empty = False
        problem = "is empty (0 bytes)" if empty else "does not match its recorded SHA-256"
        raise _error(path, f"{name} {problem} (corrupted?)")


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
        if isinstance(meta, dict):
            meta[SHA256] = {name: sha256(tmp, name) for name in WEIGHT_FILES}
        (tmp / "state.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
        (tmp / "recipe.toml").write_text(recipe_toml, encoding="utf-8")

    _writing(target, populate)


def copy(source: Path, target: Path) -> None:
    """Atomically replace ``target`` by a copy of checkpoint ``source``."""
    _writing(target, lambda tmp: [shutil.copy2(f, tmp / f.name) for f in source.iterdir()])


def reconcile(last: Path, best: Path) -> str | None:
    """Repair what a crash while ``best`` was updated left: the trainer writes ``best`` then
    copies it to ``last``, so a ``best`` ahead of ``last`` is the newest complete state and
    becomes ``last`` too. Returns a notice of the repair, or None when there was none."""
    found_best = find(best)
    if found_best is None:
        return None
    found_last = find(last)
    step_best = _step(found_best)
    step_last = _step(found_last) if found_last is not None else -1
    if found_last is not None and (step_last is None or step_last < 0):
        return None  # an unreadable or invalid 'last' is refused where it is loaded, not replaced
    if step_best is None or step_best < 0 or step_best <= step_last:
        return None
    copy(found_best, last)
    return (f"'{best}' (step {step_best}) was ahead of '{last}' after a crash while it was "
            "updated; 'last' is now a copy of it")


def _step(path: Path) -> int | None:
    """The training step a checkpoint's state.json records (None: none)."""
    meta = _read_meta(path)
    step = meta.get("step") if isinstance(meta, dict) else None
    return step if isinstance(step, int) else None


def _writing(target: Path, populate: Callable[[Path], None]) -> None:
    """:func:`atomic_dir`, with a failed write (a full disk, a read-only or vanished
    directory) reported in one line: its temporary directory is gone, the previous
    checkpoint is untouched."""
    try:
        atomic_dir(target, populate)
    except (OSError, SafetensorError) as exc:
        if isinstance(exc, OSError):
            reason, code = exc.strerror or _one_line(exc), exc.errno
        else:  # safetensors reports I/O errors as 'I/O error: <strerror> (os error N)'
            found = re.search(r"I/O error: (.*?) \(os error (\d+)\)", str(exc))
            reason = found.group(1) if found else _one_line(exc)
            code = int(found.group(2)) if found else None
        if code in (errno.ENOSPC, errno.EDQUOT):
            reason += " (free some space, then continue with --resume)"
        previous = any((path / "state.json").is_file() for path in (
            target, target.with_name(f".{target.name}.old")))
        kept = "the previous checkpoint is kept" if previous else "no previous checkpoint existed"
        raise TrainingError(f"could not write checkpoint '{target}': {reason}; {kept}") from None


def load_state(path: Path, *, validate: bool | None = None) -> dict[str, Any]:
    """The scalars and tensors a checkpoint holds besides its weights.

    ``state.safetensors`` is verified against its recorded SHA-256 (when state.json has
    one). ``validate``: check state.json against :class:`TrainingState` (what the trainer
    writes); by default, when the checkpoint is a run directory's (``<run>/checkpoints/*``)
    or state.json names the corediff version that wrote it (every trainer checkpoint does).
    """
    meta = _read_meta(path)
    if validate is None:
        validate = path.parent.name == "checkpoints" or (
            isinstance(meta, dict) and "corediff_version" in meta)
    if validate:
        validate_state(meta, path)
    digests = _recorded(meta, path)
    _verify(path, "state.safetensors", digests)
    try:
        tensors = load_file(str(path / "state.safetensors"))
    except (SafetensorError, OSError, RuntimeError, ValueError) as exc:
        raise _error(path, f"state.safetensors is not a readable safetensors file: "
                     f"{_one_line(exc)}") from None
    if isinstance(meta, dict):
        meta = {key: value for key, value in meta.items() if key != SHA256}
    try:
        state = unpack(meta, tensors)
    except KeyError as exc:
        raise _error(path, f"state.json refers to tensor {exc.args[0]!r}, which "
                     "state.safetensors lacks (a file of another checkpoint?)") from None
    except (TypeError, ValueError, AttributeError) as exc:
        raise _error(path, f"state.json does not match state.safetensors: {_one_line(exc)}"
                     ) from None
    if validate:
        _check_random_states(state, path)
    return state


def _check_random_states(state: dict[str, Any], path: Path) -> None:
    """The generator states a resumed run restores have the types torch and NumPy need."""
    for rank, entry in enumerate(state["ranks"]):
        for key in ("generator", "torch"):
            value = entry[key]
            if not (isinstance(value, Tensor) and value.dtype == torch.uint8 and value.dim() == 1):
                raise _error(path, f"state.safetensors: ranks.{rank}.{key} is not a random "
                             "generator state (a 1-D uint8 tensor)")
    keys = state["rng"]["numpy"][1]
    if not (isinstance(keys, np.ndarray) and keys.shape == (624,)):
        raise _error(path, "state.safetensors: rng.numpy is not a NumPy MT19937 state")


def load_weights(module: nn.Module, path: Path, which: str = "model") -> None:
    """Load ``<which>.safetensors`` into ``module`` (strict: every weight must match),
    after verifying the file against its recorded SHA-256 (when state.json has one)."""
    name = f"{which}.safetensors"
    _verify(path, name, _recorded(_read_meta(path), path))
    try:
        load_model(module, str(path / name), strict=True)
    except SafetensorError as exc:
        raise _error(path, f"{name} is not a readable safetensors file: {_one_line(exc)}"
                     ) from None
    except OSError as exc:
        raise _error(path, f"{name} cannot be read: {exc.strerror or exc}") from None
    except (RuntimeError, KeyError, ValueError) as exc:
        raise _error(path, f"{which} weights do not fit the recipe's model (was [model] "
                     f"changed?): {_one_line(exc)}") from None
