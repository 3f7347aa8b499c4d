"""A throw-away Janus for development and tests: a generated minimal config (VideoRoom + HTTP only).

    python -m server.broadcast.dev_janus [--port 8088] [--room 1234]      # runs until Ctrl-C

``DevJanus`` writes ``janus.jcfg``, ``janus.plugin.videoroom.jcfg`` and ``janus.transport.http.jcfg``
into a temporary folder, links only the VideoRoom plugin and the HTTP transport from Debian's ``janus``
package into it, starts ``janus -F DIR -C DIR/janus.jcfg`` and waits until ``GET /janus/info`` answers.
Production Janus servers are configured by their operators (docs/deploy.md).
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

JANUS_LIB = Path("/usr/lib/x86_64-linux-gnu/janus")
"""Where Debian's ``janus`` package puts its plugins and transports (amd64)."""
PLUGIN = "libjanus_videoroom.so"
TRANSPORT = "libjanus_http.so"


def janus_binary() -> str | None:
    """The ``janus`` executable on PATH, or None."""
    return shutil.which("janus")


def janus_lib_dir() -> Path | None:
    """The folder holding ``plugins/`` and ``transports/`` (any Debian architecture), or None."""
    candidates = [JANUS_LIB, *Path("/usr/lib").glob("*/janus"), Path("/usr/lib/janus")]
    for folder in candidates:
        if (folder / "plugins" / PLUGIN).exists() and (folder / "transports" / TRANSPORT).exists():
            return folder
    return None


def missing_reason() -> str | None:
    """Why a development Janus cannot start here (one line), or None when it can."""
    if janus_binary() is None:
        return "janus is not installed (apt-get install janus)"
    if janus_lib_dir() is None:
        return f"janus's {PLUGIN} / {TRANSPORT} were not found under /usr/lib"
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_config(folder: Path, http_port: int, room: int, publishers: int = 4,
                 api_secret: str = "", pin: str = "", rtp_ports: str = "") -> None:
    """The three ``.jcfg`` files of a Janus with one VideoRoom ``room`` (VP8 + Opus, no bitrate cap)
    and the plain HTTP API on ``127.0.0.1:http_port`` at ``/janus``."""
    lib = janus_lib_dir()
    if lib is None:
        raise RuntimeError(missing_reason() or "janus not found")
    (folder / "none").mkdir(parents=True, exist_ok=True)  # no event handlers, no loggers
    for kind, name in (("plugins", PLUGIN), ("transports", TRANSPORT)):
        (folder / kind).mkdir(parents=True, exist_ok=True)
        link = folder / kind / name
        if not link.exists():
            link.symlink_to(lib / kind / name)
    general = [
        f'configs_folder = "{folder}"', f'plugins_folder = "{folder / "plugins"}"',
        f'transports_folder = "{folder / "transports"}"', f'events_folder = "{folder / "none"}"',
        f'loggers_folder = "{folder / "none"}"', "debug_level = 3",
        'server_name = "talking-portrait-dev"', "session_timeout = 60",
    ]
    if api_secret:
        general.append(f'api_secret = "{api_secret}"')
    media = [f'rtp_port_range = "{rtp_ports}"'] if rtp_ports else []
    (folder / "janus.jcfg").write_text(
        "general: {\n  " + "\n  ".join(general) + "\n}\n"
        "media: {\n  " + "\n  ".join(media) + "\n}\n"
        'nat: {\n  ice_ignore_list = "vmnet"\n}\n'
        "plugins: {\n}\ntransports: {\n}\nevents: {\n  broadcast = false\n}\n"
    )
    room_lines = [
        'description = "talking-portrait broadcast"', f"publishers = {publishers}", "bitrate = 0",
        "fir_freq = 5", 'videocodec = "vp8"', 'audiocodec = "opus"', "notify_joining = false",
    ]
    if pin:
        room_lines.append(f'pin = "{pin}"')
    (folder / "janus.plugin.videoroom.jcfg").write_text(
        "general: {\n}\n" + f"room-{room}: {{\n  " + "\n  ".join(room_lines) + "\n}\n"
    )
    (folder / "janus.transport.http.jcfg").write_text(
        "general: {\n  json = \"plain\"\n  base_path = \"/janus\"\n  http = true\n"
        f"  port = {http_port}\n  ip = \"127.0.0.1\"\n  https = false\n}}\n"
        "admin: {\n  admin_http = false\n}\n"
    )


class DevJanus:
    """A Janus process on loopback with a generated config (``with DevJanus() as janus: janus.url``)."""

    def __init__(self, room: int = 1234, http_port: int | None = None, publishers: int = 4,
                 api_secret: str = "", pin: str = "", log_path: Path | None = None) -> None:
        self.room = room
        self.http_port = http_port or free_port()
        self.publishers = publishers
        self.api_secret = api_secret
        self.pin = pin
        self.log_path = log_path
        self.url = f"http://127.0.0.1:{self.http_port}/janus"
        self.process: subprocess.Popen | None = None
        self._folder: tempfile.TemporaryDirectory | None = None

    def start(self, timeout_s: float = 15.0) -> DevJanus:
        reason = missing_reason()
        if reason is not None:
            raise RuntimeError(reason)
        self._folder = tempfile.TemporaryDirectory(prefix="dev-janus-")
        folder = Path(self._folder.name)
        write_config(folder, self.http_port, self.room, self.publishers, self.api_secret, self.pin)
        log = open(self.log_path or folder / "janus.log", "w")  # noqa: SIM115 - closed by the child's exit
        self.process = subprocess.Popen(
            [janus_binary() or "janus", "-F", str(folder), "-C", str(folder / "janus.jcfg"), "-o"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"janus exited with code {self.process.returncode}: {self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/info", timeout=1) as response:
                    if json.loads(response.read()).get("janus") == "server_info":
                        return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"janus did not answer on {self.url} within {timeout_s:g} s")

    def log_tail(self, lines: int = 5) -> str:
        path = self.log_path or (Path(self._folder.name) / "janus.log" if self._folder else None)
        try:
            return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:]) if path else ""
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self._folder is not None:
            self._folder.cleanup()
            self._folder = None

    def __enter__(self) -> DevJanus:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8088, help="HTTP API port (127.0.0.1)")
    parser.add_argument("--room", type=int, default=1234, help="VideoRoom room id")
    parser.add_argument("--publishers", type=int, default=4, help="publishers allowed in the room")
    args = parser.parse_args()
    try:
        janus = DevJanus(args.room, args.port, args.publishers).start()
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"janus: {janus.url} room {janus.room} (pid {janus.process.pid}); Ctrl-C stops it", flush=True)
    try:
        janus.process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        janus.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
