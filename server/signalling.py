"""The ``/ws`` signalling protocol (see docs/protocol.md): parse client messages, build server messages.

``parse_message`` turns one WebSocket message into a typed message or raises ``SignallingError`` whose
text is sent back verbatim as ``{"type": "error", "message": ...}``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from avatar.errors import AvatarError, ConfigError
from avatar.face.framing import Framing, parse_framing
from server.modes import SessionMode

AVATAR_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
CHANNEL_NAME = AVATAR_ID
"""Channel names follow the avatar id rule: 1-64 letters, digits, '_' or '-'."""
CHANNEL_KEY = re.compile(r"^[A-Za-z0-9_-]{16,128}$")
"""The secret an overlay opens a channel with: 16-128 URL-safe characters (``secrets.token_urlsafe``)."""
MAX_KEY_CHARS = 512
"""A controller's ``key`` is a channel key or the server token (any string), at most this long."""
KEY_HINT = "python -c 'import secrets; print(secrets.token_urlsafe(18))' makes one"
MAX_SDP_CHARS = 128 * 1024
"""A browser offer is 3-15 KB; anything far larger is not an SDP we want to parse."""


class SignallingError(AvatarError):
    """A client message was malformed or not acceptable now; the text goes back to the client."""


AUDIO_FORMATS = ("wav", "pcm16")


@dataclass(frozen=True)
class Offer:
    sdp: str
    avatar: str | None = None
    mode: SessionMode = SessionMode.MIRROR
    """``mirror``: the face speaks the microphone; ``speak``: it speaks say/audio, the mic only barges in."""
    channel: str | None = None
    """Speak mode only: controllers (sockets without a session) reach this session by this name ..."""
    key: str | None = None
    """... and this secret (``CHANNEL_KEY``), required with a channel."""
    framing: Framing | None = None
    """``full`` or ``head_and_shoulders`` for this session's portrait; None: the avatar's own (sidecar or
    ``avatar.framing``). Uploaded portraits stream as previewed and ignore it."""
    broadcast: bool = False
    """Also publish this session's stream into the Janus room of ``server.janus`` (server/broadcast/)."""
    size: int | None = None
    """Square video side in px for this session (one of the engine's ``output_sizes``, e.g. 256, 384 or
    512 up to ``engine.size``); None: ``engine.size``. A smaller picture costs the server less CPU."""


@dataclass(frozen=True)
class ListAvatars:
    pass


@dataclass(frozen=True)
class Ping:
    pass


@dataclass(frozen=True)
class Say:
    text: str
    voice: str = "en"
    channel: str | None = None
    """None: this socket's own session; a name: every speak-mode session on that channel ..."""
    key: str | None = None
    """... opened with this key (or any of them, when this is the server's auth token)."""


@dataclass(frozen=True)
class PushAudio:
    format: str
    """``wav`` (any rate in the header) or ``pcm16`` (little-endian mono at ``sample_rate``)."""
    data: str
    """base64, not yet decoded."""
    sample_rate: int | None = None
    channel: str | None = None
    key: str | None = None


@dataclass(frozen=True)
class Interrupt:
    channel: str | None = None
    key: str | None = None


@dataclass(frozen=True)
class Upload:
    """Announces a portrait file; its bytes follow as binary frames (server/uploads.py)."""

    name: str
    size: int
    mime: str | None = None
    consent: bool = False


@dataclass(frozen=True)
class DetectLanguage:
    text: str


MAX_UPLOAD_NAME_CHARS = 255
AUTO_VOICE = "auto"
"""``say`` with this voice: the server picks the voice from the text's language."""

ClientMessage = Offer | ListAvatars | Ping | Say | PushAudio | Interrupt | Upload | DetectLanguage


