"""Visitors' own portraits (server/uploads.py, server/image_checks.py): hostile files are refused with a
one-line reason before anything is decoded, faces are judged (none / several / too small), uploads
belong to their client only, expire when idle, obey the per-client limits, and a good upload streams.
Every hostile file is made here, from the shipped astronaut portrait."""

from __future__ import annotations

import io
import json
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image
from websockets.asyncio.client import connect

from server.app import App
from server.config import AvatarSettings
from server.image_checks import MAX_METADATA_BYTES, UploadError, inspect_image
from server.uploads import PortraitUploads, UploadRequest, prepare_upload
from tests.media import ASTRONAUT
from tests.test_hostile_input import RealClient, assert_one_line_error, health

MAX_PIXELS = 50_000_000


def astronaut_rgb(side: int = 512) -> np.ndarray:
    rgb = cv2.cvtColor(cv2.imread(str(ASTRONAUT), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return cv2.resize(rgb, (side, side), interpolation=cv2.INTER_AREA)


def encode(rgb: np.ndarray, fmt: str = "JPEG", **options) -> bytes:
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, fmt, **options)
    return out.getvalue()


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_bomb(side: int = 12000) -> bytes:
    """A real decompression bomb: a 1-bit side x side PNG (144 megapixels) of zeros, about 20 KB."""
    row = b"\x00" + bytes((side + 7) // 8)
    packer = zlib.compressobj(9)
    body = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", body)
            + png_chunk(b"IEND", b""))


def jpeg_claiming(width: int, height: int) -> bytes:
    """A small JPEG whose frame header (SOF0) claims ``width`` x ``height``."""
    data = bytearray(encode(astronaut_rgb(64)))
    at = data.index(b"\xff\xc0") + 5
    data[at:at + 4] = struct.pack(">HH", height, width)
    return bytes(data)


def jpeg_with_segments(marker: int, body: bytes, count: int) -> bytes:
    data = encode(astronaut_rgb(128))
    segment = bytes([0xFF, marker]) + struct.pack(">H", len(body) + 2) + body
    return data[:2] + segment * count + data[2:]


def animated(fmt: str) -> bytes:
    frames = [Image.fromarray(astronaut_rgb(96)), Image.fromarray(255 - astronaut_rgb(96))]
    out = io.BytesIO()
    frames[0].save(out, fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return out.getvalue()


def ztxt_bomb() -> bytes:
    """A PNG whose compressed text chunk (20 KB) inflates to 20 MB: Pillow's text limit refuses it."""
    png = encode(astronaut_rgb(96), "PNG")
    text = png_chunk(b"zTXt", b"Comment\x00\x00" + zlib.compress(bytes(20_000_000), 9))
    at = png.index(b"IDAT") - 4
    return png[:at] + text + png[at:]


HOSTILE: list[tuple[str, str, bytes, str]] = [
    # (case, file name, bytes, what the one-line refusal says)
    ("png decompression bomb", "bomb.png", png_bomb(), "megapixels"),
    ("jpeg header bomb", "bomb.jpg", jpeg_claiming(60000, 60000), "megapixels"),
    ("zip appended (polyglot)", "poly.jpg", encode(astronaut_rgb(128)) + b"PK\x03\x04" + bytes(300),
     "after the end of the image"),
    ("html appended (polyglot)", "poly.png",
     encode(astronaut_rgb(128), "PNG") + b"<html><script>x()</script>", "after the end of the image"),
    ("script in a comment (polyglot)", "poly2.jpg", jpeg_with_segments(0xFE, b"<script>alert(1)</script>", 1),
     "markup"),
    ("huge EXIF", "exif.jpg", jpeg_with_segments(0xE1, b"Exif\x00\x00" + bytes(60000), 6), "metadata"),
    ("huge PNG text", "text.png", encode(astronaut_rgb(128), "PNG", pnginfo=None)[:33]
     + png_chunk(b"tEXt", b"Comment\x00" + b"a" * (MAX_METADATA_BYTES + 10))
     + encode(astronaut_rgb(128), "PNG")[33:], "metadata"),
    ("compressed text bomb", "ztxt.png", ztxt_bomb(), "cannot decode"),
    ("png named .jpg", "photo.jpg", encode(astronaut_rgb(128), "PNG"), "named .jpg but holds a PNG"),
    ("program named .jpg", "photo.jpg", b"MZ\x90\x00" + bytes(4000), "a program"),
    ("svg named .png", "photo.png", b"<svg xmlns='http://www.w3.org/2000/svg'><script>x()</script></svg>",
     "markup (SVG/HTML)"),
    ("heic named .jpg", "photo.jpg", b"\x00\x00\x00\x18ftypheic" + bytes(100), "HEIC"),
    ("gif", "anim.jpg", animated("GIF"), "GIF"),
    ("animated png", "anim.png", animated("PNG"), "animated PNG"),
    ("animated webp", "anim.webp", animated("WEBP"), "animated WebP"),
    ("truncated jpeg", "cut.jpg", encode(astronaut_rgb(256))[:3000], "truncated"),
    ("corrupt jpeg data", "bad.jpg", encode(astronaut_rgb(256))[:700] + bytes(2000) + b"\xff\xd9", "no face"),
    ("executable extension", "photo.exe", encode(astronaut_rgb(128)), "upload a .png, .jpg or .webp"),
    ("tiny image", "tiny.png", encode(astronaut_rgb(32), "PNG"), "at least 64 px"),
    ("no face", "noise.png",
     encode(np.random.default_rng(0).integers(0, 255, (400, 400, 3), np.uint8), "PNG"), "no face found"),
]


def several_faces() -> bytes:
    face = astronaut_rgb(400)
    return encode(np.concatenate([face, face], axis=1))


def small_face() -> bytes:
    canvas = np.full((1600, 1600, 3), 200, np.uint8)
    canvas[600:850, 600:850] = astronaut_rgb(250)  # the face is about 50 px of it
    return encode(canvas)


@pytest.fixture(scope="module")
def engine():
    from tests.conftest import BoxEngine

    return BoxEngine(size=128)


def refuse(engine, name: str, data: bytes) -> str:
    with pytest.raises(UploadError) as caught:
        prepare_upload(engine, data, UploadRequest(name, len(data)), "upload-test", MAX_PIXELS)
    message = str(caught.value)
    assert "\n" not in message and len(message) < 300
    return message


@pytest.mark.parametrize("case,name,data,expected", HOSTILE, ids=[case[0] for case in HOSTILE])
def test_hostile_files_are_refused_with_a_reason(engine, case, name, data, expected):
    assert expected in refuse(engine, name, data), case


def test_faces_are_judged_and_the_reason_says_which(engine):
    assert "found 2 faces" in refuse(engine, "two.jpg", several_faces())
    assert "face is too small" in refuse(engine, "far.jpg", small_face())


@pytest.mark.parametrize("fmt,name", [("JPEG", "me.jpg"), ("PNG", "me.png"), ("WEBP", "me.webp")])
def test_good_portraits_are_prepared_with_a_preview(engine, fmt, name):
    data = encode(astronaut_rgb(700), fmt)
    done = prepare_upload(engine, data, UploadRequest(name, len(data), f"image/{fmt.lower()}"), "upload-a",
                          MAX_PIXELS)
    assert done.avatar.avatar_id == "upload-a" and done.avatar.image.shape == (128, 128, 3)
    assert done.details["width"] == 700 and done.details["face_px"] > 100
    preview = cv2.imdecode(np.frombuffer(__import__("base64").b64decode(
        done.details["preview"].split(",", 1)[1]), np.uint8), cv2.IMREAD_COLOR)
    assert preview.shape == (128, 128, 3)


def test_mime_and_rotation_checks():
    data = encode(astronaut_rgb(128))
    with pytest.raises(UploadError, match="browser calls this file image/png"):
        inspect_image(data, "a.jpg", "image/png", MAX_PIXELS)
    assert inspect_image(data, "A.JPEG", "image/jpeg", MAX_PIXELS).pixels == 128 * 128


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


async def test_uploads_belong_to_their_client_obey_limits_and_expire(engine):
    clock = Clock()
    settings = AvatarSettings(allow_upload=True, uploads_per_client=2, upload_idle_s=60)
    uploads = PortraitUploads(engine, settings, now=clock)
    data = encode(astronaut_rgb(600))
    ids = []
    for key in ("a", "b"):
        uploads.begin(key, "10.0.0.1", UploadRequest("me.jpg", len(data)))
        kind, fields = await uploads.receive(key, data)
        assert kind == "portrait"
        ids.append(fields["avatar"])
    with pytest.raises(UploadError, match="too many uploads: at most 2"):
        uploads.begin("c", "10.0.0.1", UploadRequest("me.jpg", len(data)))
    uploads.begin("d", "10.0.0.2", UploadRequest("me.jpg", len(data)))  # another client has its own quota
    assert uploads.find(ids[0], "10.0.0.1").image.shape == (128, 128, 3)
    with pytest.raises(UploadError, match="gone"):
        uploads.find(ids[0], "10.0.0.2")  # someone else's id reads as unknown
    clock.t += 61
    assert uploads.purge(in_use={ids[1]}) == 1  # the one a session streams stays
    with pytest.raises(UploadError, match="gone"):
        uploads.find(ids[0], "10.0.0.1")
    assert uploads.find(ids[1], "10.0.0.1") is not None
    with pytest.raises(UploadError, match="larger than announced"):
        await uploads.receive("d", data + b"x")
    with pytest.raises(UploadError, match="too large|at most"):
        uploads.begin("e", "10.0.0.3", UploadRequest("me.jpg", settings.max_upload_bytes + 1))
    busy = PortraitUploads(engine, settings, now=clock)
    for n in range(4):  # files announced but never sent hold the receiving slots ...
        busy.begin(f"slow{n}", f"10.1.0.{n}", UploadRequest("me.jpg", len(data)))
    with pytest.raises(UploadError, match="receiving other portraits"):
        busy.begin("next", "10.1.0.9", UploadRequest("me.jpg", len(data)))
    clock.t += 60  # ... for a minute at most
    busy.begin("next", "10.1.0.9", UploadRequest("me.jpg", len(data)))
    off = PortraitUploads(engine, AvatarSettings())
    with pytest.raises(UploadError, match="turned off"):
        off.begin("f", "10.0.0.1", UploadRequest("me.jpg", 10))
    consent = PortraitUploads(engine, AvatarSettings(allow_upload=True, require_consent=True))
    with pytest.raises(UploadError, match="consent needed"):
        consent.begin("g", "10.0.0.1", UploadRequest("me.jpg", 10))
    consent.begin("g", "10.0.0.1", UploadRequest("me.jpg", len(data), consent=True))
    kind, fields = await consent.receive("g", data)
    record = consent.consent_record(fields["avatar"])
    assert kind == "portrait" and record.consent and record.added
    assert record.by == "visitor upload from 10.0.0.1"


@pytest.fixture
async def upload_app(make_config, box_engine_factory):
    config = make_config(**{
        "engine.size": 128, "server.max_sessions": 2, "provenance.watermark": False,
        "avatar.allow_upload": True, "avatar.uploads_per_client": 100,
    })
    app = App(config, box_engine_factory(size=128))
    await app.start(host="127.0.0.1", port=0)
    yield app
    await app.stop()


async def send_file(ws, name: str, data: bytes, chunk: int | None = None) -> dict:
    await ws.send(json.dumps({"type": "upload", "name": name, "bytes": len(data), "consent": True}))
    ready = json.loads(await ws.recv())
    if ready["type"] != "upload_ready":
        return ready
    step = chunk or ready["max_chunk_bytes"]
    for start in range(0, len(data), step):
        await ws.send(data[start:start + step])
        reply = json.loads(await ws.recv())
        if reply["type"] != "upload_progress":
            return reply
    return reply


async def test_upload_over_the_socket_streams_and_is_never_listed(upload_app, http_get):
    assert (await health(http_get, upload_app.port))["upload"] is True
    data = encode(astronaut_rgb(900))
    async with connect(f"ws://127.0.0.1:{upload_app.port}/ws") as ws:
        reply = await send_file(ws, "me.jpg", data, chunk=50_000)
    assert reply["type"] == "portrait", reply
    assert reply["avatar"].startswith("upload-") and reply["preview"].startswith("data:image/jpeg;base64,")
    status, _, body = await http_get(upload_app.port, "/avatars")
    assert reply["avatar"] not in body.decode()
    client = RealClient()
    try:
        async with connect(f"ws://127.0.0.1:{upload_app.port}/ws") as ws:
            await client.pc.setLocalDescription(await client.pc.createOffer())
            await ws.send(json.dumps({"type": "offer", "sdp": client.pc.localDescription.sdp,
                                      "avatar": reply["avatar"]}))
            answer = json.loads(await ws.recv())
            assert answer["type"] == "answer", answer
            from aiortc import RTCSessionDescription

            await client.pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
            assert await client.wait_frames(10), "the uploaded portrait never streamed"
    finally:
        await client.close()


async def test_hostile_uploads_over_the_socket_then_the_server_is_healthy(upload_app, http_get):
    async with connect(f"ws://127.0.0.1:{upload_app.port}/ws", max_size=None) as ws:
        for case, name, data, expected in HOSTILE:
            reply = await send_file(ws, name, data)
            assert_one_line_error(reply, expected, case)
        reply = await send_file(ws, "me.jpg", encode(astronaut_rgb(200)) + b"x", chunk=10**9)
        assert reply["type"] == "error"
    assert (await health(http_get, upload_app.port))["status"] == "ok"
    from tests.test_hostile_input import assert_serves_a_real_session

    await assert_serves_a_real_session(upload_app, http_get)
