"""Server configuration: ``configs/default.yaml`` plus ``--set section.key=value`` overrides, validated.

Every mistake becomes a ``ConfigError`` whose message is one line naming the offending key.
Relative paths (``server.static_dir``, ``avatar.default``, ``avatar.dir``) are resolved against the
project root, not the working directory.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import yaml

from avatar.audio.windowing import WindowConfig
from avatar.errors import ConfigError
from avatar.face.framing import parse_framing
from server.broadcast.settings import parse_janus
from server.capacity import AUTO, default_max_sessions
from server.modes import VideoEncoding

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = PROJECT_ROOT / "configs" / "default.yaml"


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8080
    max_sessions: int = field(default_factory=default_max_sessions)
    """Concurrent sessions; ``auto`` (the default) = three per two usable CPU cores, at most three per
    process (server/capacity.py)."""
    max_message_bytes: int = 3145728
    static_dir: str = "static"
    ice_servers: list = field(default_factory=list)
    shutdown_timeout_s: float = 5.0
    max_connections: int = 64
    """Open sockets (WebSocket) at once; the next upgrade request gets HTTP 503."""
    idle_timeout_s: float = 60.0
    """A socket without a running session that sends nothing for this long is closed (1000)."""
    max_messages_per_s: float = 20.0
    """Per-socket message rate (token bucket, burst twice this); more get an error reply."""
    abuse_messages_per_s: float = 40.0
    """Refused messages within one second beyond which the socket is closed with 1008."""
    allowed_origins: list = field(default_factory=list)
    """Browser origins allowed to open /ws: empty = same-origin only (Origin host:port == Host), ``"*"`` =
    any; requests without an Origin header (non-browser clients) are allowed (server/auth.py)."""
    auth_token: str = ""
    """When set, /ws and /metrics need ``?token=`` or ``Authorization: Bearer``; empty: no auth."""
    log_format: str = "text"
    """``text`` (one line per event, ``key=value`` fields) or ``json`` (one JSON object per line)."""
    degrade: bool = True
    """When a session's engine falls behind, render every other window and repeat frames."""
    janus: dict = field(default_factory=dict)
    """Broadcasts: ``{url, room, api_secret?, pin?, max_publishers?}`` of a Janus VideoRoom room that
    offers with ``"broadcast": true`` publish into (server/broadcast/settings.py); empty: off."""


@dataclass(frozen=True)
class EngineSettings:
    name: str = "parametric"
    fps: float = 25.0
    size: int = 512
    seed: int = 0
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class AvatarSettings:
    default: str = "avatar/assets/astronaut.png"
    dir: str = "avatars"
    require_consent: bool = False
    """When true, folder portraits need ``"consent": true`` in their ``<id>.json`` sidecar to be listed,
    and visitors uploading a portrait must confirm the person shown agreed."""
    allow_upload: bool = False
    """Visitors may upload their own portrait from the pages (server/uploads.py). Off by default: a server
    cannot tell a public deployment behind a proxy from a local one, so the operator turns it on."""
    max_upload_bytes: int = 20000000
    max_upload_pixels: int = 50000000
    """Pixel count read from the file's header before decoding (decompression bombs stop here)."""
    upload_idle_s: float = 900.0
    """An uploaded portrait no session streams is dropped this long after its last use."""
    uploads_per_client: int = 10
    """Uploads per client address per 10 minutes."""
    framing: str = "head_and_shoulders"
    """How portraits are framed for video calls (``avatar.face.framing.Framing``): ``head_and_shoulders``
    crops a wide picture around the face, ``full`` streams the whole picture; a sidecar may override it."""


@dataclass(frozen=True)
class AudioSettings:
    vad_aggressiveness: int = 2
    ring_seconds: float = 10.0
    max_gap_ms: float = 200.0


@dataclass(frozen=True)
class WindowSettings:
    frames_per_window: int = 1
    hop: int = 1
    left_context_ms: float = 200.0
    right_context_ms: float = 0.0
    """Look-ahead at least this; windows always carry what the engine reads (``Engine.lookahead_ms``)."""


@dataclass(frozen=True)
class VideoSettings:
    frame_queue: int = 8
    echo_audio: bool = False
    encoding: VideoEncoding = VideoEncoding.RENDERED
    """The outgoing encoders' settings: ``rendered`` (aiortc's VP8/H.264 without the denoiser, at faster
    speed steps: server/video_encoders.py) or ``aiortc`` (exactly as aiortc sets them)."""