def parse_message(raw: str | bytes) -> ClientMessage:
    """Validate one client message (text frame holding a JSON object with a ``type``)."""
    if isinstance(raw, bytes | bytearray | memoryview):
        raise SignallingError("binary messages are not supported; send JSON text")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise SignallingError("message is not valid JSON") from None
    if not isinstance(data, dict):
        raise SignallingError("message must be a JSON object with a 'type'")
    kind = data.get("type")
    if not isinstance(kind, str):
        raise SignallingError("message has no 'type' string")
    if kind == "offer":
        return _parse_offer(data)
    if kind == "list_avatars":
        return ListAvatars()
    if kind == "ping":
        return Ping()
    if kind == "say":
        return _parse_say(data)
    if kind == "audio":
        return _parse_audio(data)
    if kind == "interrupt":
        return Interrupt(*_parse_target(data))
    if kind == "upload":
        return _parse_upload(data)
    if kind == "detect_language":
        text = data.get("text")
        if not isinstance(text, str):
            raise SignallingError("detect_language needs a 'text' string")
        return DetectLanguage(text=text)
    shown = kind if len(kind) <= 40 else kind[:40] + "..."
    raise SignallingError(
        f"unknown message type {shown!r}; expected offer, list_avatars, ping, say, audio, interrupt, upload "
        "or detect_language"
    )


