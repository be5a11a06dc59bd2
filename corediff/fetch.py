"""Downloading a public dataset archive into the folder layout recipes expect
(``corediff data fetch NAME``).

AFHQ (Choi et al. 2020, "StarGAN v2", CC BY-NC 4.0) comes from the links of the StarGAN v2
repository's ``download.sh`` (https://github.com/clovaai/stargan-v2): ``v1`` (``afhq.zip``,
splits train/val) and ``v2`` (``afhq_v2.zip``, the re-processed release without resizing
artefacts, splits train/test), each with class folders ``cat``, ``dog``, ``wild``. The
archive lands in ``<root>/<split>/<class>/``, so ``recipes/svd_afhq.toml``'s
``data.root = "data/afhq/train"`` finds it.

* **Download**: streamed into ``.<root name>.<archive>.part`` beside the root, with a progress
  bar; a partial file left by an interrupted run is resumed with an HTTP Range request (a
  server that ignores it sends the whole file again, which replaces the part).
* **Verification**: no checksum is published, so every member's CRC-32 is checked while it is
  extracted (a corrupt or truncated archive is refused), then the class folders and the
  image counts of each split against the published ones.
* **Safe, atomic extraction**: member names that are absolute, hold ``..`` or a drive, or are
  links are refused; at most ``MAX_MEMBERS`` members and ``MAX_BYTES`` bytes (declared sizes,
  which bound what is read). Files go to a temporary folder beside the root, renamed into
  place only once everything checked out: an interrupted or refused fetch leaves no half
  folder (only the ``.part`` download, kept for the next run). The archive is deleted after
  a successful fetch.

``--url`` downloads the same archive from a mirror (the same checks apply).
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from corediff.errors import CorediffError

MAX_MEMBERS = 200_000  #: files and folders an archive may hold
MAX_BYTES = 64 * 2**30  #: total uncompressed bytes an archive may declare
CHUNK = 1 << 20
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class Archive:
    """A published archive and what it must contain: {split: {class: images}}."""

    url: str
    file: str
    counts: dict[str, dict[str, int]]


DATASETS: dict[str, dict[str, Archive]] = {
    "afhq": {
        "v1": Archive("https://www.dropbox.com/s/t9l9o3vsx2jai3z/afhq.zip?dl=1", "afhq.zip", {
            "train": {"cat": 5153, "dog": 4739, "wild": 4738},
            "val": {"cat": 500, "dog": 500, "wild": 500}}),
        "v2": Archive("https://www.dropbox.com/s/vkzjokiwof5h8w6/afhq_v2.zip?dl=1",
                      "afhq_v2.zip", {
                          "train": {"cat": 5065, "dog": 4678, "wild": 4593},
                          "test": {"cat": 493, "dog": 491, "wild": 483}}),
    },
}
DEFAULT_VERSION = {"afhq": "v2"}


class FetchError(CorediffError):
    """A fetch that cannot go on; nothing half-made is left at the root."""


def archive_for(name: str, version: str | None) -> Archive:
    if name not in DATASETS:
        raise FetchError(f"unknown dataset '{name}'; corediff can fetch: "
                         f"{', '.join(sorted(DATASETS))}")
    versions = DATASETS[name]
    version = version or DEFAULT_VERSION[name]
    if version not in versions:
        raise FetchError(f"{name} has no version '{version}'; versions: {', '.join(versions)}")
    return versions[version]


# -- download --------------------------------------------------------------------------------
def download(url: str, part: Path, progress: Callable[[int, int | None], None] | None = None,
             timeout: float = 60.0) -> Path:
    """Download ``url`` into ``part``, continuing from its current size (HTTP Range);
    ``progress(done, total)`` after every chunk. Returns ``part`` when complete."""
    offset = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "corediff"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 (http/https)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # the part is already whole
            return part
        raise FetchError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise FetchError(f"download of {url} failed: {reason}") from None
    with response:
        resumed = offset and response.status == 206
        if not resumed:
            offset = 0
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None and length.isdigit() else None
        done = offset
        try:
            with open(part, "ab" if resumed else "wb") as handle:
                while chunk := response.read(CHUNK):
                    handle.write(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(done, total)
        except (OSError, urllib.error.URLError) as exc:
            raise FetchError(f"download of {url} stopped at {done} bytes ({exc}); run the "
                             "same command again to resume") from None
    if total is not None and done < total:
        raise FetchError(f"download of {url} stopped at {done} of {total} bytes; run the same "
                         "command again to resume")
    return part


# -- extraction --------------------------------------------------------------------------------
def _member_path(info: zipfile.ZipInfo) -> PurePosixPath | None:
    """The member's relative path, None for macOS metadata; an unsafe name is refused."""
    name = info.filename.replace("\\", "/")
    path = PurePosixPath(name)
    if name.startswith("/") or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        raise FetchError(f"the archive holds an unsafe member name {info.filename!r}; refused")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise FetchError(f"the archive holds a link {info.filename!r}; refused")
    if not path.parts or path.parts[0] == "__MACOSX" or path.name == ".DS_Store":
        return None
    return path


