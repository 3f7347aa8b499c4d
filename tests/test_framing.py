"""Portrait framing for video calls: ``full`` (as before) and ``head_and_shoulders`` (crop to the face)."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from avatar.__main__ import main as avatar_main
from avatar.engines import create_engine
from avatar.errors import ConfigError
from avatar.face.framing import EYES_FROM_TOP, Framing, head_and_shoulders_crop, parse_framing
from avatar.face.mesh import CHIN, FOREHEAD_TOP
from avatar.face.portrait import face_mesh, load_portrait_image, prepare_portrait
from server.avatars import AvatarRegistry
from server.config import AvatarSettings, load_config
from server.consent import SidecarError, parse_sidecar
from server.signalling import SignallingError, parse_message
from server.uploads import PortraitUploads, UploadRequest
from tests.conftest import BoxEngine

ASTRONAUT_PATH = Path(__file__).resolve().parents[1] / "avatar" / "assets" / "astronaut.png"
SIZE = 256
EYE_CORNERS = [33, 133, 263, 362]
OFFER_SDP = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return load_portrait_image(ASTRONAUT_PATH)


def _measured_face(image: np.ndarray) -> np.ndarray:
    """The largest face the mesh finds in ``image`` (478, 3), measured afresh (not the rig's landmarks)."""
    faces = face_mesh(image)
    assert faces, "no face found in the framed image"
    return max(faces, key=lambda f: float(np.ptp(f[:, 1])))


def _face_share(image: np.ndarray) -> float:
    face = _measured_face(image)
    return float(np.linalg.norm(face[FOREHEAD_TOP, :2] - face[CHIN, :2])) / image.shape[0]


def test_astronaut_head_and_shoulders_makes_the_face_large(astronaut):
    before = _face_share(prepare_portrait(astronaut, size=SIZE).image)
    framed = prepare_portrait(astronaut, size=SIZE, framing="head_and_shoulders")
    after = _face_share(framed.image)
    assert before < 0.25, before  # the shipped astronaut is a small face in a wide picture
    assert 0.35 <= after <= 0.6, after
    eyes_y = _measured_face(framed.image)[EYE_CORNERS, 1].mean() / SIZE
    assert abs(eyes_y - EYES_FROM_TOP) < 0.06, eyes_y
    # the rig's landmarks describe the framed image (what both engines render from)
    assert abs(framed.face_height / SIZE - after) < 0.03


def test_full_leaves_the_portrait_as_before(astronaut):
    default = prepare_portrait(ASTRONAUT_PATH)
    full = prepare_portrait(ASTRONAUT_PATH, framing=Framing.FULL)
    assert np.array_equal(default.image, full.image)
    assert np.array_equal(full.image, astronaut)  # square 512 px portrait: the whole picture, untouched


def test_a_face_that_is_already_large_is_not_zoomed_further(astronaut):
    x0, y0, side = head_and_shoulders_crop(512, 512, _measured_face(astronaut))
    tight = int(side * 0.8)  # face about 56 % of this picture's height
    close_up = astronaut[int(y0) + 20:int(y0) + 20 + tight, int(x0) + 10:int(x0) + 10 + tight]
    before = _face_share(close_up)
    after = _face_share(prepare_portrait(close_up, size=SIZE, framing="head_and_shoulders").image)
    assert before > 0.5, before
    assert after <= 0.6, after
    assert abs(after - before) < 0.03, (before, after)


def test_a_face_at_the_image_edge_stays_whole_and_off_centre(astronaut):
    face = _measured_face(astronaut)
    left = int(face[:, 0].min()) - 4  # cut the picture just left of the face: the face touches the edge
    grey = np.full((512, 400, 3), 128, np.uint8)
    wide = np.ascontiguousarray(np.concatenate([astronaut[:, left:], grey], axis=1))
    rig = prepare_portrait(wide, size=SIZE, framing="head_and_shoulders")
    assert rig.image.shape == (SIZE, SIZE, 3)
    x0, y0, x1, y1 = rig.face_box
    assert x0 >= 0 and y0 >= 0 and x1 <= SIZE and y1 <= SIZE
    assert (x0 + x1) / 2 < 0.45 * SIZE  # shifted inward, not padded: the face sits left of centre
    assert 0.35 <= _face_share(rig.image) <= 0.6


def test_crop_is_clamped_to_the_image_for_faces_in_a_corner():
    face = np.zeros((478, 2), np.float32)
    face[:, 0] = np.linspace(0, 80, 478)
    face[:, 1] = np.linspace(0, 100, 478)
    face[FOREHEAD_TOP] = (40, 0)
    face[CHIN] = (40, 100)
    for width, height in ((1000, 600), (300, 180), (120, 900)):
        x0, y0, side = head_and_shoulders_crop(width, height, face)
        assert 0 <= x0 and 0 <= y0 and x0 + side <= width + 1e-6 and y0 + side <= height + 1e-6
        assert side == pytest.approx(min(100 / 0.45, width, height))


def test_bad_framing_values_give_one_line_config_errors(capsys):
    with pytest.raises(ConfigError) as err:
        parse_framing("wide")
    assert str(err.value) == "framing must be one of: full, head_and_shoulders; got 'wide'"
    with pytest.raises(ConfigError, match=r"^avatar\.framing must be one of: full, head_and_shoulders"):
        load_config(overrides=["avatar.framing=zoomed"])
    assert load_config().avatar.framing == "head_and_shoulders"  # video calls frame by default
    with pytest.raises(ConfigError, match="framing must be one of"):
        create_engine("parametric", framing="close")
    assert avatar_main(["render", "--portrait", "x.png", "--audio", "x.wav", "--out", "x.mp4",
                        "--framing", "tight"]) == 2
    message = capsys.readouterr().err
    assert message == "error: --framing must be one of: full, head_and_shoulders; got 'tight'\n"
    with pytest.raises(SidecarError, match="'framing' must be one of"):
        parse_sidecar('{"framing": "zoom"}')
    with pytest.raises(SignallingError) as err:
        parse_message(json.dumps({"type": "offer", "sdp": OFFER_SDP, "framing": "square"}))
    assert str(err.value) == "offer framing must be one of: full, head_and_shoulders; got 'square'"


def test_parametric_engine_frames_by_default_or_per_call():
    engine = create_engine("parametric", size=SIZE, framing="head_and_shoulders")
    framed = engine.prepare(ASTRONAUT_PATH)
    full = engine.prepare(ASTRONAUT_PATH, framing="full")  # cached separately from the framed one
    assert not np.array_equal(framed.image, full.image)
    assert framed.data.face_height > 1.8 * full.data.face_height
    assert engine.prepare(ASTRONAUT_PATH) is framed


def test_registry_uses_the_server_framing_unless_the_sidecar_names_one(tmp_path):
    folder = tmp_path / "avatars"
    folder.mkdir()
    for stem in ("plain", "wide"):
        (folder / f"{stem}.png").write_bytes(ASTRONAUT_PATH.read_bytes())
    (folder / "wide.json").write_text(json.dumps({"framing": "full"}))
    engine = BoxEngine(size=64)
    registry = AvatarRegistry(engine, ASTRONAUT_PATH, folder, framing="head_and_shoulders")

    async def prepare_all() -> None:
        for avatar_id in ("plain", "wide", None):
            await registry.get(avatar_id)

    asyncio.run(prepare_all())
    assert dict(zip(engine.prepared, engine.framings, strict=True)) == {
        "plain": "head_and_shoulders", "wide": "full", "astronaut": "head_and_shoulders"}


def test_an_offer_may_choose_the_framing_of_its_session(tmp_path):
    offer = parse_message(json.dumps({"type": "offer", "sdp": OFFER_SDP, "framing": "full"}))
    assert offer.framing == Framing.FULL
    assert parse_message(json.dumps({"type": "offer", "sdp": OFFER_SDP})).framing is None
    engine = BoxEngine(size=64)
    registry = AvatarRegistry(engine, ASTRONAUT_PATH, tmp_path, framing="head_and_shoulders")

    async def offers() -> list:
        return [await registry.get(None, framing) for framing in (None, offer.framing, None, Framing.FULL)]

    default, full, default_again, full_again = asyncio.run(offers())
    assert engine.framings == ["head_and_shoulders", "full"]  # each framing prepared once, then cached
    assert default_again is default and full_again is full and full is not default


def test_an_upload_previews_and_streams_the_server_framing():
    engine = create_engine("parametric", size=SIZE)  # the engine's own default is full
    uploads = PortraitUploads(engine, AvatarSettings(allow_upload=True, framing="head_and_shoulders"))
    data = ASTRONAUT_PATH.read_bytes()

    async def upload() -> tuple[dict, object]:
        uploads.begin("socket", "127.0.0.1", UploadRequest("me.png", len(data), "image/png"))
        kind, reply = await uploads.receive("socket", data)
        assert kind == "portrait", reply
        return reply, uploads.find(reply["avatar"], "127.0.0.1")

    reply, avatar = asyncio.run(upload())
    jpeg = np.frombuffer(base64.b64decode(reply["preview"].split(",", 1)[1]), np.uint8)
    preview = cv2.cvtColor(cv2.imdecode(jpeg, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert _face_share(preview) >= 0.35  # the preview shows the head-and-shoulders crop ...
    assert _face_share(avatar.image) >= 0.35  # ... and that is what the session streams
