"""A session may ask for a smaller picture (``size`` in its offer): 256 / 384 / 512 up to ``engine.size``."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from websockets.asyncio.client import connect

from avatar.engine import AudioWindow
from avatar.engines import create_engine
from avatar.errors import ConfigError
from avatar.face.portrait import PortraitRig
from server.app import App
from server.avatars import AvatarRegistry
from server.config import AvatarSettings
from server.signalling import SignallingError, parse_message
from server.uploads import PortraitUploads, UploadRequest
from tests.conftest import BoxEngine

ASTRONAUT_PATH = Path(__file__).resolve().parents[1] / "avatar" / "assets" / "astronaut.png"

OFFER_SDP = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"


class TwoSizeBoxEngine(BoxEngine):
    @property
    def output_sizes(self) -> tuple[int, ...]:
        return (128, self.size)


def _offer(**fields) -> dict:
    return {"type": "offer", "sdp": OFFER_SDP, **fields}


def test_an_offer_may_name_its_size_and_bad_sizes_are_refused_in_one_line():
    assert parse_message(json.dumps(_offer(size=256))).size == 256
    assert parse_message(json.dumps(_offer())).size is None
    for bad in ("256", True, 0, -512, 5000, 256.5, [256]):
        with pytest.raises(SignallingError) as err:
            parse_message(json.dumps(_offer(size=bad)))
        assert str(err.value) == "offer 'size' must be the video's side in pixels, e.g. 256, 384 or 512"


def test_the_parametric_engine_renders_smaller_sizes_never_larger_ones():
    engine = create_engine("parametric", size=384)
    assert engine.output_sizes == (256, 384)
    assert create_engine("parametric", size=512).output_sizes == (256, 384, 512)
    assert create_engine("parametric", size=300).output_sizes == (256, 300)
    small = engine.prepare(ASTRONAUT_PATH, size=256)
    default = engine.prepare(ASTRONAUT_PATH)
    assert small.image.shape == (256, 256, 3) and isinstance(small.data, PortraitRig)
    assert default.image.shape == (384, 384, 3)
    assert engine.prepare(ASTRONAUT_PATH, size=256) is small  # cached per size
    frame = engine.new_session(small).process(_silent_window())[0]
    assert frame.image.shape == (256, 256, 3)
    for bad in (512, 128, 320):
        with pytest.raises(ConfigError) as err:
            engine.prepare(ASTRONAUT_PATH, size=bad)
        assert str(err.value) == (f"output size {bad} is not offered by the parametric engine; "
                                  "use one of 256, 384")


def _silent_window() -> AudioWindow:
    return AudioWindow(np.zeros(4 * 640 + 1280, np.float32), 0, 0, 4, 25.0, 0)


def test_the_registry_prepares_each_size_once(tmp_path):
    engine = TwoSizeBoxEngine(size=256)
    registry = AvatarRegistry(engine, ASTRONAUT_PATH, tmp_path)

    async def offers():
        return [await registry.get(None, None, size) for size in (None, 128, 256, 128)]

    default, small, default_again, small_again = asyncio.run(offers())
    assert default.image.shape[0] == 256 and small.image.shape[0] == 128
    assert default_again is default and small_again is small
    assert len(engine.prepared) == 2
    with pytest.raises(ConfigError) as err:
        asyncio.run(registry.get(None, None, 512))
    assert str(err.value) == "output size 512 is not offered by the box engine; use one of 128, 256"


async def _stream(port: int, size: int | None, frames: int) -> tuple[dict, list[np.ndarray]]:
    pc = RTCPeerConnection()
    pc.addTransceiver("video", direction="recvonly")
    images: list[np.ndarray] = []
    tasks: list[asyncio.Task] = []

    async def read(track) -> None:
        try:
            while True:
                images.append((await track.recv()).to_ndarray(format="rgb24"))
        except MediaStreamError:
            pass

    pc.on("track", lambda track: tasks.append(asyncio.ensure_future(read(track))))
    try:
        async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
            await pc.setLocalDescription(await pc.createOffer())
            offer = {"type": "offer", "sdp": pc.localDescription.sdp}
            if size is not None:
                offer["size"] = size
            await ws.send(json.dumps(offer))
            while True:
                reply = json.loads(await ws.recv())
                if reply["type"] != "stats":
                    break
            if reply["type"] == "answer":
                await pc.setRemoteDescription(RTCSessionDescription(reply["sdp"], "answer"))
                deadline = time.monotonic() + 15
                while len(images) < frames and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
            return reply, images
    finally:
        await pc.close()
        for task in tasks:
            task.cancel()


async def test_a_session_streams_the_size_its_offer_asked_for(make_config):
    engine = TwoSizeBoxEngine(fps=25, size=256)
    app = App(make_config(**{"engine.size": 256}), engine)
    await app.start(host="127.0.0.1", port=0)
    try:
        reply, small = await _stream(app.port, 128, 10)
        assert reply["type"] == "answer" and len(small) >= 10
        assert {image.shape for image in small} == {(128, 128, 3)}
        reply, default = await _stream(app.port, None, 10)
        assert {image.shape for image in default} == {(256, 256, 3)}
        reply, _ = await _stream(app.port, 512, 0)
        assert reply == {"type": "error",
                         "message": "output size 512 is not offered by the box engine; use one of 128, 256"}
        reply, _ = await _stream(app.port, 128, 3)  # the refusal left the server serving
        assert reply["type"] == "answer"
    finally:
        await app.stop()


def test_an_upload_streams_at_the_size_its_session_asked_for():
    engine = create_engine("parametric", size=384)
    uploads = PortraitUploads(engine, AvatarSettings(allow_upload=True, framing="head_and_shoulders"))
    data = ASTRONAUT_PATH.read_bytes()

    async def upload_and_offer():
        uploads.begin("socket", "127.0.0.1", UploadRequest("me.png", len(data), "image/png"))
        kind, reply = await uploads.receive("socket", data)
        assert kind == "portrait", reply
        avatar = uploads.find(reply["avatar"], "127.0.0.1")
        return avatar, await uploads.at_size(avatar, None), await uploads.at_size(avatar, 256)

    avatar, same, small = asyncio.run(upload_and_offer())
    assert same is avatar and small.image.shape == (256, 256, 3) and small.avatar_id == avatar.avatar_id
    # the same picture, only smaller: the framing the visitor previewed is kept
    shrunk = cv2.resize(avatar.image, (256, 256), interpolation=cv2.INTER_AREA)
    assert np.abs(shrunk.astype(int) - small.image).mean() < 3.0
    with pytest.raises(ConfigError, match="^output size 512 is not offered"):
        asyncio.run(uploads.at_size(avatar, 512))
