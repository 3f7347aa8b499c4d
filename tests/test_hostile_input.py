"""Hostile input: every case gets a clear one-line error (or a close code), and the server stays
healthy and keeps serving a real session started after (or running during) the abuse."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

import avatar.__main__ as cli
from server.app import App
from tests.media import ASTRONAUT

MIN_VIDEO_SDP = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"


@pytest.fixture
async def app(make_config, box_engine_factory):
    config = make_config(**{
        "engine.size": 128, "server.max_sessions": 2, "server.idle_timeout_s": 1.5,
        "server.max_connections": 34, "server.max_messages_per_s": 20, "server.abuse_messages_per_s": 40,
        "provenance.watermark": False,
    })
    app = App(config, box_engine_factory(size=128))
    await app.start(host="127.0.0.1", port=0)
    yield app
    await app.stop()


class RealClient:
    """An aiortc client that offers recvonly video and counts the frames it receives."""

    def __init__(self) -> None:
        self.pc = RTCPeerConnection()
        self.pc.addTransceiver("video", direction="recvonly")
        self.frames = 0
        self.tasks: list[asyncio.Task] = []
        self.pc.on("track", lambda track: self.tasks.append(asyncio.ensure_future(self._read(track))))

    async def _read(self, track) -> None:
        try:
            while True:
                await track.recv()
                self.frames += 1
        except MediaStreamError:
            pass

    async def start(self, ws) -> dict:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        reply = await ask(ws, {"type": "offer", "sdp": self.pc.localDescription.sdp})
        if reply["type"] == "answer":
            await self.pc.setRemoteDescription(RTCSessionDescription(reply["sdp"], "answer"))
        return reply

    async def wait_frames(self, count: int, timeout: float = 15.0) -> bool:
        deadline = time.monotonic() + timeout
        while self.frames < count and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return self.frames >= count

    async def close(self) -> None:
        await self.pc.close()
        for task in self.tasks:
            task.cancel()


async def ask(ws, message) -> dict:
    await ws.send(message if isinstance(message, str | bytes) else json.dumps(message))
    while True:
        reply = json.loads(await ws.recv())
        if reply["type"] != "stats":
            return reply


async def health(http_get, port: int) -> dict:
    status, _, body = await http_get(port, "/health")
    assert status == 200
    return json.loads(body)


async def assert_serves_a_real_session(app, http_get) -> None:
    """/health ok, and a new session streams video frames."""
    assert (await health(http_get, app.port))["status"] == "ok"
    client = RealClient()
    try:
        async with connect(f"ws://127.0.0.1:{app.port}/ws") as ws:
            answer = await client.start(ws)
            assert answer["type"] == "answer", answer
            assert await client.wait_frames(10), "the new session sent no video"
    finally:
        await client.close()


def data_channel_only_sdp() -> asyncio.Future:
    async def make() -> str:
        pc = RTCPeerConnection()
        pc.createDataChannel("chat")
        await pc.setLocalDescription(await pc.createOffer())
        sdp = pc.localDescription.sdp
        await pc.close()
        return sdp

    return make()


def assert_one_line_error(reply: dict, expected: str, what: object) -> None:
    assert reply["type"] == "error", (what, reply)
    message = reply["message"]
    assert expected in message, (what, message)
    assert "\n" not in message and "Traceback" not in message and len(message) <= 300, what


async def test_garbage_messages_and_bad_sdp_get_clear_errors(app, http_get):
    junk_sdp = "v=0\r\nm=video 9 RTP/AVP 96\r\n" + "a=junk:" + "\x00\x7f%s{}" * 2000 + "\r\n"
    cases = [
        ("not json", "not valid JSON"),
        ("{" * 3, "not valid JSON"),
        ("[" * 100_000, "not valid JSON"),  # nesting deep enough to hit the recursion limit
        ("x" * 1_000_000, "not valid JSON"),
        (b"\x00\xff binary", "binary messages are not supported"),
        ("[]", "JSON object with a 'type'"),
        ("42", "JSON object with a 'type'"),
        ({"type": 7}, "no 'type' string"),
        ({"type": None}, "no 'type' string"),
        ({"type": "nope"}, "unknown message type 'nope'"),
        ({"type": "x" * 10_000}, "unknown message type"),
        ({"type": "candidate", "candidate": "candidate:1 1 udp 1 1.2.3.4 5"}, "unknown message type"),
        ({"type": "offer"}, "offer needs an 'sdp' string"),
        ({"type": "offer", "sdp": 12345}, "offer needs an 'sdp' string"),
        ({"type": "offer", "sdp": ["v=0", "m=video"]}, "offer needs an 'sdp' string"),
        ({"type": "offer", "sdp": {"v": 0}}, "offer needs an 'sdp' string"),
        ({"type": "offer", "sdp": "   "}, "offer needs an 'sdp' string"),
        ({"type": "offer", "sdp": "v=0\r\n" + "j" * 1_000_000}, "offer sdp is too large"),
        ({"type": "offer", "sdp": MIN_VIDEO_SDP.split("m=")[0]}, "not a session description"),
        ({"type": "offer", "sdp": "hello\nm=video"}, "not a session description"),
        ({"type": "offer", "sdp": await data_channel_only_sdp()}, "offer has no video m-line"),
        ({"type": "offer", "sdp": MIN_VIDEO_SDP.replace("m=video", "m=audio")}, "offer has no video m-line"),
        ({"type": "offer", "sdp": junk_sdp}, "invalid offer sdp"),
        ({"type": "offer", "sdp": MIN_VIDEO_SDP, "mode": "shout"}, "offer mode must be"),
        ({"type": "say", "text": "hi"}, "start a session first"),
        ({"type": "audio", "format": "wav", "data": "AAAA"}, "start a session first"),
        ({"type": "audio", "format": "mp3", "data": "AAAA"}, "'format' must be"),
        ({"type": "interrupt"}, "start a session first"),
    ]
    async with connect(f"ws://127.0.0.1:{app.port}/ws", max_size=None) as ws:
        for message, expected in cases:
            assert_one_line_error(await ask(ws, message), expected, str(message)[:80])
            await asyncio.sleep(0.06)  # stay under the per-socket rate limit
        assert await ask(ws, {"type": "ping"}) == {"type": "pong"}  # the socket still works
    assert (await health(http_get, app.port))["sessions"] == 0
    await assert_serves_a_real_session(app, http_get)


@pytest.mark.parametrize(
    "avatar_id",
    ["../etc/passwd", "..", "%2e%2e", "%2e%2e%2fetc%2fpasswd", "/etc/passwd", "C:\\Windows\\win.ini",
     "astronaut/../astronaut", "astro\x00naut", "a" * 10_000, "astronaut ", 42, ["astronaut"], {"id": "x"},
     True],
)
async def test_path_like_or_wrong_typed_avatar_ids_are_refused(app, avatar_id):
    async with connect(f"ws://127.0.0.1:{app.port}/ws") as ws:
        reply = await ask(ws, {"type": "offer", "sdp": MIN_VIDEO_SDP, "avatar": avatar_id})
        assert_one_line_error(reply, "invalid avatar id", avatar_id)
        reply = await ask(ws, {"type": "offer", "sdp": MIN_VIDEO_SDP, "avatar": "passwd"})
        assert_one_line_error(reply, "unknown avatar 'passwd'", "passwd")
    assert len(app.sessions) == 0 and app.engine.prepared == ["astronaut"]  # nothing else was opened


async def test_30_mb_message_closes_only_that_socket_with_1009(app, http_get):
    running = RealClient()
    try:
        async with connect(f"ws://127.0.0.1:{app.port}/ws") as session_ws:
            assert (await running.start(session_ws))["type"] == "answer"
            assert await running.wait_frames(5)
            big = await connect(f"ws://127.0.0.1:{app.port}/ws", max_size=None)
            with pytest.raises(ConnectionClosed):  # no `async with`: the server already closed it
                await big.send("x" * 30_000_000)
                await asyncio.wait_for(big.recv(), 10)
            assert big.close_code == 1009
            before = running.frames
            assert await running.wait_frames(before + 10), "the running session stalled"
            assert await ask(session_ws, {"type": "ping"}) == {"type": "pong"}
            expected = {"status": "ok", "engine": "box", "sessions": 1, "badge": False,
                        "upload": False, "consent": False, "sizes": [128]}
            assert (await health(http_get, app.port)) == expected
    finally:
        await running.close()
    await assert_serves_a_real_session(app, http_get)


async def test_message_burst_is_rate_limited_then_closed_with_policy_violation(app, http_get):
    url = f"ws://127.0.0.1:{app.port}/ws"
    async with connect(url) as polite:
        async with connect(url) as abusive:
            try:
                for i in range(500):
                    await abusive.send(json.dumps({"type": "ping"}) if i % 2 else "junk")
            except ConnectionClosed:
                pass
            replies = []
            with pytest.raises(ConnectionClosed) as info:
                while True:
                    replies.append(json.loads(await asyncio.wait_for(abusive.recv(), 10)))
            assert info.value.rcvd is not None and info.value.rcvd.code == 1008
            limited = [r for r in replies if r["type"] == "error" and "too many messages" in r["message"]]
            handled = [r for r in replies if r not in limited]
            assert limited and limited[0]["message"] == "too many messages: at most 20 per second; slow down"
            assert 20 <= len(handled) <= 60  # the burst allowance was served, then refused
            assert len(replies) < 200  # closed long before the 500 messages were all answered
        for _ in range(5):  # a well-behaved socket next to it is unaffected
            assert await ask(polite, {"type": "ping"}) == {"type": "pong"}
    assert "avatar_messages_refused_total" in (await http_get(app.port, "/metrics"))[2].decode()
    await assert_serves_a_real_session(app, http_get)


async def test_idle_sockets_are_closed_and_do_not_block_sessions(app, http_get):
    url = f"ws://127.0.0.1:{app.port}/ws"
    idle = [await connect(url) for _ in range(30)]
    try:
        client = RealClient()
        async with connect(url) as session_ws:
            assert (await client.start(session_ws))["type"] == "answer"
            assert await client.wait_frames(5)
            extra = await connect(url)  # 32 of 34 sockets in use
            with pytest.raises(InvalidStatus) as refused:
                crowd = [await connect(url) for _ in range(3)]
                for ws in crowd:
                    await ws.close()
            assert refused.value.response.status_code == 503
            await extra.close()
            for ws in idle:  # closed by the server after server.idle_timeout_s without a session
                with pytest.raises(ConnectionClosed):
                    await asyncio.wait_for(ws.recv(), 10)
                assert ws.close_code == 1000 and ws.close_reason == "idle timeout"
            await asyncio.sleep(0.5)  # the session's socket is past the idle timeout but stays open
            assert await ask(session_ws, {"type": "ping"}) == {"type": "pong"}
            before = client.frames
            assert await client.wait_frames(before + 10)
        await client.close()
    finally:
        for ws in idle:
            await ws.close()
    await assert_serves_a_real_session(app, http_get)


@pytest.mark.parametrize(
    "path",
    ["/../secret.txt", "/..%2fsecret.txt", "/%2e%2e/secret.txt", "/%2E%2E%2Fsecret.txt",
     "/%252e%252e/secret.txt",
     "/%252e%252e%252fsecret.txt", "/..\\secret.txt", "/..%5csecret.txt", "/%5c..%5csecret.txt",
     "/.%2e/secret.txt", "/%2e./secret.txt", "/index.html%00.png", "/index.html%2500", "/%00",
     "/etc/passwd", "//etc/passwd", "/C:/Windows/win.ini", "/C:%5cWindows", "/file:///etc/passwd",
     "/static/%2e%2e/%2e%2e/secret.txt", "/.hidden", "/%2ehidden", "/" + "a/" * 2000 + "x",
     "/%ff%fe", "/..;/secret.txt", "/health/../secret.txt", "/avatars/../../secret.txt"],
)
async def test_static_path_traversal_is_404(app, http_get, path):
    status, _, body = await http_get(app.port, path)
    assert status == 404 and b"outside the static folder" not in body
    assert (await health(http_get, app.port))["status"] == "ok"


# --- offline CLI -------------------------------------------------------------------------------------


def _cli(monkeypatch, capsys, *argv: str) -> tuple[int, str]:
    monkeypatch.setattr(cli, "COMMAND_MODULES", [
        "avatar.commands.detect", "avatar.commands.say", "avatar.commands.eval"])
    code = cli.main(list(argv))
    return code, capsys.readouterr().err.strip()


def _one_line_error(code: int, err: str, expected: str) -> None:
    assert code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and expected in err, err
    assert "Traceback" not in err


@pytest.mark.parametrize(("name", "content", "expected"), [
    ("missing.mp4", None, "file not found"),
    ("empty.png", b"", ""),
    ("empty.mp4", b"", ""),
    ("corrupt.mp4", b"\x00\x00\x00\x18ftypmp42" + b"\x13\x37" * 500, ""),
])
def test_detect_with_missing_empty_or_corrupt_files(tmp_path, monkeypatch, capsys, name, content, expected):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    _one_line_error(*_cli(monkeypatch, capsys, "detect", str(path)), expected)


@pytest.mark.parametrize(("name", "content", "expected"), [
    ("missing.png", None, "not found"),
    ("empty.png", b"", ""),
    ("corrupt.png", b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 64, ""),
])
def test_say_with_missing_empty_or_corrupt_portrait(tmp_path, monkeypatch, capsys, name, content, expected):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    code, err = _cli(monkeypatch, capsys, "say", "--portrait", str(path), "--text", "hello",
                     "--out", str(tmp_path / "out.mp4"), "--size", "128")
    _one_line_error(code, err, expected)
    assert not (tmp_path / "out.mp4").exists()


@pytest.mark.parametrize(("content", "expected"), [
    ("", ""),
    ("{not json or yaml: [", ""),
    ("[1, 2, 3]", ""),
    ('[{"portrait": "/nope/none.png", "audio": "/nope/none.wav"}]', ""),
])
def test_eval_with_empty_or_corrupt_cases_file(tmp_path, monkeypatch, capsys, content, expected):
    cases = tmp_path / "cases.json"
    cases.write_text(content)
    code, err = _cli(monkeypatch, capsys, "eval", "--cases", str(cases), "--out", str(tmp_path / "o"))
    _one_line_error(code, err, expected)


def test_eval_with_a_corrupt_audio_file_in_a_case(tmp_path, monkeypatch, capsys):
    (tmp_path / "bad.wav").write_bytes(b"RIFF" + b"\x00" * 40)
    cases = tmp_path / "cases.json"
    cases.write_text(json.dumps([{"portrait": str(ASTRONAUT), "audio": str(tmp_path / "bad.wav")}]))
    code, err = _cli(monkeypatch, capsys, "eval", "--cases", str(cases), "--out", str(tmp_path / "o"))
    assert code != 0 and "Traceback" not in err  # the harness reports the failed case and goes on
    assert "FAILED: cannot decode audio bad.wav" in err


async def test_speech_queue_is_bounded(make_config, box_engine_factory):
    """Pushed audio waiting to be spoken is capped (speech.max_queued_s), so a client cannot grow it."""
    import base64

    config = make_config(**{"engine.size": 128, "speech.max_queued_s": 2.0, "speech.max_requests": 50})
    app = App(config, box_engine_factory(size=128))
    await app.start(host="127.0.0.1", port=0)
    client = RealClient()
    clip = base64.b64encode(bytes(16000 * 2 * 5)).decode()  # 5 s of 16 kHz pcm16 silence
    message = {"type": "audio", "format": "pcm16", "sample_rate": 16000, "data": clip}
    try:
        async with connect(f"ws://127.0.0.1:{app.port}/ws") as ws:
            await client.pc.setLocalDescription(await client.pc.createOffer())
            reply = await ask(ws, {"type": "offer", "sdp": client.pc.localDescription.sdp, "mode": "speak"})
            assert reply["type"] == "answer"
            assert (await ask(ws, message))["type"] == "queued"
            session = next(iter(app.sessions))
            for _ in range(100):
                if session.speaker.queue.queued_samples:
                    break
                await asyncio.sleep(0.02)
            assert_one_line_error(await ask(ws, message), "speech queue full", "second clip")
            assert (await ask(ws, {"type": "interrupt"}))["type"] == "interrupted"
            assert (await ask(ws, message))["type"] == "queued"  # room again after the interrupt
    finally:
        await client.close()
        await app.stop()
