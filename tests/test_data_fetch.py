"""``corediff data fetch afhq`` against a local HTTP server (127.0.0.1, never a real URL)
serving synthetic archives with AFHQ's published layout and image counts (one tiny PNG
repeated): download, resume after an interrupted transfer (HTTP Range), refusal of a corrupt
archive, of wrong counts, of unsafe member names, and no half-made folder in any case."""

from __future__ import annotations

import io
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from corediff.cli import main
from corediff.fetch import DATASETS


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((4, 4, 3), 128, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def make_zip(counts: dict[str, dict[str, int]], top: str = "", extra: dict | None = None,
             drop: int = 0) -> bytes:
    """A zip of ``counts`` images per split/class under ``top`` (+ ``extra`` members)."""
    png, buffer = _png(), io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zipped:
        for split, classes in counts.items():
            for name, count in classes.items():
                for i in range(count - (drop if name == "wild" else 0)):
                    zipped.writestr(f"{top}{split}/{name}/img_{i:05d}.png", png)
        for member, data in (extra or {}).items():
            zipped.writestr(member, data)
    return buffer.getvalue()


class Server:
    """Serves {path: bytes} with Range support; ``cut`` bytes into a body the connection
    drops (an interrupted download) while ``cut`` is set."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.cut: int | None = None
        self.ranges: list[str | None] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                wanted = self.headers.get("Range")
                server.ranges.append(wanted)
                start = int(wanted.removeprefix("bytes=").split("-")[0]) if wanted else 0
                self.send_response(206 if wanted else 200)
                if wanted:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                if server.cut is not None:
                    body = body[:server.cut]
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"


@pytest.fixture(scope="module")
def server():
    served = Server()
    yield served
    served.httpd.shutdown()


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".extract"))


def test_fetch_resumes_an_interrupted_download_and_extracts_afhq_v1(server, tmp_path,
                                                                    capsys) -> None:
    counts = DATASETS["afhq"]["v1"].counts
    server.files["/afhq.zip"] = make_zip(counts, top="afhq/")  # v1 wraps it in afhq/
    root = tmp_path / "data" / "afhq"
    argv = ["data", "fetch", "afhq", "--version", "v1", "--root", str(root),
            "--url", server.url("/afhq.zip")]
    server.cut = 300_000  # the connection drops 300 kB into the body
    assert main(argv) == 2
    assert "run the same command again to resume" in capsys.readouterr().err
    part = root.parent / ".afhq.afhq.zip.part"
    assert part.stat().st_size == 300_000 and not root.exists()
    server.cut, server.ranges = None, []
    assert main(argv) == 0
    assert server.ranges == ["bytes=300000-"]  # continued, not started over
    for split, classes in counts.items():
        for name, count in classes.items():
            assert len(list((root / split / name).glob("*.png"))) == count
    assert not part.exists() and _leftovers(root.parent) == []
    assert "data.root=" in capsys.readouterr().out
    assert main(argv) == 2  # the root is taken now
    assert "already exists" in capsys.readouterr().err


@pytest.mark.parametrize("case", ["corrupt", "counts", "escape", "link"])
def test_bad_archives_leave_nothing_behind(server, tmp_path, capsys, case) -> None:
    counts = {"train": {"cat": 2, "dog": 2, "wild": 2}, "test": {"cat": 1, "dog": 1, "wild": 1}}
    if case == "corrupt":
        data = bytearray(make_zip(counts))
        data[200:260] = b"\xff" * 60  # inside the first member's bytes: a CRC mismatch
        data = bytes(data)
    elif case == "counts":
        data = make_zip(DATASETS["afhq"]["v2"].counts, drop=1)  # one wild image missing
    elif case == "escape":
        data = make_zip(counts, extra={"../../outside.png": b"x"})
    else:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as zipped:
            info = zipfile.ZipInfo("train/cat/link.png")
            info.external_attr = (0o120777 << 16)
            zipped.writestr(info, "/etc/passwd")
        data = buffer.getvalue()
    server.files[f"/{case}.zip"] = data
    root = tmp_path / "afhq"
    code = main(["data", "fetch", "afhq", "--root", str(root), "--url",
                 server.url(f"/{case}.zip")])
    err = [line for line in capsys.readouterr().err.splitlines()  # not the progress bar
           if line.startswith("corediff:")]
    assert code == 2 and len(err) == 1
    phrase = {"corrupt": "not a valid zip", "counts": "train/wild: expected 4593 images, found "
              "4592", "escape": "unsafe member name", "link": "holds a link"}[case]
    assert phrase in err[0], err[0]
    assert not root.exists() and _leftovers(tmp_path) == []
    assert not (tmp_path / "outside.png").exists() and not (tmp_path.parent / "outside.png"
                                                           ).exists()
    part = tmp_path / ".afhq.afhq_v2.zip.part"
    assert part.exists() == (case != "corrupt")  # a corrupt download is not kept


def test_unknown_dataset_and_http_errors_are_one_sentence(server, tmp_path, capsys) -> None:
    assert main(["data", "fetch", "imagenet", "--root", str(tmp_path / "x")]) == 2
    assert "unknown dataset 'imagenet'; corediff can fetch: afhq" in capsys.readouterr().err
    assert main(["data", "fetch", "afhq", "--root", str(tmp_path / "x"), "--url",
                 server.url("/missing.zip")]) == 2
    assert "HTTP 404" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_missing_afhq_root_names_the_fetch_command(tmp_path, capsys) -> None:
    code = main(["train", "recipes/svd_afhq.toml", "--run-dir", str(tmp_path / "run"),
                 "--set", f"data.root='{tmp_path / 'data' / 'afhq' / 'train'}'"])
    assert code == 2 and "corediff data fetch afhq" in capsys.readouterr().err
