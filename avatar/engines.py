"""Engine registry: names to lazily imported engine classes (torch is imported only for ``emo``)."""

from __future__ import annotations

import importlib
from typing import Any

from avatar.engine import Engine
from avatar.errors import ConfigError

ENGINES: dict[str, str] = {
    "parametric": "avatar.parametric.engine:ParametricEngine",
    "emo": "avatar.emo.engine:EmoEngine",
}


def create_engine(name: str, **options: Any) -> Engine:
    """Instantiate engine ``name`` with ``options`` (fps, size, seed, engine-specific keys).

    Raises ``ConfigError`` with a one-line reason for unknown names or engines that cannot start.
    """
    target = ENGINES.get(name)
    if target is None:
        raise ConfigError(f"unknown engine {name!r}; choose one of: {', '.join(sorted(ENGINES))}")
    module_name, class_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = " (install it with: scripts/setup.sh --emo)" if name == "emo" else ""
        raise ConfigError(f"engine {name!r} is not available: {exc}{hint}") from None
    try:
        return getattr(module, class_name)(**options)
    except TypeError as exc:
        raise ConfigError(f"engine {name!r}: bad option ({exc})") from None


def motion_options(args: Any) -> dict[str, str]:
    """Engine options from the ``--motion`` / ``--motion-model`` command-line flags (unset ones omitted)."""
    options = {}
    if getattr(args, "motion", None):
        options["motion"] = args.motion
    if getattr(args, "motion_model", None):
        options["motion_model"] = args.motion_model
    return options
