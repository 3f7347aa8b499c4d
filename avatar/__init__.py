"""Talking-portrait engines, audio features, rendering and offline tools.

This package never imports aiortc or websockets (the server lives in ``server/``) and keeps
torch out of its import path unless a diffusion engine is asked for.
"""

from avatar.engine import AudioWindow, Engine, EngineSession, Frame, PreparedAvatar
from avatar.errors import AudioError, AvatarError, ConfigError, PortraitError

__all__ = [
    "AudioError",
    "AudioWindow",
    "AvatarError",
    "ConfigError",
    "Engine",
    "EngineSession",
    "Frame",
    "PortraitError",
    "PreparedAvatar",
]
