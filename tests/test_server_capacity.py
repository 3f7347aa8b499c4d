"""``server.max_sessions`` follows the measurement: one parametric session per usable CPU core by default
(``auto``), a number when configured, and a one-line error for anything else."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from avatar.errors import ConfigError
from server.capacity import default_max_sessions, usable_cores
from server.config import DEFAULT_CONFIG, build_config, load_config

ROOT = Path(__file__).resolve().parents[1]


def test_default_is_three_sessions_per_two_usable_cores_at_most_three() -> None:
    cores = len(os.sched_getaffinity(0))
    assert usable_cores() == cores
    expected = max(1, min(3, 3 * cores // 2))
    assert yaml.safe_load(DEFAULT_CONFIG.read_text())["server"]["max_sessions"] == "auto"
    assert load_config().server.max_sessions == expected  # configs/default.yaml says auto
    assert build_config({}).server.max_sessions == expected  # a config without the key
    assert load_config(overrides=["server.max_sessions=auto"]).server.max_sessions == expected
    assert load_config(overrides=["server.max_sessions=7"]).server.max_sessions == 7


def test_default_follows_the_affinity_mask_of_the_process() -> None:
    """Pinned to one core (as ``taskset -c N`` or a one-CPU container does) the default is one session."""
    core = min(os.sched_getaffinity(0))
    code = "from server.config import load_config; print(load_config().server.max_sessions)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         check=True, preexec_fn=lambda: os.sched_setaffinity(0, {core}))
    assert out.stdout.strip() == "1"


def test_default_max_sessions_is_clamped() -> None:
    assert [default_max_sessions(n) for n in (1, 2, 3, 16, 5000)] == [1, 3, 3, 3, 3]
    assert default_max_sessions(0) == 1


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("lots", "server.max_sessions must be a whole number or 'auto', got 'lots'"),
        ("0", "server.max_sessions must be between 1 and 1000, got 0"),
        ("2.5", "server.max_sessions must be a whole number, got 2.5"),
        ("true", "server.max_sessions must be a number, got True"),
    ],
)
def test_bad_max_sessions_is_a_one_line_error(value: str, message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_config(overrides=[f"server.max_sessions={value}"])
    assert str(refused.value) == message
