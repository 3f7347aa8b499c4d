"""The running server over real sockets: HTTP routes, static safety, and /ws signalling errors."""

from __future__ import annotations

import json

import pytest
from aiortc import RTCPeerConnection
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from server.app import App


@pytest.fixture
async def app(make_config, box_engine_factory):
    config = make_config(**{"server.max_sessions": 1, "server.max_message_bytes": 65536})
    app = App(config, box_engine_factory())
    await app.start(host="127.0.0.1", port=0)
    yield app
    await app.stop()


async def _ask(ws, message) -> dict:
    await ws.send(message if isinstance(message, str | bytes) else json.dumps(message))
    while True:
        reply = json.loads(await ws.recv())
        if reply["type"] != "stats":
            return reply


async def _offer_sdp() -> tuple[RTCPeerConnection, str]:
    pc = RTCPeerConnection()
    pc.addTransceiver("audio", direction="sendrecv")
    pc.addTransceiver("video", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp


async def test_health_avatars_and_static_routes(app, http_get):
    status, headers, body = await http_get(app.port, "/health")
    assert status == 200 and headers["content-type"] == "application/json"
    assert json.loads(body) == {"status": "ok", "engine": "box", "sessions": 0, "badge": False,
                                "upload": False, "consent": False,
                                "sizes": list(app.engine.output_sizes)}
    status, _, body = await http_get(app.port, "/avatars")
    avatars = json.loads(body)
    assert status == 200 and avatars[0]["id"] == "astronaut" and avatars[0]["name"] == "Astronaut"
    checks = {
        "/": ("text/html", b"test page"),
        "/index.html": ("text/html", b"test page"),
        "/kiosk": ("text/html", b"kiosk"),
        "/app.js": ("text/javascript", b"export"),
        "/style.css": ("text/css", b"body"),
        "/icon.svg": ("image/svg+xml", b"<svg"),
        "/logo.png": ("image/png", b"\x89PNG"),
    }
    for path, (ctype, start) in checks.items():
        status, headers, body = await http_get(app.port, path)
        assert status == 200, path
        assert headers["content-type"].startswith(ctype) and start in body[:64], path


@pytest.mark.parametrize(
    "path",
    ["/../secret.txt", "/%2e%2e/secret.txt", "/%2e%2e%2fsecret.txt", "/..%5csecret.txt",
     "/static/../../secret.txt", "//secret.txt", "/nothing-here", "/ws/../secret.txt"],
)
async def test_traversal_and_unknown_paths_are_404(app, http_get, path):
    status, _, body = await http_get(app.port, path)
    assert status == 404 and b"outside" not in body


async def test_plain_get_on_ws_is_not_an_upgrade(app, http_get):
    status, _, _ = await http_get(app.port, "/ws")
    assert status == 426


async def test_avatar_folder_is_listed_and_bad_names_skipped(app, make_config, http_get, tmp_path):
    import shutil

    folder = tmp_path / "avatars"
    folder.mkdir(exist_ok=True)
    shutil.copy(app.avatars.default_portrait, folder / "mona_lisa.png")
    shutil.copy(app.avatars.default_portrait, folder / "bad name!.png")
    (folder / "notes.txt").write_text("not a portrait")
    _, _, body = await http_get(app.port, "/avatars")
    assert [a["id"] for a in json.loads(body)] == ["astronaut", "mona_lisa"]
    prepared = await app.avatars.get("mona_lisa")
    assert prepared.avatar_id == "mona_lisa"
    again = await app.avatars.get("mona_lisa")
    assert again is prepared and app.engine.prepared.count("mona_lisa") == 1  # cached


async def test_bad_messages_get_errors_and_the_socket_keeps_working(app, http_get):
    sdp = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"
    bad = [
        "not json",
        b"\x01\x02",
        "[]",
        {"type": "nope"},
        {"type": "offer"},
        {"type": "offer", "sdp": "nonsense"},
        {"type": "offer", "sdp": sdp, "avatar": "no_such_avatar"},
        {"type": "offer", "sdp": sdp, "avatar": "../../etc/passwd"},
        {"type": "offer", "sdp": sdp + "garbage line\r\n"},
    ]
    async with connect(f"ws://127.0.0.1:{app.port}/ws") as ws:
        for message in bad:
            reply = await _ask(ws, message)
            assert reply["type"] == "error", message
            assert reply["message"] and "\n" not in reply["message"] and "Traceback" not in reply["message"]
        assert await _ask(ws, {"type": "ping"}) == {"type": "pong"}
        avatars = await _ask(ws, {"type": "list_avatars"})
        assert avatars["type"] == "avatars" and avatars["avatars"][0]["id"] == "astronaut"
    status, _, body = await http_get(app.port, "/health")
    assert status == 200 and json.loads(body)["sessions"] == 0


async def test_second_offer_on_a_socket_and_busy_server(app, http_get):
    client1, sdp1 = await _offer_sdp()
    client2, sdp2 = await _offer_sdp()
    url = f"ws://127.0.0.1:{app.port}/ws"
    async with connect(url) as ws1, connect(url) as ws2:
        answer = await _ask(ws1, {"type": "offer", "sdp": sdp1})
        assert answer["type"] == "answer" and answer["sdp"].startswith("v=0") and answer["session"]
        again = await _ask(ws1, {"type": "offer", "sdp": sdp1})
        assert again["type"] == "error" and "already" in again["message"]
        busy = await _ask(ws2, {"type": "offer", "sdp": sdp2})
        assert busy == {"type": "error", "message": "server busy: 1 sessions running, try later"}
        _, _, body = await http_get(app.port, "/health")
        assert json.loads(body)["sessions"] == 1
        assert await _ask(ws1, {"type": "ping"}) == {"type": "pong"}
    for _ in range(100):  # closing the socket ends its session
        _, _, body = await http_get(app.port, "/health")
        if json.loads(body)["sessions"] == 0:
            break
    assert json.loads(body)["sessions"] == 0
    await client1.close()
    await client2.close()


async def test_oversized_message_closes_only_that_socket(app, http_get):
    async with connect(f"ws://127.0.0.1:{app.port}/ws", max_size=None) as big, \
            connect(f"ws://127.0.0.1:{app.port}/ws") as other:
        await big.send("x" * 100_000)
        with pytest.raises(ConnectionClosed) as info:
            await big.recv()
        assert info.value.rcvd is not None and info.value.rcvd.code == 1009
        assert await _ask(other, {"type": "ping"}) == {"type": "pong"}
    status, _, body = await http_get(app.port, "/health")
    assert status == 200 and json.loads(body)["status"] == "ok"