@dataclass(frozen=True)
class ProvenanceSettings:
    watermark: bool = True
    badge: bool = False
    """When true, the pages show a small "AI-generated" label over the video (``GET /health`` ``badge``)."""
    sign_key: str = ""
    """PEM key for the C2PA manifest of offline renders (``python -m avatar render``); empty: local."""
    sign_cert: str = ""
    """PEM certificate chain matching ``sign_key``."""


@dataclass(frozen=True)
class SpeechSettings:
    """Speak mode: typed text (``say``) and pushed audio (``audio``) limits, and barge-in."""

    tts: str = "espeak"
    max_text_chars: int = 1000
    max_audio_seconds: float = 30.0
    max_audio_bytes: int = 2000000
    max_requests: int = 5
    rate_window_s: float = 10.0
    barge_in: bool = True
    max_queued_s: float = 120.0
    """Speech waiting to be spoken (seconds); say/audio beyond it get an error."""


@dataclass(frozen=True)
class ClusterSettings:
    """Sessions placed on Ray nodes by a gateway (``python -m server.cluster``, docs/deploy.md)."""

    address: str = ""
    """The Ray head, ``HOST:PORT`` (``ray start --head``); empty: ``local`` starts its own cluster."""
    namespace: str = "talking-portrait"
    """Ray namespace of the node actors: gateways find nodes there."""
    session_cost: dict = field(default_factory=lambda: {"parametric": {"CPU": 0.6}, "emo": {"GPU": 0.5}})
    """Per engine, what one session takes of a node's Ray resources (CPU share, GPU fraction, or any
    custom resource): a node holds floor(its resource / cost) sessions, the smallest over the keys."""
    heartbeat_s: float = 1.0
    """How often a gateway asks each node for its load (and finds nodes that joined)."""
    node_timeout_s: float = 3.0
    """A node silent this long is lost: its sessions end with an ``error`` event (heartbeat + this <= 5 s)."""
    start_timeout_s: float = 20.0
    """How long a node may take to answer an offer before the gateway gives up on it."""


SECTIONS: dict[str, type] = {
    "server": ServerSettings,
    "engine": EngineSettings,
    "avatar": AvatarSettings,
    "audio": AudioSettings,
    "window": WindowSettings,
    "video": VideoSettings,
    "provenance": ProvenanceSettings,
    "speech": SpeechSettings,
    "cluster": ClusterSettings,
}

# (section, key) -> inclusive (low, high) bounds for numbers
BOUNDS: dict[tuple[str, str], tuple[float, float]] = {
    ("server", "port"): (0, 65535),
    ("server", "max_sessions"): (1, 1000),
    ("server", "max_message_bytes"): (1024, 64 * 1024 * 1024),
    ("server", "shutdown_timeout_s"): (0.1, 600),
    ("server", "max_connections"): (1, 100000),
    ("server", "idle_timeout_s"): (0.1, 86400),
    ("server", "max_messages_per_s"): (0.1, 100000),
    ("server", "abuse_messages_per_s"): (1, 100000),
    ("engine", "fps"): (1, 120),
    ("engine", "size"): (64, 4096),
    ("engine", "seed"): (0, 2**31 - 1),
    ("audio", "vad_aggressiveness"): (0, 3),
    ("audio", "ring_seconds"): (1, 600),
    ("audio", "max_gap_ms"): (20, 10000),
    ("window", "frames_per_window"): (1, 250),
    ("window", "hop"): (1, 250),
    ("window", "left_context_ms"): (0, 10000),
    ("window", "right_context_ms"): (0, 2000),
    ("video", "frame_queue"): (1, 1000),
    ("speech", "max_text_chars"): (1, 100000),
    ("speech", "max_audio_seconds"): (0.1, 600),
    ("speech", "max_audio_bytes"): (1000, 256 * 1024 * 1024),
    ("speech", "max_requests"): (1, 10000),
    ("speech", "rate_window_s"): (0.1, 3600),
    ("speech", "max_queued_s"): (1, 3600),
    ("avatar", "max_upload_bytes"): (1024, 256 * 1024 * 1024),
    ("avatar", "max_upload_pixels"): (4096, 400_000_000),
    ("avatar", "upload_idle_s"): (1, 86400 * 7),
    ("avatar", "uploads_per_client"): (1, 100000),
    ("cluster", "heartbeat_s"): (0.1, 2.0),
    ("cluster", "node_timeout_s"): (0.5, 4.5),
    ("cluster", "start_timeout_s"): (1, 300),
}


