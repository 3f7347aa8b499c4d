"""Static file lookup: content types, page names, and every kind of escape attempt -> None (404)."""

from __future__ import annotations

import os

import pytest

from server.static_files import StaticFiles


@pytest.fixture
def static(tmp_path):
    root = tmp_path / "static"
    (root / "sub").mkdir(parents=True)
    (root / "index.html").write_text("index")
    (root / "overlay.html").write_text("overlay")
    (root / "app.js").write_text("js")
    (root / "sub" / "x.css").write_text("css")
    (root / ".hidden").write_text("hidden")
    (tmp_path / "secret.txt").write_text("secret")
    (tmp_path / "secret.html").write_text("secret page")
    os.symlink(tmp_path / "secret.txt", root / "link.txt")
    os.symlink(tmp_path, root / "linkdir")
    return StaticFiles(root)


def test_pages_and_content_types(static):
    assert static.resolve("/").name == "index.html"
    assert static.resolve("/?v=2").name == "index.html"
    assert static.resolve("/overlay").name == "overlay.html"
    body, ctype = static.read("/app.js")
    assert body == b"js" and ctype.startswith("text/javascript")
    assert static.read("/sub/x.css")[1].startswith("text/css")
    assert static.read("/index.html")[1].startswith("text/html")
    assert static.resolve("/kiosk") is None  # no kiosk.html in this folder


@pytest.mark.parametrize(
    "path",
    [
        "/../secret.txt",
        "/sub/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E%2Fsecret.txt",
        "/sub/%2e%2e/%2e%2e/secret.txt",
        "/..%5csecret.txt",
        "/sub\\..\\..\\secret.txt",
        "//etc/passwd",
        "/%2fetc/passwd",
        "/C:/Windows/win.ini",
        "/link.txt",
        "/linkdir/secret.txt",
        "/.hidden",
        "/index.html%00.js",
        "/%ff%fe",
        "etc/passwd",
        "/../secret",
        "/%252e%252e/secret.txt",
        "/missing.js",
    ],
)
def test_escapes_and_missing_files_are_refused(static, path):
    assert static.resolve(path) is None
    assert static.read(path) is None
