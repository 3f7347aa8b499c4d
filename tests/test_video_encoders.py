"""The rendered-picture encoders: aiortc's encoders with changed libvpx/libx264 options, installed as
the encoders aiortc's senders create, and pictures that still decode to what was sent."""

from __future__ import annotations

import fractions

import aiortc.rtcrtpsender as rtcrtpsender
import av
import numpy as np
import pytest
from aiortc.codecs import get_encoder as aiortc_get_encoder
from aiortc.codecs.h264 import H264Decoder, H264Encoder, h264_depayload
from aiortc.codecs.vpx import Vp8Decoder, Vp8Encoder, vp8_depayload
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from avatar.errors import ConfigError
from server.config import load_config
from server.modes import VideoEncoding
from server.video_encoders import (
    H264_CHANGES,
    VP8_CHANGES,
    RenderedH264Encoder,
    RenderedVp8Encoder,
    install,
    rendered_get_encoder,
)


def codec(mime: str) -> RTCRtpCodecParameters:
    return RTCRtpCodecParameters(mimeType=mime, clockRate=90000, payloadType=96)


def pictures(count: int, size: int = 128) -> list[av.VideoFrame]:
    """A smooth picture panning one pixel per frame (what a rendered face roughly looks like)."""
    y, x = np.mgrid[0:size, 0:size * 2].astype(np.float32)
    base = np.stack([128 + 90 * np.sin(x / 9.0), 128 + 90 * np.cos(y / 7.0), (x + y) % 256], axis=-1)
    frames = []
    for i in range(count):
        image = np.ascontiguousarray(base[:, i:i + size]).astype(np.uint8)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts, frame.time_base = i * 3000, fractions.Fraction(1, 90000)
        frames.append(frame)
    return frames


class RecordingContext:
    """Stands in for a PyAV codec context: records what is assigned to it."""

    def __init__(self) -> None:
        self.assigned: dict[str, object] = {}

    def __setattr__(self, name: str, value: object) -> None:
        if name != "assigned":
            self.assigned[name] = value
        object.__setattr__(self, name, value)


def test_options_aiortc_assigns_gain_the_changes_and_everything_else_passes_through() -> None:
    encoder = RenderedVp8Encoder()
    assert encoder.codec is None
    context = RecordingContext()
    encoder.codec = context
    encoder.codec.width = 64
    encoder.codec.options = {"cpu-used": "-6", "noise-sensitivity": "4", "deadline": "realtime"}
    assert context.assigned["width"] == 64 and encoder.codec.width == 64
    changed = {"cpu-used": "-12", "noise-sensitivity": "0", "deadline": "realtime"}
    assert context.assigned["options"] == changed
    encoder.codec = None
    assert encoder.codec is None


@pytest.mark.parametrize(
    ("mime", "rendered", "decoder"),
    [("video/VP8", RenderedVp8Encoder, Vp8Decoder), ("video/H264", RenderedH264Encoder, H264Decoder)],
)
def test_rendered_encoders_send_pictures_that_decode_like_the_originals(mime, rendered, decoder) -> None:
    encoder = rendered_get_encoder(codec(mime))
    assert type(encoder) is rendered
    sent = pictures(12)
    received = []
    dec = decoder()
    for frame in sent:
        payloads, _ = encoder.encode(frame)
        assert payloads
        depayload = vp8_depayload if mime == "video/VP8" else h264_depayload
        data = b"".join(depayload(p) for p in payloads)
        received.extend(dec.decode(JitterFrame(data=data, timestamp=0)))
    assert len(received) == len(sent)
    last = received[-1].to_ndarray(format="rgb24").astype(np.float32)
    original = sent[-1].to_ndarray(format="rgb24").astype(np.float32)
    psnr = 10 * np.log10(255.0**2 / np.mean((last - original) ** 2))
    assert psnr > 28.0, psnr


def test_other_codecs_are_aiortcs_own() -> None:
    assert type(rendered_get_encoder(codec("video/VP8"))) is RenderedVp8Encoder
    opus = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2, payloadType=111)
    assert type(rendered_get_encoder(opus)).__name__ == "OpusEncoder"
    assert set(VP8_CHANGES) == {"noise-sensitivity", "cpu-used"} and H264_CHANGES == {"preset": "superfast"}


def test_install_switches_the_encoders_aiortcs_senders_create() -> None:
    before = rtcrtpsender.get_encoder
    try:
        install(VideoEncoding.AIORTC)
        assert rtcrtpsender.get_encoder is aiortc_get_encoder
        assert type(rtcrtpsender.get_encoder(codec("video/VP8"))) is Vp8Encoder
        assert type(rtcrtpsender.get_encoder(codec("video/H264"))) is H264Encoder
        install(VideoEncoding.RENDERED)
        assert type(rtcrtpsender.get_encoder(codec("video/VP8"))) is RenderedVp8Encoder
    finally:
        rtcrtpsender.get_encoder = before


def test_video_encoding_is_read_from_the_config_and_a_bad_one_is_one_line() -> None:
    assert load_config(None, [], {}).video.encoding is VideoEncoding.RENDERED
    assert load_config(None, ["video.encoding=aiortc"], {}).video.encoding is VideoEncoding.AIORTC
    with pytest.raises(ConfigError, match="video.encoding must be one of rendered, aiortc"):
        load_config(None, ["video.encoding=h265"], {})


def test_the_changed_options_reach_the_codec_aiortc_opens() -> None:
    """Same pictures, aiortc's settings vs the rendered ones: the bitstreams differ (were the changes
    lost, e.g. by a new aiortc that sets its codec up another way, they would be identical)."""
    def stream(encoder: Vp8Encoder) -> bytes:
        return b"".join(vp8_depayload(p) for frame in pictures(6) for p in encoder.encode(frame)[0])

    assert stream(Vp8Encoder()) == stream(Vp8Encoder())  # deterministic, so a difference is the options
    assert stream(RenderedVp8Encoder()) != stream(Vp8Encoder())
