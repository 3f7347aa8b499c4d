"""String enums for what a session does and where it is in its life.

They are ``StrEnum``s: each member equals its wire string (``SessionMode.SPEAK == "speak"``) and is
written as that string in JSON, so the protocol (docs/protocol.md) is unchanged by using them.
"""

from __future__ import annotations

from enum import StrEnum


class SessionMode(StrEnum):
    """Which voice the face speaks (the offer's ``mode``)."""

    MIRROR = "mirror"
    """The face speaks the client's microphone."""
    SPEAK = "speak"
    """The face speaks say/audio requests; the microphone only drives barge-in."""

    @classmethod
    def parse(cls, value: object) -> SessionMode | None:
        """The mode ``value`` names, or None when it names none (the caller words the error)."""
        if isinstance(value, str):
            try:
                return cls(value)
            except ValueError:
                return None
        return None

    @classmethod
    def choices(cls) -> str:
        """``'mirror' or 'speak'``: the accepted values for an error message."""
        return " or ".join(f"'{mode.value}'" for mode in cls)


class SessionState(StrEnum):
    """A session's lifecycle: starting -> running -> closing -> closed (or starting -> closing)."""

    STARTING = "starting"
    """Negotiating the offer; no answer sent yet."""
    RUNNING = "running"
    """The answer was sent; media flows."""
    CLOSING = "closing"
    """Teardown requested and in progress (tasks, tracks, engine thread, peer connection)."""
    CLOSED = "closed"
    """Teardown finished."""


class SpeechState(StrEnum):
    """Speak mode: where the current stretch of speech is (the ``speech_state`` in ``stats``)."""

    IDLE = "idle"
    """Nothing queued on the timeline."""
    QUEUED = "queued"
    """Speech is on the timeline but its first frame has not been shown yet."""
    SPEAKING = "speaking"
    """The video shows the speech (``speaking_started`` was sent)."""


class VideoEncoding(StrEnum):
    """``video.encoding``: which settings the outgoing video encoders use (server/video_encoders.py)."""

    RENDERED = "rendered"
    """aiortc's VP8/H.264 encoders set for noise-free rendered pictures: cheaper, same bitrate."""
    AIORTC = "aiortc"
    """aiortc's encoders exactly as aiortc sets them."""
