"""Regenerates the references of tests/test_pinned_samples.py: pinned_samples.safetensors.

Run it with the venv of the commit you want to pin (one whose editable install of corediff
points at a checkout of that commit), e.g. from a clean worktree::

    git worktree add /tmp/pinbase <commit>
    python3 -m venv /tmp/pinvenv
    /tmp/pinvenv/bin/pip install -c constraints.txt -e /tmp/pinbase pytest
    /tmp/pinvenv/bin/python tests/data/make_pinned.py

The cases, the fixed network and the sampling code are those of tests/test_pinned_samples.py
(imported from the tests folder next to this one), so references and test cannot drift apart.
Writes the tensors plus metadata (corediff location, git commit, torch version).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import test_pinned_samples as pins  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

import corediff  # noqa: E402


def commit_of(path: Path) -> str:
    try:
        return subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], check=True,
                              capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    source = Path(corediff.__file__).resolve().parent.parent
    print(f"pinning corediff from {source} (torch {torch.__version__})")
    tensors = pins.all_sampler_cases()
    with tempfile.TemporaryDirectory() as tmp:
        tensors.update(pins.quickstart_samples(Path(tmp) / "quickstart"))
    tensors = {key: value.contiguous().clone() for key, value in sorted(tensors.items())}
    metadata = {"corediff_source": str(source), "commit": commit_of(source),
                "torch": torch.__version__}
    save_file(tensors, str(pins.REFERENCE), metadata=metadata)
    print(f"{len(tensors)} tensors -> {pins.REFERENCE} ({pins.REFERENCE.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
