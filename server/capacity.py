"""How many sessions a machine holds by default: one parametric session per usable CPU core.

Measured on the 2-core development VM (parametric engine, 512x512, 25 fps, clients on the same machine;
docs/benchmarks.md, 2026-12-07): one session per core keeps full rate (two sessions on two cores: 24.7-24.8
fresh fps each), three sessions on two cores get only 10.6-11.8 fresh fps each. ``server.max_sessions:
auto`` (the default) therefore resolves to the cores this process may run on. Heavier engines (EMO) hold
fewer: set ``server.max_sessions`` for them.
"""

from __future__ import annotations

import os

AUTO = "auto"
"""The ``server.max_sessions`` value that means ``default_max_sessions()``."""
MAX_SESSIONS_LIMIT = 1000


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. under ``taskset`` or a container's
    cpuset), not the machine's total."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity mask on this platform (macOS, Windows)
        return os.cpu_count() or 1


def default_max_sessions(cores: int | None = None) -> int:
    """One parametric session per usable core (``cores``, default ``usable_cores()``), 1..1000."""
    return max(1, min(MAX_SESSIONS_LIMIT, usable_cores() if cores is None else int(cores)))
