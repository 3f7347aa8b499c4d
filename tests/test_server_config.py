"""Config loading, --set overrides, validation errors, and the CLI's one-line startup errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from avatar.errors import ConfigError
from server.config import load_config, parse_set

ROOT = Path(__file__).resolve().parents[1]


def test_default_config_loads_with_expected_types():
    config = load_config()
    assert config.server.port == 8080 and isinstance(config.server.port, int)
    assert config.engine.fps == 25.0 and isinstance(config.engine.fps, float)
    assert config.video.echo_audio is False
    assert config.path(config.server.static_dir) == ROOT / "static"
    window = config.window_config()
    assert window.fps == config.engine.fps and window.hop == config.window.hop


def test_set_overrides_are_parsed_as_yaml_and_flags_win():
    config = load_config(
        overrides=["server.port=9000", "video.echo_audio=true", "engine.fps=30", "server.host=0.0.0.0"],
        flags={"server.port": 9100, "engine.name": None},
    )
    assert config.server.port == 9100  # the dedicated flag beats --set
    assert config.video.echo_audio is True
    assert config.engine.fps == 30.0
    assert config.server.host == "0.0.0.0"
    assert config.engine.name == "parametric"  # a None flag changes nothing


def test_every_default_key_is_overridable():
    base = load_config()
    for section, values in base.as_dict().items():
        for key, value in values.items():
            # re-setting each key to its own value must be accepted
            assert load_config(flags={f"{section}.{key}": value}).as_dict()[section][key] == value


@pytest.mark.parametrize(
    ("setting", "fragment"),
    [
        ("server.prot=1", "unknown config key 'server.prot'"),
        ("nosection.key=1", "unknown config key"),
        ("server.port=abc", "server.port must be a number"),
        ("server.port=70000", "between 0 and 65535"),
        ("engine.fps=0", "engine.fps must be between"),
        ("engine.size=511", "engine.size must be even"),
        ("window.hop=5", "window.hop must not exceed"),
        ("video.echo_audio=maybe", "true or false"),
        ("engine.size=1.5", "whole number"),
        ("server.ice_servers=[{urls: 'http://x'}]", "stun:/turn:/turns:"),
        ("server.ice_servers=[{urls: 'stun:a', foo: 1}]", "unknown key 'foo'"),
        ("noequals", "expects section.key=value"),
        ("server.port=[1, 2", "cannot parse value"),
    ],
)
def test_bad_settings_raise_one_line_config_errors(setting, fragment):
    with pytest.raises(ConfigError) as info:
        load_config(overrides=[setting])
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("server:\n  port: [1,\n")
    with pytest.raises(ConfigError, match="cannot parse config"):
        load_config(broken)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping of sections"):
        load_config(listy)
    partial = tmp_path / "partial.yaml"
    partial.write_text("engine:\n  fps: 30\n")
    assert load_config(partial).engine.fps == 30.0  # missing keys take their defaults


def test_parse_set_keeps_strings_and_numbers():
    assert parse_set("avatar.default=portraits/me.png") == ("avatar.default", "portraits/me.png")
    assert parse_set("server.max_sessions=8") == ("server.max_sessions", 8)


@pytest.mark.parametrize(
    "args",
    [["--engine", "nope"], ["--set", "server.port=abc"], ["--avatar", "/nonexistent/face.png", "--port", "0",
                                                           "--engine", "parametric"]],
)
def test_cli_startup_errors_are_one_line_exit_2(args):
    result = subprocess.run(
        [sys.executable, str(ROOT / "run_server.py"), *args], capture_output=True, text=True, cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
