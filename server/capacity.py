"""How many sessions one server process holds by default: three per two usable cores, at most three.

Measured on the 2-core development VM (parametric engine, learned motion, 512x512, 25 fps, clients that
do not decode the video, 2026-12-08, docs/benchmarks.md "Sessions per box"): one process streams three
sessions at 24.9 fresh fps each, but a fourth halves every session's rate although a third of the two
cores is still idle: the process's Python threads (event loop, engine threads, encoders) share one
interpreter lock, and one process got no more than about 1.3 cores. So ``server.max_sessions: auto``
(the default) resolves to ``3 * cores // 2`` of the cores this process may run on, at most
``PER_PROCESS_SESSIONS``; machines with more cores hold more sessions with one process per two cores
(``python -m server.cluster local --nodes N``: two node processes held four sessions at 512², and six
at 256², on the same two cores). Heavier engines (EMO) hold fewer: set ``server.max_sessions`` for them.
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


PER_PROCESS_SESSIONS = 3
"""Parametric sessions at 512² that one process keeps at full rate, whatever its cores (see above)."""


def default_max_sessions(cores: int | None = None) -> int:
    """Three parametric sessions per two usable cores (``cores``, default ``usable_cores()``), 1..3."""
    cores = usable_cores() if cores is None else int(cores)
    return max(1, min(PER_PROCESS_SESSIONS, 3 * cores // 2))