@dataclass(frozen=True)
class Config:
    """The whole validated configuration; ``root`` anchors relative paths."""

    server: ServerSettings
    engine: EngineSettings
    avatar: AvatarSettings
    audio: AudioSettings
    window: WindowSettings
    video: VideoSettings
    provenance: ProvenanceSettings
    speech: SpeechSettings = field(default_factory=SpeechSettings)
    cluster: ClusterSettings = field(default_factory=ClusterSettings)
    root: Path = PROJECT_ROOT

    def path(self, value: str) -> Path:
        """``value`` as an absolute path (relative ones are taken from the project root)."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else self.root / p

    def window_config(self, preferred: Mapping[str, float] | None = None) -> WindowConfig:
        """The ``window`` section as a ``WindowConfig``; an engine's ``preferred_window`` (the geometry
        it was trained for, e.g. EMO's 12-frame windows) takes precedence over the section."""
        w = dataclasses.asdict(self.window)
        w.update(preferred or {})
        return WindowConfig(
            fps=self.engine.fps,
            frames_per_window=int(w["frames_per_window"]),
            hop=int(w["hop"]),
            left_context_ms=float(w["left_context_ms"]),
            right_context_ms=float(w["right_context_ms"]),
        )

    def with_overrides(self, overrides: Mapping[str, Any]) -> Config:
        """A copy with ``{"section.key": value}`` applied and validated again."""
        data = self.as_dict()
        for key, value in overrides.items():
            _assign(data, key, value)
        return build_config(data, self.root)

    def as_dict(self) -> dict[str, dict[str, Any]]:
        return {name: dataclasses.asdict(getattr(self, name)) for name in SECTIONS}


