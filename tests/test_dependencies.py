"""Every third-party package that ``server/`` and ``avatar/`` import is declared in pyproject.toml (in the
core dependencies or an extra), not just installed as a dependency of something else."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions

from tests.conftest import ROOT

FIRST_PARTY = {"avatar", "server", "__future__"}
NO_METADATA = {"dlib": ["dlib-bin"]}
"""Modules whose wheel does not list them in its metadata (``packages_distributions`` misses them)."""


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def imported_modules() -> dict[str, set[str]]:
    """Top-level module name -> the files importing it (absolute imports only)."""
    found: dict[str, set[str]] = {}
    for folder in ("server", "avatar"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(ROOT)))
    return found


def declared_distributions() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    requirements = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        requirements += extra
    return {_normal(re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0]) for r in requirements}


def test_every_imported_package_is_declared() -> None:
    declared = declared_distributions()
    providers = packages_distributions()
    missing = []
    for module, files in sorted(imported_modules().items()):
        if module in FIRST_PARTY or module in sys.stdlib_module_names:
            continue
        distributions = {_normal(d) for d in providers.get(module, []) + NO_METADATA.get(module, [])}
        if not distributions & declared:
            shown = ", ".join(sorted(distributions)) or "no installed distribution"
            missing.append(f"{module} ({shown}) imported by {', '.join(sorted(files)[:3])}")
    assert not missing, "imported but not declared in pyproject.toml: " + "; ".join(missing)


def test_the_check_sees_a_missing_declaration() -> None:
    assert "cryptography" in imported_modules()  # avatar/provenance/identity.py
    assert "cryptography" in declared_distributions()
    assert "numpy" in declared_distributions() and "not-a-package" not in declared_distributions()
