"""Video encoders set for rendered pictures, handed to aiortc's senders in place of its own.

aiortc 1.x hard-codes its encoders' settings for camera video: VP8 with libvpx's temporal denoiser
(``noise-sensitivity 4``) at ``cpu-used -6``, H.264 with no x264 preset (x264's ``medium``). The avatar's
pictures are rendered, with no sensor noise to remove, and every session pays for its encoder on a shared
CPU. ``benchmarks/session_cost.py --encoders`` measured, per 512² frame on this project's 2-core machine
(docs/benchmarks.md): VP8 2.7 ms → 1.6 ms at the same bitrate with 0.4 dB *more* PSNR (no denoiser,
``cpu-used -12``); H.264 10.3 ms → 1.9 ms at ``preset superfast`` (0.4 dB less, 1 % more bits).

``VideoEncoding.RENDERED`` (the default, ``video.encoding``) keeps aiortc's own encoders and all their
other settings (bitrate control, key frames on request, packetisation) and changes only these options:
each encoder's codec context is wrapped so that the options aiortc assigns gain ``changes``.
``install(VideoEncoding.AIORTC)`` restores aiortc's encoders exactly.

The hook is aiortc's module attribute ``aiortc.rtcrtpsender.get_encoder`` (the sender creates its encoder
through it when its first frame goes out); it is process-wide and set once at server start.
"""

from __future__ import annotations

from typing import Any

import aiortc.rtcrtpsender as rtcrtpsender
from aiortc.codecs import get_encoder as aiortc_get_encoder
from aiortc.codecs.base import Encoder
from aiortc.codecs.h264 import H264Encoder
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from server.modes import VideoEncoding

VP8_CHANGES = {"noise-sensitivity": "0", "cpu-used": "-12"}
"""libvpx options over aiortc's: no temporal denoiser, a faster real-time speed step."""
H264_CHANGES = {"preset": "superfast"}
"""libx264 options over aiortc's (``level 31``, ``tune zerolatency``, Baseline profile)."""


class _ContextWithChanges:
    """A PyAV codec context whose ``options``, when assigned, also get ``changes`` (everything else is
    the context's own)."""

    __slots__ = ("_context", "_changes")

    def __init__(self, context: Any, changes: dict[str, str]) -> None:
        object.__setattr__(self, "_context", context)
        object.__setattr__(self, "_changes", changes)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "options":
            value = {**value, **self._changes}
        setattr(self._context, name, value)


class _ChangedOptions:
    """Mixin for an aiortc encoder that creates ``self.codec`` on its first frame: the context it
    assigns is wrapped so that its options get ``OPTION_CHANGES``."""

    OPTION_CHANGES: dict[str, str] = {}

    @property
    def codec(self) -> Any:
        return self.__dict__.get("_codec")

    @codec.setter
    def codec(self, context: Any) -> None:
        wrapped = context if context is None else _ContextWithChanges(context, self.OPTION_CHANGES)
        self.__dict__["_codec"] = wrapped


class RenderedVp8Encoder(_ChangedOptions, Vp8Encoder):
    """aiortc's VP8 encoder with ``VP8_CHANGES``."""

    OPTION_CHANGES = VP8_CHANGES


class RenderedH264Encoder(_ChangedOptions, H264Encoder):
    """aiortc's H.264 encoder with ``H264_CHANGES``."""

    OPTION_CHANGES = H264_CHANGES


def rendered_get_encoder(codec: RTCRtpCodecParameters) -> Encoder:
    """``aiortc.codecs.get_encoder`` with the rendered-picture VP8 and H.264 encoders."""
    mime = codec.mimeType.lower()
    if mime == "video/vp8":
        return RenderedVp8Encoder()
    if mime == "video/h264":
        return RenderedH264Encoder()
    return aiortc_get_encoder(codec)


def install(encoding: VideoEncoding) -> None:
    """Make aiortc's senders created from now on use ``encoding``'s encoders (process-wide)."""
    rendered = VideoEncoding(encoding) is VideoEncoding.RENDERED
    rtcrtpsender.get_encoder = rendered_get_encoder if rendered else aiortc_get_encoder
