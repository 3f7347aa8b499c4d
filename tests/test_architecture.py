"""Layering rules: server/ never imports torch; avatar/ never imports aiortc or websockets."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _imported_top_modules(folder: Path) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in folder.rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(ROOT)))
    return found


@pytest.mark.parametrize(
    ("folder", "forbidden"),
    [("server", {"torch", "diffusers", "transformers"}), ("avatar", {"aiortc", "websockets"})],
)
def test_layering(folder, forbidden):
    imports = _imported_top_modules(ROOT / folder)
    offenders = {name: sorted(imports[name]) for name in forbidden if name in imports}
    assert not offenders, f"{folder}/ must not import {offenders}"


def test_core_imports_stay_light():
    import subprocess
    import sys

    code = (
        "import sys, avatar, avatar.engines, avatar.render, avatar.audio.windowing;"
        "bad = [m for m in ('torch', 'aiortc', 'websockets') if m in sys.modules];"
        "print(','.join(bad)); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, f"avatar pulled in: {result.stdout.strip()} {result.stderr[-300:]}"


def test_server_runs_numpy_single_threaded_unless_told_otherwise():
    """Several sessions' engines share the cores: a multi-threaded BLAS under each made them fight
    (docs/operations.md, Capacity). Importing ``server`` sets one thread before numpy loads."""
    import os
    import subprocess
    import sys

    probe = "import server, numpy, os; e = os.environ; print(e['OPENBLAS_NUM_THREADS'], e['OMP_NUM_THREADS'])"
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", probe], env=env, cwd=root, capture_output=True, text=True)
    assert out.stdout.split() == ["1", "1"], out.stderr
    env["OMP_NUM_THREADS"] = "4"  # an operator's own setting wins
    out = subprocess.run([sys.executable, "-c", probe], env=env, cwd=root, capture_output=True, text=True)
    assert out.stdout.split() == ["1", "4"], out.stderr