def _parse_offer(data: dict[str, Any]) -> Offer:
    sdp = data.get("sdp")
    if not isinstance(sdp, str) or not sdp.strip():
        raise SignallingError("offer needs an 'sdp' string")
    if len(sdp) > MAX_SDP_CHARS:
        raise SignallingError(f"offer sdp is too large ({len(sdp)} characters, at most {MAX_SDP_CHARS})")
    if not sdp.lstrip().startswith("v=0") or "\nm=" not in sdp:
        raise SignallingError("offer sdp is not a session description (expected 'v=0' and 'm=' lines)")
    if not re.search(r"^m=video ", sdp, re.MULTILINE):
        raise SignallingError("offer has no video m-line; add a recvonly video transceiver")
    avatar = data.get("avatar")
    if avatar is not None and avatar != "":
        if not isinstance(avatar, str) or not AVATAR_ID.match(avatar):
            raise SignallingError("invalid avatar id (use 1-64 letters, digits, '_' or '-')")
    mode = parse_mode(data.get("mode", SessionMode.MIRROR))
    channel = _parse_channel(data)
    if channel is not None and mode is not SessionMode.SPEAK:
        raise SignallingError("a 'channel' needs a speak-mode session: offer with \"mode\": \"speak\"")
    key = None
    if channel is not None:
        key = data.get("key")
        if key is None or key == "":
            raise SignallingError(f"a 'channel' needs a secret 'key' (16-128 letters, digits, '_' or '-'; "
                                  f"{KEY_HINT})")
        if not isinstance(key, str) or not CHANNEL_KEY.match(key):
            raise SignallingError(f"invalid channel key: use 16-128 letters, digits, '_' or '-' ({KEY_HINT})")
    framing = data.get("framing")
    if framing is not None and framing != "":
        try:
            framing = parse_framing(framing, "offer framing")
        except ConfigError as exc:
            raise SignallingError(str(exc)) from None
    broadcast = data.get("broadcast", False)
    if not isinstance(broadcast, bool):
        raise SignallingError("offer 'broadcast' must be true or false")
    size = data.get("size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or not 0 < size <= 4096):
        raise SignallingError("offer 'size' must be the video's side in pixels, e.g. 256, 384 or 512")
    return Offer(sdp=sdp, avatar=avatar or None, mode=mode, channel=channel, key=key, framing=framing or None,
                 broadcast=broadcast, size=size)


def parse_mode(value: object) -> SessionMode:
    """An offer's ``mode`` as a ``SessionMode``; anything else raises a one-line ``SignallingError``."""
    mode = SessionMode.parse(value)
    if mode is None:
        raise SignallingError(f"offer mode must be {SessionMode.choices()}")
    return mode


def _parse_channel(data: dict[str, Any]) -> str | None:
    """The optional ``channel`` field: absent, null or "" -> None; otherwise a valid channel name."""
    channel = data.get("channel")
    if channel is None or channel == "":
        return None
    if not isinstance(channel, str) or not CHANNEL_NAME.match(channel):
        raise SignallingError("invalid channel name (use 1-64 letters, digits, '_' or '-')")
    return channel


def _parse_target(data: dict[str, Any]) -> tuple[str | None, str | None]:
    """``channel`` and ``key`` of a say/audio/interrupt: (None, None) for the socket's own session; a
    channel needs a ``key`` (the overlay's channel key or the server token)."""
    channel = _parse_channel(data)
    if channel is None:
        return None, None
    key = data.get("key")
    if key is None or key == "":
        raise SignallingError(f"channel '{channel}' needs its 'key': the secret the overlay was opened with")
    if not isinstance(key, str) or len(key) > MAX_KEY_CHARS:
        raise SignallingError(f"channel 'key' must be a string of at most {MAX_KEY_CHARS} characters")
    return channel, key


def _parse_say(data: dict[str, Any]) -> Say:
    text = data.get("text")
    if not isinstance(text, str):
        raise SignallingError("say needs a 'text' string")
    voice = data.get("voice", "en")
    if not isinstance(voice, str) or not voice.strip():
        raise SignallingError("say 'voice' must be a language code such as en, es, de, fr")
    return Say(text, voice.strip(), *_parse_target(data))


def _parse_upload(data: dict[str, Any]) -> Upload:
    name, size, mime = data.get("name"), data.get("bytes"), data.get("mime")
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_UPLOAD_NAME_CHARS:
        raise SignallingError("upload needs a file 'name' (at most 255 characters)")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise SignallingError("upload needs the file's size in 'bytes' (a whole number)")
    if mime is not None and (not isinstance(mime, str) or len(mime) > 100):
        raise SignallingError("upload 'mime' must be a short string such as image/jpeg")
    consent = data.get("consent", False)
    if not isinstance(consent, bool):
        raise SignallingError("upload 'consent' must be true or false")
    return Upload(name=name.strip(), size=size, mime=mime or None, consent=consent)


def _parse_audio(data: dict[str, Any]) -> PushAudio:
    fmt = data.get("format")
    if fmt not in AUDIO_FORMATS:
        raise SignallingError("audio 'format' must be 'wav' or 'pcm16'")
    payload = data.get("data")
    if not isinstance(payload, str) or not payload:
        raise SignallingError("audio needs base64 'data'")
    rate = data.get("sample_rate")
    if rate is not None and (isinstance(rate, bool) or not isinstance(rate, int)):
        raise SignallingError("audio 'sample_rate' must be a whole number of Hz")
    if fmt == "pcm16" and rate is None:
        raise SignallingError("pcm16 audio needs a 'sample_rate'")
    return PushAudio(fmt, payload, rate, *_parse_target(data))


def answer(sdp: str, session_id: str) -> str:
    return _dump({"type": "answer", "sdp": sdp, "session": session_id})


def error(message: str) -> str:
    return _dump({"type": "error", "message": one_line(message)})


def avatars(entries: list[dict[str, str]]) -> str:
    return _dump({"type": "avatars", "avatars": entries})


def pong() -> str:
    return _dump({"type": "pong"})


def stats(values: dict[str, Any]) -> str:
    return _dump({"type": "stats", **values})


def event(kind: str, **fields: Any) -> str:
    """A server event without a request: speaking_started, speaking_finished, ..."""
    return _dump({"type": kind, **fields})


def ended(session_id: str, reason: str) -> str:
    return _dump({"type": "ended", "session": session_id, "reason": one_line(reason)})


def one_line(text: str, limit: int = 300) -> str:
    """Collapse whitespace/newlines and cap the length so a message is always one short line."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _dump(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"), allow_nan=False)