def parse_set(text: str) -> tuple[str, Any]:
    """``"section.key=value"`` -> ``("section.key", value parsed as YAML)``."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set expects section.key=value, got {text!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        raise ConfigError(f"--set {key}: cannot parse value {raw!r} as YAML") from None
    return key, value


def load_config(
    path: str | Path | None = None,
    overrides: Iterable[str] = (),
    flags: Mapping[str, Any] | None = None,
    root: Path = PROJECT_ROOT,
) -> Config:
    """Read ``path`` (default ``configs/default.yaml``), apply ``--set`` strings, then ``flags``
    (``{"section.key": value}`` from dedicated command-line options, which win), and validate."""
    path = Path(path) if path is not None else DEFAULT_CONFIG
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise ConfigError(f"cannot parse config {path}{line}: {exc.__class__.__name__}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must be a mapping of sections (server, engine, ...)")
    for text in overrides:
        _assign(data, *parse_set(text))
    for key, value in (flags or {}).items():
        if value is not None:
            _assign(data, key, value)
    return build_config(data, root)


def _assign(data: dict, dotted: str, value: Any) -> None:
    section, _, key = dotted.partition(".")
    if section not in SECTIONS or not key or "." in key:
        raise ConfigError(f"unknown config key {dotted!r}; sections are: {', '.join(SECTIONS)}")
    known = {f.name for f in dataclasses.fields(SECTIONS[section])}
    if key not in known:
        raise ConfigError(f"unknown config key {dotted!r}; {section} has: {', '.join(sorted(known))}")
    sec = data.get(section)
    if not isinstance(sec, dict):
        sec = data[section] = {}
    sec[key] = value


def build_config(data: Mapping[str, Any], root: Path = PROJECT_ROOT) -> Config:
    """Validate a ``{section: {key: value}}`` mapping (missing keys take their defaults)."""
    unknown = [name for name in data if name not in SECTIONS]
    if unknown:
        raise ConfigError(f"unknown config section {unknown[0]!r}; sections are: {', '.join(SECTIONS)}")
    sections = {}
    for name, cls in SECTIONS.items():
        raw = data.get(name) or {}
        if not isinstance(raw, dict):
            raise ConfigError(f"config section {name!r} must be a mapping")
        for key in raw:
            _assign({}, f"{name}.{key}", None)  # raises for unknown keys
        values = {}
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            values[f.name] = _coerce(f"{name}.{f.name}", raw.get(f.name, default), default)
        sections[name] = cls(**values)
    config = Config(**sections, root=root)
    _check(config)
    return config


def _coerce(key: str, value: Any, default: Any) -> Any:
    section, _, name = key.partition(".")
    if key in AUTO_VALUES and isinstance(value, str):
        if value.strip().lower() != AUTO:
            raise ConfigError(f"{key} must be a whole number or '{AUTO}', got {value!r}")
        return AUTO_VALUES[key]()
    if isinstance(default, Enum):
        choices = [c.value for c in type(default)]
        if value not in choices:
            raise ConfigError(f"{key} must be one of {', '.join(choices)}, got {value!r}")
        return type(default)(value)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if isinstance(default, int | float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        if isinstance(default, int) and not isinstance(default, bool):
            if isinstance(value, float) and not value.is_integer():
                raise ConfigError(f"{key} must be a whole number, got {value!r}")
            value = int(value)
        else:
            value = float(value)
        low, high = BOUNDS.get((section, name), (float("-inf"), float("inf")))
        if not low <= value <= high:
            raise ConfigError(f"{key} must be between {low:g} and {high:g}, got {value!r}")
        return value
    if isinstance(default, str):
        if key in EMPTY_ALLOWED and value == "":
            return value
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{key} must be a non-empty string, got {value!r}")
        return value
    if isinstance(default, list):
        if not isinstance(value, list):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        return value
    if isinstance(default, dict):
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        return dict(value)
    return value


EMPTY_ALLOWED = {"cluster.address", "server.auth_token", "provenance.sign_key", "provenance.sign_cert"}
LOG_FORMATS = ("text", "json")
AUTO_VALUES = {"server.max_sessions": default_max_sessions}
"""Keys that accept ``auto``: it becomes the value this function returns (measured on this machine)."""


def _check(config: Config) -> None:
    parse_framing(config.avatar.framing, "avatar.framing")
    parse_janus(config.server.janus)
    if config.server.log_format not in LOG_FORMATS:
        raise ConfigError(f"server.log_format must be 'text' or 'json', got {config.server.log_format!r}")
    origins = config.server.allowed_origins
    if not all(isinstance(o, str) and (o.strip() == "*" or "://" in o) for o in origins):
        raise ConfigError("server.allowed_origins must be a list of origins such as 'https://example.org' "
                          "(or \"*\" for any)")
    if config.server.auth_token != config.server.auth_token.strip():
        raise ConfigError("server.auth_token must not start or end with whitespace")
    if config.engine.size % 2:
        raise ConfigError(f"engine.size must be even (video encoders need it), got {config.engine.size}")
    if config.window.hop > config.window.frames_per_window:
        raise ConfigError("window.hop must not exceed window.frames_per_window")
    try:
        config.window_config()
    except ValueError as exc:
        raise ConfigError(f"window: {exc}") from None
    _check_cluster(config.cluster)
    for i, entry in enumerate(config.server.ice_servers):
        where = f"server.ice_servers[{i}]"
        if not isinstance(entry, dict) or "urls" not in entry:
            raise ConfigError(f"{where} must be a mapping with 'urls' (and optional username, credential)")
        extra = set(entry) - {"urls", "username", "credential"}
        if extra:
            raise ConfigError(f"{where} has unknown key {sorted(extra)[0]!r}")
        urls = entry["urls"] if isinstance(entry["urls"], list) else [entry["urls"]]
        if not urls or not all(isinstance(u, str) and u.split(":", 1)[0] in _ICE_SCHEMES for u in urls):
            raise ConfigError(f"{where}.urls must be stun:/turn:/turns: URLs, got {entry['urls']!r}")
        for key in ("username", "credential"):
            if key in entry and not isinstance(entry[key], str):
                raise ConfigError(f"{where}.{key} must be a string")


_ICE_SCHEMES = {"stun", "stuns", "turn", "turns"}


def _check_cluster(cluster: ClusterSettings) -> None:
    for engine, cost in cluster.session_cost.items():
        where = f"cluster.session_cost.{engine}"
        if not isinstance(cost, dict) or not cost:
            raise ConfigError(f"{where} must map Ray resources to a share per session, e.g. {{CPU: 0.5}}")
        for resource, share in cost.items():
            if not isinstance(resource, str) or isinstance(share, bool) or not isinstance(share, int | float):
                raise ConfigError(f"{where} must map resource names to numbers, got {resource!r}: {share!r}")
            if not 0 < share <= 1024:
                raise ConfigError(f"{where}.{resource} must be above 0 and at most 1024 (a share of the "
                                  f"resource per session), got {share!r}")
    if cluster.heartbeat_s + cluster.node_timeout_s > 5.0:
        total = cluster.heartbeat_s + cluster.node_timeout_s
        raise ConfigError("cluster.heartbeat_s + cluster.node_timeout_s must be at most 5 s (clients of a "
                          f"lost node hear of it within that), got {total:g}")