def extract(archive: Path, target: Path) -> None:
    """Extract ``archive`` (a zip) into the empty folder ``target``, safely (see the module
    docstring); every member's CRC-32 is verified."""
    try:
        with zipfile.ZipFile(archive) as zipped:
            members = zipped.infolist()
            if len(members) > MAX_MEMBERS:
                raise FetchError(f"the archive holds {len(members)} members, more than "
                                 f"{MAX_MEMBERS}; refused")
            declared = sum(info.file_size for info in members)
            if declared > MAX_BYTES:
                raise FetchError(f"the archive would unpack to {declared / 2**30:.1f} GiB, "
                                 f"more than {MAX_BYTES / 2**30:.0f} GiB; refused")
            for info in members:
                path = _member_path(info)
                if path is None:
                    continue
                out = target.joinpath(*path.parts)
                if info.is_dir():
                    out.mkdir(parents=True, exist_ok=True)
                    continue
                out.parent.mkdir(parents=True, exist_ok=True)
                with zipped.open(info) as source, open(out, "xb") as sink:
                    shutil.copyfileobj(source, sink, CHUNK)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
        raise FetchError(f"'{archive}' is not a valid zip archive ({exc}); it is removed, run "
                         "the command again to download it anew") from None
    except FileExistsError as exc:
        raise FetchError(f"the archive holds '{exc.filename}' twice; refused") from None


def dataset_folder(extracted: Path, splits: dict[str, dict[str, int]]) -> Path:
    """The folder holding the splits: ``extracted`` or its single top-level folder (the v1
    archive wraps everything in ``afhq/``)."""
    entries = [p for p in extracted.iterdir()]
    if not any((extracted / split).is_dir() for split in splits) and len(entries) == 1 \
            and entries[0].is_dir():
        return entries[0]
    return extracted


def count_images(folder: Path) -> int:
    return sum(1 for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def check_counts(folder: Path, splits: dict[str, dict[str, int]]) -> list[str]:
    """Differences from the published class folders and image counts (empty: all match)."""
    problems = []
    for split, classes in splits.items():
        for name, expected in classes.items():
            where = folder / split / name
            found = count_images(where) if where.is_dir() else None
            if found != expected:
                problems.append(f"{split}/{name}: expected {expected} images, found "
                                f"{'no folder' if found is None else found}")
    return problems


# -- the whole fetch ----------------------------------------------------------------------------
def fetch(name: str, root: str | Path, *, version: str | None = None, url: str | None = None,
          progress: Callable[[int, int | None], None] | None = None) -> Path:
    """Download, verify and extract dataset ``name`` into ``root`` (see the module
    docstring); returns ``root``."""
    archive = archive_for(name, version)
    root = Path(root).expanduser()
    if os.path.lexists(root) and not (root.is_dir() and not any(root.iterdir())):
        raise FetchError(f"--root '{root}' already exists and is not an empty folder; remove "
                         "it or give another --root")
    from corediff.paths import check_folder

    check_folder("--root", root.parent)
    root.parent.mkdir(parents=True, exist_ok=True)
    part = root.parent / f".{root.name}.{archive.file}.part"
    download(url or archive.url, part, progress)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".extract", dir=root.parent))
    try:
        try:
            extract(part, tmp)
        except FetchError as exc:
            if "not a valid zip" in str(exc):
                part.unlink(missing_ok=True)
            raise
        folder = dataset_folder(tmp, archive.counts)
        problems = check_counts(folder, archive.counts)
        if problems:
            raise FetchError(f"the archive does not hold the published {name} images "
                             f"({'; '.join(problems[:3])}); the download is kept as '{part}'")
        if root.is_dir():
            root.rmdir()  # the empty folder it replaces
        os.replace(folder, root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    part.unlink(missing_ok=True)
    return root
