"""``server.janus``: where broadcasts are published (a Janus VideoRoom room), validated at start-up.

    server:
      janus: {url: "http://127.0.0.1:8088/janus", room: 1234, api_secret: "", pin: "", max_publishers: 1}

Empty (the default): broadcasting is off and offers asking for it are refused. Every mistake is a
``ConfigError`` with one line naming the key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from avatar.errors import ConfigError

KEYS = ("url", "room", "api_secret", "pin", "max_publishers")
MAX_PUBLISHERS = 100


@dataclass(frozen=True)
class JanusSettings:
    url: str
    """Janus's HTTP API endpoint, e.g. ``http://127.0.0.1:8088/janus`` (the transport's ``base_path``)."""
    room: int | str
    """The VideoRoom room id to publish into (a number, or a string with ``string_ids`` rooms)."""
    api_secret: str = ""
    """Janus's ``api_secret``, when the Janus server requires one (never sent to clients)."""
    pin: str = ""
    """The room's ``pin``, when it has one."""
    max_publishers: int = 1
    """Sessions of this server that may broadcast at once (each is one publisher in the room)."""


def parse_janus(raw: Any, where: str = "server.janus") -> JanusSettings | None:
    """``{}`` -> None (broadcasting off); a valid mapping -> ``JanusSettings``; else ``ConfigError``."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping such as "
                          "{url: 'http://127.0.0.1:8088/janus', room: 1234}")
    if not raw:
        return None
    unknown = sorted(set(raw) - set(KEYS))
    if unknown:
        raise ConfigError(f"{where} has unknown key {unknown[0]!r}; it takes: {', '.join(KEYS)}")
    url = raw.get("url")
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{where}.url must be Janus's HTTP API URL such as http://127.0.0.1:8088/janus, "
                          f"got {url!r}")
    room = raw.get("room")
    if isinstance(room, bool) or not (isinstance(room, int) and room > 0
                                      or isinstance(room, str) and room.strip()):
        raise ConfigError(f"{where}.room must be the VideoRoom room id (a positive number), got {room!r}")
    for key in ("api_secret", "pin"):
        if not isinstance(raw.get(key, ""), str):
            raise ConfigError(f"{where}.{key} must be a string")
    count = raw.get("max_publishers", 1)
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_PUBLISHERS:
        raise ConfigError(f"{where}.max_publishers must be a whole number from 1 to {MAX_PUBLISHERS}, "
                          f"got {count!r}")
    return JanusSettings(url=url.rstrip("/"), room=room, api_secret=raw.get("api_secret", ""),
                         pin=raw.get("pin", ""), max_publishers=count)
